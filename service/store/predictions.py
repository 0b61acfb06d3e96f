"""The prediction log: what was predicted, from which input and version, kept for a TTL so a
later label can be joined to it by prediction id.

A whole micro-batch (its requests with one tag) is one string key (a fixed header, then the
float32 rows), so logging costs one command per micro-batch, sent on the log's own connection
(store/dedicated.py); a server-made id
``<batch>-<row>`` locates its row with GETRANGE.
A client-chosen id costs one more key holding that row alone.

The same round trip appends a few sampled rows of the batch, with their predicted class indices,
to the drift sample stream (DESIGN §5): capped by MAXLEN ~ DRIFT_STREAM_MAXLEN here, and
trimmed to the prediction TTL by the learner (XTRIM MINID now − TTL, in the same round trip as
its read), so a raw input never outlives the prediction log's TTL there either. The entry's
time is its stream id.
"""

from __future__ import annotations

import re
import secrets
import struct
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from redis.asyncio import Redis

from service.store.dedicated import DedicatedConnection
from service.store.keys import Keys

_HEADER = struct.Struct("<qIB64s")  # version, input dim, tag length, tag (padded)
_SERVER_ID = re.compile(r"^([0-9a-f]{16})-(\d{1,6})$")
DRIFT_SAMPLE_ROWS = 8  # rows of a batch sampled into the drift stream (one XADD per batch)
DRIFT_STREAM_MAXLEN = 10_000


@dataclass(frozen=True)
class LogGroup:
    """One predict request's rows within a logged batch."""

    x: np.ndarray  # float32 (rows, input_dim)
    tag: str
    client_ids: list[str] | None = None
    version: int = 0  # the served version that answered it


@dataclass(frozen=True)
class _KeyPlan:
    batch: str
    tag: str
    version: int
    members: list[int]  # indices of the groups stored under this key, in row order


@dataclass(frozen=True)
class LogPlan:
    ids: list[list[str]]  # server ids, per group
    keys: list[_KeyPlan]


@dataclass(frozen=True)
class LoggedPrediction:
    x: np.ndarray  # float32 (input_dim,)
    version: int
    tag: str


def _record(version: int, tag: str, rows: np.ndarray) -> bytes:
    tag_bytes = tag.encode()
    header = _HEADER.pack(version, rows.shape[1], len(tag_bytes), tag_bytes)
    return header + np.ascontiguousarray(rows, dtype="<f4").tobytes()


def _parse_header(blob: bytes) -> tuple[int, int, str]:
    version, dim, tag_len, tag = _HEADER.unpack_from(blob)
    return version, dim, tag[:tag_len].decode()


