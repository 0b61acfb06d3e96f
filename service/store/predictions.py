"""The prediction log: what was predicted, from which input and version, kept for a TTL so a
later label can be joined to it by prediction id.

A whole micro-batch (its requests with one tag) is one string key (a fixed header, then the
float32 rows), so logging costs one command per micro-batch, sent on the log's own connection
(store/dedicated.py); a server-made id
``<batch>-<row>`` locates its row with GETRANGE.
A client-chosen id costs one more key holding that row alone.

Ids have one spelling each (the label's dedupe is by id): a server id is exactly
``<16 lowercase hex>-<row>``, the row in ASCII digits without leading zeros. Every id of the
form ``<16 hex>-<digits>`` is the server's: a client may not choose one at predict (it could
shadow another client's prediction), and feedback naming one that is not canonical is refused,
so resolve() looks such an id up only in the batch it names, never as a client id.

Every write also accounts the bytes it stores in the log's budget (store/log_budget.py), in
the same round trip.

The same round trip appends a few sampled rows of the batch, with their predicted class indices,
to the drift sample stream (docs/DESIGN.md §5): capped by MAXLEN ~ DRIFT_STREAM_MAXLEN here, and
trimmed to the prediction TTL by the learner (XTRIM MINID now − TTL, in the same round trip as
its read), so a raw input never outlives the prediction log's TTL there either. The entry's
time is its stream id.
"""

from __future__ import annotations

import json
import re
import secrets
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from redis.asyncio import Redis

from service.records import RecordRows
from service.store.connection import count_and_delete, is_cluster, scan_model_keys
from service.store.dedicated import DedicatedConnection
from service.store.keys import Keys
from service.store.log_budget import LogBudget, stored_key_bytes

_HEADER = struct.Struct("<qIB64s")  # version, input dim, tag length, tag (padded)
_COUNT = struct.Struct("<I")  # rows of a logged batch of records
_SERVER_ID = re.compile(r"([0-9a-f]{16})-(0|[1-9][0-9]{0,8})", re.ASCII)  # fullmatch only
_SERVER_FORM = re.compile(r"[0-9a-fA-F]{16}-[0-9]+", re.ASCII)
DRIFT_SAMPLE_ROWS = 8  # rows of a batch sampled into the drift stream (one XADD per batch)
DRIFT_STREAM_MAXLEN = 10_000


@dataclass(frozen=True)
class LogGroup:
    """One predict request's rows within a logged batch."""

    x: np.ndarray | RecordRows  # float32 (rows, input_dim), or records (MNEMO_FEATURES)
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
    stored: bytes  # the input's stored form (store/codec.py): float32 bytes or record JSON
    version: int
    tag: str


def _record(version: int, tag: str, rows: np.ndarray | RecordRows) -> bytes:
    """A logged batch: the header, then float32 rows (fixed size: a row is read by offset),
    or, for records (the header's dimension 0), their count, offsets and JSON."""
    tag_bytes = tag.encode()
    if isinstance(rows, RecordRows):
        header = _HEADER.pack(version, 0, len(tag_bytes), tag_bytes)
        ends = np.cumsum([0] + [len(blob) for blob in rows.stored], dtype="<u4")
        return (header + _COUNT.pack(len(rows)) + ends.tobytes() + b"".join(rows.stored))
    header = _HEADER.pack(version, rows.shape[1], len(tag_bytes), tag_bytes)
    return header + np.ascontiguousarray(rows, dtype="<f4").tobytes()


def _stored_record(value: bytes, row: int) -> bytes | None:
    """Row `row` of a logged batch of records (None: no such row)."""
    (count,) = _COUNT.unpack_from(value, _HEADER.size)
    if row >= count:
        return None
    table = _HEADER.size + _COUNT.size
    ends = np.frombuffer(value, "<u4", count + 1, table)
    data = table + 4 * (count + 1)
    return value[data + int(ends[row]) : data + int(ends[row + 1])]


def _parse_header(blob: bytes) -> tuple[int, int, str]:
    version, dim, tag_len, tag = _HEADER.unpack_from(blob)
    return version, dim, tag[:tag_len].decode()


def has_server_form(prediction_id: str) -> bool:
    """Whether the id has the form reserved for server ids, canonical or not."""
    return _SERVER_FORM.fullmatch(prediction_id) is not None


def is_server_id(prediction_id: str) -> bool:
    """Whether the id is a server id in its one canonical spelling."""
    return _SERVER_ID.fullmatch(prediction_id) is not None


