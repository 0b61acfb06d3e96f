"""The learner's live statistics as the API reads them, and the learner writes them."""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

from service.store.keys import Keys


class StatsStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def read(self) -> tuple[dict[str, Any], int, int, int]:
        """(learner stats, accepted, processed, reservoir size) in one round trip."""
        k = self._keys
        pipe = self._redis.pipeline(transaction=False)
        pipe.hget(k.learner_stats, "stats")
        pipe.hget(k.counters, "accepted")
        pipe.hget(k.learner_stats, "processed")
        pipe.hlen(k.reservoir)
        raw, accepted, processed, reservoir = await pipe.execute()
        stats = json.loads(raw) if raw else {}
        return stats, int(accepted or 0), int(processed or 0), int(reservoir)

    async def write(self, stats: dict[str, Any], processed: int) -> None:
        await self._redis.hset(
            self._keys.learner_stats, mapping={"stats": json.dumps(stats), "processed": processed}
        )
