"""Tables (markdown, mean ± std over seeds) and PNG plots from the benchmark's run results."""

from __future__ import annotations

import platform
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from service.bench.datasets import PHASES
from service.bench.metrics import fmt

COLUMNS = ("scenario", "strategy", "buffer", "final acc", "forgetting", "BWT", "prequential acc",
           "samples/s", "state MiB", "peak RSS MiB", "consolidation ms (mean / max)")
DRIFT_COLUMNS = ("strategy", "buffer", *(f"preq {p}" for p in PHASES), "label swap, last 300",
                 "final-concept acc", "alarms (stationary phase)",
                 *(f"alarm delay {p}" for p in PHASES[1:]), "samples/s",
                 "consolidation ms (mean / max)")
REFERENCES = """Published references, Split MNIST class-incremental (van de Ven, Tuytelaars & Tolias,
"Three types of incremental learning", Nature Machine Intelligence 2022; van de Ven & Tolias,
"Three scenarios for continual learning", 2019): fine-tuning ≈ 20%, EWC / SI ≈ 20%,
experience replay ≈ 89%. They train several epochs per task on 28×28 MNIST; here it is one
pass over 8×8 digits in batches of 16, so compare the ordering and the gaps, not the decimals.
"""
START, END = "<!-- mnemo-bench:start -->", "<!-- mnemo-bench:end -->"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(columns: Sequence[str], rows: list[list[str]]) -> str:
    return "\n".join([_row(columns), _row(["---"] * len(columns)), *map(_row, rows)])


def _buffer(r: dict[str, Any]) -> str:
    return "—" if r["strategy"] == "joint" else f"{r['buffer']} {r['capacity']}"


