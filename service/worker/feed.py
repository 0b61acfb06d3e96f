"""Reading the feedback stream as the consumer group's one learner."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from service.store.keys import Keys

CONSUMER = "learner"  # one active learner (lease): a fixed name keeps its pending entries


@dataclass
class FeedbackBatch:
    ids: list[str]
    x: np.ndarray | None  # float32 (n, d); None for records, which the learner encodes
    labels: list[str]
    tags: list[str]
    versions: list[int | None]
    accepted_ms: list[int]
    stored: list[bytes]  # each input's stored form (store/codec.py)

    def __len__(self) -> int:
        return len(self.ids)


def stream_id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


class FeedbackReader:
    def __init__(self, redis: Redis, keys: Keys, input_dim: int, *, records: bool = False) -> None:
        self._redis = redis
        self._keys = keys
        self._dim = input_dim
        self._records = records  # MNEMO_FEATURES: inputs are records, of any length
        self._pending_from: str | None = "0"  # None once the pending entries are read
        # Read by this learner and not acknowledged yet. The consumer name is shared, so a
        # learner that lost the lease can still move entries into *our* pending list with its
        # last read (its first write is then refused): such entries are never delivered by ">"
        # again, so they must be read from the pending list (see unread_pending).
        self._delivered: set[str] = set()

    async def ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(self._keys.stream, self._keys.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(self, count: int, block_ms: int | None) -> FeedbackBatch:
        """Entries delivered before but never acknowledged come first (a restart re-reads
        them, and so does a learner whose entries a fenced-out one read), then new ones,
        waiting up to `block_ms` for them (None: not at all; Redis reads 0 as forever)."""
        if self._pending_from is None and await self.unread_pending():
            self._pending_from = "0"
        while self._pending_from is not None:
            reply = await self._redis.xreadgroup(
                self._keys.group, CONSUMER, {self._keys.stream: self._pending_from}, count=count
            )
            entries = reply[0][1] if reply else []
            if not entries:
                self._pending_from = None
                break
            self._pending_from = entries[-1][0].decode()
            entries = [(sid, fields) for sid, fields in entries if sid.decode() not in self._delivered]
            # A pending entry trimmed away meanwhile comes back without fields: nothing to learn.
            gone = [sid for sid, fields in entries if not fields]
            if gone:
                await self._redis.xack(self._keys.stream, self._keys.group, *gone)
            live = [(sid, fields) for sid, fields in entries if fields]
            if live:
                return self._decode(live)
        reply = await self._redis.xreadgroup(
            self._keys.group, CONSUMER, {self._keys.stream: ">"}, count=count, block=block_ms
        )
        return self._decode(reply[0][1] if reply else [])

    async def unread_pending(self) -> int:
        """Pending entries this learner has not read (yet): after a restart, until the pending
        list is read; otherwise, entries a fenced-out learner took with its last read. A
        version must not be committed past such entries (a restart would skip them as
        learned), so the learner publishes only while this is 0."""
        summary = await self._redis.xpending(self._keys.stream, self._keys.group)
        ours = sum(int(c["pending"]) for c in summary["consumers"] if c["name"] == CONSUMER.encode())
        return max(0, ours - len(self._delivered))

    async def ack_and_trim(self, ids: list[str], committed: str, *, inclusive: bool = False) -> None:
        """Acknowledge what a version now includes, and drop stream entries below it
        (`inclusive`: exactly, and the committed entry too — generative replay's privacy)."""
        pipe = self._redis.pipeline(transaction=False)
        for start in range(0, len(ids), 1000):
            pipe.xack(self._keys.stream, self._keys.group, *ids[start : start + 1000])
        if inclusive:
            ms, _, seq = committed.partition("-")
            pipe.xtrim(self._keys.stream, minid=f"{ms}-{int(seq or 0) + 1}", approximate=False)
        else:
            pipe.xtrim(self._keys.stream, minid=committed, approximate=True)
        await pipe.execute()
        self._delivered.difference_update(ids)

    def _decode(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> FeedbackBatch:
        n, size = len(entries), 4 * self._dim
        ids, labels, tags, versions, accepted, rows = [], [], [], [], [], []
        for sid, fields in entries:
            ids.append(sid.decode())
            row = fields[b"x"]
            if len(row) != size and not self._records:  # what a wrong-sized row into x raised
                raise ValueError(f"entry {sid!r}: {len(row)} input bytes, expected {size}")
            rows.append(row)
            labels.append(fields[b"y"].decode())
            tags.append(fields[b"tag"].decode())
            version = fields.get(b"v", b"")
            versions.append(int(version) if version else None)
            accepted.append(int(fields.get(b"t", b"0")))
        # One conversion for the read, not a numpy row assignment per entry.
        x = None if self._records else (
            np.frombuffer(b"".join(rows), dtype="<f4").astype(np.float32).reshape(n, self._dim))
        self._delivered.update(ids)
        return FeedbackBatch(ids, x, labels, tags, versions, accepted, rows)
