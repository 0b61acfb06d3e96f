"""The learner's per-batch writes of labelled entries: replay-buffer inserts (by policy, see
lua/buffer_insert.lua) and holdout inserts, in one pipelined round trip, both fenced and
idempotent by stream id."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from models.replay import HORIZON_FACTOR
from service.store.buffers import class_index_key
from service.store.connection import is_cluster
from service.store.keys import Keys
from service.store.scripts import Scripts

HOLDOUT = -3  # the item went to the holdout, not the replay buffer
ALREADY_INSERTED = -2


@dataclass(frozen=True)
class IngestItem:
    stream_id: str
    holdout: bool
    u: float  # uniform in [0, 1): the buffer's random decision, made identically in memory
    y: int  # class index
    entry: bytes  # codec.encode_entry


async def ingest(
    redis: Redis, keys: Keys, scripts: Scripts, *, token: int, policy: str, capacity: int,
    holdout_capacity: int, items: list[IngestItem],
) -> list[int]:
    """Per item: the buffer slot written, -1 (not kept), -2 (inserted before) or -3 (holdout;
    -2 also when that holdout item was inserted before). Raises ResponseError FENCED."""
    buffered = [item for item in items if not item.holdout]
    held = [item for item in items if item.holdout]
    calls = []
    if buffered:
        args: list[object] = [str(token), policy, capacity, HORIZON_FACTOR * capacity]
        for item in buffered:
            # repr round-trips the double exactly, so Lua's floor(u * n) equals Python's.
            args += [item.stream_id, repr(float(item.u)), item.y, item.entry]
        calls.append((scripts.buffer_insert,
                      [keys.reservoir, keys.reservoir_meta, class_index_key(keys), keys.fence], args))
    if held:
        args = [str(token), holdout_capacity]
        for item in held:
            args += [item.stream_id, item.entry]
        calls.append((scripts.holdout_insert, [keys.holdout, keys.reservoir_meta, keys.fence], args))
    if is_cluster(redis):
        # redis-py's cluster pipeline does not load scripts first, and a replica promoted by
        # a failover has none cached: one call each, so each reloads its own on NOSCRIPT.
        replies = iter([await script(keys=k, args=a) for script, k, a in calls])
    else:
        pipe = redis.pipeline(transaction=False)
        for script, k, a in calls:
            await script(keys=k, args=a, client=pipe)
        replies = iter(await pipe.execute())
    slots = iter(next(replies) if buffered else [])
    holdouts = iter(next(replies) if held else [])
    return [
        (HOLDOUT if int(next(holdouts)) == 1 else ALREADY_INSERTED) if item.holdout
        else int(next(slots))
        for item in items
    ]
