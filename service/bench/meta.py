"""Meta-learned starts (`python -m service bench --scenarios meta`): shifted digits (the same 10
labels, each task seen through its own one-pixel translation) streamed task after task through
the service's learning path (runner.process_batch) with MNEMO_HEADS=per-tag, each task's name
its tag. Three starts for each new tag's head: the plain initialisation; the network from an
MNEMO_INIT_CHECKPOINT trained offline on tasks 1-2 (as service/bench/transfer.py makes it);
MNEMO_META_START=reptile; and (meta+steps) the same with its meta-learned per-parameter step
sizes. Read: each new tag's first FIRST labels (tasks 3-5, where every
start has seen tasks 1-2), answered test-then-train by the learner's current model (a new tag's
own head as soon as it has one) and by the served version; final accuracy by tag on every
task's test set. Each task is cut to TASK_LENGTH samples to keep 10 seeds affordable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from models.meta_start import MetaStart, ReptileParams
from models.transfer import model_from_checkpoint
from service.bench import memory
from service.bench.datasets import Scenario, shifted_digits
from service.bench.metrics import fmt
from service.bench.runner import (
    BATCH,
    DEFAULTS,
    RunSpec,
    evaluate,
    new_stream_learner,
    predict_tagged,
    process_batch,
    publish,
)
from service.bench.transfer import pretrain
from service.worker.state import new_learner

FIRST = 50  # labels of each new tag the early accuracy is read over
TASK_LENGTH = 400  # samples streamed per task
READ_FROM = 2  # tasks before this one are the checkpoint's: not read
STARTS = ("plain", "checkpoint", "meta-start", "meta+steps")
# meta+steps: the meta-start with its meta-learned per-parameter step sizes (ReptileParams.
# step_sizes, off by default), paired by seed against the meta-start alone.
STEPS = "meta+steps"
# Where a new tag's parameters live -> the strategy that makes them: a head over the shared
# trunk (MNEMO_HEADS=per-tag, the default strategy), or a column of its own (progressive).
MODES = {"per-tag": DEFAULTS.strategy, "columns": "progressive+replay"}
START, END = "<!-- mnemo-bench-meta:start -->", "<!-- mnemo-bench-meta:end -->"


def shortened(scenario: Scenario, length: int = TASK_LENGTH) -> Scenario:
    """The scenario with each task cut to its first `length` samples (test sets unchanged)."""
    keep = np.concatenate([np.arange(a, min(b, a + length))
                           for a, b in zip(scenario.starts(), scenario.ends, strict=True)])
    ends = tuple(int(v) for v in np.cumsum([min(b - a, length) for a, b in
                                            zip(scenario.starts(), scenario.ends, strict=True)]))
    return Scenario(scenario.name, scenario.settings, scenario.x[keep], scenario.y[keep], ends,
                    scenario.segments)


def run_start(scenario: Scenario, start: str, seed: int,
              checkpoint: tuple[bytes, dict[int, int]] | None = None,
              strategy: str = DEFAULTS.strategy) -> dict[str, Any]:
    spec = RunSpec(strategy, DEFAULTS.buffer, DEFAULTS.buffer_size, seed, heads="per-tag",
                   overrides={"meta_start": "reptile" if start in ("meta-start", STEPS) else "none"})
    s = new_stream_learner(spec, scenario.input_dim)
    if start == STEPS:
        assert s.step.meta_start is not None
        s.step.meta_start = MetaStart(ReptileParams(step_sizes=True), seed=s.step.meta_start.seed)
    if start == "checkpoint":  # version 0 from the checkpoint, its 10 labels declared
        assert checkpoint is not None
        blob, vocab = checkpoint
        config = s.settings.network(len(vocab))
        s.learner = new_learner(s.settings, config)
        transferred = model_from_checkpoint(blob, config, [str(c) for c in vocab])
        s.learner.model.load_state_dict(transferred.state_dict())
        s.vocab, s.served, s.served_state = dict(vocab), s.learner.snapshot(), s.learner.state_dict()
    memory.reset_peak()
    first_learner: list[list[bool]] = []
    first_served: list[list[bool]] = []
    began = time.perf_counter()
    for task, (seg, a, b) in enumerate(zip(scenario.segments, scenario.starts(), scenario.ends,
                                           strict=True)):
        learner_right: list[bool] = []
        served_right: list[bool] = []
        for lo in range(a, b, BATCH):
            hi = min(lo + BATCH, b)
            x, labels = scenario.x[lo:hi], scenario.y[lo:hi]
            if lo - a < FIRST:  # test-then-train on the learner's model, before this batch
                y = np.array([s.vocab.get(int(v), -2) for v in labels])
                learner_right.extend((predict_tagged(s.learner.model, x, seg.name) == y).tolist())
            served_right.extend(process_batch(s, x, labels, seg.name).tolist())
        if task >= READ_FROM:
            first_learner.append(learner_right[:FIRST])
            first_served.append(served_right[:FIRST])
    if s.unpublished:
        publish(s)
    return {"start": start, "seed": seed, "strategy": strategy,
            "first_learner": float(np.mean(np.concatenate(first_learner))),
            "first_served": float(np.mean(np.concatenate(first_served))),
            "first_by_task": [float(np.mean(t)) for t in first_learner],
            "final_acc": float(np.mean(evaluate(s.served, scenario, "tag", s.vocab))),
            "seconds": time.perf_counter() - began,
            "state_mib": memory.state_mib(s.learner, s.buffer)}


def run(seeds: Sequence[int], log: Callable[[str], None] = print,
        modes: Sequence[str] = tuple(MODES)) -> list[dict[str, Any]]:
    results = []
    for seed in seeds:
        scenario = shortened(shifted_digits(seed))
        checkpoint = pretrain(scenario, seed)  # offline, on tasks 1-2 (as the transfer bench)
        for mode, start in ((m, s) for m in modes for s in STARTS):
            r = {**run_start(scenario, start, seed, checkpoint, MODES[mode]), "mode": mode}
            results.append(r)
            log(f"meta      {mode:8s} {start:11s} seed {seed} first {FIRST}: learner "
                f"{r['first_learner']:.3f} served {r['first_served']:.3f} "
                f"(by task {', '.join(f'{v:.2f}' for v in r['first_by_task'])}) "
                f"final {r['final_acc']:.3f} ({r['seconds']:.1f} s)")
    return results


def markdown(results: list[dict[str, Any]], command: str) -> str:
    seeds = sorted({r["seed"] for r in results})
    steps = any(r["start"] == STEPS for r in results)  # the step-size arm ran: its columns
    columns = ["new tag gets", "start", f"learner, first {FIRST} labels of each new tag",
               "meta-start − it (paired)", "seeds gaining",
               *([f"{STEPS} − it (paired)", "seeds gaining"] if steps else []),
               f"served, first {FIRST}", "final acc (by tag)", "meta-start − it",
               *([f"{STEPS} − it"] if steps else []), "s per run", "state MiB"]
    rows = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for mode in dict.fromkeys(r.get("mode", "per-tag") for r in results):
        by = {(r["start"], r["seed"]): r for r in results if r.get("mode", "per-tag") == mode}
        meta = [by[("meta-start", s)] for s in seeds]
        boosted = [by[(STEPS, s)] for s in seeds] if steps else []
        for start in STARTS if steps else STARTS[:-1]:
            runs = [by[(start, s)] for s in seeds]
            same = start in ("meta-start", STEPS)
            gains = [m["first_learner"] - r["first_learner"] for m, r in zip(meta, runs, strict=True)]
            final = [m["final_acc"] - r["final_acc"] for m, r in zip(meta, runs, strict=True)]
            early_steps = [m["first_learner"] - r["first_learner"]
                           for m, r in zip(boosted, runs, strict=True)]
            final_steps = [m["final_acc"] - r["final_acc"] for m, r in zip(boosted, runs, strict=True)]
            mine = start == STEPS
            rows.append("| " + " | ".join([
                "a head" if mode == "per-tag" else "a column", start,
                fmt([r["first_learner"] for r in runs]), "–" if same else fmt(gains),
                "–" if same else f"{sum(g > 0 for g in gains)}/{len(gains)}",
                *(["–" if mine else fmt(early_steps),
                   "–" if mine else f"{sum(g > 0 for g in early_steps)}/{len(early_steps)}"]
                  if steps else []),
                fmt([r["first_served"] for r in runs]), fmt([r["final_acc"] for r in runs]),
                "–" if same else fmt(final), *(["–" if mine else fmt(final_steps)] if steps else []),
                fmt([r["seconds"] for r in runs], 1),
                fmt([r["state_mib"] for r in runs], 2)]) + " |")
    return (f"`{command}` — seeds {seeds}; mean ± sample std, differences paired by seed. "
            f"Shifted digits, the first {TASK_LENGTH} samples of each task, batches of {BATCH}; "
            f"a head: MNEMO_HEADS=per-tag with {MODES['per-tag']}; a column: {MODES['columns']}. "
            f"Early accuracy: the first {FIRST} labels of tasks {READ_FROM + 1}-5 (every start "
            "has seen tasks 1-2; the checkpoint was trained offline on them), each answered before "
            "it is learned, by the learner's current model (\"learner\") and by the served "
            "version (\"served\"); final accuracy on every task's test set, read by tag."
            "\n\n" + "\n".join(rows))
