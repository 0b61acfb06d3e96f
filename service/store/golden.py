"""The trusted golden set the learner's gate checks candidates against (admin-supplied)."""

from __future__ import annotations

from redis.asyncio import Redis

from service.store.codec import decode_labelled, encode_labelled
from service.store.connection import count_and_delete
from service.store.keys import Keys
from service.store.scripts import Scripts


class GoldenSet:
    def __init__(self, redis: Redis, keys: Keys, scripts: Scripts) -> None:
        self._redis = redis
        self._keys = keys
        self._scripts = scripts

    async def add(self, entries: list[tuple[bytes, str, str]]) -> tuple[int, int]:
        """Add (stored input, label text, tag) entries the set does not hold yet, so a
        retried request adds nothing twice: (how many were new, the set's new size)."""
        added, size = await self._scripts.golden_add(
            keys=[self._keys.golden],
            args=[encode_labelled(x, label, tag) for x, label, tag in entries])
        return int(added), int(size)

    async def items(self) -> list[tuple[bytes, str, str]]:
        """(stored input, label text, tag) of every item, in insertion order."""
        return [decode_labelled(b) for b in await self._redis.lrange(self._keys.golden, 0, -1)]

    async def clear(self) -> None:
        await self._redis.delete(self._keys.golden)

    async def purge(self, tag: str | None) -> int:
        """Remove golden items with this tag (None: all); only ever when an operator names
        the golden set in a purge. Counts only what this call removed: the API and the
        learner may purge at once (the learner when the API has not marked its part done),
        and their counts are added up."""
        if tag is None:
            return await count_and_delete(self._redis, self._keys.golden, "llen")
        removed = 0
        for blob in await self._redis.lrange(self._keys.golden, 0, -1):
            if decode_labelled(blob)[2] == tag:
                removed += int(await self._redis.lrem(self._keys.golden, 0, blob))
        return removed
