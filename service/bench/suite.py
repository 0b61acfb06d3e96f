"""Which runs make up the benchmark: strategies, buffers and hyperparameters, looked up at run
time, so a strategy or buffer added to models/ appears without editing the harness."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import models.replay as replay_module
import models.strategies as strategies_module
from service.bench.datasets import SCENARIOS, Scenario
from service.bench.runner import DEFAULTS, RunSpec, run_joint, run_stream

HPARAMS_FILE = Path(__file__).with_name("hparams.json")
SWEEP = (50, 100, 200, 500, 1000, 2000)  # buffer sizes for the accuracy-vs-buffer curve


def default_strategy() -> str:
    return DEFAULTS.strategy


def strategy_names() -> list[str]:
    """Every penalty alone, plain replay, and every penalty with replay."""
    known = list(strategies_module.STRATEGY_NAMES)
    penalties = [n for n in known if "+" not in n and n != "replay"]
    names = [*penalties, "replay", *(f"{p}+replay" for p in penalties if p != "naive")]
    return names + [n for n in known if n not in names]


def buffer_kinds() -> list[str]:
    names = getattr(replay_module, "BUFFER_NAMES", None)
    return list(names) if names else [DEFAULTS.buffer]


def load_hparams(path: Path = HPARAMS_FILE) -> dict[str, Any]:
    if not path.exists():
        return {"strategies": {}, "detector": {"name": "adwin", "kw": {}}, "source": "defaults"}
    return json.loads(path.read_text())


def strategy_kw(hparams: dict[str, Any], strategy: str) -> dict[str, Any]:
    """Frozen hyperparameters: for the exact name, else for its penalty, else the defaults.
    The service's default strategy runs with the service's default parameters."""
    if strategy == DEFAULTS.strategy:
        return dict(DEFAULTS.strategy_params)
    table = hparams.get("strategies", {})
    penalty = next((p for p in strategy.split("+") if p != "replay"), "naive")
    return dict(table.get(strategy, table.get(penalty, {})))


@dataclass
class Plan:
    scenarios: list[str]
    strategies: list[str]
    capacities: list[int]
    seeds: list[int]
    kinds: list[str] = field(default_factory=buffer_kinds)
    sweep: tuple[int, ...] = SWEEP
    joint_epochs: int = 5
    hparams: dict[str, Any] = field(default_factory=load_hparams)
    publish_every: int = DEFAULTS.publish_every_samples

    def specs(self, scenario: str) -> Iterator[RunSpec]:
        # The service's detector and defaults; only the strategies' own parameters are tuned
        # (what MNEMO_STRATEGY_PARAMS sets), and the default strategy runs the defaults.
        base = RunSpec("", DEFAULTS.buffer, 0, 0,
                       overrides={"publish_every_samples": self.publish_every})
        for seed in self.seeds:
            for strategy in self.strategies:
                # Other buffer kinds only where the buffer feeds the gradient (replay).
                kinds = self.kinds if "replay" in strategy.split("+") else [DEFAULTS.buffer]
                for kind in kinds:
                    for cap in self.capacities:
                        yield replace(base, strategy=strategy, buffer=kind, capacity=cap, seed=seed,
                                      strategy_kw=strategy_kw(self.hparams, strategy))
            if scenario != "drift" and self.sweep:
                strategy = default_strategy()
                for cap in self.sweep:
                    if cap not in self.capacities or strategy not in self.strategies:
                        yield replace(base, strategy=strategy, capacity=cap, seed=seed,
                                      strategy_kw=strategy_kw(self.hparams, strategy))


def run_plan(plan: Plan, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for name in plan.scenarios:
        cache: dict[int, Scenario] = {}
        for spec in plan.specs(name):
            scenario = cache.setdefault(spec.seed, SCENARIOS[name](spec.seed))
            start = time.perf_counter()
            # Per-sample flags only for the first seed of the drift stream: they feed one plot.
            keep = name == "drift" and spec.seed == plan.seeds[0]
            result = run_stream(scenario, spec, keep_flags=keep)
            results.append(result)
            log(f"{name:9s} {spec.strategy:22s} {spec.buffer}:{spec.capacity:<5d} seed {spec.seed} "
                f"preq {result['preq_acc']:.3f} "
                + " ".join(f"{k} {v['final_acc']:.3f}" for k, v in result["settings"].items())
                + f" ({time.perf_counter() - start:.1f} s)")
        if name != "drift" and plan.joint_epochs > 0:  # no joint optimum for contradicting concepts
            for seed in plan.seeds:
                scenario = cache.get(seed) or SCENARIOS[name](seed)
                results.append(run_joint(scenario, seed, plan.joint_epochs))
                log(f"{name:9s} joint ({plan.joint_epochs} epochs) seed {seed} "
                    + " ".join(f"{k} {v['final_acc']:.3f}" for k, v in results[-1]["settings"].items()))
    return results
