"""The learner lease: one active learner per deployment; a fencing token guards every write."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from pathlib import Path

from redis.asyncio import Redis

from service.store.connection import UNAVAILABLE
from service.store.keys import Keys
from service.store.scripts import Scripts

log = logging.getLogger(__name__)


# A standby retries this often (or every half TTL, if shorter): a SET NX is cheap, and takeover
# then follows the lapse of a dead holder's lease within this, not within half a 10 s TTL.
STANDBY_POLL_SECONDS = 0.25


def process_alive(pid: int) -> bool:
    """Whether `pid` runs on this host (a zombie, killed but not yet reaped, does not)."""
    if Path("/proc/self/stat").exists():
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False
    try:  # no /proc (not Linux): ask the kernel
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LeaseLost(RuntimeError):
    pass


class Lease:
    def __init__(self, redis: Redis, keys: Keys, scripts: Scripts, ttl_seconds: float) -> None:
        self._redis = redis
        self._keys = keys
        self._scripts = scripts
        self._ttl_ms = int(ttl_seconds * 1000)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.token: int | None = None
        self.lost = asyncio.Event()

    async def try_acquire(self) -> bool:
        token = await self._scripts.lease_acquire(
            keys=[self._keys.lease, self._keys.fence], args=[self.owner, self._ttl_ms]
        )
        if token is None:
            return False
        self.token = int(token)
        return True

    async def try_take(self) -> bool:
        """Take the lease if it is free or its holder's process is gone (on this host)."""
        if await self.try_acquire() or (await self._break_dead_holder()
                                        and await self.try_acquire()):
            log.info("learner lease acquired (token %s)", self.token)
            return True
        return False

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait as a standby until the lease is ours (True) or we are told to stop (False).
        Returns at once where it is already held (taken by try_take)."""
        while not stop.is_set():
            if self.token is not None or await self.try_take():
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(self._ttl_ms / 2000, STANDBY_POLL_SECONDS))
        return False

    async def _break_dead_holder(self) -> bool:
        """A holder on this host whose process is gone (a crashed learner being restarted by
        the supervisor) cannot renew: take over now instead of waiting out its TTL. Safe even
        if wrong: the new fencing token refuses every write of the old holder."""
        raw = await self._redis.get(self._keys.lease)
        if raw is None:
            return False
        owner = raw.decode()
        host, _, rest = owner.partition(":")
        pid = rest.partition(":")[0]
        if host != socket.gethostname() or not pid.isdigit() or process_alive(int(pid)):
            return False
        if await self._scripts.lease_break(keys=[self._keys.lease], args=[owner]):
            log.warning("lease holder %s is no longer running: taking over", owner)
            return True
        return False

    async def renew(self) -> bool:
        ok = await self._scripts.lease_renew(
            keys=[self._keys.lease, self._keys.fence], args=[self.owner, self.token, self._ttl_ms]
        )
        return bool(ok)

    async def keep(self) -> None:
        """Renew every third of the TTL until cancelled; set `lost` when renewal fails."""
        while True:
            await asyncio.sleep(self._ttl_ms / 3000)
            try:
                if not await self.renew():
                    log.error("learner lease lost")
                    self.lost.set()
                    return
            except UNAVAILABLE as exc:  # redis-py's, not the builtins: keep trying until the TTL runs out
                log.warning("lease renewal failed: %s", exc)

    async def release(self) -> None:
        """Let a standby take over at once instead of after the TTL."""
        if self.token is not None:
            await self._scripts.lease_renew(
                keys=[self._keys.lease, self._keys.fence], args=[self.owner, self.token, 1]
            )
