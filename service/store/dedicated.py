"""A connection of the client's pool kept by one hot writer, its commands sent as one packed
write and their replies read in order: a pipeline without redis-py's per-call machinery.

The prediction log writes on every predict micro-batch; redis-py's pipeline spends most of
such a round trip's CPU on itself (a pipeline object, the pool's checkout and release, its
instrumentation): SET + XADD cost 220-270 µs of client CPU through it and 120 µs this way
(/tmp A/B on the 2-core dev machine, one round trip at a time). The connection and its
settings (auth, database, TLS, timeouts) are the pool's own.

That fast path uses redis-py's connection internals (a pool's get_connection, a connection's
pack_commands / send_packed_command / read_response / connect / is_connected). Where they are not there — the cluster
client has a pool per node, not one; a redis-py without them — the same calls go through the
public pipeline instead: same commands, same order, one round trip per node.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

_CONNECTION_CALLS = ("pack_commands", "send_packed_command", "read_response", "connect", "disconnect")


def fast_path_available(redis: Redis) -> bool:
    """Whether this client has the single pool and connection calls the fast path uses."""
    pool = getattr(redis, "connection_pool", None)
    connection_class = getattr(pool, "connection_class", None)
    return (isinstance(redis, Redis) and callable(getattr(pool, "get_connection", None))
            and callable(getattr(pool, "release", None)) and connection_class is not None
            and all(callable(getattr(connection_class, name, None)) for name in _CONNECTION_CALLS)
            and hasattr(connection_class, "is_connected"))


class DedicatedConnection:
    """One writer's connection. Calls are serialised (a lock): replies are read in order.
    `fast=False` takes the public pipeline path even where the fast one is available."""

    def __init__(self, redis: Redis, *, fast: bool | None = None) -> None:
        self._redis = redis
        self.fast = fast_path_available(redis) if fast is None else fast and fast_path_available(redis)
        self._pool = redis.connection_pool if self.fast else None
        self._conn: AbstractConnection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Take and connect the connection now (at start-up) rather than in the first call."""
        if self._pool is None:
            return  # the pipeline path takes a connection per call
        async with self._lock:
            if self._conn is None:
                self._conn = await self._pool.get_connection()  # connected by the pool

    async def execute(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send `commands` in one write and return their raw replies (no response callbacks
        on the fast path; the pipeline path's are the client's); raises the first error reply
        (redis ResponseError), or what the connection raised."""
        if self._pool is None:
            return await self._pipelined(commands)
        async with self._lock:
            if self._conn is None:
                self._conn = await self._pool.get_connection()
            conn = self._conn
            packed = conn.pack_commands(commands)

            try:
                return await self._attempt(conn, packed, len(commands))
            except RedisConnectionError:
                # Once more on a fresh socket: a kept connection outlives a Redis restart or
                # failover, and its first use afterwards finds the old socket closed. (Only
                # for writes that may be sent twice: the log's SETs are, a drift sample may
                # be taken twice.)
                return await self._attempt(conn, packed, len(commands))

    async def _pipelined(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        # The cluster client routes each command by its key (all of one model's keys share a
        # slot: one node) and follows MOVED and failovers itself.
        pipe = self._redis.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute())

    @staticmethod
    async def _attempt(conn: AbstractConnection, packed: list[bytes], replies: int) -> list[Any]:
        try:
            if not conn.is_connected:
                # Its own connect(), not the implicit one of the send: a Sentinel-managed
                # connection asks the sentinels where the primary is now in connect().
                await conn.connect()
            await conn.send_packed_command(packed, check_health=False)
            return [await conn.read_response() for _ in range(replies)]
        except BaseException:
            # Unread replies (an error reply, a timeout, a cancelled caller) would be taken
            # for the next call's: that one starts on a fresh connection.
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
            raise

    async def close(self) -> None:
        """Give the connection back to the pool."""
        async with self._lock:
            if self._conn is not None and self._pool is not None:
                conn, self._conn = self._conn, None
                await self._pool.release(conn)
