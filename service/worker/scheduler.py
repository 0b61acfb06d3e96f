"""Which models this learner process trains.

Each model has its own lease (service/worker/lease.py). A learner takes free leases up to its
target, min(MNEMO_LEARNER_CAPACITY, its even share of the models over the learners alive),
and hands leases back when the share shrinks (a learner joined), so the models spread over
the learners; when a learner dies, its leases lapse (or are broken at once on the same host)
and the others take them over within the lease TTL. A model is trained by one learner at a
time: its lease's fencing token refuses every write of a former holder."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.config import Settings
from service.logs import model_var
from service.store.connection import UNAVAILABLE
from service.store.roster import LearnerRoster
from service.worker.lease import STANDBY_POLL_SECONDS
from service.worker.loop import LearnerService

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 8.0


def backoff_seconds(failures: int) -> float:
    """The pause before the next start after `failures` failed ones in a row."""
    return min(MAX_BACKOFF_SECONDS, RECONNECT_SECONDS * 2 ** max(0, failures - 1))


def target_models(models: int, learners: int, capacity: int) -> int:
    """How many models one learner should hold: its even share, within its capacity."""
    share = math.ceil(models / max(1, learners))
    return min(share, capacity) if capacity else share


@dataclass
class _Slot:
    """One model this process trains now."""

    service: LearnerService
    stop: asyncio.Event
    task: asyncio.Task[int]
    started: float = field(default_factory=time.monotonic)


class ModelScheduler:
    def __init__(self, models: list[Settings], redis: Redis, capacity: int,
                 make_service: Callable[[Settings], LearnerService]) -> None:
        self._models = {model.model_name: model for model in models}
        self._redis = redis
        self._capacity = capacity
        self._make_service = make_service
        ttl = models[0].lease_ttl_seconds
        self._poll = min(ttl / 2, STANDBY_POLL_SECONDS)
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._roster = LearnerRoster(redis, self._models, owner, ttl)
        self._slots: dict[str, _Slot] = {}
        self._failures: dict[str, int] = {}
        self._not_before: dict[str, float] = {}
        # Where this learner starts looking for free models: learners starting together then
        # try different models first instead of racing for the same lease.
        self._offset = uuid.uuid4().int % len(models)

    @property
    def training(self) -> list[str]:
        """The models this process holds the lease of now."""
        return sorted(self._slots)

    async def run(self, stop: asyncio.Event) -> int:
        """Take, train and hand back models until `stop`; then stop every model cleanly."""
        try:
            while not stop.is_set():
                await self._reap()
                try:
                    learners = await self._roster.heartbeat()
                    await self._balance(learners)
                except (*UNAVAILABLE, RedisError) as exc:
                    log.warning("learner scheduling: Redis unavailable (%s); retrying", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._poll)
        finally:
            await self._stop_all()
        return 0

    async def _balance(self, learners: int) -> None:
        target = target_models(len(self._models), learners, self._capacity)
        if len(self._slots) > target:
            # A learner joined: hand the newest model back; another takes its lease at once.
            name = max(self._slots, key=lambda n: self._slots[n].started)
            log.info("handing model %s to another learner (%d learners, %d each)", name,
                     learners, target)
            self._slots[name].stop.set()
            return
        names = list(self._models)
        for name in names[self._offset:] + names[:self._offset]:
            if len(self._slots) >= target:
                return
            if name in self._slots or time.monotonic() < self._not_before.get(name, 0.0):
                continue
            token = model_var.set(name)
            try:
                service = self._make_service(self._models[name])
                if await service.lease.try_take():
                    stop = asyncio.Event()
                    task = asyncio.create_task(service.run(stop), name=f"learner-{name}")
                    self._slots[name] = _Slot(service, stop, task)
            finally:
                model_var.reset(token)

    async def _reap(self) -> None:
        """Forget the models whose run ended; after a Redis error, back off before taking
        that model again (a full Redis still answers PING: no restart in a tight loop)."""
        for name, slot in list(self._slots.items()):
            if not slot.task.done():
                continue
            del self._slots[name]
            exc = slot.task.exception() if not slot.task.cancelled() else None
            if exc is None:
                self._failures[name] = 0
                if slot.task.result() == 1:  # fenced or lease lost: another learner has it
                    log.warning("model %s: lease lost; learner restarting as a standby", name)
                continue
            if not isinstance(exc, (*UNAVAILABLE, RedisError)):
                raise exc  # a bug, not the weather: the process exits (the supervisor restarts)
            expected = isinstance(exc, UNAVAILABLE)
            log.log(logging.WARNING if expected else logging.ERROR,
                    "model %s: Redis error (%s: %s): restarting from its last published "
                    "version once it answers", name, type(exc).__name__, exc,
                    exc_info=exc if not expected else None)
            with contextlib.suppress(*UNAVAILABLE, RedisError):
                await slot.service.lease.release()
            ran = time.monotonic() - slot.started
            failures = 0 if ran > MAX_BACKOFF_SECONDS else self._failures.get(name, 0) + 1
            self._failures[name] = failures
            self._not_before[name] = time.monotonic() + backoff_seconds(failures)
            log.info("model %s: learner restarting as a standby", name)

    async def _stop_all(self) -> None:
        for slot in self._slots.values():
            slot.stop.set()
        tasks = [slot.task for slot in self._slots.values()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._slots.clear()
        with contextlib.suppress(*UNAVAILABLE, RedisError):
            await self._roster.leave()
