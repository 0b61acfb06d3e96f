"""Feed a scenario through the learner's own stream step (models/stream.py), batch by batch,
and measure it.

The step, its learner, buffer, detector and hyperparameters are built from a `Settings` by the
same factories the learner process uses (service/worker/state.py), so a run measures the
service's code with the service's defaults; a RunSpec only overrides settings. What the learner
process adds around the step is done here in memory, the same way: the holdout rule by item id,
buffer inserts with a random u, publishing on the step's cadence through the same gate (a
refused candidate sends the learner back to the served version's state, and its replay inserts
leave the buffer), and scoring each label with the *served* version before training on it.
Labels arrive slower than the learner trains (as at 200 labels/s), so after each batch the step
spends its whole rehearsal budget, as the learner process does while it waits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from models.gate import gate, predict_classes
from models.learner import IncrementalLearner
from models.nets import MLPConfig, MultiHeadMLP
from models.replay import GENERATIVE, ReplayBuffer, make_buffer
from models.strategies import make_strategy, parse_strategy
from models.stream import StreamStep, is_holdout
from service.bench import memory
from service.bench.datasets import Scenario
from service.bench.metrics import accuracy_matrix_metrics, prequential_by_segment
from service.config import Settings
from service.worker.state import new_learner, new_step

DEFAULTS = Settings()  # the service's defaults: strategy, buffer, consolidation, holdout
BATCH = 16
EVAL_EVERY = 80  # samples between points of the accuracy-over-time curves


@dataclass
class RunSpec:
    strategy: str
    buffer: str
    capacity: int
    seed: int
    strategy_kw: dict[str, Any] = field(default_factory=dict)
    detector: str = DEFAULTS.drift_detector
    detector_kw: dict[str, Any] = field(default_factory=dict)
    heads: str = "shared"  # "per-tag": a head per segment (its name is the tag), read by tag
    column_hidden: tuple[int, ...] | None = None  # progressive: later columns' sizes
    overrides: dict[str, Any] = field(default_factory=dict)  # any other setting

    def settings(self, input_dim: int) -> Settings:
        values: dict[str, Any] = {
            "input_dim": input_dim, "strategy": self.strategy, "buffer": self.buffer,
            "buffer_size": self.capacity, "strategy_params": self.strategy_kw,
            "drift_detector": self.detector, "drift_params": self.detector_kw,
            "heads": self.heads, "column_hidden": list(self.column_hidden or ())}
        return Settings(**{**values, **self.overrides})


@dataclass
class StreamLearner:
    """The learner process's state around the stream step, in memory."""

    step: StreamStep
    settings: Settings
    served: nn.Module
    rng: np.random.Generator
    vocab: dict[int, int] = field(default_factory=dict)  # raw label -> class, first seen first
    served_state: dict[str, torch.Tensor] | None = None  # the learner as the served version had it
    unpublished: int = 0
    samples_seen: int = 0
    trained: int = 0
    learn_seconds: float = 0.0
    published: int = 0
    rejected: int = 0
    detections: list[int] = field(default_factory=list)

    @property
    def learner(self) -> IncrementalLearner:
        return self.step.learner

    @learner.setter
    def learner(self, learner: IncrementalLearner) -> None:
        self.step.learner = learner
        self.served_state = learner.state_dict()

    @property
    def buffer(self) -> ReplayBuffer:
        assert self.step.buffer is not None
        return self.step.buffer


