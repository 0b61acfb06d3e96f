"""The learner processes alive now: each renews its entry in one sorted set (owner -> the
moment it expires), so learners can split the models evenly between them. Learners of the
same models share a roster; another deployment on the same Redis has its own."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable

from redis.asyncio import Redis


class LearnerRoster:
    def __init__(self, redis: Redis, models: Iterable[str], owner: str, ttl_seconds: float,
                 namespace: str = "mnemo") -> None:
        self._redis = redis
        self._owner = owner
        self._ttl_ms = int(ttl_seconds * 1000)
        catalog = hashlib.sha1(",".join(sorted(models)).encode()).hexdigest()[:12]
        self._key = f"{namespace}:{{learners:{catalog}}}:live"  # one key, one cluster slot

    async def heartbeat(self) -> int:
        """Renew this learner's entry, drop lapsed ones; how many learners are alive."""
        now = int(time.time() * 1000)  # host clocks: NTP-close is close enough for a split
        pipe = self._redis.pipeline(transaction=False)
        pipe.zadd(self._key, {self._owner: now + self._ttl_ms})
        pipe.zremrangebyscore(self._key, "-inf", now)
        pipe.zcard(self._key)
        pipe.pexpire(self._key, 3 * self._ttl_ms)  # no learner left: the key goes too
        return int((await pipe.execute())[2])

    async def leave(self) -> None:
        await self._redis.zrem(self._key, self._owner)
