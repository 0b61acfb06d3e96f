"""The learner process and the benchmark run one stream step (models/stream.py); the step's own
state (detector, counters, change point) survives a restart; a fresh deployment publishes
early; after a detected concept drift the gate judges on the new concept's labels only."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import redis
import torch
from redis.asyncio import Redis

from models.drift import ADWIN
from models.gate import accuracy
from models.learner import IncrementalLearner
from models.stream import StreamStep
from service.bench.runner import DEFAULTS, RunSpec, new_stream_learner, process_batch
from service.config import Settings
from service.store.keys import Keys
from service.worker.loop import REHEARSAL_SLICE_STEPS, YOUNG_REHEARSAL_STEPS
from tests.worker.test_loop import append, blobs, init_deployment, started


@pytest.fixture
def learn_many_callers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The module of every function that calls IncrementalLearner.learn_many or consolidate."""
    callers: list[str] = []
    for name in ("learn_many", "consolidate"):
        original = getattr(IncrementalLearner, name)

        def recording(self: IncrementalLearner, *args: object, _original: Callable[..., object] = original,
                      **kwargs: object) -> object:
            callers.append(inspect.stack()[1].frame.f_globals["__name__"])
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(IncrementalLearner, name, recording)
    yield callers


async def test_the_learner_process_and_the_benchmark_train_only_through_the_stream_step(
    settings_for: Callable[..., Settings], aredis: Redis, learn_many_callers: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    steps: list[str] = []
    for name in ("score", "learn"):
        original = getattr(StreamStep, name)

        def counted(self: StreamStep, *args: object, _name: str = name,
                    _original: Callable[..., object] = original, **kwargs: object) -> object:
            steps.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(StreamStep, name, counted)
    # The benchmark...
    s = new_stream_learner(RunSpec(DEFAULTS.strategy, DEFAULTS.buffer, 100, seed=0,
                                   overrides={"consolidate_every_samples": 20}), 4)
    for seed in range(3):
        x, y = blobs(16, seed)
        process_batch(s, x, y)
    assert steps == ["score", "learn"] * 3
    # ...and the learner process.
    steps.clear()
    settings = settings_for(publish_every_samples=10**6, consolidate_every_samples=20)
    await init_deployment(settings, aredis)
    service = await started(settings, aredis)
    for seed in range(3):
        x, y = blobs(16, seed)
        await append(aredis, settings, x, y)
        assert await service.step() == 16
    assert steps == ["score", "learn"] * 3
    # Neither trains nor consolidates the learner itself: a re-implementation would show here.
    assert learn_many_callers and set(learn_many_callers) == {"models.stream"}


async def test_the_detector_and_the_steps_counters_survive_a_learner_restart(
    settings_for: Callable[..., Settings], aredis: Redis, redis_client: redis.Redis, model_name: str
) -> None:
    settings = settings_for(publish_every_samples=96, holdout_fraction=0.2)
    await init_deployment(settings, aredis)
    first = await started(settings, aredis)
    for seed in range(2):  # 96 labels: one publish
        x, y = blobs(48, seed)
        await append(aredis, settings, x, y)
        await first.step()
    assert first.served_version == 1
    saved = first.stream.state_dict()
    detector = first.stream.detector
    assert isinstance(detector, ADWIN) and detector.width > 0

    redis_client.delete(Keys(model_name).lease)  # the first learner crashed
    second = await started(settings, aredis)
    restored = second.stream.detector
    assert isinstance(restored, ADWIN) and restored is not detector
    assert (restored.width, restored.total, restored.variance, restored.n_detections) == (
        detector.width, detector.total, detector.variance, detector.n_detections)
    assert restored.state_dict().keys() == detector.state_dict().keys()
    for key, value in second.stream.state_dict().items():
        assert torch.equal(value, saved[key]), key
    assert second.stream.cadence.threshold == first.stream.cadence.threshold > 16


async def test_a_fresh_deployment_publishes_its_first_learned_version_early(
    settings_for: Callable[..., Settings], aredis: Redis
) -> None:
    # The service's cadence, not the fixture's "publish at publish_every_samples".
    settings = settings_for(publish_every_samples=500,
                            publish_first_samples=Settings().publish_first_samples)
    registry = await init_deployment(settings, aredis)
    service = await started(settings, aredis)
    published_at = []
    for seed in range(8):  # labels arrive 8 at a time
        x, y = blobs(8, seed)
        await append(aredis, settings, x, y)
        await service.step()
        if service.served_version and not published_at:
            published_at.append(service.samples_seen)
    assert published_at and published_at[0] <= 16
    versions = [(await registry.meta(v))["samples_seen"] for v in range(1, service.served_version + 1)]
    assert versions == [16, 48]  # then twice as far each time: 16, 32, 64, ... up to 500
    meta = await registry.meta(1)
    assert meta["hyperparameters"]["publish_first_samples"] == Settings().publish_first_samples
    assert meta["hyperparameters"]["strategy_params"] == dict(settings.strategy_params)


async def test_after_a_detected_swap_the_gate_judges_on_the_new_concepts_labels(
    settings_for: Callable[..., Settings], aredis: Redis
) -> None:
    settings = settings_for(publish_every_samples=100, holdout_fraction=0.2)
    registry = await init_deployment(settings, aredis)
    service = await started(settings, aredis)
    for seed in range(10):
        x, y = blobs(100, seed)
        await append(aredis, settings, x, y)
        await service.step()
    assert service.drift_events == 0 and service.served_version == 10
    # Classes a and b trade labels: the holdout still holds the old concept's.
    swap = np.array([1, 0, 2])
    for seed in range(10, 30):
        x, y = blobs(100, seed)
        await append(aredis, settings, x, swap[y])
        await service.step()
    assert service.drift_events >= 1
    statuses = [(await registry.meta(v))["status"] for v in range(11, service.served_version + 1)]
    assert statuses and "rejected" not in statuses
    x, y = blobs(300, 99)
    assert accuracy(service.served, x, swap[y]) > 0.9


async def test_a_learner_waiting_for_labels_rehearses_its_budget_without_blocking_reads(
    settings_for: Callable[..., Settings], aredis: Redis
) -> None:
    settings = settings_for(publish_every_samples=10**6, holdout_fraction=0.0, rehearsal=1.0)
    await init_deployment(settings, aredis)
    service = await started(settings, aredis)
    x, y = blobs(40, 0)
    await append(aredis, settings, x, y)
    assert await service.step() == 40
    steps, budget = service.learner.steps_done, service.stream.rehearsal_budget
    assert budget == 40  # one replay step per trained sample
    assert await service.step() == 0  # nothing to read: a slice of rehearsal instead
    assert service.learner.steps_done - steps == REHEARSAL_SLICE_STEPS
    assert service.stream.rehearsal_budget == budget - REHEARSAL_SLICE_STEPS
    # New labels still come first, and the budget never blocks a read (Redis reads BLOCK 0 as
    # "forever": a rehearsing learner reads without blocking).
    x, y = blobs(8, 1)
    await append(aredis, settings, x, y)
    assert await asyncio.wait_for(service.step(), 5) == 8
    while service.stream.rehearsal_budget >= 1:
        assert await asyncio.wait_for(service.step(), 5) == 0
    assert service.learner.samples_seen == 48


async def test_a_young_models_versions_include_the_rehearsal_due(
    settings_for: Callable[..., Settings], aredis: Redis
) -> None:
    settings = settings_for(publish_first_samples=16, publish_every_samples=200,
                            holdout_fraction=0.0, rehearsal=1.0)
    await init_deployment(settings, aredis)
    service = await started(settings, aredis)
    x, y = blobs(40, 0)
    await append(aredis, settings, x, y)
    assert await service.step() == 40
    # Published at once (due at 16), but only after the 40 replay steps the 40 labels earned.
    assert service.served_version == 1
    spent = min(40, YOUNG_REHEARSAL_STEPS)
    assert service.stream.rehearsal_budget == 40 - spent
    assert service.learner.steps_done == 2 * settings.steps_per_batch + spent  # 2 chunks of 20
    # Past MNEMO_PUBLISH_EVERY_SAMPLES a publish no longer waits for rehearsal.
    x, y = blobs(400, 1)
    await append(aredis, settings, x, y)
    assert await service.step() == 400
    assert service.served_version == 2
    assert service.stream.rehearsal_budget == min(40 - spent + 400,
                                                  service.stream.params.rehearsal_cap)
