"""The prediction log's own connection against a real Redis: replies in order, and nothing a
failed call leaves on the wire (an error reply, a cancelled caller, a restarted server) is
read as the next call's reply."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.exceptions import ResponseError

from service.store.connection import connect
from service.store.dedicated import DedicatedConnection
from service.store.keys import Keys
from tests.conftest import REDIS_URL
from tests.reliability.cluster import RedisServer


async def test_replies_come_back_in_order_and_the_commands_ran(model_name: str) -> None:
    redis = connect(REDIS_URL, 5)
    key = Keys(model_name).prediction_batch("dedicated")
    conn = DedicatedConnection(redis)
    try:
        await conn.open()  # what the API's start-up does; execute() would take one itself
        replies = await conn.execute([("SET", key, b"v1", "EX", 60), ("GET", key),
                                      ("APPEND", key, b"23"), ("TTL", key)])
        assert replies[:3] == [b"OK", b"v1", 4] and 0 < replies[3] <= 60
        assert await redis.get(key) == b"v123"
    finally:
        await conn.close()
        await redis.aclose()


async def test_an_error_reply_raises_and_the_next_call_reads_its_own_replies(
        model_name: str) -> None:
    redis = connect(REDIS_URL, 5)
    keys = Keys(model_name)
    text, counter = keys.prediction_batch("text"), keys.prediction_batch("n")
    conn = DedicatedConnection(redis)
    try:
        await redis.set(text, b"not a number")
        with pytest.raises(ResponseError, match="not an integer"):
            # The error is the first reply: the second, unread, must not reach the next call.
            await conn.execute([("INCR", text), ("SET", counter, b"1")])
        assert await redis.get(counter) == b"1"  # the server ran what it was sent
        assert await conn.execute([("GET", counter), ("INCR", counter)]) == [b"1", 2]
    finally:
        await conn.close()
        await redis.aclose()


async def test_a_cancelled_call_leaves_nothing_for_the_next(model_name: str) -> None:
    redis = connect(REDIS_URL, 5)
    key = Keys(model_name).prediction_batch("slow")
    conn = DedicatedConnection(redis)
    try:
        await conn.execute([("SET", key, b"before")])
        # DEBUG SLEEP would block the suite's shared server: a blocking pop on an empty list
        # waits server-side instead, and the caller gives up before its reply.
        stuck = asyncio.create_task(conn.execute([("BLPOP", f"{key}:empty", 0.3), ("GET", key)]))
        await asyncio.sleep(0.1)
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck
        await asyncio.sleep(0.4)  # the BLPOP's nil reply arrives on the abandoned socket
        assert await conn.execute([("GET", key)]) == [b"before"]
    finally:
        await conn.close()
        await redis.aclose()


async def test_calls_go_on_after_the_server_restarts(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as server:
        redis = connect(server.url, 5)
        conn = DedicatedConnection(redis)
        try:
            assert await conn.execute([("SET", "k", b"1")]) == [b"OK"]
            server.kill()
            server.start()  # same port and directory (AOF): the key survived
            # The first attempt finds the old socket closed; the pool's retry reconnects.
            assert await conn.execute([("GET", "k"), ("INCR", "k")]) == [b"1", 2]
        finally:
            await conn.close()
            await redis.aclose()
