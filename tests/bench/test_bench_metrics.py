"""Metric definitions, checked on hand-made numbers."""

from __future__ import annotations

import numpy as np
import pytest

from service.bench.metrics import (
    accuracy_matrix_metrics,
    average_forgetting,
    backward_transfer,
    fmt,
    mean_std,
    prequential_by_segment,
)

# R[i][j]: accuracy on task j after task i. Task 0 peaks *after* its own task (0.6 -> 0.9), so
# forgetting (drop from the best ever) and BWT (change since just after the task) differ.
R = [[0.6, 0.1, 0.0],
     [0.9, 0.8, 0.2],
     [0.7, 0.5, 0.9]]


def test_accuracy_matrix_metrics_by_hand() -> None:
    m = accuracy_matrix_metrics(R)
    assert m["final_acc"] == pytest.approx((0.7 + 0.5 + 0.9) / 3)
    # BWT = mean over the first T-1 tasks of R[T-1][j] - R[j][j] = ((0.7-0.6) + (0.5-0.8)) / 2
    assert m["bwt"] == pytest.approx(-0.1)
    # Forgetting = mean of max_{i<T-1} R[i][j] - R[T-1][j] = ((0.9-0.7) + (0.8-0.5)) / 2
    assert m["forgetting"] == pytest.approx(0.25)


def test_no_forgetting_and_single_task() -> None:
    perfect = [[1.0, 0.0], [1.0, 1.0]]
    assert average_forgetting(perfect) == 0.0
    assert backward_transfer(perfect) == 0.0
    assert accuracy_matrix_metrics([[0.8]]) == {"final_acc": 0.8, "forgetting": 0.0, "bwt": 0.0}


def test_catastrophic_forgetting_in_class_incremental_shape() -> None:
    # Naive fine-tuning on 2-class tasks: each task perfect, then zero.
    r = np.eye(5).tolist()
    m = accuracy_matrix_metrics(r)
    assert m == {"final_acc": pytest.approx(0.2), "forgetting": pytest.approx(1.0),
                 "bwt": pytest.approx(-1.0)}


def test_non_square_matrix_is_refused() -> None:
    with pytest.raises(ValueError, match="square"):
        accuracy_matrix_metrics([[0.5, 0.5]])


def test_prequential_by_segment() -> None:
    flags = np.array([1, 1, 0, 0, 1, 0, 1, 1, 1, 1], dtype=bool)
    out = prequential_by_segment(flags, [4, 10], last=2)
    assert out["preq_acc"] == pytest.approx(0.7)
    assert out["preq_phase"] == pytest.approx([0.5, 5 / 6])
    assert out["preq_last"] == pytest.approx([0.0, 1.0])


def test_mean_std_and_format() -> None:
    assert mean_std([0.5]) == (0.5, 0.0)
    mean, std = mean_std([0.4, 0.6])
    assert mean == pytest.approx(0.5) and std == pytest.approx(np.sqrt(0.02))  # sample std
    assert fmt([0.4, 0.6]) == "0.500 ± 0.141"
    assert fmt([0.25]) == "0.250"
    assert fmt([]) == "–"
