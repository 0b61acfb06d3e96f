"""The learner's live statistics as the API reads them, and the learner writes them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from service.store.keys import Keys


@dataclass(frozen=True)
class StatsSnapshot:
    learner: dict[str, Any]
    processed: int
    lag: int
    reservoir: int
    paused: bool


class StatsStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def read(self) -> StatsSnapshot:
        """Everything /v1/stats needs, in one round trip."""
        k = self._keys
        pipe = self._redis.pipeline(transaction=False)
        pipe.hmget(k.learner_stats, "stats", "processed")
        pipe.hmget(k.counters, "accepted", "purged")
        pipe.hlen(k.reservoir)
        pipe.hget(k.control, "paused")
        (raw, processed), (accepted, purged), reservoir, paused = await pipe.execute()
        done = int(processed or 0)
        return StatsSnapshot(
            learner=json.loads(raw) if raw else {},
            processed=done,
            # Items purged before the learner read them will never be processed.
            lag=max(0, int(accepted or 0) - int(purged or 0) - done),
            reservoir=int(reservoir),
            paused=paused == b"1",
        )

    async def write(self, stats: dict[str, Any], processed: int) -> None:
        await self._redis.hset(
            self._keys.learner_stats, mapping={"stats": json.dumps(stats), "processed": processed}
        )
