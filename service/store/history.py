"""The learner's statistics over time (docs/DESIGN.md §5): a capped stream with an entry per publish
and per minute, which the live page and the PNG report draw from. Every field is JSON (never
pickle); the entry's time is its stream id. It holds statistics only, no raw inputs."""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from service.store.keys import Keys

MAX_ENTRIES = 5000  # a publish every 5 s fills it in ~7 h; a minute tick alone in ~3.5 days
MAX_READ = 2000  # most entries one GET /v1/stats/history returns (?limit=)


def queue_append(pipe: Pipeline, keys: Keys, entry: dict[str, Any]) -> None:
    """Queue one entry on `pipe` (the learner's fenced transaction that also writes the stats)."""
    pipe.xadd(keys.stats_history, {name: json.dumps(value) for name, value in entry.items()},
              maxlen=MAX_ENTRIES, approximate=True)


async def read_history(redis: Redis, keys: Keys, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` entries, oldest first, each with its `time` in Unix milliseconds
    (from the stream id)."""
    raw = await redis.xrevrange(keys.stats_history, count=limit)
    return [_decode(sid, fields) for sid, fields in reversed(raw)]


def _decode(stream_id: bytes, fields: dict[bytes, bytes]) -> dict[str, Any]:
    entry = {name.decode(): json.loads(value) for name, value in fields.items()}
    entry["time"] = int(stream_id.split(b"-")[0])
    return entry
