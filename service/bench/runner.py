"""Feed a scenario through the service's learner code, batch by batch, and measure it.

`process_batch` is LearnerService._process (service/worker/loop.py) without Redis: score each
new label with the model before training on it (test-then-train), keep ~10% as holdout that is
never trained on, insert the rest into the replay buffer with a random u, learn in chunks of
TRAIN_CHUNK, and consolidate every N trained samples on a replay sample. Keep the two in step.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

import models.replay as replay_module
import models.strategies as strategies_module
from models.adaptation import respond_to_drift
from models.drift import DriftDetector, make_detector
from models.learner import IncrementalLearner
from models.nets import MLPConfig, MultiHeadMLP
from models.replay import ReplayBuffer
from models.strategies import make_strategy
from service.bench import memory
from service.bench.datasets import Scenario
from service.bench.metrics import accuracy_matrix_metrics, prequential_by_segment
from service.config import Settings
from service.worker.loop import CONSOLIDATION_SAMPLE, RECENT_WINDOW, train_chunks
from service.worker.removal import DRIFT_RELAX

DEFAULTS = Settings()  # the service's defaults: strategy, buffer, consolidation, holdout
BATCH = 16
EVAL_EVERY = 80  # samples between points of the accuracy-over-time curves


def parse_strategy(spec: str) -> tuple[str, bool]:
    """"online-ewc+replay" -> ("online-ewc", True), via models.strategies where it can."""
    parse = getattr(strategies_module, "parse_strategy", None)
    if parse is not None:
        return parse(spec)
    parts = spec.split("+")
    return next((p for p in parts if p != "replay"), "naive"), "replay" in parts


def make_buffer(kind: str, capacity: int, input_dim: int) -> ReplayBuffer:
    """models.replay.make_buffer when it exists, so new buffer kinds need no harness edit."""
    factory = getattr(replay_module, "make_buffer", None)
    if factory is not None:
        return factory(kind, capacity, input_dim)
    if kind != "reservoir":
        raise ValueError(f"unknown buffer {kind!r}: models.replay has no make_buffer")
    return replay_module.ReservoirBuffer(capacity, input_dim)


@dataclass
class StreamLearner:
    """What LearnerService keeps between batches, minus Redis."""

    learner: IncrementalLearner
    buffer: ReplayBuffer
    use_replay: bool
    rng: np.random.Generator
    consolidate_every: int = DEFAULTS.consolidate_every_samples
    holdout_fraction: float = DEFAULTS.holdout_fraction
    detector: DriftDetector | None = None
    # Called when the detector fires, after that batch is trained on: the adaptation hook.
    on_drift: Callable[[StreamLearner, int], None] | None = None
    # Publishing as the service does every N samples: a snapshot, and the strategy is told
    # (LwF distils the last published version). Scoring uses that snapshot only if score_served.
    publish_every: int = DEFAULTS.publish_every_samples
    score_served: bool = False
    served: nn.Module | None = None
    vocab: dict[int, int] = field(default_factory=dict)  # raw label -> class, first seen first
    since_consolidation: int = 0
    since_publish: int = 0
    samples_seen: int = 0
    trained: int = 0
    learn_seconds: float = 0.0
    consolidations: list[float] = field(default_factory=list)
    detections: list[int] = field(default_factory=list)
    # The newest trained samples: the post-drift evidence the adaptation fits the new concept on.
    recent: deque[tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=lambda: deque(maxlen=RECENT_WINDOW))


def predict(model: nn.Module, x: np.ndarray, mask: list[int] | None = None) -> np.ndarray:
    """Class indices; -1 while the model has no classes. `mask` restricts the argmax."""
    if model.config.num_classes == 0 or len(x) == 0:
        return np.full(len(x), -1)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    model.train(was_training)
    if mask is not None:
        keep = torch.full_like(logits, float("-inf"))
        keep[:, mask] = 0.0
        logits = logits + keep
    return logits.argmax(1).numpy()


def predict_tagged(model: nn.Module, x: np.ndarray, tag: str | None) -> np.ndarray:
    """Class indices from the tag's head where the model has one (per-tag heads, progressive
    columns), else from the default head, as /v1/predict answers."""
    if not isinstance(model, MultiHeadMLP) or model.tag_classes(tag) is None or len(x) == 0:
        return predict(model, x)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model.classify(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), tag)
    model.train(was_training)
    return out.numpy()


def consolidate(s: StreamLearner, recent_x: torch.Tensor, recent_y: torch.Tensor) -> None:
    """LearnerService._consolidate: a replay sample (up to 512) if any, else the recent batch."""
    if len(s.buffer):
        gen = torch.Generator().manual_seed(int(s.rng.integers(2**31)))
        x, y = s.buffer.sample(min(CONSOLIDATION_SAMPLE, len(s.buffer)), gen)
    else:
        x, y = recent_x, recent_y
    if len(y):
        s.consolidations.append(s.learner.consolidate(x, y))
    s.since_consolidation = 0
    if s.learner.strategy.scale < 1.0:  # re-anchored after a drift: full strength again
        s.learner.relax(1.0 / s.learner.strategy.scale)


def process_batch(s: StreamLearner, x: np.ndarray, labels: np.ndarray,
                  tag: str | None = None) -> np.ndarray:
    """One batch of feedback, as the service learns it; returns which predictions were right.
    `tag` (one for the batch): per-tag heads score and train it as MNEMO_HEADS=per-tag does."""
    y = np.array([s.vocab.setdefault(int(v), len(s.vocab)) for v in labels], dtype=np.int64)
    # Test-then-train, before ensure_classes: the served model has no row for a new label yet.
    scorer = s.served if s.score_served and s.served is not None else s.learner.model
    correct = predict_tagged(scorer, x, tag) == y
    s.learner.ensure_classes(len(s.vocab))
    fired = None
    if s.detector is not None:
        for i, ok in enumerate(correct):
            if s.detector.update(0.0 if ok else 1.0):
                s.detections.append(s.samples_seen + i)
                fired = s.samples_seen + i

    holdout = s.rng.random(len(y)) < s.holdout_fraction
    u = s.rng.random(len(y))
    for i in np.flatnonzero(~holdout):  # the holdout never enters the reservoir
        s.buffer.insert(torch.from_numpy(x[i].copy()), int(y[i]), float(u[i]))

    train_x, train_y = torch.from_numpy(x[~holdout]), torch.from_numpy(y[~holdout])
    buffer = s.buffer if s.use_replay else None
    tags = None
    if tag is not None and isinstance(s.learner.model, MultiHeadMLP):
        tags = [tag] * len(train_y)
        s.learner.ensure_tags(tags, train_y, DEFAULTS.max_tags)
    start = time.perf_counter()
    for chunk in train_chunks(len(train_y)):
        s.learner.learn_many(train_x[chunk], train_y[chunk], buffer,
                             None if tags is None else tags[chunk])
    s.learn_seconds += time.perf_counter() - start
    s.trained += len(train_y)
    s.recent.extend(zip(train_x, train_y, strict=True))
    # As LearnerService._process: the adaptation runs after the batch is learned.
    if fired is not None and s.on_drift is not None:
        s.on_drift(s, fired)
    s.since_consolidation += len(train_y)
    if s.since_consolidation >= s.consolidate_every:
        consolidate(s, train_x, train_y)

    s.samples_seen += len(y)
    s.since_publish += len(y)
    if s.since_publish >= s.publish_every:
        publish(s)
    return correct


def publish(s: StreamLearner) -> None:
    """What a passing publish does to the learner (the bench has no gate)."""
    s.served, s.since_publish = s.learner.snapshot(), 0
    on_publish = getattr(s.learner, "on_publish", None)
    if on_publish is not None:
        on_publish()


def _consolidate_on_drift(s: StreamLearner, position: int) -> None:
    empty = torch.empty(0, s.learner.config.input_dim), torch.empty(0, dtype=torch.int64)
    consolidate(s, *empty)


def _relax_on_drift(s: StreamLearner, position: int) -> None:
    s.learner.relax(0.1)  # DESIGN §6: relax the penalty on a detected concept drift


def _adapt_on_drift(s: StreamLearner, position: int) -> None:
    """The service's response (LearnerService._on_concept_drift): retire the buffered samples
    the new concept contradicts near the recent data, consolidate (anchor what the other
    domains taught), then relax the regulariser until the next scheduled consolidation
    (consolidate() restores it)."""
    buffer_x, buffer_y = s.buffer.items()
    recent_x = torch.stack([x for x, _ in s.recent])
    recent_y = torch.stack([y for _, y in s.recent])
    response = respond_to_drift(s.learner.snapshot(), buffer_x.clone(), buffer_y.clone(),
                                recent_x, recent_y)
    if response.retire.any():
        s.buffer.retire(response.retire)
    consolidate(s, recent_x, recent_y)  # restores full strength if a relax was pending
    s.learner.relax(DRIFT_RELAX)


# Adaptations the --on-drift option can name; "adapt" is what the service does.
ON_DRIFT: dict[str, Callable[[StreamLearner, int], None] | None] = {
    "none": None, "consolidate": _consolidate_on_drift, "relax": _relax_on_drift,
    "adapt": _adapt_on_drift}


def evaluate(model: nn.Module, scenario: Scenario, setting: str, vocab: dict[int, int]) -> list[float]:
    """Accuracy on each segment's fixed test set; a label the model never saw counts wrong."""
    out = []
    for seg in scenario.segments:
        y = np.array([vocab.get(int(v), -2) for v in seg.y_test])
        if setting == "tag":  # per-tag heads: the segment's name is its tag
            out.append(float(np.mean(predict_tagged(model, seg.x_test, seg.name) == y)))
            continue
        mask = [vocab[c] for c in seg.classes if c in vocab] if setting == "task" else None
        out.append(float(np.mean(predict(model, seg.x_test, mask) == y)))
    return out


