"""Soft parameter sharing across tags (`python -m service bench --scenarios soft`).

Related tags of unequal size: the digits under one input transformation per tag, the largest tag
with 10× the labels of the smallest, interleaved batch by batch (each batch one tag, drawn in
proportion to what each tag has left, so all end together). Three ways to serve them, each the
service's stream step with its defaults (online-ewc+replay): MNEMO_HEADS=soft (a trunk copy and a
head per tag, pulled toward their mean), hard sharing (MNEMO_HEADS=per-tag: one trunk, a head per
tag) and independent per-tag models (one shared-head learner per tag, fed only that tag's
batches). Final accuracy per tag, read by tag from the served version, on the digits' fixed test
split under that tag's transformation; every arm of a seed sees the same stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from service.bench import memory
from service.bench.datasets import _digits, translate
from service.bench.metrics import fmt
from service.bench.runner import (
    BATCH,
    DEFAULTS,
    RunSpec,
    StreamLearner,
    new_stream_learner,
    predict_tagged,
    process_batch,
    publish,
)
from service.bench.suite import load_hparams, strategy_kw

# (tag, labels in the stream, transformation): related tags — the same digits and labels, seen
# through another scanner: shifted, flipped upside down, moved up a pixel. The largest has 10× the smallest's labels.
Transform = Callable[[np.ndarray], np.ndarray]
TAGS: tuple[tuple[str, int, Transform], ...] = (
    ("clean", 1000, lambda x: x),
    ("shifted", 400, lambda x: translate(x, 1, 1)),
    ("flipped", 200, lambda x: x.reshape(-1, 8, 8)[:, ::-1, :].reshape(len(x), 64)),
    ("up", 100, lambda x: translate(x, -1, 0)),
)
ARMS = ("soft", "hard (per-tag)", "independent")
START, END = "<!-- mnemo-bench-soft:start -->", "<!-- mnemo-bench-soft:end -->"


def stream(seed: int, tags: Sequence[tuple[str, int, Transform]] = TAGS
           ) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The batches in stream order (tag, x, raw labels) and each tag's test set."""
    x_tr, y_tr, x_te, y_te = _digits(False)
    rng = np.random.default_rng(seed)
    left: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    tests = {}
    for name, size, transform in tags:
        idx = rng.permutation(len(y_tr))[:size]  # each tag its own draw of the training digits
        xs, ys = transform(x_tr[idx]).astype(np.float32), y_tr[idx]
        left[name] = [(xs[b : b + BATCH], ys[b : b + BATCH]) for b in range(0, size, BATCH)]
        tests[name] = (transform(x_te).astype(np.float32), y_te)
    batches = []
    while any(left.values()):
        names = [n for n in left if left[n]]
        weights = np.array([len(left[n]) for n in names], dtype=float)
        name = names[rng.choice(len(names), p=weights / weights.sum())]
        x, y = left[name].pop(0)
        batches.append((name, x, y))
    return batches, tests


def _accuracy(s: StreamLearner, tests: dict[str, tuple[np.ndarray, np.ndarray]],
              tag: str) -> float:
    x, y = tests[tag]
    want = np.array([s.vocab.get(int(v), -2) for v in y])
    return float(np.mean(predict_tagged(s.served, x, tag) == want))


