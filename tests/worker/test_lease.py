"""The learner lease's keeper against a real server that stalls: a renewal that times out is
retried (it must not kill the keeper, or the lease silently lapses under a working learner)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from service.embedded import EmbeddedRedis
from service.store.connection import connect
from service.store.keys import Keys
from service.store.scripts import Scripts
from service.worker.lease import Lease
from tests.conftest import REDIS_URL

TTL = 1.5  # renewed every 0.5 s


async def test_keeper_survives_a_redis_stall_and_keeps_the_lease(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as server, redis.Redis.from_url(server.url) as sync:
        assert server.pid is not None
        aredis = connect(server.url, 0.2)
        keys = Keys("lease-test")
        lease = Lease(aredis, keys, Scripts(aredis), TTL)
        assert await lease.try_acquire()
        keeper = asyncio.create_task(lease.keep())
        try:
            os.kill(server.pid, signal.SIGSTOP)  # Redis stops answering: a renewal times out
            try:
                stalled_until = time.monotonic() + 0.8
                while time.monotonic() < stalled_until:
                    await asyncio.sleep(0.05)
            finally:
                os.kill(server.pid, signal.SIGCONT)
            # For two lease lifetimes after the stall, the lease stays ours and renewed.
            end = time.monotonic() + 2 * TTL
            while time.monotonic() < end:
                assert not keeper.done(), keeper.exception()
                assert sync.get(keys.lease) == lease.owner.encode()
                await asyncio.sleep(0.1)
            assert not lease.lost.is_set()
            assert 0 < sync.pttl(keys.lease) <= TTL * 1000
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await aredis.aclose()


async def test_a_dead_holder_on_this_host_is_taken_over_without_waiting_for_its_ttl(
    redis_client: redis.Redis, model_name: str
) -> None:
    keys = Keys(model_name)
    dead = subprocess.Popen(["true"])
    dead.wait()  # reaped: its pid names no process now
    host = socket.gethostname()
    aredis = connect(REDIS_URL, 2)
    try:
        stop = asyncio.Event()
        for owner, breakable in ((f"{host}:{os.getpid()}:alive", False),  # alive: kept
                                 (f"other-host:{dead.pid}:x", False),  # another host: kept
                                 (f"{host}:{dead.pid}:dead", True)):
            redis_client.set(keys.lease, owner, px=60_000)
            redis_client.set(keys.fence, 7)
            lease = Lease(aredis, keys, Scripts(aredis), 60)
            if breakable:
                assert await asyncio.wait_for(lease.acquire(stop), 5)
                assert lease.token == 8 and redis_client.get(keys.lease) == lease.owner.encode()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lease.acquire(stop), 1)
                assert lease.token is None and redis_client.get(keys.lease) == owner.encode()
    finally:
        await aredis.aclose()
