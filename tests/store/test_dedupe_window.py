"""The feedback dedupe ids are bounded: kept per window (the prediction-log TTL), looked up over
the neighbouring windows, each window's hash expiring. A repeat within a window is caught,
across API processes whose clocks differ; an id older than the windows looked up is appended
again; ids of the earlier unbounded hash still count and that hash ages out."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis
from redis.asyncio import Redis

from service.store.feedback import FeedbackRecord, FeedbackStore
from service.store.keys import Keys
from service.store.scripts import Scripts
from tests.conftest import REDIS_URL, seen_entries

WINDOW = 3600
T0 = 1_800_000_000.0  # a fixed time that starts a window


@pytest.fixture
async def aredis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


def _store(aredis: Redis, model: str, at: float) -> FeedbackStore:
    return FeedbackStore(aredis, Keys(model), Scripts(aredis), dedupe_window_seconds=WINDOW,
                         clock=lambda: at)


async def _append(store: FeedbackStore, *ids: str) -> tuple[int, int]:
    result = await store.append([FeedbackRecord(i, "a", b"", "", None) for i in ids],
                                max_lag=1000, max_classes=10)
    return result.accepted, result.duplicates


async def test_a_repeat_is_caught_within_a_window_and_across_skewed_clocks(
        aredis: Redis, model_name: str, redis_client: redis.Redis) -> None:
    first = _store(aredis, model_name, T0)
    assert await _append(first, "f:a", "p:b", "f:a") == (2, 1)  # in-batch repeat too
    for offset in (1, WINDOW - 1, WINDOW, -0.6 * WINDOW, 1.5 * WINDOW):
        # later in the window, in the next one, and an API process whose clock is behind
        assert await _append(_store(aredis, model_name, T0 + offset), "f:a", "p:b") == (0, 2)
    assert await _store(aredis, model_name, T0).already_accepted(["f:a", "p:b", "f:c"]) == \
        [True, True, False]
    entries = seen_entries(redis_client, model_name)
    assert set(entries) == {"f:a", "p:b"}
    assert redis_client.xlen(Keys(model_name).stream) == 2


async def test_every_window_expires_and_old_ids_are_appended_again(
        aredis: Redis, model_name: str, redis_client: redis.Redis) -> None:
    keys = Keys(model_name)
    await _append(_store(aredis, model_name, T0), "f:a")
    later = T0 + 2.5 * WINDOW  # two windows on: the first window is no longer looked up
    assert await _append(_store(aredis, model_name, later), "f:a", "f:b") == (2, 0)
    buckets = sorted(redis_client.scan_iter(match=keys.seen_pattern))
    assert [k.decode().rsplit(":", 1)[1] for k in buckets] == [
        str(int(T0 // WINDOW)), str(int(later // WINDOW))]
    for key in buckets:  # written once, then gone three windows later
        assert 0 < redis_client.ttl(key) <= 3 * WINDOW


async def test_ids_of_the_unbounded_hash_still_count_and_it_ages_out(
        aredis: Redis, model_name: str, redis_client: redis.Redis) -> None:
    keys = Keys(model_name)
    redis_client.hset(keys.seen_ids, "p:old", "1-0")  # what an earlier version left behind
    store = _store(aredis, model_name, T0)
    assert await store.already_accepted(["p:old"]) == [True]
    assert await _append(store, "p:old", "p:new") == (1, 1)
    assert 0 < redis_client.ttl(keys.seen_ids) <= 3 * WINDOW
