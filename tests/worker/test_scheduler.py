"""The learner's model scheduler (service/worker/scheduler.py) in-process against the real
Redis: how many models a learner takes (its even share, within its capacity), that two
learners never hold one model, and that a learner stopping hands its leases back at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
import redis
from redis.asyncio import Redis

from service.config import Settings
from service.store.deployment import open_model
from service.store.keys import Keys
from service.worker.loop import LearnerService
from service.worker.scheduler import ModelScheduler, backoff_seconds, target_models
from tests.conftest import delete_model_keys


@pytest.mark.parametrize(("models", "learners", "capacity", "target"), [
    (4, 1, 0, 4), (4, 2, 0, 2), (5, 2, 0, 3), (4, 3, 0, 2), (4, 2, 1, 1), (1, 2, 0, 1),
    (100, 3, 10, 10), (3, 0, 0, 3),
])
def test_a_learner_takes_its_even_share_within_its_capacity(models: int, learners: int,
                                                           capacity: int, target: int) -> None:
    assert target_models(models, learners, capacity) == target


def test_backoff_doubles_to_a_ceiling() -> None:
    assert [backoff_seconds(n) for n in range(7)] == [0.5, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


@pytest.fixture
def three(make_settings: Callable[..., Settings], model_name: str,
          redis_client: redis.Redis) -> Iterator[list[Settings]]:
    models = [make_settings(model_name=f"{model_name}-{i}", lease_ttl_seconds=2.0,
                            publish_every_seconds=3600.0) for i in range(3)]
    yield models
    for model in models:
        delete_model_keys(redis_client, model.model_name)


def _holders(r: redis.Redis, models: list[Settings]) -> list[bytes | None]:
    return [r.get(Keys(m.model_name).lease) for m in models]


async def test_capacity_bounds_a_learner_and_a_stopped_one_hands_its_models_back(
        three: list[Settings], redis_client: redis.Redis, aredis: Redis) -> None:
    for model in three:
        await open_model(model, aredis)

    def scheduler(capacity: int) -> ModelScheduler:
        return ModelScheduler(three, aredis, capacity,
                              lambda model: LearnerService(model, aredis))

    small, big = scheduler(1), scheduler(0)
    stop_small, stop_big = asyncio.Event(), asyncio.Event()
    runs = [asyncio.create_task(small.run(stop_small)), asyncio.create_task(big.run(stop_big))]
    try:
        # Two learners alive: shares of 2, the small one capped at 1; between them, all three.
        await _until(lambda: len(small.training) == 1 and len(big.training) == 2)
        assert set(small.training) | set(big.training) == {m.model_name for m in three}
        assert None not in _holders(redis_client, three)
        stop_small.set()
        await asyncio.wait_for(runs[0], 30)
        # Its lease was released, not left to lapse: the other takes it within a poll or two.
        await _until(lambda: len(big.training) == 3, timeout=1.9)
    finally:
        stop_small.set()
        stop_big.set()
        await asyncio.wait_for(asyncio.gather(*runs), 30)
    # A clean stop releases every lease at once (nothing to wait out for the next learner).
    await _until(lambda: _holders(redis_client, three) == [None, None, None], timeout=1.9)


async def _until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    async def poll() -> None:
        while not check():
            await asyncio.sleep(0.05)
    await asyncio.wait_for(poll(), timeout)