class PredictionLog:
    def __init__(self, redis: Redis, keys: Keys, input_dim: int, ttl_seconds: int,
                 max_bytes: int | None = None, *, records: bool = False) -> None:
        self._redis = redis
        self._input_dim = input_dim
        self._records = records  # MNEMO_FEATURES: rows are records
        self._keys = keys
        self._ttl = ttl_seconds
        self._rng = np.random.default_rng()
        self._writer = DedicatedConnection(redis)  # every predict pass writes: the lean path
        # None: accounted, never shed. Refreshed only between open() and close().
        self.budget = LogBudget(redis, keys, ttl_seconds, max_bytes)

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
        predicted class indices), and one alias per client-chosen id; the budget's counter
        rides along at most once a second (store/log_budget.py)."""
        commands: list[tuple[Any, ...]] = []
        sets: list[tuple[str, bytes]] = []
        for key in plan.keys:
            members = [groups[i] for i in key.members]
            rows = members[0].x if len(members) == 1 else _concat([g.x for g in members])
            if predicted is not None:
                commands.append(self._sample(key.tag, rows, np.concatenate(
                    [predicted[i] for i in key.members])))
            sets.append((self._keys.prediction_batch(key.batch),
                         _record(key.version, key.tag, rows)))
        for group in groups:
            sets += [(self._keys.prediction_alias(client_id),
                      _record(group.version, group.tag, group.x[row : row + 1]))
                     for row, client_id in enumerate(group.client_ids or ())]
        commands += [("SET", name, value, "EX", self._ttl) for name, value in sets]
        flush, sent = self.budget.flush()
        await self._writer.execute([*flush, *commands])
        self.budget.written(sum(stored_key_bytes(name, len(value)) for name, value in sets), sent)

    async def open(self) -> None:
        """Connect the log's own connection (start-up, not a request's first write), read
        the budget's counters and keep them fresh in the background until close()."""
        await self._writer.open()
        await self.budget.refresh()
        self.budget.start()

    async def close(self) -> None:
        await self.budget.stop()
        await self._writer.close()

    def _sample(self, tag: str, rows: np.ndarray | RecordRows,
                best: np.ndarray) -> tuple[Any, ...]:
        take = min(len(rows), DRIFT_SAMPLE_ROWS)
        picked = (np.arange(take) if take == len(rows)
                  else np.sort(self._rng.choice(len(rows), take, replace=False)))
        if isinstance(rows, RecordRows):  # raw records, as a JSON array ("r")
            inputs = ("r", b"[" + b",".join(rows.stored[i] for i in picked.tolist()) + b"]")
        else:
            inputs = ("x", np.ascontiguousarray(rows[picked], dtype="<f4").tobytes())
        return ("XADD", self._keys.drift_samples, "MAXLEN", "~", DRIFT_STREAM_MAXLEN, "*",
                *inputs, "p", np.asarray(best, dtype="<i4")[picked].tobytes(), "t", tag)

    async def resolve(self, ids: list[str]) -> list[LoggedPrediction | None]:
        """Look every id up in one round trip; None where it is unknown or expired. A server
        id is read only from the batch it names, any other id only as a client id."""
        matches = [_SERVER_ID.fullmatch(prediction_id) for prediction_id in ids]
        if self._records:
            return await self._resolve_records(ids, matches)
        row_bytes = self._input_dim * 4
        pipe = self._redis.pipeline(transaction=False)
        for prediction_id, match in zip(ids, matches, strict=True):
            if match is None:
                pipe.get(self._keys.prediction_alias(prediction_id))
                continue
            key = self._keys.prediction_batch(match.group(1))
            start = _HEADER.size + int(match.group(2)) * row_bytes
            pipe.getrange(key, 0, _HEADER.size - 1)
            pipe.getrange(key, start, start + row_bytes - 1)
        replies = iter(await pipe.execute())
        out: list[LoggedPrediction | None] = []
        for match in matches:
            if match is None:
                alias = next(replies) or b""
                header, row = alias[: _HEADER.size], alias[_HEADER.size :]
            else:
                header, row = next(replies), next(replies)
            if not header or len(row) != row_bytes:
                out.append(None)
                continue
            version, _, tag = _parse_header(header)
            out.append(LoggedPrediction(bytes(row), version, tag))
        return out

    async def _resolve_records(self, ids: list[str],
                               matches: list[re.Match[str] | None]) -> list[LoggedPrediction | None]:
        """resolve() for records: rows of varying length, so whole values are read (a batch
        is at most MNEMO_MAX_BATCH rows), each key once however many of its rows are asked."""
        names = [self._keys.prediction_alias(prediction_id) if match is None
                 else self._keys.prediction_batch(match.group(1))
                 for prediction_id, match in zip(ids, matches, strict=True)]
        distinct = list(dict.fromkeys(names))
        pipe = self._redis.pipeline(transaction=False)
        for name in distinct:
            pipe.get(name)
        values = dict(zip(distinct, await pipe.execute(), strict=True))
        out: list[LoggedPrediction | None] = []
        for name, match in zip(names, matches, strict=True):
            value = values[name] or b""
            row = (None if len(value) < _HEADER.size + _COUNT.size
                   else _stored_record(value, 0 if match is None else int(match.group(2))))
            if row is None:
                out.append(None)
                continue
            version, _, tag = _parse_header(value[: _HEADER.size])
            out.append(LoggedPrediction(bytes(row), version, tag))
        return out

    async def purge(self, tag: str | None) -> int:
        """Delete logged predictions and drift samples made with this tag (None: all, and the
        budget's counters with them); how many prediction-log keys (the drift-sample entries
        are not counted). A tag's keys leave the budget's buckets they were counted in."""
        forgotten: list[tuple[float, int]] = []
        removed = 0
        patterns = [self._keys.prediction_batch("*"), self._keys.prediction_alias("*")]
        if not is_cluster(self._redis):  # no cluster ran a version that wrote these
            patterns += self._keys.legacy_prediction_patterns()
        for pattern in patterns:
            async for key in scan_model_keys(self._redis, self._keys, pattern):
                if tag is None:
                    removed += await self._redis.delete(key)
                    continue
                pipe = self._redis.pipeline(transaction=False)
                pipe.getrange(key, 0, _HEADER.size - 1)
                pipe.strlen(key)
                pipe.pttl(key)
                header, size, pttl = await pipe.execute()
                if not header or _parse_header(header)[2] != tag:
                    continue
                if await self._redis.delete(key):
                    removed += 1
                    # Written (TTL - remaining) ago: that is the bucket it was counted in.
                    at = time.time() - self._ttl + max(0, pttl) / 1000
                    forgotten.append((at, stored_key_bytes(key.decode(), size)))
        await purge_drift_samples(self._redis, self._keys, tag)  # raw inputs too (§5)
        await (self.budget.clear() if tag is None else self.budget.forget(forgotten))
        return removed


