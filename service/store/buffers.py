"""The replay buffer in Redis: inserts by policy and retirement, each one atomic Lua script
fenced by the learner's token.

A slot written here is the one models/replay.py decides for the same u, so the learner keeps its
in-memory buffer identical by `put(slot, x, y)` for every slot returned and `retire(mask)` with
the mask of the slots retired here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache
from importlib import resources
from typing import NamedTuple

from redis.asyncio import Redis

from models.replay import BUFFER_NAMES, HORIZON_FACTOR
from service.store.keys import Keys

NOT_KEPT, ALREADY_INSERTED = -1, -2
_CLASS_SCALE = 2**32  # the class index's score: class * 2^32 + slot
_MAX_CLASS = 2**21  # keeps that score an exact double


class BufferItem(NamedTuple):
    stream_id: str
    u: float  # uniform in [0, 1): the same number the in-memory buffer decides from
    y: int  # class index
    entry: bytes  # codec.encode_entry(x, y, tag)


def class_index_key(keys: Keys) -> str:
    """Sorted set of the buffer's slots scored class * 2^32 + slot: a class's k-th slot in
    O(log n), which class-balanced eviction needs on every insert."""
    return f"{keys.base}:reservoir:classes"


def _keys(keys: Keys) -> list[str]:
    return [keys.reservoir, keys.reservoir_meta, class_index_key(keys), keys.fence]


@cache
def _source(name: str) -> str:
    return resources.files("service.store").joinpath("lua", f"{name}.lua").read_text()


async def insert(redis: Redis, keys: Keys, policy: str, token: int | str, capacity: int,
                 items: Sequence[BufferItem], *, horizon: int | None = None) -> list[int]:
    """Per item the slot written, NOT_KEPT or ALREADY_INSERTED (its stream id is at or below
    the last one inserted). Raises ResponseError "FENCED ..." when token is not the lease's;
    then nothing is written. `horizon` is the recent policy's (default 4 x capacity)."""
    if policy not in BUFFER_NAMES:
        raise ValueError(f"unknown buffer {policy!r}; choose one of {', '.join(BUFFER_NAMES)}")
    if not 1 <= capacity < _CLASS_SCALE:
        raise ValueError(f"capacity must lie in [1, 2^32), got {capacity}")
    if horizon is None:
        horizon = HORIZON_FACTOR * capacity
    elif policy != "recent":
        raise ValueError(f"horizon applies to the recent buffer only, not {policy!r}")
    if horizon < 0:
        raise ValueError(f"horizon must be >= 0, got {horizon}")
    args: list[str | int | bytes] = [str(token), policy, capacity, horizon]
    for item in items:
        if not 0.0 <= item.u < 1.0 or not 0 <= item.y < _MAX_CLASS:
            raise ValueError(f"item {item.stream_id}: need u in [0, 1) and a class in "
                             f"[0, 2^21), got {item.u}, {item.y}")
        # repr round-trips the double exactly, so Lua's floor(u * n) equals Python's.
        args += [item.stream_id, repr(float(item.u)), int(item.y), item.entry]
    script = redis.register_script(_source("buffer_insert"))
    return [int(s) for s in await script(keys=_keys(keys), args=args)]


async def retire(redis: Redis, keys: Keys, token: int | str, slots: Iterable[int]) -> int:
    """Remove these slots at once, survivors moving down in order (ReplayBuffer.retire with
    the matching mask); how many were removed. A slot outside the buffer is refused whole."""
    script = redis.register_script(_source("buffer_retire"))
    return int(await script(keys=_keys(keys), args=[str(token), *(int(s) for s in slots)]))


async def reindex(redis: Redis, keys: Keys, token: int | str) -> int:
    """Rebuild the class index and per-class counts from the stored entries (a buffer filled by
    learner_ingest.lua has neither, and `insert` refuses it); how many slots were indexed."""
    script = redis.register_script(_source("buffer_reindex"))
    return int(await script(keys=_keys(keys), args=[str(token)]))


async def load(redis: Redis, keys: Keys) -> dict[int, bytes]:
    """slot -> entry, for the learner's restore by `put`."""
    return {int(slot): entry for slot, entry in (await redis.hgetall(keys.reservoir)).items()}


async def class_counts(redis: Redis, keys: Keys) -> dict[int, int]:
    """Stored items per class, every class inserted so far included (0 when none is stored)."""
    meta = await redis.hgetall(keys.reservoir_meta)
    counts: dict[int, int] = {}
    for field, value in meta.items():
        kind, _, cls = field.decode().partition(":")
        if kind in ("seen", "count") and cls:
            counts.setdefault(int(cls), 0)
            if kind == "count":
                counts[int(cls)] = int(value)
    return counts