class PredictionLog:
    def __init__(self, redis: Redis, keys: Keys, input_dim: int, ttl_seconds: int) -> None:
        self._redis = redis
        self._input_dim = input_dim
        self._keys = keys
        self._ttl = ttl_seconds
        self._rng = np.random.default_rng()
        self._writer = DedicatedConnection(redis)  # every predict pass writes: the lean path

    def plan(self, groups: list[LogGroup]) -> LogPlan:
        """Server ids for every row of a logged batch: its requests with one tag and version
        share one key, so an id ``<batch>-<row>`` names the key and the row in it."""
        by_key: dict[tuple[str, int], list[int]] = {}
        for index, group in enumerate(groups):
            by_key.setdefault((group.tag, group.version), []).append(index)
        ids: list[list[str]] = [[] for _ in groups]
        keys = []
        for (tag, version), members in by_key.items():
            batch, offset = secrets.token_hex(8), 0
            for index in members:
                rows = len(groups[index].x)
                ids[index] = [f"{batch}-{row}" for row in range(offset, offset + rows)]
                offset += rows
            keys.append(_KeyPlan(batch, tag, version, members))
        return LogPlan(ids, keys)

    async def log(self, batch: str, rows: np.ndarray, version: int, tag: str,
                  client_ids: list[str] | None = None,
                  predicted: np.ndarray | None = None) -> None:
        """One batch under a key of the caller's choosing (the one-request form of write);
        without `predicted`, no drift sample."""
        plan = LogPlan([[f"{batch}-{row}" for row in range(len(rows))]],
                       [_KeyPlan(batch, tag, version, [0])])
        await self.write(plan, [LogGroup(rows, tag, client_ids, version)],
                         None if predicted is None else [predicted])

    async def write(self, plan: LogPlan, groups: list[LogGroup],
                    predicted: list[np.ndarray] | None) -> None:
        """One round trip for the whole batch on the log's own connection: per tag and
        version one record and one drift sample (<= DRIFT_SAMPLE_ROWS rows with their
        predicted class indices), and one alias per client-chosen id."""
        commands: list[tuple[Any, ...]] = []
        for key in plan.keys:
            members = [groups[i] for i in key.members]
            rows = members[0].x if len(members) == 1 else np.concatenate([g.x for g in members])
            if predicted is not None:
                commands.append(self._sample(key.tag, rows, np.concatenate(
                    [predicted[i] for i in key.members])))
            commands.append(("SET", self._keys.prediction_batch(key.batch),
                             _record(key.version, key.tag, rows), "EX", self._ttl))
        for group in groups:
            for row, client_id in enumerate(group.client_ids or ()):
                commands.append(("SET", self._keys.prediction_alias(client_id),
                                 _record(group.version, group.tag, group.x[row : row + 1]),
                                 "EX", self._ttl))
        await self._writer.execute(commands)

    async def open(self) -> None:
        """Connect the log's own connection (start-up, not a request's first write)."""
        await self._writer.open()

    async def close(self) -> None:
        await self._writer.close()

    def _sample(self, tag: str, rows: np.ndarray, best: np.ndarray) -> tuple[Any, ...]:
        take = min(len(rows), DRIFT_SAMPLE_ROWS)
        picked = (np.arange(take) if take == len(rows)
                  else np.sort(self._rng.choice(len(rows), take, replace=False)))
        return ("XADD", self._keys.drift_samples, "MAXLEN", "~", DRIFT_STREAM_MAXLEN, "*",
                "x", np.ascontiguousarray(rows[picked], dtype="<f4").tobytes(),
                "p", np.asarray(best, dtype="<i4")[picked].tobytes(), "t", tag)

    async def resolve(self, ids: list[str]) -> list[LoggedPrediction | None]:
        """Look every id up in one round trip; None where it is unknown or expired."""
        row_bytes = self._input_dim * 4
        pipe = self._redis.pipeline(transaction=False)
        for prediction_id in ids:
            pipe.get(self._keys.prediction_alias(prediction_id))
            match = _SERVER_ID.match(prediction_id)
            # Unmatched ids still queue two no-op reads so replies stay in step with ids.
            key = self._keys.prediction_batch(match.group(1) if match else "-")
            start = _HEADER.size + (int(match.group(2)) if match else 0) * row_bytes
            pipe.getrange(key, 0, _HEADER.size - 1)
            pipe.getrange(key, start, start + row_bytes - 1)
        replies = await pipe.execute()
        out: list[LoggedPrediction | None] = []
        for i in range(len(ids)):
            alias, header, row = replies[3 * i : 3 * i + 3]
            if alias is not None:
                header, row = alias[: _HEADER.size], alias[_HEADER.size :]
            if not header or len(row or b"") != row_bytes:
                out.append(None)
                continue
            version, _, tag = _parse_header(header)
            out.append(LoggedPrediction(np.frombuffer(row, "<f4"), version, tag))
        return out

    async def purge(self, tag: str | None) -> int:
        """Delete logged predictions and drift samples made with this tag (None: all); how
        many prediction-log keys (the drift-sample entries are not counted)."""
        removed = 0
        for pattern in (self._keys.prediction_batch("*"), self._keys.prediction_alias("*")):
            async for key in self._redis.scan_iter(match=pattern, count=1000):
                if tag is not None:
                    header = await self._redis.getrange(key, 0, _HEADER.size - 1)
                    if not header or _parse_header(header)[2] != tag:
                        continue
                removed += await self._redis.delete(key)
        await purge_drift_samples(self._redis, self._keys, tag)  # raw inputs too (§5)
        return removed


async def purge_drift_samples(redis: Redis, keys: Keys, tag: str | None) -> int:
    """Delete drift samples taken with this tag (None: all); how many entries."""
    if tag is None:
        count = int(await redis.xlen(keys.drift_samples))
        await redis.delete(keys.drift_samples)
        return count
    doomed = [sid for sid, fields in await redis.xrange(keys.drift_samples)
              if fields.get(b"t", b"").decode() == tag]
    return int(await redis.xdel(keys.drift_samples, *doomed)) if doomed else 0


@dataclass(frozen=True)
class DriftSamples:
    last_id: str
    x: np.ndarray  # float32 (rows, input_dim)
    predicted: np.ndarray  # int64 (rows,)


async def read_drift_samples(redis: Redis, keys: Keys, input_dim: int, after: str,
                             ttl_seconds: int, count: int = 1000) -> DriftSamples:
    """One round trip: trim the stream to the prediction TTL, then read up to `count`
    entries after `after` (no blocking)."""
    min_id = f"{max(0, int(time.time() * 1000) - ttl_seconds * 1000)}-0"
    pipe = redis.pipeline(transaction=False)
    # Exact (not ~): an approximate trim keeps a whole node, up to 100 entries past the TTL.
    pipe.xtrim(keys.drift_samples, minid=min_id, approximate=False)
    pipe.xread({keys.drift_samples: after}, count=count)
    _, reply = await pipe.execute()
    xs: list[np.ndarray] = []
    ps: list[np.ndarray] = []
    last = after
    for _, entries in reply or ():
        for sid, fields in entries:
            last = sid.decode() if isinstance(sid, bytes) else sid
            x = np.frombuffer(fields[b"x"], "<f4")
            if x.size % input_dim:
                continue  # written under another input dimension: not comparable
            xs.append(x.reshape(-1, input_dim))
            ps.append(np.frombuffer(fields[b"p"], "<i4").astype(np.int64))
    if not xs:
        return DriftSamples(last, np.empty((0, input_dim), np.float32), np.empty(0, np.int64))
    return DriftSamples(last, np.concatenate(xs), np.concatenate(ps))
