"""The publish gate (paired, noise-aware on the holdout, strict on the golden set), the
holdout's change point, and the publish cadence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from models.gate import CheckSet, gate, paired_margin, predict_classes
from models.holdout import Holdout
from models.nets import MLPConfig, build_model
from models.stream import PublishCadence


class Fixed(nn.Module):
    """Answers a fixed class per row index (inputs carry their index in column 0)."""

    def __init__(self, answers: list[int], classes: int = 2) -> None:
        super().__init__()
        self.config = MLPConfig(1, (1,), classes)
        self.answers = torch.tensor(answers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(self.answers[x[:, 0].long()], self.config.num_classes).float()


def _items(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(n, dtype=np.float32)[:, None], np.zeros(n, dtype=np.int64)


def test_one_disagreement_on_a_small_holdout_is_noise_not_a_regression() -> None:
    x, y = _items(40)
    served = Fixed([0] * 40)  # all right
    one_worse = Fixed([1] + [0] * 39)  # 0.025 worse: more than the tolerance
    assert gate(one_worse, served, {"holdout": CheckSet(x, y)}, 0.02).passed
    # Judged on the tolerance alone (the golden set), the same candidate is refused.
    strict = gate(one_worse, served, {"golden": CheckSet(x, y, noise_z=0.0)}, 0.02)
    assert not strict.passed and strict.evaluation["rejected_by"] == ["golden"]


def test_a_real_regression_is_refused_and_recorded() -> None:
    x, y = _items(200)
    served = Fixed([0] * 200)
    worse = Fixed([1] * 40 + [0] * 160)  # 0.2 worse
    result = gate(worse, served, {"holdout": CheckSet(x, y)}, 0.02)
    assert not result.passed
    margin = result.evaluation["holdout_noise_margin"]
    assert margin == pytest.approx(2 * np.sqrt(0.2 * 0.8 / 200), abs=1e-4)
    assert result.evaluation["holdout_accuracy"] == 0.8
    assert result.evaluation["holdout_served_accuracy"] == 1.0


def test_too_few_items_are_not_judged_and_a_floor_raises_the_bar() -> None:
    x, y = _items(10)
    assert gate(Fixed([1] * 10), Fixed([0] * 10), {"holdout": CheckSet(x, y)}, 0.02).passed
    x, y = _items(50)
    floored = CheckSet(x, y, noise_z=0.0, floor=1.0)
    result = gate(Fixed([1] * 2 + [0] * 48), Fixed([1] * 5 + [0] * 45), {"golden": floored}, 0.02)
    assert not result.passed and result.evaluation["golden_floor"] == 1.0


def test_paired_margin_counts_only_disagreements() -> None:
    same = np.array([True, False, True, False])
    assert paired_margin(same, same, 2.0) == 0.0
    assert paired_margin(same, ~same, 0.0) == 0.0
    assert paired_margin(same, ~same, 2.0) == pytest.approx(2 * np.sqrt(1.0 / 4))


def test_the_gate_judges_the_items_after_the_change_point() -> None:
    holdout = Holdout(capacity=6, input_dim=2)
    for i in range(5):
        holdout.add(np.full(2, i, np.float32), i % 2, "t")
    assert len(holdout.check_set(False)) == 5  # no change yet: every item
    holdout.mark_change()
    assert len(holdout.check_set(False)) == 0
    for i in range(5, 9):
        holdout.add(np.full(2, i, np.float32), 1, "t")
    view = holdout.check_set(True)
    assert view.x[:, 0].tolist() == [8, 7, 6, 5] and list(view.tags or ()) == ["t"] * 4
    assert len(holdout) == 6 and holdout.since_change == 4
    holdout.replace(list(holdout)[:3])  # a purge left the three newest
    assert holdout.since_change == 3
    holdout.restore_change(None)
    assert len(holdout.check_set(False)) == 3


def test_the_cadence_starts_small_doubles_and_starts_over() -> None:
    cadence = PublishCadence(16, 500)
    seen = []
    for _ in range(7):
        seen.append(cadence.threshold)
        cadence.published()
    assert seen == [16, 32, 64, 128, 256, 500, 500]
    assert not cadence.due(499) and cadence.due(500)
    cadence.restart()
    assert cadence.due(16) and not cadence.due(15)
    assert PublishCadence(1000, 500).threshold == 500  # never later than publish_every


def test_predict_classes_answers_minus_one_while_there_is_no_class() -> None:
    model = build_model(MLPConfig(2, (4,), 3), seed=0)
    x = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    assert predict_classes(model, x).shape == (5,)
    assert predict_classes(build_model(MLPConfig(2, (4,), 0), seed=0), x).tolist() == [-1] * 5