@dataclass
class RunSpec:
    strategy: str
    buffer: str
    capacity: int
    seed: int
    strategy_kw: dict[str, Any] = field(default_factory=dict)
    detector: str = "adwin"
    detector_kw: dict[str, Any] = field(default_factory=dict)
    on_drift: str = "none"
    publish_every: int = DEFAULTS.publish_every_samples
    score_served: bool = False
    heads: str = "shared"  # "per-tag": a head per segment (its name is the tag), read by tag
    column_hidden: tuple[int, ...] | None = None  # progressive: later columns' sizes


def new_stream_learner(spec: RunSpec, input_dim: int) -> StreamLearner:
    penalty, use_replay = parse_strategy(spec.strategy)
    tag_heads = () if spec.heads == "per-tag" or penalty == "progressive" else None
    learner = IncrementalLearner(MLPConfig(input_dim, tuple(DEFAULTS.hidden), 0, tag_heads,
                                           penalty == "progressive", spec.column_hidden),
                                 make_strategy(penalty, **spec.strategy_kw), seed=spec.seed)
    # Version 0, the untrained model, is what the service serves before its first publish.
    return StreamLearner(
        learner, make_buffer(spec.buffer, spec.capacity, input_dim), use_replay,
        np.random.default_rng(spec.seed + 10_000),
        detector=make_detector(spec.detector, **spec.detector_kw),
        on_drift=ON_DRIFT[spec.on_drift], publish_every=spec.publish_every,
        score_served=spec.score_served, served=learner.snapshot())


