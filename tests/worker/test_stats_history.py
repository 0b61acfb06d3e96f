"""The learner's history stream (docs/DESIGN.md §5): an entry per publish and per minute, JSON fields
equal to what /v1/stats said at that moment, capped, and read back by GET /v1/stats/history."""

from __future__ import annotations

import json
from collections.abc import Callable

import redis
from redis.asyncio import Redis

from service.config import Settings
from service.store.history import MAX_ENTRIES, MAX_READ, queue_append, read_history
from service.store.keys import Keys
from service.worker.reporter import HISTORY_EVERY_SECONDS
from tests.conftest import running_app
from tests.worker.test_loop import append, blobs, init_deployment, started

# The /v1/stats fields an entry repeats (drift: the statistics, not their thresholds).
SHARED = ("model_version", "samples_seen", "feedback_lag", "prequential_accuracy",
          "balanced_accuracy", "tags")
DRIFT = ("psi_max", "prediction_js", "label_js", "concept_drift_events")


async def test_an_entry_per_publish_and_per_minute_equal_to_the_stats_then(
    settings_for: Callable[..., Settings], aredis: Redis, redis_client: redis.Redis,
    model_name: str,
) -> None:
    settings = settings_for(publish_every_samples=100, holdout_fraction=0.2)
    await init_deployment(settings, aredis)
    keys = Keys(model_name)
    learner = await started(settings, aredis)
    start = await read_history(aredis, keys, 10)
    assert [e["event"] for e in start] == ["tick"]  # the resumed learner's first stats
    assert (start[0]["model_version"], start[0]["samples_seen"]) == (0, 0)

    async with running_app(settings) as api:
        for seed in (1, 2):
            x, y = blobs(120, seed)
            await append(aredis, settings, x, y)
            while await learner.step(block_ms=10):
                pass
            history = (await api.get("/v1/stats/history")).json()["entries"]
            stats = (await api.get("/v1/stats")).json()
            assert [e["event"] for e in history] == ["tick"] + ["publish"] * seed
            last = history[-1]
            assert last["model_version"] == stats["model_version"] == seed  # published
            assert {k: last[k] for k in SHARED} == {k: stats[k] for k in SHARED}
            assert last["drift"] == {k: stats["drift"][k] for k in DRIFT}
            assert last["samples_seen"] == 120 * seed
            assert last["prequential_accuracy"] is not None and last["loss"] > 0
            assert last["time"] >= history[-2]["time"]

        # More stats writes within the minute add nothing; a minute later, one tick.
        for _ in range(3):
            await learner.report()
        assert len((await api.get("/v1/stats/history")).json()["entries"]) == 3
        assert learner.reporter.last_history is not None
        learner.reporter.last_history -= HISTORY_EVERY_SECONDS
        await learner.report()
        await learner.report()
        history = (await api.get("/v1/stats/history")).json()["entries"]
        assert [e["event"] for e in history] == ["tick", "publish", "publish", "tick"]
        assert history[-1]["samples_seen"] == 240

        # ?limit: the newest entries, oldest first; out of range → 422 naming it.
        newest = (await api.get("/v1/stats/history", params={"limit": 2})).json()["entries"]
        assert newest == history[-2:]
        for bad in (0, -1, MAX_READ + 1, "x"):
            refused = await api.get("/v1/stats/history", params={"limit": bad})
            assert refused.status_code == 422, refused.text
            assert "limit" in refused.text

    # Stored as JSON text, field by field (never pickle).
    for _, fields in redis_client.xrange(keys.stats_history):
        for value in fields.values():
            json.loads(value)


async def test_the_stream_is_capped(aredis: Redis, redis_client: redis.Redis,
                                    model_name: str) -> None:
    keys = Keys(model_name)
    pipe = aredis.pipeline(transaction=False)
    for i in range(MAX_ENTRIES + 1000):
        queue_append(pipe, keys, {"samples_seen": i})
    await pipe.execute()
    # Approximate trimming (MAXLEN ~) removes whole stream nodes: near the cap, never far past.
    assert MAX_ENTRIES <= redis_client.xlen(keys.stats_history) < MAX_ENTRIES + 200
    newest = await read_history(aredis, keys, 3)
    assert [e["samples_seen"] for e in newest] == list(range(MAX_ENTRIES + 997, MAX_ENTRIES + 1000))
