"""PNG plots of the benchmark (matplotlib, a dev dependency: skipped with a note without it)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from service.bench.datasets import PHASE_LENGTH, PHASES
from service.bench.metrics import mean_std

ROLLING = 100  # samples in the drifting stream's rolling prequential accuracy


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    return plt


def accuracy_over_time(results: list[dict[str, Any]], capacity: int, kind: str,
                       out: Path) -> list[Path]:
    """Per scenario and setting: one panel per strategy, each task's test accuracy over the
    stream (first seed, one buffer)."""
    plt = _pyplot()
    panels: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    seed = min(r["seed"] for r in results)
    for r in results:
        if (r["strategy"] != "joint" and r["seed"] == seed and r["capacity"] == capacity
                and r["buffer"] == kind):
            for setting in r["settings"]:
                panels[(r["scenario"], setting)].append(r)
    paths = []
    for (scenario, setting), runs in panels.items():
        cols = min(4, len(runs))
        rows = -(-len(runs) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False,
                                 sharex=True, sharey=True)
        for ax, r in zip(axes.flat, runs, strict=False):
            curve = np.array(r["settings"][setting]["curve"])
            names = r.get("segment_names") or [f"task {t}" for t in range(curve.shape[1] - 1)]
            for t, name in enumerate(names, start=1):
                ax.plot(curve[:, 0], curve[:, t], label=name)
            ax.set_title(f"{r['strategy']} ({r['buffer']} {capacity})", fontsize=9)
            ax.set_ylim(0, 1.02)
        for ax in axes.flat[len(runs):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7)
        fig.supxlabel("samples seen")
        fig.supylabel("test accuracy")
        label = scenario if setting == scenario else f"{scenario} ({setting})"
        fig.suptitle(f"{label}: each task's accuracy over time, seed {seed}")
        fig.tight_layout()
        stem = scenario if setting == scenario else f"{scenario}_{setting}"
        path = out / f"{stem}_accuracy_over_time.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def drift(results: list[dict[str, Any]], capacity: int, kind: str, out: Path) -> list[Path]:
    """Rolling prequential accuracy along the drifting stream, and the mean per phase."""
    runs = [r for r in results if r["scenario"] == "drift" and r["capacity"] == capacity
            and r["buffer"] == kind]
    if not runs:
        return []
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8))
    for ax in (top, bottom):  # more strategies than the default 10 colours
        ax.set_prop_cycle(color=plt.cm.tab20.colors)
    by_strategy: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        by_strategy[f"{r['strategy']} ({r['buffer']})"].append(r)
    for name, group in by_strategy.items():
        flags = next((r["flags"] for r in group if "flags" in r), None)
        if flags is not None:
            rolling = np.convolve(flags, np.ones(ROLLING) / ROLLING, mode="valid")
            top.plot(np.arange(ROLLING, len(flags) + 1), rolling, label=name, lw=1)
    for i in range(1, len(PHASES)):
        top.axvline(i * PHASE_LENGTH, color="grey", ls=":")
    top.set(title=f"drifting stream, {kind} buffer {capacity}: prequential accuracy "
                  f"(rolling {ROLLING}), first seed", xlabel="samples", ylim=(0, 1.02))
    top.legend(fontsize=7, ncol=2)
    width = 0.8 / len(by_strategy)
    for i, (name, group) in enumerate(by_strategy.items()):
        stats = [mean_std([r["preq_phase"][p] for r in group]) for p in range(len(PHASES))]
        bottom.bar(np.arange(len(PHASES)) + i * width, [m for m, _ in stats], width,
                   yerr=[s for _, s in stats], label=name)
    bottom.set_xticks(np.arange(len(PHASES)) + 0.4 - width / 2, PHASES)
    bottom.set(ylabel="prequential accuracy (mean ± std over seeds)", ylim=(0, 1.02))
    fig.tight_layout()
    path = out / "drift_per_phase.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [path]


def buffer_sweep(results: list[dict[str, Any]], strategy: str, kind: str, out: Path) -> list[Path]:
    cells: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        if r["strategy"] == strategy and r["scenario"] != "drift" and r["buffer"] == kind:
            for setting, v in r["settings"].items():
                cells[f"{r['scenario']} ({setting})"][r["capacity"]].append(v["final_acc"])
    if not any(len(c) > 2 for c in cells.values()):
        return []
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, by_cap in cells.items():
        caps = sorted(by_cap)
        stats = [mean_std(by_cap[c]) for c in caps]
        ax.errorbar(caps, [m for m, _ in stats], yerr=[s for _, s in stats], label=name, marker="o")
    ax.set(xscale="log", xlabel="replay buffer size", ylabel="final average accuracy",
           title=f"{strategy} ({kind}): accuracy against buffer size", ylim=(0, 1.02))
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "buffer_size.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [path]


def write_all(results: list[dict[str, Any]], capacity: int, kind: str, default: str,
              out: Path) -> list[str]:
    """Every plot; an empty list and no error where matplotlib is not installed."""
    try:
        _pyplot()
    except ImportError:
        return []
    paths = accuracy_over_time(results, capacity, kind, out) + drift(results, capacity, kind, out)
    return [str(p) for p in paths + buffer_sweep(results, default, kind, out)]
