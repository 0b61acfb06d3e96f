"""Follow the registry's `current` pointer (pub/sub, plus a periodic poll for missed messages)
and swap the served model off the request path. A load that fails keeps the old version."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.monitor.api_metrics import ApiMetrics
from service.serving.holder import ModelHolder, load_served
from service.store.connection import UNAVAILABLE
from service.store.keys import Keys
from service.store.registry import Registry

log = logging.getLogger(__name__)


class VersionFollower:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        registry: Registry,
        holder: ModelHolder,
        metrics: ApiMetrics,
        poll_seconds: float,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._registry = registry
        self._holder = holder
        self._metrics = metrics
        self._poll = poll_seconds
        self._failed_epoch: int | None = None
        self._stopping = asyncio.Event()

    async def sync_once(self) -> bool:
        """Load and swap in the current version if its epoch differs from the served one."""
        pointer = await self._registry.current()
        served = self._holder.served
        if pointer is None or (served is not None and served.epoch == pointer.epoch):
            return False
        if pointer.epoch == self._failed_epoch:
            return False  # already failed; wait for the next pointer change
        try:
            meta = await self._registry.meta(pointer.version)
            blob = await self._registry.weights(pointer.version)
            # Deserialising and warming a model is CPU work: keep it off the event loop.
            new = await asyncio.to_thread(load_served, blob, meta, pointer.epoch, served)
        except (RedisError, *UNAVAILABLE):
            raise
        except Exception:
            self._failed_epoch = pointer.epoch
            self._metrics.load_failures.inc()
            log.exception("loading version %s failed; keeping the served one", pointer.version)
            return False
        self._holder.swap(new)
        self._metrics.version.set(new.version)
        if served is not None:
            self._metrics.swaps.inc()
            oldest = meta.get("oldest_new_accepted_ms")
            if oldest:
                self._metrics.freshness.observe(max(0.0, time.time() - oldest / 1000))
        log.info("serving version %s (epoch %s)", new.version, new.epoch)
        return True

    async def run(self) -> None:
        """Until stop(): wake on an event or every poll interval, then sync.

        Not stopped by cancellation: redis-py's get_message can swallow a CancelledError and
        keep waiting, so the loop checks a flag between short waits instead."""
        wait = min(self._poll, 0.2)
        last_sync = 0.0
        while not self._stopping.is_set():
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._keys.events)
                while not self._stopping.is_set():
                    message = await pubsub.get_message(timeout=wait)
                    if message is not None or time.monotonic() - last_sync >= self._poll:
                        last_sync = time.monotonic()
                        await self.sync_once()
            except (RedisError, *UNAVAILABLE) as exc:  # a cluster's failover errors too
                log.warning("version follower: Redis unavailable (%s); retrying", exc)
                await asyncio.sleep(wait)
            finally:
                with contextlib.suppress(RedisError, *UNAVAILABLE):
                    await pubsub.aclose()

    def stop(self) -> None:
        self._stopping.set()