def _concat(parts: list[np.ndarray | RecordRows]) -> np.ndarray | RecordRows:
    if isinstance(parts[0], RecordRows):
        return RecordRows.concat(parts)  # type: ignore[arg-type]
    return np.concatenate(parts)  # type: ignore[arg-type]


async def purge_drift_samples(redis: Redis, keys: Keys, tag: str | None) -> int:
    """Delete drift samples taken with this tag (None: all); how many entries."""
    if tag is None:
        return await count_and_delete(redis, keys.drift_samples, "xlen")
    doomed = [sid for sid, fields in await redis.xrange(keys.drift_samples)
              if fields.get(b"t", b"").decode() == tag]
    return int(await redis.xdel(keys.drift_samples, *doomed)) if doomed else 0


@dataclass(frozen=True)
class DriftSamples:
    last_id: str
    x: np.ndarray  # float32 (rows, input_dim)
    predicted: np.ndarray  # int64 (rows,)
    # Samples of records ("r" entries, MNEMO_FEATURES): the raw records, unchecked (the
    # schema may have changed since; monitor/record_drift.py checks), and their predictions.
    records: list[Any] = field(default_factory=list)
    record_predicted: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))


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
    records: list[Any] = []
    record_ps: list[np.ndarray] = []
    last = after
    for _, entries in reply or ():
        for sid, fields in entries:
            last = sid.decode() if isinstance(sid, bytes) else sid
            if b"x" not in fields:
                sample = _record_sample(fields)  # records: drift per field (monitor/record_drift.py)
                if sample is not None:
                    records += sample[0]
                    record_ps.append(sample[1])
                continue
            x = np.frombuffer(fields[b"x"], "<f4")
            if x.size % input_dim:
                continue  # written under another input dimension: not comparable
            xs.append(x.reshape(-1, input_dim))
            ps.append(np.frombuffer(fields[b"p"], "<i4").astype(np.int64))
    record_predicted = np.concatenate(record_ps) if record_ps else np.empty(0, np.int64)
    if not xs:
        return DriftSamples(last, np.empty((0, input_dim), np.float32), np.empty(0, np.int64),
                            records, record_predicted)
    return DriftSamples(last, np.concatenate(xs), np.concatenate(ps), records, record_predicted)


def _record_sample(fields: dict[bytes, bytes]) -> tuple[list[Any], np.ndarray] | None:
    """An "r" entry's records and predicted classes; None if it has none or is malformed (a
    bad entry must not stop the learner's reads)."""
    if b"r" not in fields:
        return None
    try:
        records = json.loads(fields[b"r"])
        predicted = np.frombuffer(fields.get(b"p", b""), "<i4").astype(np.int64)
    except ValueError:
        return None
    if not isinstance(records, list) or len(records) != len(predicted):
        return None
    return records, predicted
