"""The durable feedback stream: one Lua call validates, dedupes and appends a whole batch."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import ResponseError

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
        result = await self._scripts.feedback_append(
            keys=[k.stream, *self._seen_keys(now), k.vocab, k.vocab_order, k.counters,
                  k.learner_stats],
            args=[max_lag, max_classes, len(records), int(now * 1000), _pack_items(records),
                  3 * self._window],
        )
        status = result[0]
        if status == b"shed":
            raise Shed(int(result[1]))
        if status == b"labels":
            raise LabelOverflow(int(result[1]), result[2].decode())
        if self._strict:
            try:
                local, _ = await self._redis.execute_command("WAITAOF", 1, 0, self._strict_timeout_ms)
            except ResponseError as exc:  # e.g. appendonly switched off at run time
                raise NotDurable(f"WAITAOF failed: {exc}") from exc
            if int(local) < 1:
                raise NotDurable("the append-only file did not confirm the write")
        return AppendResult(int(result[1]), int(result[2]))

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
