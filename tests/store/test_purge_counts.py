"""A purge's counts are what was removed, once: the API and the learner may purge the golden
set and the drift samples at the same moment (the learner when the API has not marked its
part done yet), and each adds what it removed itself to the purge's status."""

from __future__ import annotations

import asyncio

import redis

from service.store.connection import connect
from service.store.golden import GoldenSet
from service.store.keys import Keys
from service.store.predictions import purge_drift_samples
from service.store.scripts import Scripts
from tests.conftest import REDIS_URL


async def test_two_concurrent_purges_of_everything_count_each_item_once(
    model_name: str, redis_client: redis.Redis,
) -> None:
    aredis = connect(REDIS_URL, 5)
    keys = Keys(model_name)
    golden = GoldenSet(aredis, keys, Scripts(aredis))
    try:
        await golden.add([(f"row-{i}".encode(), "setosa", "secret") for i in range(5)])
        for i in range(7):
            redis_client.xadd(keys.drift_samples, {"t": "secret", "x": str(i)})
        counts = await asyncio.gather(golden.purge(None), golden.purge(None))
        assert sorted(counts) == [0, 5]
        samples = await asyncio.gather(*(purge_drift_samples(aredis, keys, None)
                                         for _ in range(2)))
        assert sorted(samples) == [0, 7]
        assert not redis_client.exists(keys.golden, keys.drift_samples)
    finally:
        await aredis.aclose()
