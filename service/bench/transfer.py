"""Transfer on split digits (`python -m service bench --scenarios transfer`): a checkpoint
trained offline on the first two tasks (classes 0-3), then the remaining three tasks streamed
as the service learns them (runner.process_batch), started three ways — from scratch (the
untrained version 0 over the same declared labels), from the checkpoint fine-tuning everything
(MNEMO_INIT_CHECKPOINT), and from the checkpoint with its trunk frozen (MNEMO_FREEZE=trunk).
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
from service.bench.datasets import Scenario, split_digits
from service.bench.metrics import fmt
from service.bench.runner import (
    BATCH,
    DEFAULTS,
    RunSpec,
    evaluate,
    new_stream_learner,
    parse_strategy,
    process_batch,
)
from service.bench.suite import load_hparams, strategy_kw

PRETRAIN_TASKS = 2
PRETRAIN_EPOCHS = 5
EARLY = 200  # samples of each remaining task the early accuracy is read over
SHOTS = (8, 32)  # examples per new class the feature probe averages
# name -> (layers frozen, or None: no checkpoint; whether the checkpoint's labels are declared)
VARIANTS: dict[str, tuple[tuple[str, ...] | None, bool]] = {
    "scratch": (None, False), "checkpoint, fine-tune": ((), False),
    "checkpoint, frozen trunk": (("trunk",), False),
    "checkpoint + its 4 labels, fine-tune": ((), True)}
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
    accuracy over each task's first EARLY samples, final class-incremental accuracy on their
    test sets, cost."""
    freeze, declare = VARIANTS[variant]
    vocab = vocab if declare else {}
    spec = RunSpec(strategy, DEFAULTS.buffer, DEFAULTS.buffer_size, seed,
                   strategy_kw=strategy_kw(load_hparams(), strategy))
    s = new_stream_learner(spec, scenario.input_dim)
    config = MLPConfig(scenario.input_dim, tuple(DEFAULTS.hidden), len(vocab))
    penalty, _ = parse_strategy(strategy)
    s.learner = IncrementalLearner(config, make_strategy(penalty, **spec.strategy_kw), seed=seed)
    if freeze is not None:
        transferred = model_from_checkpoint(checkpoint, config, [str(c) for c in vocab])
        s.learner.model.load_state_dict(transferred.state_dict())
        s.learner.freeze(freeze)
    s.vocab, s.served = dict(vocab), s.learner.snapshot()
    memory.reset_peak()
    early = []
    for start, end in zip(scenario.starts()[PRETRAIN_TASKS:], scenario.ends[PRETRAIN_TASKS:],
                          strict=True):
        for b in range(start, end, BATCH):
            e = min(b + BATCH, end)
            correct = process_batch(s, scenario.x[b:e], scenario.y[b:e])
            early.extend(correct[: max(0, start + EARLY - b)].tolist())
    remaining = Scenario(scenario.name, ("class",), scenario.x, scenario.y,
                         scenario.ends[PRETRAIN_TASKS:], scenario.segments[PRETRAIN_TASKS:])
    return {"variant": variant, "seed": seed, "strategy": strategy,
            "early_acc": float(np.mean(early)),
            "final_acc": float(np.mean(evaluate(s.learner.model, remaining, "class", s.vocab))),
            "samples_per_s": s.trained / s.learn_seconds if s.learn_seconds else 0.0,
            "state_mib": memory.state_mib(s.learner, s.buffer),
            "peak_rss_mib": memory.peak_rss_mib()}


@torch.no_grad()
def feature_probe(scenario: Scenario, checkpoint: bytes, seed: int) -> dict[str, float]:
    """How usable each starting trunk's features are for the new classes, learning aside:
    nearest-class-mean accuracy on tasks 3-5's test sets (classes 4-9), the means taken over
    the first SHOTS stream examples of each class, on the checkpoint's hidden layers and on an
    untrained network's (what scratch starts from). Both standardise with the remaining tasks'
    input statistics, so only the hidden layers differ."""
    a, b = scenario.starts()[PRETRAIN_TASKS], scenario.ends[-1]
    x, y = torch.from_numpy(scenario.x[a:b]), scenario.y[a:b]
    tests = scenario.segments[PRETRAIN_TASKS:]
    x_test = torch.from_numpy(np.concatenate([seg.x_test for seg in tests]))
    y_test = np.concatenate([seg.y_test for seg in tests])
    classes = sorted(set(y.tolist()))
    config = MLPConfig(scenario.input_dim, tuple(DEFAULTS.hidden), 0)
    trunks = {"checkpoint": model_from_checkpoint(checkpoint, config, []),
              "untrained": build_model(config, seed=seed)}
    out = {}
    for name, model in trunks.items():
        model.eval().standardizer.load_state_dict(Standardizer(scenario.input_dim).state_dict())
        model.standardizer.update(x)
        h, h_test = model.features(x), model.features(x_test)
        for shots in SHOTS:
            means = torch.stack([h[torch.from_numpy(np.flatnonzero(y == c)[:shots])].mean(0)
                                 for c in classes])
            guess = np.array(classes)[torch.cdist(h_test, means).argmin(1).numpy()]
            out[f"{name} {shots}"] = float(np.mean(guess == y_test))
    return out


