"""Prequential scoring (test-then-train) and the publish gate's accuracy checks."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from models.nets import MultiHeadMLP


class PrequentialWindow:
    """Accuracy of the served version on each new label before training on it, over a sliding
    window, with balanced accuracy and per-class recall (accuracy alone hides imbalance)."""

    def __init__(self, size: int = 1000) -> None:
        self._pairs: deque[tuple[int, int]] = deque(maxlen=size)

    def add(self, true: Sequence[int], predicted: Sequence[int]) -> None:
        self._pairs.extend(zip(true, predicted, strict=True))

    def __len__(self) -> int:
        return len(self._pairs)

    def accuracy(self) -> float | None:
        if not self._pairs:
            return None
        return sum(t == p for t, p in self._pairs) / len(self._pairs)

    def recall_by_class(self) -> dict[int, float]:
        hits: dict[int, int] = {}
        totals: dict[int, int] = {}
        for t, p in self._pairs:
            totals[t] = totals.get(t, 0) + 1
            hits[t] = hits.get(t, 0) + (t == p)
        return {c: hits[c] / totals[c] for c in sorted(totals)}

    def balanced_accuracy(self) -> float | None:
        recalls = self.recall_by_class()
        return sum(recalls.values()) / len(recalls) if recalls else None


def as_arrays(pairs: list[tuple[np.ndarray, int]], input_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(input, class) pairs as an (n, d) float32 matrix and an int64 vector (n may be 0)."""
    if not pairs:
        return np.empty((0, input_dim), np.float32), np.empty(0, np.int64)
    return np.stack([x for x, _ in pairs]), np.array([y for _, y in pairs], dtype=np.int64)


def predict_classes(model: nn.Module, x: np.ndarray, tags: list[str] | None = None) -> np.ndarray:
    """Class per row; with `tags` (per-tag heads, progressive columns) each row is answered by
    its tag's head or column, as /v1/predict answers it."""
    if model.config.num_classes == 0 or len(x) == 0:
        return np.full(len(x), -1)
    with torch.inference_mode():
        rows = torch.from_numpy(np.ascontiguousarray(x))
        if tags is None or not isinstance(model, MultiHeadMLP):
            return model(rows).argmax(dim=1).numpy()
        out = np.empty(len(x), dtype=np.int64)
        for tag in dict.fromkeys(tags):
            idx = [i for i, t in enumerate(tags) if t == tag]
            out[idx] = model.classify(rows[idx], tag or None).numpy()
        return out


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Share of rows predicted right; a label the model has no output for (-1) counts wrong."""
    return float(np.mean(predict_classes(model, x) == y))


@dataclass
class GateResult:
    passed: bool
    evaluation: dict[str, Any] = field(default_factory=dict)


def gate(
    candidate: nn.Module,
    served: nn.Module,
    checks: dict[str, tuple[np.ndarray, np.ndarray]],
    tolerance: float,
    min_items: int = 20,
    floors: dict[str, float] | None = None,
) -> GateResult:
    """Pass only if, on every check set with enough items (recent holdout, golden set), the
    candidate is not worse than the served version by more than `tolerance` — nor than a
    check's floor (e.g. the lineage's best golden accuracy), where one is given."""
    evaluation: dict[str, Any] = {"tolerance": tolerance}
    passed = True
    for name, (x, y) in checks.items():
        if len(y) < min_items:
            continue
        cand, base = accuracy(candidate, x, y), accuracy(served, x, y)
        evaluation[f"{name}_accuracy"] = round(cand, 4)
        evaluation[f"{name}_served_accuracy"] = round(base, 4)
        evaluation[f"{name}_items"] = len(y)
        floor = (floors or {}).get(name)
        if floor is not None and floor > base:
            evaluation[f"{name}_floor"] = round(floor, 4)
            base = floor
        if cand < base - tolerance:
            passed = False
            evaluation.setdefault("rejected_by", []).append(name)
    return GateResult(passed, evaluation)
