"""Deleting raw inputs by tag: from the prediction log and golden set (the API does it at
once, the learner again when the API could not finish) and from the learner's keys (the
learner runs those: it is their single writer and knows how far it has read)."""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio import Redis

from service.store.codec import split_entry
from service.store.control import PurgeRequest
from service.store.golden import GoldenSet
from service.store.keys import Keys
from service.store.predictions import PredictionLog

Matches = Callable[[str], bool]  # tag -> purge it?


async def purge_served_inputs(predictions: PredictionLog, golden: GoldenSet,
                              request: PurgeRequest) -> dict[str, int]:
    """The prediction log and drift samples, and the golden set when the request names it:
    what each holds of the request's tag, deleted (idempotent: a repeat deletes nothing)."""
    removed = {"predictions": await predictions.purge(request.tag)}
    removed["golden"] = await golden.purge(request.tag) if request.golden else 0
    return removed


def _stream_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


async def purge_stream(redis: Redis, keys: Keys, matches: Matches, read_up_to: str) -> int:
    """XDEL the matching feedback entries; those after `read_up_to` were never processed and
    never will be, so they are counted as purged (feedback_lag stays exact). How many."""
    removed = unread = 0
    position = _stream_key(read_up_to)
    start = "-"
    while True:
        entries = await redis.xrange(keys.stream, start, "+", count=1000)
        doomed = [sid for sid, fields in entries if matches(fields.get(b"tag", b"").decode())]
        if doomed:
            removed += await redis.xdel(keys.stream, *doomed)
            unread += sum(_stream_key(sid.decode()) > position for sid in doomed)
        if len(entries) < 1000:
            break
        start = "(" + entries[-1][0].decode()
    if unread:
        await redis.hincrby(keys.counters, "purged", unread)
    return removed


async def purge_holdout(redis: Redis, keys: Keys, matches: Matches) -> tuple[int, list[bytes]]:
    """Rewrite the holdout without the matching entries: (how many removed, the kept ones)."""
    held = await redis.lrange(keys.holdout, 0, -1)
    kept = [blob for blob in held if not matches(split_entry(blob)[2])]
    if len(kept) != len(held):
        pipe = redis.pipeline(transaction=True)
        pipe.delete(keys.holdout)
        if kept:
            pipe.rpush(keys.holdout, *kept)
        await pipe.execute()
    return len(held) - len(kept), kept


def matching_slots(stored: dict[int, bytes], matches: Matches) -> list[int]:
    return sorted(slot for slot, blob in stored.items() if matches(split_entry(blob)[2]))
