"""The feedback script reads its items from one packed argument: every field arrives byte for
byte (multi-byte text, empty inputs and versions, large inputs), in order."""

from __future__ import annotations

import numpy as np
import redis
from redis.asyncio import Redis

from service.store.codec import vector_to_bytes
from service.store.feedback import FeedbackRecord, FeedbackStore
from service.store.keys import Keys
from service.store.scripts import Scripts
from tests.conftest import REDIS_URL


async def test_packed_items_arrive_field_for_field(model_name: str,
                                                   redis_client: redis.Redis) -> None:
    aredis = Redis.from_url(REDIS_URL)
    keys = Keys(model_name)
    store = FeedbackStore(aredis, keys, Scripts(aredis))
    big = vector_to_bytes(np.arange(20_000, dtype=np.float32))  # > 64 KiB: 32-bit lengths
    records = [
        FeedbackRecord("p:ïd-1", "é✓", vector_to_bytes(np.ones(4, np.float32)), "tåg", 3),
        FeedbackRecord("", "ß", b"", "", None),
        FeedbackRecord("f:x", "plain", big, "t", 12345),
    ]
    result = await store.append(records, max_lag=100, max_classes=10)
    await aredis.aclose()
    assert (result.accepted, result.duplicates) == (3, 0)
    entries = [fields for _, fields in redis_client.xrange(keys.stream)]
    assert [(e[b"id"], e[b"y"], e[b"x"], e[b"tag"], e[b"v"]) for e in entries] == [
        ("p:ïd-1".encode(), "é✓".encode(), records[0].x, "tåg".encode(), b"3"),
        (b"", "ß".encode(), b"", b"", b""),
        (b"f:x", b"plain", big, b"t", b"12345"),
    ]
    assert redis_client.lrange(keys.vocab_order, 0, -1) == ["é✓".encode(), "ß".encode(),
                                                             b"plain"]
