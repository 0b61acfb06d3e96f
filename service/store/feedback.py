"""The durable feedback stream: one Lua call validates, dedupes and appends a whole batch."""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import AskError, MovedError
from redis.exceptions import ConnectionError as RedisConnectionError

from service.store.connection import UNAVAILABLE, follows_failover, is_cluster, node_client
from service.store.keys import Keys
from service.store.scripts import Scripts


@dataclass(frozen=True)
class FeedbackRecord:
    dedupe_id: str  # prediction_id or feedback_id; "" appends unconditionally
    label: str
    x: bytes  # float32 little-endian input
    tag: str
    version: int | None  # the served version that predicted it, when known


@dataclass(frozen=True)
class AppendResult:
    accepted: int
    duplicates: int


class Shed(Exception):
    """The learner is too far behind; the caller should retry later."""

    def __init__(self, lag: int) -> None:
        super().__init__(f"learner is {lag} items behind")
        self.lag = lag


class LabelOverflow(Exception):
    def __init__(self, index: int, label: str) -> None:
        super().__init__(f"label {label!r} would exceed MNEMO_MAX_CLASSES")
        self.index = index
        self.label = label


class NotDurable(Exception):
    """strict durability: the append-only file did not confirm the write in time."""


_LENGTHS = struct.Struct("<IIIII")


def _pack_items(records: list[FeedbackRecord]) -> bytes:
    """The items as one script argument: per item five uint32 lengths, then id, label, x,
    tag and version (feedback_append.lua reads it back)."""
    parts: list[bytes] = []
    for r in records:
        fields = (r.dedupe_id.encode(), r.label.encode(), r.x, r.tag.encode(),
                  b"" if r.version is None else str(r.version).encode())
        parts.append(_LENGTHS.pack(*map(len, fields)))
        parts.extend(fields)
    return b"".join(parts)


class FeedbackStore:
    """Dedupe ids live in hashes of one window each (the prediction-log TTL: after it a
    prediction id cannot be labelled anyway), read over the window before, this one and the
    next (so API processes whose clocks differ by less than a window agree), and expiring
    three windows after their own began. A repeat within a window of the first label is
    always caught; the memory they hold is bounded by three windows of labels."""

    def __init__(
        self, redis: Redis, keys: Keys, scripts: Scripts, *, strict: bool = False,
        strict_timeout_ms: int = 1000, dedupe_window_seconds: int = 86_400,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._scripts = scripts
        self._strict = strict
        self._strict_timeout_ms = strict_timeout_ms
        self._replicated = follows_failover(redis)
        self._window = dedupe_window_seconds
        self._clock = clock

    def _seen_keys(self, now: float) -> list[str]:
        """The buckets a dedupe id is looked up in: previous, current (written), next, and
        the unbounded hash of earlier versions (given a TTL on first use)."""
        bucket = int(now // self._window)
        k = self._keys
        return [k.seen_bucket(bucket - 1), k.seen_bucket(bucket), k.seen_bucket(bucket + 1),
                k.seen_ids]

    async def append(
        self, records: list[FeedbackRecord], *, max_lag: int, max_classes: int
    ) -> AppendResult:
        k = self._keys
        now = self._clock()
        keys = [k.stream, *self._seen_keys(now), k.vocab, k.vocab_order, k.counters,
                k.learner_stats]
        args = [max_lag, max_classes, len(records), int(now * 1000), _pack_items(records),
                3 * self._window]
        if self._strict:
            result = await self._append_durably(keys, args)
        else:
            result = await self._scripts.feedback_append(keys=keys, args=args)
        status = result[0]
        if status == b"shed":
            raise Shed(int(result[1]))
        if status == b"labels":
            raise LabelOverflow(int(result[1]), result[2].decode())
        return AppendResult(int(result[1]), int(result[2]))

    async def _append_durably(self, keys: list[str], args: list[object]) -> list[Any]:
        """The script, then WAITAOF (the append-only file fsynced it) and, where a failover
        may promote a replica (cluster, Sentinel), WAIT (a replica has it: WAITAOF's replica
        count would wait for the replica's next once-a-second report).

        Both wait for the writes of their own connection: so all three go in one pipeline on
        one connection to the node that holds the model's slot. A wait that fails leaves the
        batch appended (NotDurable: outcome unknown; a retry is deduplicated)."""
        timeout = self._strict_timeout_ms
        try:
            async with node_client(self._redis, self._keys.stream) as node:
                pipe = node.pipeline(transaction=False)
                await self._scripts.feedback_append(keys=keys, args=args, client=pipe)
                if self._replicated:
                    pipe.execute_command("WAIT", 1, timeout)
                pipe.execute_command("WAITAOF", 1, 0, timeout)
                result, *waits = await pipe.execute(raise_on_error=False)
        except UNAVAILABLE:
            await self._find_slot()
            raise
        if isinstance(result, (MovedError, AskError)):  # a failover moved it: nothing ran
            await self._find_slot()
            raise RedisConnectionError(f"the model's slot moved: {result}")
        if isinstance(result, Exception):
            raise result
        if result[0] in (b"shed", b"labels"):
            return result  # nothing appended: nothing to wait for
        failed = next((w for w in waits if isinstance(w, Exception)), None)
        if failed is not None:  # appendonly switched off, a replica now (READONLY), …
            raise NotDurable(f"WAITAOF failed: {failed}")
        if self._replicated and int(waits[0]) < 1:
            raise NotDurable("no replica confirmed the write")
        if int(waits[-1][0]) < 1:
            raise NotDurable("the append-only file did not confirm the write")
        return result

    async def _find_slot(self) -> None:
        """After the slot's node failed or moved: one call through the cluster client, which
        follows the failover (redirects, topology refresh), so the next append finds the
        slot's new primary."""
        if is_cluster(self._redis):
            with contextlib.suppress(*UNAVAILABLE):
                await self._redis.exists(self._keys.stream)

    async def already_accepted(self, dedupe_ids: list[str]) -> list[bool]:
        """Whether a label was already accepted under each id (first label wins)."""
        pipe = self._redis.pipeline(transaction=False)
        for key in self._seen_keys(self._clock()):
            pipe.hmget(key, dedupe_ids)
        found = await pipe.execute()
        return [any(values) for values in zip(*found, strict=True)]

    async def lag(self) -> int:
        """Items accepted but not yet processed by the learner."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hmget(self._keys.counters, "accepted", "purged")
        pipe.hget(self._keys.learner_stats, "processed")
        (accepted, purged), processed = await pipe.execute()
        return max(0, int(accepted or 0) - int(purged or 0) - int(processed or 0))
