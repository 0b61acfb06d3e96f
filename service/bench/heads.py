"""Per-tag heads on split digits (`python -m service bench --scenarios heads`): each task's
feedback carries its task as the tag. One shared head read class-incrementally (every label)
and task-incrementally (the task's labels masked in, which needs the task's classes at
predict time), against MNEMO_HEADS=per-tag read by tag (the head answers over its own labels)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from models.learner import IncrementalLearner
from models.nets import MLPConfig
from models.strategies import make_strategy
from service.bench import memory
from service.bench.datasets import split_digits
from service.bench.metrics import fmt
from service.bench.runner import DEFAULTS, RunSpec, predict_tagged, run_stream
from service.bench.suite import load_hparams, strategy_kw

STRATEGIES = ("naive", "replay", DEFAULTS.strategy, "progressive", "progressive+replay")
EARLY = 100  # samples of a new task after which forward transfer is read
# Forward transfer is read with every column as wide as the first, and with later columns a
# quarter as wide (MNEMO_COLUMN_HIDDEN), which must lean on the laterals.
NARROW = tuple(h // 4 for h in DEFAULTS.hidden)
COLUMNS = {"full width": None, "later columns " + ",".join(map(str, NARROW)): NARROW}
START, END = "<!-- mnemo-bench-heads:start -->", "<!-- mnemo-bench-heads:end -->"
PROGRESSIVE = "progressive"
READINGS = {"shared": ("class", "task"), "per-tag": ("tag",)}


def run(seeds: Sequence[int], strategies: Sequence[str] = STRATEGIES,
        log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    hparams = load_hparams()
    results = []
    for seed in seeds:
        scenario = split_digits(seed)
        for strategy in strategies:
            base = RunSpec(strategy, DEFAULTS.buffer, DEFAULTS.buffer_size, seed,
                           strategy_kw=strategy_kw(hparams, strategy))
            # Progressive columns route by tag whatever MNEMO_HEADS says; they run at full width
            # and with narrow later columns.
            runs = ([("per-tag", c) for c in COLUMNS.values()] if strategy.startswith(PROGRESSIVE)
                    else [(h, None) for h in READINGS])
            for heads, narrow in runs:
                start = time.perf_counter()
                r = run_stream(scenario, replace(base, heads=heads, column_hidden=narrow))
                r["label"] = (heads if not strategy.startswith(PROGRESSIVE)
                              else ("columns" if narrow is None
                                    else f"columns, later {','.join(map(str, narrow))}"))
                results.append(r)
                log(f"heads     {r['label']:8s} {strategy:20s} seed {seed} "
                    + " ".join(f"{k} {v['final_acc']:.3f}" for k, v in r["settings"].items())
                    + f" ({time.perf_counter() - start:.1f} s)")
        if any(s.startswith(PROGRESSIVE) for s in strategies):
            for columns, narrow in COLUMNS.items():
                results.append({"seed": seed, "columns": columns,
                                "forward_transfer": forward_transfer(seed, column_hidden=narrow)})
                log(f"heads     forward transfer, {columns}, seed {seed}: "
                    f"{results[-1]['forward_transfer']}")
    return results


class Stream:
    """Split digits fed task by task, each task's name as its tag."""

    def __init__(self, seed: int, learner: IncrementalLearner) -> None:
        self.scenario, self.learner = split_digits(seed), learner
        self.vocab: dict[int, int] = {}

    def feed(self, task: int, start: int = 0, stop: int | None = None,
             no_laterals: bool = False) -> None:
        a, b = self.scenario.starts()[task], self.scenario.ends[task]
        tag = self.scenario.segments[task].name
        end = b if stop is None else min(b, a + stop)
        for s in range(a + start, end, 16):
            e = min(s + 16, end)
            y = torch.tensor([self.vocab.setdefault(int(v), len(self.vocab))
                              for v in self.scenario.y[s:e]])
            self.learner.ensure_classes(len(self.vocab))
            self.learner.ensure_tags([tag] * len(y), y, max_tags=50)
            if no_laterals:  # the baseline: a fresh column that cannot read the old ones
                for group in self.learner.model.columns[-1].laterals:
                    for lateral in group:
                        lateral.weight.requires_grad_(False)
            self.learner.learn_many(torch.from_numpy(self.scenario.x[s:e]), y, None, [tag] * len(y))

    def accuracy(self, task: int) -> float:
        seg = self.scenario.segments[task]
        y = np.array([self.vocab.get(int(v), -2) for v in seg.y_test])
        return float(np.mean(predict_tagged(self.learner.model, seg.x_test, seg.name) == y))


