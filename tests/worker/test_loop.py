"""The learner loop without processes: LearnerService against the real Redis (DB 11), driven
one `await service.step()` at a time.

Data: three well separated Gaussian blobs in 4-D (labels a, b, c), so an untrained network is
measurably worse than one that has seen a hundred labels.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
import pytest
import redis
import torch
from redis.asyncio import Redis

from models.checkpoint import model_from_bytes
from models.gate import predict_classes
from models.stream import is_holdout
from service.config import Settings
from service.store.codec import decode_entry, vector_to_bytes
from service.store.feedback import FeedbackRecord, FeedbackStore
from service.store.keys import Keys
from service.store.registry import DeploymentIdentity, Pointer, Registry
from service.store.scripts import Scripts
from service.store.stats import StatsStore
from service.versioning import initial_version
from service.worker import publisher as publishing_module
from service.worker.loop import Fenced, LearnerService
from tests.conftest import snapshot

LABELS = ["a", "b", "c"]
NEVER = 3600.0  # publish cadence in seconds that never fires during a test


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(LABELS), n)
    x = rng.normal(0.0, 0.5, (n, 4)).astype(np.float32)
    x[np.arange(n), y] += 3.0
    return x, y


async def init_deployment(settings: Settings, aredis: Redis) -> Registry:
    """What `python -m service learn` does before its loop: version 0 over the labels."""
    registry = Registry(aredis, Keys(settings.model_name), Scripts(aredis))
    meta, weights = initial_version(settings)
    identity = DeploymentIdentity.of(settings)
    await registry.init_deployment(identity, settings.labels, meta, weights)
    return registry


async def append(aredis: Redis, settings: Settings, x: np.ndarray, y: np.ndarray) -> None:
    """Accepted feedback, appended exactly as the API appends it (one Lua call)."""
    store = FeedbackStore(aredis, Keys(settings.model_name), Scripts(aredis))
    records = [FeedbackRecord("", LABELS[int(c)], vector_to_bytes(row), "", None)
               for row, c in zip(x, y, strict=True)]
    result = await store.append(records, max_lag=1_000_000, max_classes=100)
    assert (result.accepted, result.duplicates) == (len(records), 0)


async def started(settings: Settings, aredis: Redis) -> LearnerService:
    service = LearnerService(settings, aredis)
    assert await service.lease.try_acquire()
    await service.prepare()
    return service


def hits(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> int:
    return int((predict_classes(model, x) == y).sum())


def pending(client: redis.Redis, keys: Keys) -> int:
    return int(client.xpending(keys.stream, keys.group)["pending"])


def learner_keys(client: redis.Redis, keys: Keys) -> dict[str, object]:
    return {
        "reservoir": client.hgetall(keys.reservoir),
        "reservoir_meta": client.hgetall(keys.reservoir_meta),
        "holdout": client.lrange(keys.holdout, 0, -1),
    }


async def test_prequential_accuracy_scores_the_served_version_before_training(
    settings_for: Callable[..., Settings], aredis: Redis
) -> None:
    settings = settings_for(publish_every_samples=200, holdout_fraction=0.0)
    registry = await init_deployment(settings, aredis)
    service = await started(settings, aredis)
    v0, _ = model_from_bytes(await registry.weights(0))
    (x1, y1), (x2, y2), (x3, y3) = blobs(100, 1), blobs(100, 2), blobs(100, 3)

    await append(aredis, settings, x1, y1)
    assert await service.step() == 100
    assert await registry.current() == Pointer(0, 1)  # 100 < 200: nothing published yet
    assert service.window.accuracy() == hits(v0, x1, y1) / 100
    # The learner has learned from batch 1: it now answers batch 2 far better than v0 ...
    learner_hits = int((service.learner.predict_proba(torch.from_numpy(x2)).argmax(1).numpy() == y2).sum())
    assert learner_hits >= hits(v0, x2, y2) + 25, (learner_hits, hits(v0, x2, y2))

    # ... yet batch 2 is scored by the *served* version (still v0), before training on it.
    await append(aredis, settings, x2, y2)
    assert await service.step() == 100
    assert (await registry.current()).version == 1  # 200 samples: published
    assert service.window.accuracy() == (hits(v0, x1, y1) + hits(v0, x2, y2)) / 200

    # Batch 3 is scored by version 1, the one now served.
    v1, _ = model_from_bytes(await registry.weights(1))
    await append(aredis, settings, x3, y3)
    assert await service.step() == 100
    expected = hits(v0, x1, y1) + hits(v0, x2, y2) + hits(v1, x3, y3)
    assert service.window.accuracy() == expected / 300
    assert hits(v1, x3, y3) >= 90  # the blobs are separable: version 1 learned them


async def test_rereading_after_a_crash_inserts_and_counts_each_entry_once(
    settings_for: Callable[..., Settings], aredis: Redis, redis_client: redis.Redis, model_name: str
) -> None:
    settings = settings_for(publish_every_samples=250, holdout_fraction=0.25, buffer_size=64)
    registry = await init_deployment(settings, aredis)
    keys = Keys(model_name)
    first = await started(settings, aredis)
    x, y = blobs(200, 4)
    await append(aredis, settings, x, y)
    assert await first.step() == 200
    ids = [sid.decode() for sid, _ in redis_client.xrange(keys.stream)]
    n_holdout = sum(is_holdout(sid, settings.holdout_fraction) for sid in ids)
    assert 20 <= n_holdout <= 80
    assert redis_client.hlen(keys.reservoir) == 64
    assert int(redis_client.hget(keys.reservoir_meta, "seen")) == 200 - n_holdout
    assert redis_client.llen(keys.holdout) == n_holdout
    assert pending(redis_client, keys) == 200  # processed, not published: nothing acked
    inserted = learner_keys(redis_client, keys)

    # Crash: the first learner vanishes before publishing; its lease expires.
    redis_client.delete(keys.lease)
    second = await started(settings, aredis)
    assert second.lease.token == (first.lease.token or 0) + 1
    assert second.samples_seen == 0  # the committed count: version 0's
    assert await second.step() == 200  # the pending entries, read again
    assert second.samples_seen == 200
    assert learner_keys(redis_client, keys) == inserted  # no insert repeated
    assert len(second.stream.buffer) == 64 and len(second.stream.holdout) == n_holdout
    stored = {int(slot): decode_entry(blob)[1] for slot, blob in inserted["reservoir"].items()}
    _, replay_y = second.stream.buffer.items()
    assert {slot: int(label) for slot, label in enumerate(replay_y)} == stored

    x2, y2 = blobs(50, 5)
    await append(aredis, settings, x2, y2)
    all_ids = [sid.decode() for sid, _ in redis_client.xrange(keys.stream)]  # before the trim
    last_id = all_ids[-1]
    assert await second.step() == 50  # 250 samples: publish
    assert await registry.cursor() == (last_id, 250)
    meta = await registry.meta(1)
    assert (meta["parent"], meta["samples_seen"], meta["last_stream_id"]) == (0, 250, last_id)
    stats = await StatsStore(aredis, keys).read()
    assert int(redis_client.hget(keys.counters, "accepted")) == stats.processed == 250
    assert stats.lag == 0
    assert len(all_ids) == 250
    assert int(redis_client.hget(keys.reservoir_meta, "seen")) == sum(
        not is_holdout(sid, settings.holdout_fraction) for sid in all_ids)
    assert pending(redis_client, keys) == 0


async def test_acks_follow_the_publish_and_a_crash_between_them_learns_nothing_twice(
    settings_for: Callable[..., Settings], aredis: Redis, redis_client: redis.Redis, model_name: str
) -> None:
    settings = settings_for(publish_every_samples=100)
    registry = await init_deployment(settings, aredis)
    keys = Keys(model_name)
    first = await started(settings, aredis)
    at_ack: list[tuple[int, int, tuple[str, int], int]] = []
    real_ack = first.reader.ack_and_trim

    async def observed_ack(ids: list[str], committed: str) -> None:
        at_ack.append((len(ids), pending(redis_client, keys), await registry.cursor(),
                       redis_client.zcard(keys.versions)))
        await real_ack(ids, committed)

    first.reader.ack_and_trim = observed_ack  # type: ignore[method-assign]
    x, y = blobs(60, 6)
    await append(aredis, settings, x, y)
    assert await first.step() == 60
    assert pending(redis_client, keys) == 60 and at_ack == []
    x, y = blobs(40, 7)
    await append(aredis, settings, x, y)
    assert await first.step() == 40  # 100 samples: publish, then ack
    last_id = redis_client.xrevrange(keys.stream, count=1)[0][0].decode()
    # When the ack ran, version 1 and the cursor were already committed, all 100 still pending.
    assert at_ack == [(100, 100, (last_id, 100), 2)]
    assert pending(redis_client, keys) == 0

    # Now a crash right after the publish, before the ack.
    async def crash(ids: list[str], committed: str) -> None:
        raise ConnectionError("killed between publish and ack")

    first.reader.ack_and_trim = crash  # type: ignore[method-assign]
    x, y = blobs(100, 8)
    await append(aredis, settings, x, y)
    with pytest.raises(ConnectionError):
        await first.step()
    last_id = redis_client.xrevrange(keys.stream, count=1)[0][0].decode()
    assert await registry.cursor() == (last_id, 200)
    assert pending(redis_client, keys) == 100
    before = learner_keys(redis_client, keys)

    redis_client.delete(keys.lease)
    second = await started(settings, aredis)
    assert second.served_version == 2 and second.samples_seen == 200
    assert await second.step() == 100  # re-read, recognised as committed, acknowledged
    assert second.samples_seen == 200 and second.cursor.unpublished == 0
    assert pending(redis_client, keys) == 0
    assert learner_keys(redis_client, keys) == before
    assert await second.step(block_ms=10) == 0
    assert redis_client.zcard(keys.versions) == 3  # versions 0, 1, 2: nothing published again
    stats = await StatsStore(aredis, keys).read()
    assert int(redis_client.hget(keys.counters, "accepted")) == stats.processed == 200
    assert stats.lag == 0


async def test_lease_excludes_a_second_learner_and_fences_the_first_after_a_takeover(
    settings_for: Callable[..., Settings], aredis: Redis, redis_client: redis.Redis, model_name: str
) -> None:
    settings = settings_for(publish_every_samples=1000)
    await init_deployment(settings, aredis)
    keys = Keys(model_name)
    first = await started(settings, aredis)
    second = LearnerService(settings, aredis)
    assert not await second.lease.try_acquire()  # held: the second one stays a standby
    assert second.lease.token is None

    x, y = blobs(50, 9)
    await append(aredis, settings, x, y)
    assert await first.step() == 50  # learned, not yet published

    # The first learner stalls past its lease; the standby takes over.
    redis_client.delete(keys.lease)
    assert await second.lease.try_acquire()
    assert (second.lease.token or 0) > (first.lease.token or 0)
    await second.prepare()
    assert await second.step() == 50  # what the first one never published, read again
    assert await second.step(block_ms=10) == 0  # idle: caught up

    x, y = blobs(30, 10)
    await append(aredis, settings, x, y)
    before = snapshot(redis_client, model_name)
    with pytest.raises(Fenced):
        await first.step()  # reads the 30 new entries, then its first write is refused
    assert snapshot(redis_client, model_name) == before
    # Every other write of the fenced learner is refused too, and changes nothing.
    with pytest.raises(Fenced):
        await first.report()
    with pytest.raises(Fenced):
        await first.publish()
    assert snapshot(redis_client, model_name) == before

    # The entries the fenced learner read are not lost to the new one.
    deadline = time.monotonic() + 10
    while second.samples_seen < 80:
        assert time.monotonic() < deadline, f"the new learner saw only {second.samples_seen} of 80"
        await second.step(block_ms=50)
    assert second.samples_seen == 80
    stats = await StatsStore(aredis, keys).read()
    assert int(redis_client.hget(keys.counters, "accepted")) == stats.processed == 80
    assert stats.lag == 0


async def test_an_activation_while_a_candidate_is_evaluated_is_not_undone(
    settings_for: Callable[..., Settings], aredis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(publish_every_samples=50)
    registry = await init_deployment(settings, aredis)
    service = await started(settings, aredis)
    x, y = blobs(50, 11)
    await append(aredis, settings, x, y)
    await service.step()
    assert (await registry.current()).version == 1

    # The operator rolls back to version 0 after the learner last looked at `current` and
    # before its publish lands: while the gate evaluates the next candidate (a worker thread).
    running = asyncio.get_running_loop()

    def gate_during_a_rollback(*args: object, **kwargs: object) -> object:
        asyncio.run_coroutine_threadsafe(registry.activate(0), running).result(timeout=10)
        return real_gate(*args, **kwargs)

    real_gate = publishing_module.gate
    monkeypatch.setattr(publishing_module, "gate", gate_during_a_rollback)
    x, y = blobs(50, 12)
    await append(aredis, settings, x, y)
    await service.step()
    monkeypatch.undo()
    assert (await registry.current()).version == 0  # the operator's choice stands
    assert (await registry.meta(2))["status"] == "archived"  # the candidate is kept, not served
    assert (await registry.meta(0))["status"] == "active"
    assert service.served_version == 0  # the learner continues from the activated version

    x, y = blobs(50, 13)
    await append(aredis, settings, x, y)
    await service.step()
    meta = await registry.meta(3)
    assert (meta["parent"], meta["status"], meta["samples_seen"]) == (0, "active", 150)
    assert (await registry.current()).version == 3


async def test_feedback_after_an_activation_is_learned_on_top_of_the_activated_version(
    settings_for: Callable[..., Settings], aredis: Redis
) -> None:
    settings = settings_for(publish_every_samples=50, holdout_fraction=0.0)
    registry = await init_deployment(settings, aredis)
    service = await started(settings, aredis)
    for seed in (14, 15):
        x, y = blobs(50, seed)
        await append(aredis, settings, x, y)
        await service.step()
    assert (await registry.current()).version == 2
    await registry.activate(1)
    # Labels that arrive after the rollback, before the learner's next step.
    x, y = blobs(50, 16)
    await append(aredis, settings, x, y)
    assert await service.step() == 50
    meta = await registry.meta(3)
    assert (meta["parent"], meta["status"], meta["samples_seen"]) == (1, "active", 150)
    # Version 3 learned them: it is version 1 trained further, not version 1 again.
    v1, _ = model_from_bytes(await registry.weights(1))
    v3, _ = model_from_bytes(await registry.weights(3))
    assert any(not torch.equal(p, q) for p, q in zip(v1.state_dict().values(),
                                                     v3.state_dict().values(), strict=True))
