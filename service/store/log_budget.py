"""The prediction log's budget: how many bytes of Redis memory the log and its drift samples
hold for one model, so predicts can be shed (429) before Redis is full.

Each API process adds up the bytes of the keys its log writes store and, at most once a
second, adds them to the current time bucket's counter in one hash shared by all processes:
one HINCRBY riding on a log write's own round trip (so a write costs no extra command, and
the hash changes only with the log: a refused request still changes nothing). About once a
second, in the background, it reads every bucket back and
measures the drift-sample stream (capped by MAXLEN and trimmed by the learner: MEMORY USAGE),
one round trip; only while over the budget does it also send its own last bytes then (it
writes no more, and the other processes must see them). A bucket is dropped once everything
written in it has expired (its end + the prediction TTL), so the live buckets' sum follows
what has not expired (at most one bucket too much; a bucket is TTL/64 long). The check a
predict makes is a comparison, never a round trip. Another process sees a busy process's
writes within about two seconds; one that dies loses at most its last second's.

A key's bytes are an estimate of Redis' own: name + value + a per-key overhead (dict entries,
the expiry entry, object headers) + an eighth for the allocator's rounding. Measured against
used_memory's growth (predicts of 1-32 rows, with and without client ids): 2-13% above it on
Redis 7.0, 11-31% above on Valkey 9 (the embedded server, whose keys are smaller): never
below, so the budget errs on the early side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from service.store.keys import Keys

log = logging.getLogger(__name__)

BUCKETS_PER_TTL = 64
KEY_OVERHEAD = 128  # measured on Redis 7.0: 120-160 B a key beyond its name and value
REFRESH_SECONDS = 1.0


def stored_key_bytes(key: str, value_bytes: int) -> int:
    """Estimated Redis memory of one string key with an expiry."""
    payload = len(key) + value_bytes
    return payload + payload // 8 + KEY_OVERHEAD


@dataclass(frozen=True)
class BudgetView:
    """What one process believes the log holds, for /v1/stats and /metrics."""

    bytes: int
    budget_bytes: int | None
    shedding: bool
    retry_after_seconds: int


class LogBudget:
    def __init__(self, redis: Redis, keys: Keys, ttl_seconds: int, max_bytes: int | None,
                 ) -> None:
        self._redis = redis
        self._key = keys.prediction_log_bytes
        self._drift_key = keys.drift_samples
        self._ttl = ttl_seconds
        self._max = max_bytes
        self.bucket_seconds = max(1, math.ceil(ttl_seconds / BUCKETS_PER_TTL))
        self._stored = 0  # the live total at the last refresh
        self._local = 0  # this process's writes not yet in the hash (or not known to be)
        self._sent_at = 0.0  # monotonic time of the last flush
        self._sent_total = 0  # bytes this process ever sent to the hash
        self._dead: list[bytes] = []  # expired buckets, deleted by the next flush
        self._retry_after = 1
        self._measure_drift = True  # off where MEMORY is not allowed (some managed Redis)
        self._task: asyncio.Task[None] | None = None

    @property
    def used(self) -> int:
        return self._stored + self._local

    @property
    def exceeded(self) -> bool:
        """Whether predicts are shed now: one comparison (the predict path's whole cost)."""
        return self._max is not None and self._stored + self._local >= self._max

    @property
    def retry_after(self) -> int:
        return self._retry_after

    def view(self) -> BudgetView:
        return BudgetView(self.used, self._max, self.exceeded, self._retry_after)

    def flush(self) -> tuple[list[tuple[Any, ...]], int]:
        """Commands for a log write to send along, at most once a second (this process's
        bytes into the current bucket, expired buckets out), and the bytes they send: give
        those to written() once the write succeeded."""
        now = time.monotonic()
        if now - self._sent_at < REFRESH_SECONDS or not (self._local or self._dead):
            return [], 0
        self._sent_at = now
        bucket = str(int(time.time()) // self.bucket_seconds)
        out: list[tuple[Any, ...]] = [("HINCRBY", self._key, bucket, self._local)]
        if self._dead:
            out.append(("HDEL", self._key, *self._dead))
            self._dead = []
        return out, self._local

    def written(self, log_bytes: int, sent: int) -> None:
        """A log write succeeded: it stored `log_bytes` and sent `sent` to the hash."""
        self._local = max(0, self._local - sent) + log_bytes
        self._stored += sent  # in the hash now: counted there until the next refresh
        self._sent_total += sent

    async def refresh(self) -> None:
        """Read every bucket and measure the drift stream, in one round trip."""
        sent_before = self._sent_total
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(self._key)
        if self._measure_drift:
            pipe.memory_usage(self._drift_key)
        raw, *drift = await pipe.execute(raise_on_error=False)
        if isinstance(raw, Exception):
            raise raw
        if drift and isinstance(drift[0], Exception):
            log.warning("drift samples not counted in the prediction-log budget: %s", drift[0])
            self._measure_drift, drift = False, []
        now = time.time()
        live: dict[int, int] = {}
        dead: list[bytes] = []
        for field, value in raw.items():
            if not field.isdigit() or self._expires_at(int(field)) <= now:
                dead.append(field)  # expired (or not ours: it would never expire)
            else:
                live[int(field)] = int(value)
        self._dead = dead
        drift_bytes = int(drift[0] or 0) if drift else 0
        # What was sent meanwhile may be missing from the read: counted (perhaps twice) till
        # the next refresh, never missed.
        self._stored = (max(0, sum(live.values())) + drift_bytes
                        + self._sent_total - sent_before)
        self._retry_after = self._seconds_until_under(live, now)

    def _expires_at(self, bucket: int) -> float:
        """When the last thing written in this bucket has expired."""
        return (bucket + 1) * self.bucket_seconds + self._ttl

    def _seconds_until_under(self, live: dict[int, int], now: float) -> int:
        """Seconds until enough buckets expire to bring the total under the budget."""
        left = self.used  # this process's unsent bytes are the newest: they expire last
        if self._max is None or left < self._max:
            return 1
        for bucket in sorted(live):
            left -= live[bucket]
            if left < self._max:
                return max(1, math.ceil(self._expires_at(bucket) - now))
        return max(1, self._ttl)  # the drift samples alone: the learner trims them to the TTL

    async def forget(self, written: list[tuple[float, int]]) -> None:
        """Take purged keys out of their buckets: (written at, bytes) each."""
        await self._send()  # this process's part of them first, or a bucket goes negative
        totals: dict[str, int] = defaultdict(int)
        for at, amount in written:
            totals[str(int(at) // self.bucket_seconds)] -= amount
        if totals:
            pipe = self._redis.pipeline(transaction=False)
            for field, amount in totals.items():
                pipe.hincrby(self._key, field, amount)
            await pipe.execute()
        await self.refresh()

    async def clear(self) -> None:
        """Everything was purged: start from zero."""
        await self._redis.delete(self._key)
        self._stored = self._local = 0
        self._dead = []
        self._retry_after = 1

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="prediction-log-budget")

    async def stop(self) -> None:
        """Stop refreshing; this process's last bytes go to the hash (if Redis answers)."""
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self._send()

    async def _send(self) -> None:
        """This process's bytes to the hash now, not with a later write."""
        self._sent_at = 0.0
        commands, sent = self.flush()
        if commands:
            pipe = self._redis.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            await pipe.execute()
            self.written(0, sent)

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                if self.exceeded and self._local:
                    await self._send()  # shedding: no write of ours will carry them
                await self.refresh()
                failing = False
            except Exception as exc:  # keep the last view; say so once, and keep trying
                if not failing:
                    log.warning("prediction-log budget not refreshed: %s", exc)
                failing = True
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # a cancel lost inside the round trip
                raise asyncio.CancelledError
            await asyncio.sleep(REFRESH_SECONDS)
