"""The prediction log's keys carry the model's hash tag (one Redis Cluster slot for all of a
model's keys), and a purge still deletes the untagged keys that versions before it wrote
(until they expire with MNEMO_PREDICTION_TTL_SECONDS)."""

from __future__ import annotations

import numpy as np
from redis.cluster import key_slot

from service.store.connection import connect
from service.store.keys import Keys
from service.store.predictions import PredictionLog
from tests.conftest import REDIS_URL


def test_every_key_of_a_model_hashes_to_its_slot() -> None:
    keys = Keys("fraud")
    slot = key_slot(keys.meta.encode())
    names = [keys.prediction_batch("0123456789abcdef"), keys.prediction_alias("req-1"),
             keys.prediction_log_bytes, keys.stream, keys.seen_bucket(7), keys.drift_samples,
             keys.version(3), keys.fence, keys.purge("p")]
    assert {key_slot(name.encode()) for name in names} == {slot}
    assert key_slot(Keys("churn").meta.encode()) != slot  # models spread over slots
    assert keys.all_patterns() == ["mnemo:{fraud}:*"]


async def test_a_purge_deletes_the_untagged_keys_of_earlier_versions(model_name: str) -> None:
    redis = connect(REDIS_URL, 5)
    keys = Keys(model_name)
    log = PredictionLog(redis, keys, input_dim=2, ttl_seconds=60)
    try:
        rows = np.ones((2, 2), np.float32)
        await log.log("aaaaaaaaaaaaaaaa", rows, 0, "doomed", client_ids=["old-1"])
        await log.log("bbbbbbbbbbbbbbbb", rows, 0, "kept")
        # As a version before the hash tag left them.
        legacy = [f"mnemo:{model_name}:pred:aaaaaaaaaaaaaaaa", f"mnemo:{model_name}:pid:old-1",
                  f"mnemo:{model_name}:pred:bbbbbbbbbbbbbbbb"]
        await redis.rename(keys.prediction_batch("aaaaaaaaaaaaaaaa"), legacy[0])
        await redis.rename(keys.prediction_alias("old-1"), legacy[1])
        await redis.rename(keys.prediction_batch("bbbbbbbbbbbbbbbb"), legacy[2])
        assert await log.purge("doomed") == 2
        assert [await redis.exists(name) for name in legacy] == [0, 0, 1]
        assert await log.purge(None) == 1
        assert not await redis.exists(legacy[2])
    finally:
        await log.close()
        await redis.aclose()
