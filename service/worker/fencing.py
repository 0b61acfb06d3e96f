"""Writes guarded by the learner's fencing token: a learner that lost the lease must not
change anything another learner now owns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError, WatchError

from service.store.keys import Keys

T = TypeVar("T")


class Fenced(RuntimeError):
    """Another learner holds the lease now; this one must stop writing."""


async def fenced(call: Awaitable[T]) -> T:
    """Await a fenced Lua call, turning its FENCED error reply into Fenced."""
    try:
        return await call
    except ResponseError as exc:
        if "FENCED" in str(exc):
            raise Fenced(str(exc)) from None
        raise


async def fenced_hset(redis: Redis, keys: Keys, token: int | None, key: str,
                      mapping: dict[str, Any]) -> None:
    """HSET only while `token` is still the fencing token, atomically (WATCH): e.g. a stale
    learner must not overwrite the live one's `processed`, which drives lag and shedding."""
    await fenced_write(redis, keys, token, lambda pipe: pipe.hset(key, mapping=mapping))


async def fenced_write(redis: Redis, keys: Keys, token: int | None,
                       queue: Callable[[Pipeline], object]) -> None:
    """Run the commands `queue` puts on the transaction only while `token` is still the
    fencing token, atomically (WATCH)."""
    async with redis.pipeline(transaction=True) as pipe:
        await pipe.watch(keys.fence)
        if await pipe.get(keys.fence) != str(token).encode():
            raise Fenced("this learner no longer holds the lease")
        pipe.multi()
        queue(pipe)
        try:
            await pipe.execute()
        except WatchError:  # the fence moved between the check and the write
            raise Fenced("this learner no longer holds the lease") from None
