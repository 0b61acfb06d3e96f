"""Scoring a model the way /v1/predict answers, and the publish gate that compares a candidate
with the served version on check sets (the recent holdout, the golden set).

The gate is paired: both models answer the same items, so only the items where they disagree
carry evidence. A candidate is refused when it is worse than the served version by more than
the tolerance *and* by more than the check's sampling noise allows (`noise_z` standard errors
of the paired difference). Without that allowance a small holdout refuses good candidates by
chance: at 40 items one disagreement is 0.025, more than the default tolerance, and a publish
cadence that starts small saw about half its early candidates refused on a binary stream.
The golden set is trusted and fixed, so it is judged on the tolerance alone (noise_z 0): the
poisoning guard stays as strict as before.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from models.nets import MultiHeadMLP

MIN_ITEMS = 20  # a check set with fewer items is not judged on
NOISE_Z = 2.0  # ~2.3% of equally good candidates refused at the tolerance's edge


def predict_classes(model: nn.Module, x: np.ndarray, tags: Sequence[str] | None = None) -> np.ndarray:
    """Class per row (-1 while the model has no classes); with `tags` (per-tag heads,
    progressive columns) each row is answered by its tag's head or column, as /v1/predict
    answers it."""
    if model.config.num_classes == 0 or len(x) == 0:
        return np.full(len(x), -1)
    with torch.inference_mode():
        rows = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if tags is None or not isinstance(model, MultiHeadMLP):
            return model(rows).argmax(dim=1).numpy()
        out = np.empty(len(x), dtype=np.int64)
        for tag in dict.fromkeys(tags):
            idx = [i for i, t in enumerate(tags) if t == tag]
            out[idx] = model.classify(rows[idx], tag or None).numpy()
        return out


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, tags: Sequence[str] | None = None) -> float:
    """Share of rows predicted right; a label the model has no output for (-1) counts wrong."""
    return float(np.mean(predict_classes(model, x, tags) == y))


@dataclass(frozen=True)
class CheckSet:
    """Labelled items a candidate is judged on; `tags` route rows in the per-tag modes."""

    x: np.ndarray
    y: np.ndarray
    tags: Sequence[str] | None = None
    noise_z: float = NOISE_Z  # 0: judged on the tolerance alone (a trusted, fixed set)
    floor: float | None = None  # e.g. the lineage's best golden accuracy

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class GateResult:
    passed: bool
    evaluation: dict[str, Any] = field(default_factory=dict)


def paired_margin(candidate_right: np.ndarray, served_right: np.ndarray, z: float) -> float:
    """z standard errors of the mean paired difference (served − candidate) over the items."""
    n = len(candidate_right)
    if z <= 0 or n == 0:
        return 0.0
    diff = served_right.astype(np.float64) - candidate_right.astype(np.float64)
    return z * math.sqrt(float(np.var(diff)) / n)


def gate(candidate: nn.Module, served: nn.Module, checks: Mapping[str, CheckSet],
         tolerance: float, min_items: int = MIN_ITEMS) -> GateResult:
    """Pass only if, on every check set with enough items, the candidate is not worse than
    the served version (or the check's floor, where higher) by more than `tolerance` plus the
    check's noise allowance."""
    evaluation: dict[str, Any] = {"tolerance": tolerance}
    passed = True
    for name, check in checks.items():
        if len(check) < min_items:
            continue
        cand_right = predict_classes(candidate, check.x, check.tags) == check.y
        base_right = predict_classes(served, check.x, check.tags) == check.y
        cand, base = float(cand_right.mean()), float(base_right.mean())
        evaluation[f"{name}_accuracy"] = round(cand, 4)
        evaluation[f"{name}_served_accuracy"] = round(base, 4)
        evaluation[f"{name}_items"] = len(check)
        margin = paired_margin(cand_right, base_right, check.noise_z)
        if margin:
            evaluation[f"{name}_noise_margin"] = round(margin, 4)
        if check.floor is not None and check.floor > base:
            evaluation[f"{name}_floor"] = round(check.floor, 4)
            base = check.floor
        if cand < base - tolerance - margin:
            passed = False
            evaluation.setdefault("rejected_by", []).append(name)
    return GateResult(passed, evaluation)
