"""Continual-learning metrics from an accuracy matrix, and prequential accuracy per segment.

R[i][j] is the test accuracy on task j right after the stream's task i ended (T x T).
- final average accuracy: mean_j R[T-1][j].
- backward transfer (Lopez-Paz & Ranzato 2017): mean over j < T-1 of R[T-1][j] - R[j][j];
  negative when learning later tasks hurt earlier ones.
- average forgetting (Chaudhry et al. 2018): mean over j < T-1 of
  max_{i < T-1} R[i][j] - R[T-1][j]; the drop from the best accuracy ever held.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

LAST_WINDOW = 300  # "prequential accuracy over the phase's last 300 samples"


def final_average_accuracy(r: Sequence[Sequence[float]]) -> float:
    return float(np.mean(r[-1]))


def backward_transfer(r: Sequence[Sequence[float]]) -> float:
    t = len(r)
    if t < 2:
        return 0.0
    return float(np.mean([r[t - 1][j] - r[j][j] for j in range(t - 1)]))


def average_forgetting(r: Sequence[Sequence[float]]) -> float:
    t = len(r)
    if t < 2:
        return 0.0
    return float(np.mean([max(r[i][j] for i in range(t - 1)) - r[t - 1][j]
                          for j in range(t - 1)]))


def accuracy_matrix_metrics(r: Sequence[Sequence[float]]) -> dict[str, float]:
    if not r or any(len(row) != len(r) for row in r):
        raise ValueError(f"need a square T x T accuracy matrix, got {[len(row) for row in r]}")
    return {"final_acc": final_average_accuracy(r), "forgetting": average_forgetting(r),
            "bwt": backward_transfer(r)}


def prequential_by_segment(flags: np.ndarray, ends: Sequence[int],
                           last: int = LAST_WINDOW) -> dict[str, float | list[float]]:
    """Test-then-train accuracy overall, per segment, and over each segment's last samples."""
    starts = [0, *ends[:-1]]
    segs = [flags[a:b] for a, b in zip(starts, ends, strict=True)]
    return {"preq_acc": float(np.mean(flags)),
            "preq_phase": [float(np.mean(s)) for s in segs],
            "preq_last": [float(np.mean(s[-last:])) for s in segs]}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    if not values:
        return math.nan, math.nan
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return float(np.mean(values)), std


def fmt(values: Sequence[float], digits: int = 3) -> str:
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"