def forward_transfer(seed: int, hidden: tuple[int, ...] = tuple(DEFAULTS.hidden),
                     column_hidden: tuple[int, ...] | None = None) -> dict[str, float]:
    """Progressive columns: accuracy on each new task's test set (tasks 2-5, read by tag)
    after its first EARLY samples, with laterals and with a fresh column that cannot use them
    (same seed, same data order), and the learner's state MiB after the five tasks."""
    out = {}
    for name, no_laterals in (("laterals", False), ("fresh column", True)):
        learner = IncrementalLearner(MLPConfig(64, hidden, 0, (), True, column_hidden),
                                     make_strategy(PROGRESSIVE), seed=seed)
        stream, accuracies = Stream(seed, learner), []
        for task in range(len(stream.scenario.segments)):
            stream.feed(task, stop=None if task == 0 else EARLY, no_laterals=no_laterals)
            if task:
                accuracies.append(stream.accuracy(task))
                stream.feed(task, start=EARLY, no_laterals=no_laterals)
        out[name] = float(np.mean(accuracies))
    out["state_mib"] = memory.state_mib(learner)
    return out


def markdown(results: list[dict[str, Any]], command: str) -> str:
    columns = ["heads", "strategy", "read as", "final acc", "forgetting", "prequential acc",
               "samples/s", "state MiB", "peak RSS MiB"]
    rows = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    forward = [r for r in results if "forward_transfer" in r]
    results = [r for r in results if "strategy" in r]
    for strategy in dict.fromkeys(r["strategy"] for r in results):
        mine = [r for r in results if r["strategy"] == strategy]
        for label in dict.fromkeys(r["label"] for r in mine):
            runs = [r for r in mine if r["label"] == label]
            for reading in READINGS[runs[0]["heads"]]:
                acc = [r["settings"][reading] for r in runs]
                rows.append("| " + " | ".join([
                    label, strategy, reading,
                    fmt([a["final_acc"] for a in acc]),
                    fmt([a["forgetting"] for a in acc]), fmt([r["preq_acc"] for r in runs]),
                    fmt([r["samples_per_s"] for r in runs], 0), fmt([r["state_mib"] for r in runs], 2),
                    fmt([r["peak_rss_mib"] for r in runs], 0)]) + " |")
    seeds = sorted({r["seed"] for r in results})
    return (f"`{command}` — seeds {seeds}; mean ± sample std; split digits, one pass in batches "
            f"of 16, buffer {DEFAULTS.buffer} {DEFAULTS.buffer_size}. Prequential accuracy is "
            "the shared head's over every label, or the tag's head's (column's).\n\n"
            + "\n".join(rows) + _forward_table(forward))


def _forward_table(forward: list[dict[str, Any]]) -> str:
    if not forward:
        return ""
    rows = []
    for columns in COLUMNS:
        runs = [r["forward_transfer"] for r in forward if r["columns"] == columns]
        gain = [r["laterals"] - r["fresh column"] for r in runs]
        cells = [fmt([r[k] for r in runs]) for k in ("laterals", "fresh column")]
        rows.append(f"| {columns} | {' | '.join(cells)} | {fmt(gain)} | "
                    f"{sum(g > 0 for g in gain)}/{len(gain)} | {fmt([r['state_mib'] for r in runs], 2)} |")
    return (f"\n\nProgressive columns, forward transfer: accuracy on each new task's test set "
            f"(tasks 2-5, by tag) after its first {EARLY} samples, mean over tasks; one column "
            f"per task, the first {','.join(map(str, DEFAULTS.hidden))}; both arms of a row see "
            "the same seed and data order, the gain is their paired per-seed difference.\n\n"
            "| later columns | with laterals | fresh, no laterals | gain (paired) | seeds "
            "with a gain | state MiB, 5 tags |\n| --- | --- | --- | --- | --- | --- |\n"
            + "\n".join(rows))
