"""The prediction log: what was predicted, from which input and version, kept for a TTL so a
later label can be joined to it by prediction id.

A whole predict batch is one string key (a fixed header, then the float32 rows), so logging
costs one command per batch; a server-made id ``<batch>-<row>`` locates its row with GETRANGE.
A client-chosen id costs one more key holding that row alone.
"""

from __future__ import annotations

import re
import secrets
import struct
from dataclasses import dataclass

import numpy as np
from redis.asyncio import Redis

from service.store.keys import Keys

_HEADER = struct.Struct("<qIB64s")  # version, input dim, tag length, tag (padded)
_SERVER_ID = re.compile(r"^([0-9a-f]{16})-(\d{1,6})$")


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

    def new_ids(self, rows: int) -> tuple[str, list[str]]:
        batch = secrets.token_hex(8)
        return batch, [f"{batch}-{row}" for row in range(rows)]

    async def log(
        self,
        batch: str,
        rows: np.ndarray,
        version: int,
        tag: str,
        client_ids: list[str] | None = None,
    ) -> None:
        """One pipelined round trip: the batch record plus one alias per client-chosen id."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self._keys.prediction_batch(batch), _record(version, tag, rows), ex=self._ttl)
        for row, client_id in enumerate(client_ids or ()):
            pipe.set(
                self._keys.prediction_alias(client_id),
                _record(version, tag, rows[row : row + 1]),
                ex=self._ttl,
            )
        await pipe.execute()

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
        """Delete logged predictions made with this tag (None: all); how many keys."""
        removed = 0
        for pattern in (self._keys.prediction_batch("*"), self._keys.prediction_alias("*")):
            async for key in self._redis.scan_iter(match=pattern, count=1000):
                if tag is not None:
                    header = await self._redis.getrange(key, 0, _HEADER.size - 1)
                    if not header or _parse_header(header)[2] != tag:
                        continue
                removed += await self._redis.delete(key)
        return removed
