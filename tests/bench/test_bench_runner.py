"""The per-batch step feeds the learner as the service's loop does; the plan finds every
strategy and buffer at run time; the drifting stream drifts as documented."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.strategies import STRATEGY_NAMES
from models.stream import StreamParams
from service.bench import suite
from service.bench.datasets import drifting_stream, split_digits
from service.bench.runner import (
    DEFAULTS,
    RunSpec,
    StreamLearner,
    evaluate,
    new_stream_learner,
    predict,
    process_batch,
)

TRAIN_CHUNK = StreamParams().train_chunk


class AlwaysFires:
    n_detections = 0

    def update(self, error: float) -> bool:
        self.n_detections += 1
        return True


def _learner(**settings: object) -> StreamLearner:
    return new_stream_learner(RunSpec("replay", DEFAULTS.buffer, 50, seed=0, overrides=settings), 4)


def _batch(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(3, size=n)
    return (rng.normal(size=(n, 4)) + y[:, None]).astype(np.float32), y


def test_the_learner_is_built_from_the_services_settings() -> None:
    s = _learner(learning_rate=0.01, replay_batch=8, consolidate_every_samples=77)
    assert (s.learner.lr, s.learner.replay_size) == (0.01, 8)
    assert s.step.params.consolidate_every == 77
    assert s.step.params.publish_first == DEFAULTS.publish_first_samples
    assert type(s.step.detector).__name__.lower().startswith(DEFAULTS.drift_detector[:4])


def test_holdout_is_scored_but_neither_stored_nor_trained() -> None:
    s = _learner(holdout_fraction=0.5, rehearsal=0)
    x, y = _batch(64)
    correct = process_batch(s, x, y)
    assert correct.shape == (64,)
    assert 10 < s.trained < 54  # about half held out
    assert s.buffer.seen == s.trained == s.learner.samples_seen
    assert len(s.step.holdout) == 64 - s.trained
    assert s.samples_seen == 64
    # learn_many in chunks of TRAIN_CHUNK, each with steps_per_batch optimizer steps
    assert s.learner.steps_done == -(-s.trained // TRAIN_CHUNK) * s.learner.steps_per_batch


def test_idle_time_rehearses_the_buffer_by_the_budget() -> None:
    s = _learner(holdout_fraction=0.0, rehearsal=0.5)
    process_batch(s, *_batch(32))
    # 32 trained samples at 0.5 replay steps each, besides the chunk's own steps.
    assert s.learner.steps_done == s.learner.steps_per_batch + 16
    assert s.step.rehearsal_budget == 0


def test_labels_map_to_classes_in_order_of_first_appearance() -> None:
    s = _learner()
    x, _ = _batch(4)
    process_batch(s, x, np.array([7, 3, 7, 9]))
    assert s.vocab == {7: 0, 3: 1, 9: 2}
    assert s.learner.num_classes == 3


def test_consolidates_every_n_trained_samples_on_a_replay_sample() -> None:
    s = _learner(consolidate_every_samples=40, holdout_fraction=0.0)
    for i in range(5):
        process_batch(s, *_batch(16, seed=i))
    # 16, 32, 48 >= 40: consolidate and restart the count; then 16, 32.
    assert len(s.step.consolidations) == 1
    assert s.step.since_consolidation == 32


def test_test_then_train_scores_the_served_version_before_learning() -> None:
    s = _learner(holdout_fraction=0.0, publish_first_samples=10**6)
    x, y = _batch(16)
    assert not process_batch(s, x, y).any()  # version 0 has no classes: it cannot be right
    x2, y2 = _batch(16, seed=1)
    served = s.served
    before = predict(served, x2)
    correct = process_batch(s, x2, y2)
    classes = np.array([s.vocab[int(v)] for v in y2])  # first-appearance order, as served
    assert (correct == (before == classes)).all()


def test_a_detected_drift_retires_marks_the_holdout_and_restarts_the_cadence() -> None:
    s = _learner(holdout_fraction=0.3)
    for i in range(6):
        process_batch(s, *_batch(16, seed=i))
    assert s.step.cadence.threshold == 4 * s.step.cadence.first  # 16, 32, 64 published
    published, held = s.published, len(s.step.holdout)
    s.step.detector = AlwaysFires()
    process_batch(s, *_batch(16, seed=9))
    assert s.detections == [6 * 16 + 15]  # one alarm a read, at its last item
    # The cadence started over: this read's 16 samples were published at once.
    assert s.published == published + 1 and s.step.cadence.threshold == 2 * s.step.cadence.first
    # The gate judges on this read's held-out items on: the change point is at the alarm.
    assert s.step.holdout.since_change == len(s.step.holdout) - held > 0
    assert s.step.learner.strategy.scale == 1.0  # relaxed, then re-anchored at consolidation


def test_publishing_starts_early_and_keeps_a_frozen_snapshot() -> None:
    s = _learner(publish_first_samples=32, holdout_fraction=0.0)
    version0 = s.served
    process_batch(s, *_batch(16))
    assert s.served is version0  # not yet due
    process_batch(s, *_batch(16, seed=1))
    assert s.served is not version0 and not s.served.training
    assert all(not p.requires_grad for p in s.served.parameters())
    assert s.published == 1 and s.step.cadence.threshold == 64  # the next one twice as far


def test_strategies_and_buffers_come_from_models_at_run_time() -> None:
    names = suite.strategy_names()
    for penalty in STRATEGY_NAMES:
        assert penalty in names
        if penalty != "naive":
            assert f"{penalty}+replay" in names
    assert "replay" in names and DEFAULTS.strategy in names
    assert DEFAULTS.buffer in suite.buffer_kinds()


def test_plan_runs_other_buffer_kinds_only_with_replay() -> None:
    plan = suite.Plan(["split"], ["naive", "replay"], [200], [0], kinds=["reservoir", "x"],
                      sweep=())
    specs = [(s.strategy, s.buffer) for s in plan.specs("split")]
    assert specs == [("naive", DEFAULTS.buffer), ("replay", "reservoir"), ("replay", "x")]


def test_task_incremental_evaluation_masks_other_tasks_classes() -> None:
    scenario = split_digits(0)
    s = new_stream_learner(RunSpec("naive", DEFAULTS.buffer, 50, seed=0), scenario.input_dim)
    vocab = {c: c for c in range(10)}
    s.learner.ensure_classes(10)
    with torch.no_grad():  # a head that always says class 9
        s.learner.model.head.bias.copy_(torch.arange(10.0) * 100)
    assert evaluate(s.learner.model, scenario, "class", vocab)[:4] == [0.0] * 4
    assert evaluate(s.learner.model, scenario, "task", vocab)[0] == pytest.approx(
        float(np.mean(scenario.segments[0].y_test == 1)))


def test_drifting_stream_swaps_labels_of_the_same_inputs() -> None:
    scenario = drifting_stream(0)
    base, swap = scenario.segments[0], scenario.segments[1]
    # Both phases' test sets use the same blobs; only classes 0 and 1 trade labels.
    nearest = {}
    for seg in (base, swap):
        for label in range(4):
            nearest.setdefault(seg.name, {})[label] = seg.x_test[seg.y_test == label].mean(0)
    for a, b in [(0, 1), (1, 0), (2, 2), (3, 3)]:
        assert np.linalg.norm(nearest[base.name][a] - nearest[swap.name][b]) < 1.0
    assert scenario.ends == (1500, 3000, 4500, 6000)
