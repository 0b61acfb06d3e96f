"""Expandable network on the drifting stream (`python -m service bench --scenarios expand`):
MNEMO_STRATEGY=expand growing when the loss stays high after a consolidation, against the same
strategy growing at every consolidation (both bounded by the same number of growths)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from service.bench.datasets import PHASES, drifting_stream
from service.bench.metrics import fmt
from service.bench.runner import DEFAULTS, RunSpec, run_stream

VARIANTS = {"expand (grows when the loss stays high)": {},
            "expand, growing at every consolidation": {"always": True}}
START, END = "<!-- mnemo-bench-expand:start -->", "<!-- mnemo-bench-expand:end -->"


def added_units(result: dict[str, Any]) -> int:
    return sum(result["hidden"]) - sum(DEFAULTS.hidden)


def run(seeds: Sequence[int], log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    results = []
    for seed in seeds:
        scenario = drifting_stream(seed)
        for variant, kw in VARIANTS.items():
            start = time.perf_counter()
            spec = RunSpec("expand+replay", DEFAULTS.buffer, DEFAULTS.buffer_size, seed,
                           strategy_kw=kw)
            r = {**run_stream(scenario, spec), "variant": variant}
            results.append(r)
            log(f"expand    {variant:40s} seed {seed} units +{added_units(r)} "
                f"preq {r['preq_acc']:.3f} final {r['settings']['drift']['matrix'][-1][-1]:.3f} "
                f"({time.perf_counter() - start:.1f} s)")
    return results


def markdown(results: list[dict[str, Any]], command: str) -> str:
    columns = ["strategy", "hidden units added (both layers)", "prequential acc",
               f"preq {PHASES[1]}", "final-concept acc", "samples/s", "state MiB", "peak RSS MiB"]
    rows = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for variant in VARIANTS:
        runs = [r for r in results if r["variant"] == variant]
        if runs:
            rows.append("| " + " | ".join([
                variant, fmt([added_units(r) for r in runs], 0), fmt([r["preq_acc"] for r in runs]),
                fmt([r["preq_phase"][1] for r in runs]),
                fmt([r["settings"]["drift"]["matrix"][-1][-1] for r in runs]),
                fmt([r["samples_per_s"] for r in runs], 0), fmt([r["state_mib"] for r in runs], 2),
                fmt([r["peak_rss_mib"] for r in runs], 0)]) + " |")
    seeds = sorted({r["seed"] for r in results})
    return (f"`{command}` — seeds {seeds}; mean ± sample std; the drifting stream, expand+replay "
            f"({DEFAULTS.buffer} {DEFAULTS.buffer_size}), the service's drift response, "
            f"consolidation every {DEFAULTS.effective_consolidate_every} samples.\n\n"
            + "\n".join(rows))