def process_batch(s: StreamLearner, x: np.ndarray, labels: np.ndarray,
                  tag: str | None = None) -> np.ndarray:
    """One batch of feedback, as the learner process learns a read; returns which of the
    served version's answers were right. `tag` (one for the batch) routes the per-tag modes."""
    y = np.array([s.vocab.setdefault(int(v), len(s.vocab)) for v in labels], dtype=np.int64)
    tags = [tag or ""] * len(y)
    scored = s.step.score(s.served, x, y, tags)
    if scored.drifted:
        s.detections.append(s.samples_seen + len(y) - 1)
    ids = [f"{s.samples_seen + i + 1}-0" for i in range(len(y))]  # stream ids, in order
    holdout = np.array([is_holdout(sid, s.settings.holdout_fraction) for sid in ids], dtype=bool)
    u = s.rng.random(len(y))
    for i in range(len(y)):
        if holdout[i]:
            s.step.hold_out(x[i].copy(), int(y[i]), tags[i])
        else:  # the buffer is its own store here: its policy decides from u
            s.step.insert(x[i], int(y[i]), float(u[i]), tags[i])
    train = ~holdout
    start = time.perf_counter()
    s.step.learn(torch.from_numpy(x[train]), torch.from_numpy(y[train]),
                 [t for t, keep in zip(tags, train, strict=True) if keep],
                 drifted=scored.drifted, num_classes=len(s.vocab))
    s.step.rehearse(s.step.params.rehearsal_cap)  # labels come slower than it trains
    s.learn_seconds += time.perf_counter() - start
    s.trained += int(train.sum())
    s.samples_seen += len(y)
    s.unpublished += len(y)
    if s.step.publish_due(s.unpublished):
        publish(s)
    return scored.predicted == y


def publish(s: StreamLearner) -> bool:
    """What the learner process does at a publish: gate the candidate against the served
    version on the holdout since the last change point; on a pass it is served, on a refusal
    the learner goes back to the served version's state. True if it was published."""
    candidate = s.learner.snapshot()
    result = gate(candidate, s.served, {"holdout": s.step.holdout.check_set(s.settings.routes_by_tag)},
                  s.settings.gate_tolerance)
    s.unpublished = 0
    if result.passed:
        s.served, s.published = candidate, s.published + 1
        s.learner.on_publish()
        s.served_state = s.learner.state_dict()
        s.step.published()
        return True
    s.rejected += 1
    if s.served_state is not None:
        s.learner.load_state_dict(s.served_state)
        s.learner.on_publish()
    s.step.rejected()
    return False


def new_stream_learner(spec: RunSpec, input_dim: int) -> StreamLearner:
    settings = spec.settings(input_dim)
    learner = new_learner(settings, settings.network(0))
    buffer = (learner.generator if settings.buffer == GENERATIVE
              else make_buffer(settings.buffer, settings.buffer_size, input_dim))
    step = new_step(settings, learner, buffer, seed=spec.seed + 10_000)
    # Version 0, the untrained model, is what the service serves before its first publish.
    s = StreamLearner(step, settings, learner.snapshot(), np.random.default_rng(spec.seed + 20_000))
    s.served_state = learner.state_dict()
    torch.manual_seed(spec.seed)
    return s


def predict(model: nn.Module, x: np.ndarray, mask: list[int] | None = None) -> np.ndarray:
    """Class indices; -1 while the model has no classes. `mask` restricts the argmax."""
    if mask is None:
        return predict_classes(model, x)
    if model.config.num_classes == 0 or len(x) == 0:
        return np.full(len(x), -1)
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    keep = torch.full_like(logits, float("-inf"))
    keep[:, mask] = 0.0
    return (logits + keep).argmax(1).numpy()


def predict_tagged(model: nn.Module, x: np.ndarray, tag: str | None) -> np.ndarray:
    """Class indices from the tag's head where the model has one (per-tag heads, progressive
    columns), else from the default head, as /v1/predict answers."""
    if not isinstance(model, MultiHeadMLP) or model.tag_classes(tag) is None or len(x) == 0:
        return predict(model, x)
    return predict_classes(model, x, [tag or ""] * len(x))


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
            if e == end and s.unpublished:  # the service publishes the rest within seconds
                publish(s)
            if e >= next_eval or e == end:  # what is served, as users would be answered
                for k in settings:
                    curves[k].append([e, *evaluate(s.served, scenario, k, s.vocab)])
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
        "consolidate_ms_mean": 1e3 * float(np.mean(s.step.consolidations)) if s.step.consolidations else 0.0,
        "consolidate_ms_max": 1e3 * max(s.step.consolidations, default=0.0),
        "published": s.published, "rejected": s.rejected,
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
