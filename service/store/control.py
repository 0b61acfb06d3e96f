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
    golden: bool = False  # the golden set too (only when an operator names it)

    def matches(self, tag: str) -> bool:
        return self.tag is None or tag == self.tag


def new_purge_id() -> str:
    return secrets.token_hex(8)


class Control:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def set_paused(self, paused: bool) -> None:
        await self._redis.hset(self._keys.control, "paused", int(paused))

    async def paused(self) -> bool:
        return await self._redis.hget(self._keys.control, "paused") == b"1"

    async def request_purge(self, request: PurgeRequest) -> None:
        """Record the purge before anything is deleted (one transaction): whatever happens
        to the deletions after this, the learner finishes the purge, so raw inputs are never
        left half-deleted with nobody to complete it."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self._keys.purge(request.purge_id), mapping={
            "status": "pending", "tag": request.tag or "", "golden": int(request.golden)})
        pipe.rpush(self._keys.purge_queue, json.dumps(
            {"id": request.purge_id, "tag": request.tag, "golden": request.golden}))
        await pipe.execute()

    async def served_part_done(self, purge_id: str, removed: dict[str, int]) -> None:
        """The prediction log's (and the golden set's) part is deleted. The API and the
        learner may both do it (the learner when the API has not marked it done yet): each
        adds what it deleted itself, so counts add up and neither overwrites the other."""
        pipe = self._redis.pipeline(transaction=True)
        self._add_served(pipe, purge_id, removed)
        await pipe.execute()

    async def served_part(self, purge_id: str) -> bool:
        """Whether the served part is marked done."""
        return await self._redis.hget(self._keys.purge(purge_id), "served_done") == b"1"

    def _add_served(self, pipe: Any, purge_id: str, removed: dict[str, int]) -> None:
        for name, count in removed.items():
            pipe.hincrby(self._keys.purge(purge_id), f"served_{name}", count)
        pipe.hset(self._keys.purge(purge_id), "served_done", 1)

    async def next_purge(self) -> PurgeRequest | None:
        return _request(await self._redis.lindex(self._keys.purge_queue, 0))

    async def poll(self) -> tuple[bool, PurgeRequest | None]:
        """(paused, oldest pending purge) in one round trip: the learner asks every step."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hget(self._keys.control, "paused")
        pipe.lindex(self._keys.purge_queue, 0)
        paused, head = await pipe.execute()
        return paused == b"1", _request(head)

    async def finish_purge(self, request: PurgeRequest, removed: dict[str, int],
                           served: dict[str, int] | None = None) -> None:
        """Mark done and drop it from the queue, in one transaction (a crash before this
        repeats the purge, which is idempotent); `served`: the prediction log's part, when
        the learner did it because the API could not."""
        pipe = self._redis.pipeline(transaction=True)
        if served is not None:
            self._add_served(pipe, request.purge_id, served)
        pipe.hset(self._keys.purge(request.purge_id),
                  mapping={"status": "done", "removed": json.dumps(removed)})
        pipe.expire(self._keys.purge(request.purge_id), 7 * 86_400)
        pipe.lpop(self._keys.purge_queue)
        await pipe.execute()

    async def purge_status(self, purge_id: str) -> dict[str, Any] | None:
        """Where a purge stands; `removed` counts what is done so far in every place
        (predictions and golden from the served part, stream/replay/holdout once done)."""
        raw = await self._redis.hgetall(self._keys.purge(purge_id))
        if not raw:
            return None
        status = {k.decode(): v.decode() for k, v in raw.items()}
        served = {name.removeprefix("served_"): int(value) for name, value in status.items()
                  if name.startswith("served_") and name != "served_done"}
        learner = json.loads(status["removed"]) if "removed" in status else {}
        removed = {**served, **learner} or None
        return {"purge_id": purge_id, "status": status["status"], "tag": status["tag"] or None,
                "golden": status.get("golden") == "1", "removed": removed}


def _request(raw: bytes | None) -> PurgeRequest | None:
    if raw is None:
        return None
    body = json.loads(raw)
    return PurgeRequest(body["id"], body["tag"], bool(body.get("golden", False)))
