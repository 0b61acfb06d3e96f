"""Hyperparameter tuning: the grid comes from each strategy's own arguments; frozen values are
looked up by exact name, then by penalty; the detector score rewards quick, clean alarms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from service.bench.suite import load_hparams, strategy_kw
from service.bench.tuning import TUNABLE, detector_cost, grid


def test_grid_spans_the_tunable_arguments_a_strategy_declares() -> None:
    combos = grid("online-ewc+replay")
    assert {frozenset(c) for c in combos} == {frozenset({"lam", "gamma"})}
    assert len(combos) == len(TUNABLE["lam"]) * len(TUNABLE["gamma"])
    assert grid("naive") == [{}] and grid("replay") == [{}]


def test_frozen_hyperparameters_by_exact_name_then_penalty(tmp_path: Path) -> None:
    path = tmp_path / "h.json"
    path.write_text(json.dumps({"strategies": {"ewc": {"lam": 10.0},
                                               "ewc+replay": {"lam": 1000.0}}}))
    hp = load_hparams(path)
    assert strategy_kw(hp, "ewc+replay") == {"lam": 1000.0}
    assert strategy_kw(hp, "ewc") == {"lam": 10.0}
    assert strategy_kw(hp, "si+replay") == {}
    assert load_hparams(tmp_path / "missing.json")["source"] == "defaults"


def test_detector_cost_rewards_fast_alarms_and_punishes_false_ones() -> None:
    rng = np.random.default_rng(0)
    errors = np.concatenate([rng.random(3000) < 0.05, rng.random(1000) < 0.7]).astype(float)
    cost_ok = detector_cost("adwin", {"delta": 0.002}, errors, [3000])
    assert cost_ok < 100  # found within a few clock ticks, no false alarm
    # An over-eager Page-Hinkley raises false alarms on the quiet part: far costlier.
    assert detector_cost("page-hinkley", {"threshold": 1.0, "delta": 0.0}, errors, [3000]) > 500
    # Never alarming costs the whole window per change.
    assert detector_cost("page-hinkley", {"threshold": 1e9}, errors, [3000]) == 300