def run(seeds: Sequence[int], log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    results = []
    for seed in seeds:
        scenario = split_digits(seed)
        start = time.perf_counter()
        checkpoint, vocab = pretrain(scenario, seed)
        log(f"transfer  pretrain seed {seed} ({time.perf_counter() - start:.1f} s)")
        results.append({"seed": seed, "probe": feature_probe(scenario, checkpoint, seed)})
        log(f"transfer  feature probe seed {seed}: {results[-1]['probe']}")
        for variant in VARIANTS:
            start = time.perf_counter()
            r = run_variant(scenario, checkpoint, vocab, variant, seed)
            results.append(r)
            log(f"transfer  {variant:12s} seed {seed} early {r['early_acc']:.3f} "
                f"final {r['final_acc']:.3f} ({time.perf_counter() - start:.1f} s)")
    return results


def markdown(results: list[dict[str, Any]], command: str) -> str:
    columns = ["start", "strategy", f"acc over each task's first {EARLY} samples",
               "− scratch (paired)", "final acc (tasks 3-5, class-incr.)", "samples/s",
               "state MiB", "peak RSS MiB"]
    rows = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    probes = [r["probe"] for r in results if "probe" in r]
    results = [r for r in results if "variant" in r]
    scratch = {r["seed"]: r["early_acc"] for r in results if r["variant"] == "scratch"}
    for variant in VARIANTS:
        runs = [r for r in results if r["variant"] == variant]
        if runs:
            gain = "–" if variant == "scratch" else fmt(
                [r["early_acc"] - scratch[r["seed"]] for r in runs if r["seed"] in scratch])
            rows.append(f"| {variant} | {runs[0]['strategy']} | {fmt([r['early_acc'] for r in runs])} | {gain} | "
                        f"{fmt([r['final_acc'] for r in runs])} | {fmt([r['samples_per_s'] for r in runs], 0)} | "
                        f"{fmt([r['state_mib'] for r in runs], 2)} | {fmt([r['peak_rss_mib'] for r in runs], 0)} |")
    seeds = sorted({r["seed"] for r in results})
    return (f"`{command}` — seeds {seeds}; mean ± sample std. Checkpoint: {PRETRAIN_EPOCHS} shuffled "
            f"epochs on split-digits tasks 1-2 (classes 0-3), then tasks 3-5 streamed once in "
            f"batches of {BATCH} through the service's learning path; every start declares "
            "no labels unless it says so (the stream's labels then append classes).\n\n"
            + "\n".join(rows) + _probe_table(probes))


def _probe_table(probes: list[dict[str, float]]) -> str:
    if not probes:
        return ""
    rows = [f"| {trunk} | " + " | ".join(fmt([p[f"{trunk} {k}"] for p in probes]) for k in SHOTS)
            + " |" for trunk in ("checkpoint", "untrained")]
    gain = " | ".join(fmt([p[f"checkpoint {k}"] - p[f"untrained {k}"] for p in probes])
                      for k in SHOTS)
    return ("\n\nFeature probe (learning aside): nearest-class-mean accuracy on tasks 3-5's test "
            "sets (classes 4-9) from the first N stream examples of each class, on the trunk's "
            "features; both trunks standardise with the remaining tasks' input statistics.\n\n"
            "| trunk | " + " | ".join(f"N = {k}" for k in SHOTS) + " |\n| --- |"
            + " --- |" * len(SHOTS) + "\n" + "\n".join(rows)
            + f"\n| checkpoint − untrained (paired) | {gain} |")
