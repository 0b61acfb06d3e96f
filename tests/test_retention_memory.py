"""Memory stays bounded with the defaults: 1,000 published versions (realistic 64→128→128→10
blobs, retention keeping MNEMO_KEEP_VERSIONS) and 200,000 feedback items (64 features) read,
acknowledged and trimmed the way the learner does, end with Redis used_memory under 200 MB.

A private embedded server, so used_memory is this test's alone."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from models.checkpoint import model_to_bytes, tensors_to_bytes
from service.config import Settings
from service.embedded import EmbeddedRedis
from service.store.codec import vector_to_bytes
from service.store.deployment import open_deployment
from service.store.feedback import FeedbackRecord, FeedbackStore
from service.store.stats import StatsStore
from service.versioning import model_config, version_meta
from service.worker.feed import FeedbackReader
from service.worker.state import new_learner

VERSIONS = 1_000
ITEMS = 200_000
BATCH = 1_000
DIM = 64
LIMIT = 200 * 1024 * 1024


def _realistic_blobs(settings: Settings) -> tuple[bytes, bytes]:
    """Weights and learner state of the default learner after it has trained and
    consolidated once (optimizer moments, Fisher and anchors all present)."""
    config = model_config(settings, 10)
    learner = new_learner(settings, config)
    x, y = torch.randn(256, DIM), torch.randint(0, 10, (256,))
    learner.learn_many(x, y)
    learner.consolidate(x, y)
    return (model_to_bytes(learner.snapshot()),
            tensors_to_bytes(learner.state_dict(), learner.meta()))


async def test_thousand_versions_and_200k_items_stay_under_200_mb(tmp_path: Path) -> None:
    started = time.monotonic()
    labels = [f"c{i}" for i in range(10)]
    with EmbeddedRedis(tmp_path) as server:
        settings = Settings(redis_url=server.url, model_name="memory", input_dim=DIM,
                            labels=labels, redis_timeout_seconds=30)
        assert (settings.keep_versions, settings.max_lag) == (20, 1_000_000)  # the defaults
        weights, state = _realistic_blobs(settings)
        deployment = await open_deployment(settings)
        redis, keys, scripts, registry = (deployment.redis, deployment.keys, deployment.scripts,
                                          deployment.registry)
        try:
            # One dedupe window for the whole run (a real clock could cross a window's edge).
            feedback = FeedbackStore(redis, keys, scripts, clock=lambda: 1_800_000_000.0)
            stats = StatsStore(redis, keys)
            reader = FeedbackReader(redis, keys, DIM)
            await reader.ensure_group()
            token = int(await scripts.lease_acquire(keys=[keys.lease, keys.fence],
                                                    args=["memory-test", 600_000]))
            rng = np.random.default_rng(0)
            publishes_per_batch = VERSIONS // (ITEMS // BATCH)
            version = processed = 0
            pruned: list[int] = []
            for b in range(ITEMS // BATCH):
                x = rng.standard_normal((BATCH, DIM), dtype=np.float32)
                records = [
                    # Half labelled by prediction id (deduped: "p:<id>"), half inputs-only.
                    FeedbackRecord(f"p:{b:03d}-{i:04d}" if i % 2 == 0 else "", labels[i % 10],
                                   vector_to_bytes(x[i]), "", version if i % 2 == 0 else None)
                    for i in range(BATCH)
                ]
                result = await feedback.append(records, max_lag=settings.max_lag,
                                               max_classes=settings.max_classes)
                assert (result.accepted, result.duplicates) == (BATCH, 0)

                # The learner: read, learn, publish (retention after each), ack and trim.
                batch = await reader.read(BATCH, block_ms=100)
                assert len(batch) == BATCH
                processed += len(batch)
                committed = batch.ids[-1]
                for _ in range(publishes_per_batch):
                    version = await registry.allocate_version(token)
                    meta = version_meta(settings, version=version, parent=version - 1,
                                        samples_seen=processed, last_stream_id=committed,
                                        labels=list(labels), evaluation={"holdout": 0.9})
                    epoch = await registry.publish(
                        token=token, version=version, meta=meta, weights=weights, state=state,
                        status="active", last_stream_id=committed, samples_seen=processed,
                        parent=version - 1)
                    assert epoch > 0
                    pruned += await registry.prune(settings.keep_versions, token)
                await reader.ack_and_trim(batch.ids, committed)
                await stats.write({"model_version": version}, processed)
            elapsed = time.monotonic() - started

            assert version == VERSIONS
            assert pruned == list(range(VERSIONS + 1 - settings.keep_versions))  # 0..980
            with_blobs = [v for v in range(VERSIONS + 1)
                          if await redis.hexists(keys.version(v), "weights")]
            assert with_blobs == list(range(VERSIONS + 1 - settings.keep_versions, VERSIONS + 1))
            assert await redis.zcard(keys.versions) == VERSIONS + 1  # every version still listed
            assert int(await redis.hget(keys.counters, "accepted")) == ITEMS
            assert await feedback.lag() == 0
            stream_len = await redis.xlen(keys.stream)
            assert stream_len < 2 * BATCH  # trimmed below the committed id (approximately)
            (window,) = [k async for k in redis.scan_iter(match=keys.seen_pattern)]
            seen = await redis.hlen(window)
            assert seen == ITEMS // 2  # every id of this dedupe window, which then expires
            assert 0 < await redis.ttl(window) <= 3 * settings.prediction_ttl_seconds

            info = await redis.info("memory")
            used = int(info["used_memory"])
            usage = {name: await redis.memory_usage(key, samples=0) for name, key in (
                ("seen_ids", window), ("stream", keys.stream),
                ("kept version", keys.version(VERSIONS)), ("pruned version", keys.version(1)),
            )}
            report = (f"used_memory={used / 2**20:.1f} MiB "
                      f"(peak {int(info['used_memory_peak']) / 2**20:.1f} MiB, dataset "
                      f"{int(info.get('used_memory_dataset', 0)) / 2**20:.1f} MiB); "
                      f"weights blob {len(weights)} B, state blob {len(state)} B; "
                      f"seen_ids {seen} ids = {usage['seen_ids'] / 2**20:.1f} MiB; "
                      f"stream {stream_len} entries = {usage['stream'] / 2**10:.0f} KiB; "
                      f"kept version {usage['kept version']} B, pruned version "
                      f"{usage['pruned version']} B; {elapsed:.1f} s")
            print(report)
            assert used < LIMIT, report
            # Without retention the blobs alone would be far over the limit.
            assert VERSIONS * (len(weights) + len(state)) > 2 * LIMIT, report
        finally:
            await redis.aclose()
