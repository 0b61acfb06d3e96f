"""Operator controls the learner obeys: pause/resume, and purge requests it executes (it is
the single writer of the stream position, the replay buffer and the holdout)."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from service.store.keys import Keys


@dataclass(frozen=True)
class PurgeRequest:
    purge_id: str
    tag: str | None  # None: everything

    def matches(self, tag: str) -> bool:
        return self.tag is None or tag == self.tag


class Control:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def set_paused(self, paused: bool) -> None:
        await self._redis.hset(self._keys.control, "paused", int(paused))

    async def paused(self) -> bool:
        return await self._redis.hget(self._keys.control, "paused") == b"1"

    async def request_purge(self, tag: str | None) -> str:
        purge_id = secrets.token_hex(8)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self._keys.purge(purge_id), mapping={"status": "pending", "tag": tag or ""})
        pipe.rpush(self._keys.purge_queue, json.dumps({"id": purge_id, "tag": tag}))
        await pipe.execute()
        return purge_id

    async def next_purge(self) -> PurgeRequest | None:
        return _request(await self._redis.lindex(self._keys.purge_queue, 0))

    async def poll(self) -> tuple[bool, PurgeRequest | None]:
        """(paused, oldest pending purge) in one round trip: the learner asks every step."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hget(self._keys.control, "paused")
        pipe.lindex(self._keys.purge_queue, 0)
        paused, head = await pipe.execute()
        return paused == b"1", _request(head)

    async def finish_purge(self, request: PurgeRequest, removed: dict[str, int]) -> None:
        """Mark done and drop it from the queue, in one transaction (a crash before this
        repeats the purge, which is idempotent)."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self._keys.purge(request.purge_id),
                  mapping={"status": "done", "removed": json.dumps(removed)})
        pipe.expire(self._keys.purge(request.purge_id), 7 * 86_400)
        pipe.lpop(self._keys.purge_queue)
        await pipe.execute()

    async def purge_status(self, purge_id: str) -> dict[str, Any] | None:
        raw = await self._redis.hgetall(self._keys.purge(purge_id))
        if not raw:
            return None
        status = {k.decode(): v.decode() for k, v in raw.items()}
        return {"purge_id": purge_id, "status": status["status"], "tag": status["tag"] or None,
                "removed": json.loads(status["removed"]) if "removed" in status else None}


def _request(raw: bytes | None) -> PurgeRequest | None:
    if raw is None:
        return None
    body = json.loads(raw)
    return PurgeRequest(body["id"], body["tag"])