def run_stream(scenario: Scenario, spec: RunSpec, keep_flags: bool = False) -> dict[str, Any]:
    """One pass over the stream; metrics per evaluation setting, cost, prequential accuracy."""
    s = new_stream_learner(spec, scenario.input_dim)
    progressive = parse_strategy(spec.strategy)[0] == "progressive"
    per_tag = spec.heads == "per-tag" or progressive
    # Progressive columns in the main benchmark: the default column read as usual, plus by tag.
    settings = (("tag",) if spec.heads == "per-tag"
                else (*scenario.settings, "tag") if progressive else scenario.settings)
    flags = np.zeros(len(scenario.y), dtype=bool)
    rows: dict[str, list[list[float]]] = {k: [] for k in settings}
    curves: dict[str, list[list[float]]] = {k: [] for k in settings}
    memory.reset_peak()
    next_eval = EVAL_EVERY
    for seg, start, end in zip(scenario.segments, scenario.starts(), scenario.ends, strict=True):
        for b in range(start, end, BATCH):  # batches never straddle segments: exact R matrix
            e = min(b + BATCH, end)
            flags[b:e] = process_batch(s, scenario.x[b:e], scenario.y[b:e],
                                       seg.name if per_tag else None)
            if e >= next_eval or e == end:
                for k in settings:
                    curves[k].append([e, *evaluate(s.learner.model, scenario, k, s.vocab)])
                next_eval = e + EVAL_EVERY
        for k in settings:
            rows[k].append(curves[k][-1][1:])
    result: dict[str, Any] = {
        "scenario": scenario.name, "strategy": spec.strategy, "buffer": spec.buffer,
        "capacity": spec.capacity, "seed": spec.seed, "heads": spec.heads,
        "hidden": list(s.learner.config.hidden),
        "settings": {k: {**accuracy_matrix_metrics(rows[k]), "matrix": rows[k], "curve": curves[k]}
                     for k in settings},
        **prequential_by_segment(flags, scenario.ends),
        "samples_per_s": s.trained / s.learn_seconds if s.learn_seconds else 0.0,
        "state_mib": memory.state_mib(s.learner, s.buffer),
        "peak_rss_mib": memory.peak_rss_mib(),
        "consolidate_ms_mean": 1e3 * float(np.mean(s.consolidations)) if s.consolidations else 0.0,
        "consolidate_ms_max": 1e3 * max(s.consolidations, default=0.0),
        "detections": s.detections,
        "alarm_delays": alarm_delays(s.detections, scenario.ends),
        "segment_names": [seg.name for seg in scenario.segments], "ends": list(scenario.ends),
    }
    if keep_flags:
        result["flags"] = flags.astype(int).tolist()
    return result


