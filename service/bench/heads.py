"""Per-tag heads on split digits (`python -m service bench --scenarios heads`): each task's
feedback carries its task as the tag. One shared head read class-incrementally (every label)
and task-incrementally (the task's labels masked in, which needs the task's classes at
predict time), against MNEMO_HEADS=per-tag read by tag (the head answers over its own labels)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from service.bench.datasets import split_digits
from service.bench.metrics import fmt
from service.bench.runner import DEFAULTS, RunSpec, run_stream
from service.bench.suite import load_hparams, strategy_kw

STRATEGIES = ("naive", "replay", DEFAULTS.strategy)
START, END = "<!-- mnemo-bench-heads:start -->", "<!-- mnemo-bench-heads:end -->"
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
            for heads in READINGS:
                start = time.perf_counter()
                r = run_stream(scenario, replace(base, heads=heads))
                results.append(r)
                log(f"heads     {heads:8s} {strategy:20s} seed {seed} "
                    + " ".join(f"{k} {v['final_acc']:.3f}" for k, v in r["settings"].items())
                    + f" ({time.perf_counter() - start:.1f} s)")
    return results


def markdown(results: list[dict[str, Any]], command: str) -> str:
    columns = ["heads", "strategy", "read as", "final acc", "forgetting", "prequential acc",
               "samples/s", "state MiB", "peak RSS MiB"]
    rows = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for strategy in dict.fromkeys(r["strategy"] for r in results):
        for heads, readings in READINGS.items():
            runs = [r for r in results if r["strategy"] == strategy and r["heads"] == heads]
            for reading in readings if runs else ():
                acc = [r["settings"][reading] for r in runs]
                rows.append("| " + " | ".join([
                    heads, strategy, reading, fmt([a["final_acc"] for a in acc]),
                    fmt([a["forgetting"] for a in acc]), fmt([r["preq_acc"] for r in runs]),
                    fmt([r["samples_per_s"] for r in runs], 0), fmt([r["state_mib"] for r in runs], 2),
                    fmt([r["peak_rss_mib"] for r in runs], 0)]) + " |")
    seeds = sorted({r["seed"] for r in results})
    return (f"`{command}` — seeds {seeds}; mean ± sample std; split digits, one pass in batches "
            f"of 16, buffer {DEFAULTS.buffer} {DEFAULTS.buffer_size}. Prequential accuracy is "
            "the shared head's over every label, or the tag's head's.\n\n" + "\n".join(rows))
