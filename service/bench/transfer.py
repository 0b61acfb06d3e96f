"""Transfer (`python -m service bench --scenarios transfer`): a checkpoint trained offline on
the first two tasks, then the remaining three tasks streamed as the service learns them
(runner.process_batch), started from scratch (the untrained version 0 over the same declared
labels), from the checkpoint fine-tuning everything (MNEMO_INIT_CHECKPOINT), and from the
checkpoint with its trunk frozen (MNEMO_FREEZE=trunk). Three streams: split digits (tasks 1-2
are classes 0-3, the rest new classes: nothing shared but the pixels), permuted digits (the
same 10 labels under a new pixel permutation per task: no input structure shared) and shifted
digits (the same 10 labels, each task translated by one pixel another way: shared structure).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from models.checkpoint import labels_metadata, model_to_bytes
from models.learner import IncrementalLearner
from models.nets import MLPConfig, Standardizer, build_model
from models.strategies import make_strategy
from models.transfer import model_from_checkpoint
from service.bench import memory
from service.bench.datasets import Scenario, Segment, permuted_digits, shifted_digits, split_digits
from service.bench.metrics import fmt
from service.bench.runner import (
    BATCH,
    DEFAULTS,
    RunSpec,
    evaluate,
    new_stream_learner,
    process_batch,
    publish,
)
from service.bench.suite import load_hparams, strategy_kw
from service.worker.state import new_learner

PRETRAIN_TASKS = 2
PRETRAIN_EPOCHS = 5
EARLY = 200  # samples of each remaining task the early accuracy is read over
SHOTS = (8, 32)  # examples per new class the feature probe averages
STREAMS: dict[str, Callable[[int], Scenario]] = {"split": split_digits, "permuted": permuted_digits,
                                                  "shifted": shifted_digits}
# stream -> start -> (layers frozen, or None: no checkpoint; whether the checkpoint's labels
# are declared). The first start of each stream is the scratch every other is paired with.
VARIANTS: dict[str, dict[str, tuple[tuple[str, ...] | None, bool]]] = {
    "split": {"scratch": (None, False), "checkpoint, fine-tune": ((), False),
              "checkpoint, frozen trunk": (("trunk",), False),
              "checkpoint + its 4 labels, fine-tune": ((), True)},
    # Same label set: every start declares the checkpoint's 10 labels (scratch with untrained
    # head rows), so no arm loses early samples to a label it has no row for yet.
    "permuted": {"scratch + the 10 labels": (None, True), "scratch": (None, False),
                 "checkpoint + its 10 labels, fine-tune": ((), True),
                 "checkpoint + its 10 labels, frozen trunk": (("trunk",), True),
                 "checkpoint, fine-tune (trunk only)": ((), False)}}
VARIANTS["shifted"] = VARIANTS["permuted"]  # the same label set, so the same starts
START, END = "<!-- mnemo-bench-transfer:start -->", "<!-- mnemo-bench-transfer:end -->"


def pretrain(scenario: Scenario, seed: int, epochs: int = PRETRAIN_EPOCHS) -> tuple[bytes, dict[int, int]]:
    """Offline training (shuffled epochs) on the first tasks: the checkpoint a user brings,
    as model_to_bytes writes it (what GET /v1/versions/{v}/weights exports)."""
    end = scenario.ends[PRETRAIN_TASKS - 1]
    vocab: dict[int, int] = {}
    y = torch.tensor([vocab.setdefault(int(v), len(vocab)) for v in scenario.y[:end]])
    x = torch.from_numpy(scenario.x[:end])
    learner = IncrementalLearner(MLPConfig(scenario.input_dim, tuple(DEFAULTS.hidden), len(vocab)),
                                 make_strategy("naive"), seed=seed + 500)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for b in range(0, len(y), BATCH):
            learner.learn_many(x[order[b : b + BATCH]], y[order[b : b + BATCH]])
    labels = labels_metadata([str(c) for c in vocab])
    return model_to_bytes(learner.snapshot(), labels), vocab


def run_variant(scenario: Scenario, checkpoint: bytes, vocab: dict[int, int], variant: str,
                seed: int, strategy: str = DEFAULTS.strategy) -> dict[str, Any]:
    """Stream the remaining tasks (declaring no labels, or the checkpoint's): prequential
    accuracy over each task's first EARLY samples, final accuracy on their test sets (read as
    the stream is: class-incremental on split, domain-incremental on the others), cost."""
    freeze, declare = VARIANTS[scenario.name][variant]
    vocab = vocab if declare else {}
    spec = RunSpec(strategy, DEFAULTS.buffer, DEFAULTS.buffer_size, seed,
                   strategy_kw=strategy_kw(load_hparams(), strategy))
    s = new_stream_learner(spec, scenario.input_dim)
    config = MLPConfig(scenario.input_dim, tuple(DEFAULTS.hidden), len(vocab))
    s.learner = new_learner(s.settings, config)
    if freeze is not None:
        transferred = model_from_checkpoint(checkpoint, config, [str(c) for c in vocab])
        s.learner.model.load_state_dict(transferred.state_dict())
        s.learner.freeze(freeze)
    s.vocab, s.served, s.served_state = dict(vocab), s.learner.snapshot(), s.learner.state_dict()
    memory.reset_peak()
    early: list[list[bool]] = []
    for start, end in zip(scenario.starts()[PRETRAIN_TASKS:], scenario.ends[PRETRAIN_TASKS:],
                          strict=True):
        early.append([])
        for b in range(start, end, BATCH):
            e = min(b + BATCH, end)
            correct = process_batch(s, scenario.x[b:e], scenario.y[b:e])
            early[-1].extend(correct[: max(0, start + EARLY - b)].tolist())
    if s.unpublished:  # the service publishes the rest within seconds
        publish(s)
    remaining = Scenario(scenario.name, scenario.settings, scenario.x, scenario.y,
                         scenario.ends[PRETRAIN_TASKS:], scenario.segments[PRETRAIN_TASKS:])
    return {"stream": scenario.name, "variant": variant, "seed": seed, "strategy": strategy,
            "early_acc": float(np.mean(np.concatenate(early))),
            "early_by_task": [float(np.mean(t)) for t in early],
            "final_acc": float(np.mean(evaluate(s.served, remaining, scenario.settings[0], s.vocab))),
            "samples_per_s": s.trained / s.learn_seconds if s.learn_seconds else 0.0,
            "state_mib": memory.state_mib(s.learner, s.buffer),
            "peak_rss_mib": memory.peak_rss_mib()}


@torch.no_grad()
def feature_probe(scenario: Scenario, checkpoint: bytes, seed: int) -> dict[str, float]:
    """How usable each starting trunk's features are for tasks 3-5, learning aside:
    nearest-class-mean accuracy on their test sets, the means taken over the first SHOTS stream
    examples of each class, on the checkpoint's hidden layers and on an untrained network's
    (what scratch starts from). Both standardise with the remaining tasks' input statistics, so
    only the hidden layers differ. Split digits: one set of means over the new classes;
    permuted and shifted digits: each task its own means (the same labels, another input
    transform)."""
    a, b = scenario.starts()[PRETRAIN_TASKS], scenario.ends[-1]
    tasks = list(zip(scenario.starts()[PRETRAIN_TASKS:], scenario.ends[PRETRAIN_TASKS:],
                     scenario.segments[PRETRAIN_TASKS:], strict=True))
    if scenario.settings[0] != "domain":  # class-incremental: the tasks' classes read together
        tasks = [(a, b, Segment("3-5", np.concatenate([seg.x_test for _, _, seg in tasks]),
                                np.concatenate([seg.y_test for _, _, seg in tasks]), ()))]
    config = MLPConfig(scenario.input_dim, tuple(DEFAULTS.hidden), 0)
    trunks = {"checkpoint": model_from_checkpoint(checkpoint, config, []),
              "untrained": build_model(config, seed=seed)}
    out = {}
    for name, model in trunks.items():
        model.eval().standardizer.load_state_dict(Standardizer(scenario.input_dim).state_dict())
        model.standardizer.update(torch.from_numpy(scenario.x[a:b]))
        for shots in SHOTS:
            right = [_nearest_mean_correct(model, scenario.x[s:e], scenario.y[s:e], seg, shots)
                     for s, e, seg in tasks]
            out[f"{name} {shots}"] = float(np.mean(np.concatenate(right)))
    return out


def _nearest_mean_correct(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, test: Segment,
                          shots: int) -> np.ndarray:
    """Which of `test`'s samples the nearest class mean of features gets right, each class's
    mean over its first `shots` examples in (x, y)."""
    classes = sorted(set(y.tolist()))
    h = model.features(torch.from_numpy(x))
    means = torch.stack([h[torch.from_numpy(np.flatnonzero(y == c)[:shots])].mean(0)
                         for c in classes])
    guess = np.array(classes)[torch.cdist(model.features(torch.from_numpy(test.x_test)),
                                          means).argmin(1).numpy()]
    return guess == test.y_test


def run(seeds: Sequence[int], log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    results = []
    for stream, make in STREAMS.items():
        for seed in seeds:
            scenario = make(seed)
            start = time.perf_counter()
            checkpoint, vocab = pretrain(scenario, seed)
            log(f"transfer  {stream} pretrain seed {seed} ({time.perf_counter() - start:.1f} s)")
            results.append({"stream": stream, "seed": seed,
                            "probe": feature_probe(scenario, checkpoint, seed)})
            log(f"transfer  {stream} feature probe seed {seed}: {results[-1]['probe']}")
            for variant in VARIANTS[stream]:
                start = time.perf_counter()
                r = run_variant(scenario, checkpoint, vocab, variant, seed)
                results.append(r)
                by_task = ", ".join(f"{a:.3f}" for a in r["early_by_task"])
                log(f"transfer  {stream} {variant:12s} seed {seed} early {r['early_acc']:.3f} "
                    f"(by task {by_task}) final {r['final_acc']:.3f} "
                    f"({time.perf_counter() - start:.1f} s)")
    return results


# stream -> (what its tasks 1-2 are, how its final accuracy is read, its tasks 3-5's classes)
STREAM_TEXT = {"split": ("split-digits tasks 1-2 (classes 0-3)", "class-incr.", "classes 4-9"),
               "permuted": ("permuted-digits tasks 1-2 (identity and one pixel permutation, "
                            "classes 0-9)", "domain-incr.", "classes 0-9, new permutations"),
               "shifted": ("shifted-digits tasks 1-2 (clean and moved one pixel right, classes "
                           "0-9)", "domain-incr.", "classes 0-9, moved down, left, up")}


def markdown(results: list[dict[str, Any]], command: str) -> str:
    seeds = sorted({r["seed"] for r in results})
    tables = [_stream_table([r for r in results if r.get("stream", "split") == stream], stream)
              for stream in STREAMS]
    return (f"`{command}` — seeds {seeds}; mean ± sample std. Each stream: a checkpoint trained "
            f"{PRETRAIN_EPOCHS} shuffled epochs offline on its tasks 1-2, then tasks 3-5 streamed "
            f"once in batches of {BATCH} through the service's learning path; \"− scratch\" is "
            "each seed's difference to the stream's first row (gain: seeds above it).\n\n"
            + "\n\n".join(t for t in tables if t))


def _stream_table(results: list[dict[str, Any]], stream: str) -> str:
    pretrained, reading, new = STREAM_TEXT[stream]
    columns = ["start", "strategy", f"acc over each task's first {EARLY} samples",
               "− scratch (paired)", "gain", f"final acc (tasks 3-5, {reading})", "samples/s",
               "state MiB", "peak RSS MiB"]
    rows = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    probes = [r["probe"] for r in results if "probe" in r]
    results = [r for r in results if "variant" in r]
    if not results:
        return ""
    base = next(iter(VARIANTS[stream]))
    scratch = {r["seed"]: r["early_acc"] for r in results if r["variant"] == base}
    for variant in VARIANTS[stream]:
        runs = [r for r in results if r["variant"] == variant]
        if runs:
            diffs = [r["early_acc"] - scratch[r["seed"]] for r in runs if r["seed"] in scratch]
            gain, wins = ("–", "–") if variant == base else (
                fmt(diffs), f"{sum(d > 0 for d in diffs)}/{len(diffs)}")
            rows.append(f"| {variant} | {runs[0]['strategy']} | {fmt([r['early_acc'] for r in runs])} | {gain} | "
                        f"{wins} | {fmt([r['final_acc'] for r in runs])} | "
                        f"{fmt([r['samples_per_s'] for r in runs], 0)} | "
                        f"{fmt([r['state_mib'] for r in runs], 2)} | {fmt([r['peak_rss_mib'] for r in runs], 0)} |")
    labels = ("every start declares no labels unless it says so (the stream's labels then "
              "append classes)" if stream == "split" else "a start that says so declares the "
              "checkpoint's 10 labels at version 0 (scratch: untrained rows for them), else the "
              "stream's labels append classes")
    return (f"**{stream.capitalize()} digits.** Checkpoint: {pretrained}; {labels}.\n\n"
            + "\n".join(rows) + _probe_table(probes, new))


def _probe_table(probes: list[dict[str, float]], new: str) -> str:
    if not probes:
        return ""
    rows = [f"| {trunk} | " + " | ".join(fmt([p[f"{trunk} {k}"] for p in probes]) for k in SHOTS)
            + " |" for trunk in ("checkpoint", "untrained")]
    gain = " | ".join(fmt([p[f"checkpoint {k}"] - p[f"untrained {k}"] for p in probes])
                      for k in SHOTS)
    return (f"\n\nFeature probe (learning aside): nearest-class-mean accuracy on tasks 3-5's test "
            f"sets ({new}) from the first N stream examples of each class, on the trunk's "
            "features; both trunks standardise with the remaining tasks' input statistics.\n\n"
            "| trunk | " + " | ".join(f"N = {k}" for k in SHOTS) + " |\n| --- |"
            + " --- |" * len(SHOTS) + "\n" + "\n".join(rows)
            + f"\n| checkpoint − untrained (paired) | {gain} |")