def alarm_delays(detections: list[int], ends: tuple[int, ...]) -> list[int | None]:
    """Per segment: samples from its start to the first alarm inside it (None: no alarm). For
    the first segment any alarm is a false one; for the others it is the detection delay."""
    starts = (0, *ends[:-1])
    return [next((d - a for d in detections if a <= d < b), None)
            for a, b in zip(starts, ends, strict=True)]


def run_joint(scenario: Scenario, seed: int, epochs: int) -> dict[str, Any]:
    """The upper bound: the same learner, i.i.d. over the whole stream for several epochs."""
    vocab: dict[int, int] = {}
    y = torch.tensor([vocab.setdefault(int(v), len(vocab)) for v in scenario.y])
    x = torch.from_numpy(scenario.x)
    learner = IncrementalLearner(MLPConfig(scenario.input_dim, tuple(DEFAULTS.hidden)),
                                 make_strategy("naive"), seed=seed)
    learner.ensure_classes(len(vocab))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for b in range(0, len(y), BATCH):
            idx = order[b : b + BATCH]
            learner.learn_many(x[idx], y[idx])
    return {"scenario": scenario.name, "strategy": "joint", "seed": seed,
            "settings": {k: {"final_acc": float(np.mean(evaluate(learner.model, scenario, k, vocab)))}
                         for k in scenario.settings}}