def group(results: list[dict[str, Any]], capacities: Sequence[int]) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """(scenario, strategy, buffer label) -> the runs over seeds, in first-seen order."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        if r["strategy"] == "joint" or r["capacity"] in capacities:
            groups[(r["scenario"], r["strategy"], _buffer(r))].append(r)
    return groups


def _cost(runs: list[dict[str, Any]]) -> list[str]:
    ms = f"{fmt([r['consolidate_ms_mean'] for r in runs], 1)} / {max(r['consolidate_ms_max'] for r in runs):.1f}"
    return [fmt([r["samples_per_s"] for r in runs], 0), ms]


def main_table(results: list[dict[str, Any]], capacities: Sequence[int]) -> str:
    rows = []
    for (scenario, strategy, buffer), runs in group(results, capacities).items():
        if scenario == "drift":
            continue
        for setting in runs[0]["settings"]:
            metric = {k: [r["settings"][setting].get(k) for r in runs]
                      for k in ("final_acc", "forgetting", "bwt")}
            name = f"{scenario} ({setting})"
            if strategy == "joint":
                rows.append([name, f"joint ({len(runs)} seeds)", buffer, fmt(metric["final_acc"]),
                             "—", "—", "—", "—", "—", "—", "—"])
                continue
            rows.append([name, strategy, buffer, *(fmt(metric[k]) for k in ("final_acc", "forgetting", "bwt")),
                         fmt([r["preq_acc"] for r in runs]), _cost(runs)[0],
                         fmt([r["state_mib"] for r in runs], 2), fmt([r["peak_rss_mib"] for r in runs], 0),
                         _cost(runs)[1]])
    rows.sort(key=lambda r: r[0])  # stable: settings grouped, strategies in plan order
    return _table(COLUMNS, rows)


def _delay(values: list[int | None]) -> str:
    """Mean delay over the runs that alarmed, and how many did."""
    hit = [float(v) for v in values if v is not None]
    return f"{fmt(hit, 0)} ({len(hit)}/{len(values)})" if hit else f"none (0/{len(values)})"


def drift_table(results: list[dict[str, Any]], capacities: Sequence[int]) -> str:
    rows = []
    for (scenario, strategy, buffer), runs in group(results, capacities).items():
        if scenario != "drift":
            continue
        phases = [fmt([r["preq_phase"][i] for r in runs]) for i in range(len(PHASES))]
        final = fmt([r["settings"]["drift"]["matrix"][-1][-1] for r in runs])
        false = fmt([sum(d < r["ends"][0] for d in r["detections"]) for r in runs], 1)
        delays = [_delay([r["alarm_delays"][i] for r in runs]) for i in range(1, len(PHASES))]
        rows.append([strategy, buffer, *phases, fmt([r["preq_last"][1] for r in runs]), final, false,
                     *delays, *_cost(runs)])
    return _table(DRIFT_COLUMNS, rows)


def sweep_table(results: list[dict[str, Any]], strategy: str, kind: str) -> str:
    cells: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in results:
        if r["strategy"] == strategy and r["scenario"] != "drift" and r["buffer"] == kind:
            for setting, v in r["settings"].items():
                cells[(f"{r['scenario']} ({setting})", r["capacity"])].append(v["final_acc"])
    caps = sorted({c for _, c in cells})
    names = sorted({n for n, _ in cells})
    rows = [[n, *(fmt(cells.get((n, c), [])) for c in caps)] for n in names]
    return _table([f"final acc of {strategy} ({kind})", *(str(c) for c in caps)], rows)


def markdown(results: list[dict[str, Any]], capacities: Sequence[int], meta: dict[str, Any]) -> str:
    seeds = sorted({r["seed"] for r in results})
    head = (f"`{meta['command']}` — {meta['date']}, torch {torch.__version__}, "
            f"{platform.machine()}, {meta['threads']} torch thread(s); seeds {seeds}; "
            f"mean ± sample std over seeds. Hyperparameters: {meta['hparams']}.\n")
    parts = [head, _frozen(meta.get("frozen", {})), ""]
    if any(r["scenario"] != "drift" for r in results):
        parts += ["### Continual-learning scenarios\n", main_table(results, capacities), ""]
    if any(r["scenario"] == "drift" for r in results):
        parts += ["### Drifting stream (prequential accuracy per phase)\n",
                  drift_table(results, capacities), ""]
    if any(r["strategy"] == meta["default"] and r["capacity"] not in capacities for r in results):
        parts += [f"### Accuracy against buffer size ({meta['default']})\n",
                  sweep_table(results, meta["default"], meta["buffer"]), ""]
    parts += [REFERENCES]
    return "\n".join(parts)


def _frozen(hparams: dict[str, Any]) -> str:
    """What each run was built with: the service's settings, the tuned strategy parameters
    (MNEMO_STRATEGY_PARAMS) for the other strategies (service/bench/suite.py strategy_kw)."""
    from service.bench.runner import DEFAULTS

    def kw_text(kw: dict[str, Any]) -> str:
        return ", ".join(f"{k}={v:g}" for k, v in kw.items())

    strategies = "; ".join(f"{name} {kw_text(kw)}" for name, kw in hparams.get("strategies", {}).items()
                           if kw and name != DEFAULTS.strategy)
    detector = f"{DEFAULTS.drift_detector} {kw_text(DEFAULTS.drift_params)}".strip()
    default = f"{DEFAULTS.strategy} {kw_text(DEFAULTS.strategy_params) or 'at its defaults'}"
    return (f"Every run is the service's stream step built from the service's settings: "
            f"{default}, drift detector {detector}, rehearsal {DEFAULTS.rehearsal:g}, publish "
            f"cadence {DEFAULTS.publish_first_samples}–{DEFAULTS.publish_every_samples}, gate "
            f"tolerance {DEFAULTS.gate_tolerance:g}; accuracies read from the served version. "
            f"Other strategies' parameters (MNEMO_STRATEGY_PARAMS): "
            f"{strategies or 'their defaults'}.")


def splice(path: Path, section: str, start: str = START, end: str = END,
           heading: str = "## Continual-learning benchmark (`make bench`)") -> None:
    """Put the section between the markers in `path` (appended under `heading` the first time)."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{start}\n{section}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + f"\n\n{heading}\n\n" + block + "\n"
    path.write_text(text)