def run_arm(arm: str, seed: int, strength: float | None = None,
            tags: Sequence[tuple[str, int, Transform]] = TAGS,
            strategy: str = DEFAULTS.strategy,
            overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """One arm on one seed; strength and overrides (other settings, e.g. soft_layers) change
    only the soft arm."""
    batches, tests = stream(seed, tags)
    base = RunSpec(strategy, DEFAULTS.buffer, DEFAULTS.buffer_size, seed,
                   strategy_kw=strategy_kw(load_hparams(), strategy))
    memory.reset_peak()
    start = time.perf_counter()
    if arm == "independent":  # one learner per tag, each its own stream of that tag's batches
        learners = {name: new_stream_learner(base, 64) for name, _, _ in tags}
        for name, x, y in batches:
            process_batch(learners[name], x, y, None)
        for s in learners.values():
            if s.unpublished:
                publish(s)
        final = {name: _accuracy(learners[name], tests, name) for name, _, _ in tags}
        state = sum(memory.state_mib(s.learner, s.buffer) for s in learners.values())
    else:
        soft = dict(overrides or {})
        if strength is not None:
            soft["soft_sharing_strength"] = strength
        spec = replace(base, heads="soft" if arm == "soft" else "per-tag",
                       overrides=soft if arm == "soft" else {})
        s = new_stream_learner(spec, 64)
        for name, x, y in batches:
            process_batch(s, x, y, name)
        if s.unpublished:
            publish(s)
        final = {name: _accuracy(s, tests, name) for name, _, _ in tags}
        state = memory.state_mib(s.learner, s.buffer)
    samples = sum(len(y) for _, _, y in batches)
    return {"arm": arm, "seed": seed, "strength": strength, "strategy": strategy, "final": final, "state_mib": state,
            "seconds": time.perf_counter() - start, "samples": samples}


# The service's default, and naive (no replay): with replay, only the shared trunk and the default
# head learn from replayed and rehearsed rows (they carry no tag), which the independent models
# do not suffer from; naive shows the sharing without that difference.
STRATEGIES = (DEFAULTS.strategy, "naive")


def run(seeds: Sequence[int], strategies: Sequence[str] = STRATEGIES,
        log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    results = []
    for seed in seeds:
        for strategy in strategies:
            for arm in ARMS:
                r = run_arm(arm, seed, strategy=strategy)
                results.append(r)
                log(f"soft      {arm:15s} {strategy:18s} seed {seed} "
                    + " ".join(f"{k} {v:.3f}" for k, v in r["final"].items())
                    + f" ({r['seconds']:.1f} s)")
    return results


def markdown(results: list[dict[str, Any]], command: str) -> str:
    tags = list(results[0]["final"])
    seeds = sorted({r["seed"] for r in results})
    by = {(r["strategy"], r["arm"], r["seed"]): r for r in results}
    rows = ["| strategy | arm | " + " | ".join(f"{t} ({n})" for t, n, _ in TAGS if t in tags)
            + " | seconds per run | state MiB |", "|" + " --- |" * (len(tags) + 4)]
    for strategy in dict.fromkeys(r["strategy"] for r in results):
        for arm in ARMS:
            runs = [by[(strategy, arm, s)] for s in seeds]
            rows.append(f"| {strategy} | {arm} | "
                        + " | ".join(fmt([r["final"][t] for r in runs]) for t in tags)
                        + f" | {fmt([r['seconds'] for r in runs], 1)} | "
                        f"{fmt([r['state_mib'] for r in runs], 2)} |")
        for other in ARMS[1:]:  # paired by seed: soft minus the other arm
            diff = {t: [by[(strategy, "soft", s)]["final"][t] - by[(strategy, other, s)]["final"][t]
                        for s in seeds] for t in tags}
            rows.append(f"| {strategy} | soft − {other} (paired) | " + " | ".join(
                f"{fmt(diff[t])} ({sum(d > 0 for d in diff[t])}/{len(seeds)})" for t in tags)
                + " | | |")
    return (f"`{command}` — seeds {seeds}; mean ± sample std; final accuracy per tag (labels in "
            f"the stream), read by tag from the served version on the digits' test split under "
            f"the tag's transformation; buffer {DEFAULTS.buffer} {DEFAULTS.buffer_size}, soft "
            f"sharing strength {DEFAULTS.soft_sharing_strength:g}. Paired rows: soft minus the "
            "other arm, seed by seed (in brackets: seeds where soft is ahead).\n\n"
            + "\n".join(rows))
