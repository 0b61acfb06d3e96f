"""Choose hyperparameters on the tuning streams, then freeze them in hparams.json.

The tuning streams (datasets.py, tuning=True) share nothing with the reported runs' test
data: permuted and split digits are validated on a part of the *training* split, with other
permutations and another class pairing; the drifting stream comes from another generator draw.
Strategies: a grid over the constructor arguments each one declares (λ, γ, ...), scored by
the mean of permuted final accuracy, split class-incremental final accuracy and drifting-stream
prequential accuracy, seed 0, the service's default buffer. Detector: the configuration with the
smallest mean delay after each true change (a miss costs the window), plus 100 per false alarm,
on the default strategy's error streams.
"""

from __future__ import annotations

import datetime as dt
import inspect
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from models.drift import make_detector
from models.strategies import make_strategy
from service.bench.datasets import SCENARIOS, Scenario
from service.bench.runner import DEFAULTS, RunSpec, parse_strategy, run_stream

# The trade-off knobs, by constructor argument name; any other argument keeps its default
# (numerical guards such as SI's ξ, sizes such as chunk_size).
TUNABLE: dict[str, tuple[float, ...]] = {
    "lam": (0.1, 1.0, 10.0, 100.0, 1_000.0, 10_000.0), "gamma": (0.8, 0.9, 1.0),
    "decay": (0.8, 0.9, 1.0), "c": (0.01, 0.1, 1.0, 10.0), "alpha": (0.3, 1.0, 3.0),
    "temperature": (1.0, 2.0, 4.0)}
DETECTORS: list[tuple[str, dict[str, float]]] = (
    [("page-hinkley", {"threshold": t, "delta": d}) for t in (25.0, 50.0, 100.0) for d in (0.005, 0.02)]
    + [("adwin", {"delta": d}) for d in (0.0002, 0.002, 0.02)])
WINDOW = 300  # a detection within this many samples after a change is a hit
FALSE_ALARM_COST = 100.0


def grid(strategy: str) -> list[dict[str, float]]:
    """Every combination of the strategy's tunable constructor arguments ([{}] if none)."""
    penalty, _ = parse_strategy(strategy)
    params = inspect.signature(type(make_strategy(penalty)).__init__).parameters
    axes = {name: TUNABLE[name] for name in params if name in TUNABLE}
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]


def _streams() -> dict[str, Scenario]:
    return {name: make(0, tuning=True) for name, make in SCENARIOS.items()}


def score(streams: dict[str, Scenario], spec: RunSpec) -> tuple[float, dict[str, Any]]:
    runs = {name: run_stream(s, spec, keep_flags=True) for name, s in streams.items()}
    value = np.mean([runs["permuted"]["settings"]["domain"]["final_acc"],
                     runs["split"]["settings"]["class"]["final_acc"], runs["drift"]["preq_acc"]])
    return float(value), runs


def detector_cost(name: str, kw: dict[str, float], errors: np.ndarray, changes: list[int]) -> float:
    detector = make_detector(name, **kw)
    alarms = [i for i, e in enumerate(errors) if detector.update(float(e))]
    delays = []
    for change in changes:
        hits = [a - change for a in alarms if change <= a < change + WINDOW]
        delays.append(hits[0] if hits else WINDOW)
    false = sum(not any(c <= a < c + WINDOW for c in changes) for a in alarms)
    return float(np.mean(delays)) + FALSE_ALARM_COST * false


def tune(strategies: list[str], out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    streams = _streams()
    chosen: dict[str, dict[str, float]] = {}
    scores: dict[str, float] = {}
    default_runs: dict[str, Any] = {}
    for strategy in strategies:
        best: tuple[float, dict[str, float], dict[str, Any]] | None = None
        for kw in grid(strategy) or [{}]:
            spec = RunSpec(strategy, DEFAULTS.buffer, DEFAULTS.buffer_size, 0, strategy_kw=kw)
            value, runs = score(streams, spec)
            log(f"tune {strategy:22s} {kw} -> {value:.4f}")
            if best is None or value > best[0]:
                best = (value, kw, runs)
        assert best is not None
        chosen[strategy], scores[strategy] = best[1], round(best[0], 4)
        if strategy == DEFAULTS.strategy:
            default_runs = best[2]
    if not default_runs:  # the detector is tuned on the default strategy's errors
        spec = RunSpec(DEFAULTS.strategy, DEFAULTS.buffer, DEFAULTS.buffer_size, 0,
                       strategy_kw=chosen.get(DEFAULTS.strategy, {}))
        default_runs = score(streams, spec)[1]
    costs = {}
    for name, kw in DETECTORS:
        costs[(name, json.dumps(kw))] = float(np.mean([
            detector_cost(name, kw, 1 - np.array(default_runs[s]["flags"]), list(streams[s].ends[:-1]))
            for s in streams]))
        log(f"tune detector {name} {kw} -> cost {costs[(name, json.dumps(kw))]:.1f}")
    (det_name, det_kw), det_cost = min(costs.items(), key=lambda kv: kv[1])
    hparams = {
        "source": "tuned by `python -m service bench --tune` on the tuning streams "
                  "(validation part of the digits training split, other permutations and class "
                  "pairs, another drift generator), seed 0, buffer "
                  f"{DEFAULTS.buffer} {DEFAULTS.buffer_size}",
        "tuned_at": dt.date.today().isoformat(),
        "objective": "mean of permuted final acc, split class-IL final acc, drift prequential acc",
        "strategies": chosen, "scores": scores,
        "detector": {"name": det_name, "kw": json.loads(det_kw), "cost": round(det_cost, 1),
                     "objective": f"mean delay within {WINDOW} samples of each change (a miss "
                                  f"costs {WINDOW}) + {FALSE_ALARM_COST:.0f} per false alarm"},
    }
    out.write_text(json.dumps(hparams, indent=2) + "\n")
    return hparams
