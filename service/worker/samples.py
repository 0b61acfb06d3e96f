"""The learner's samples of record in Redis — the replay buffer and the holdout — and their
in-memory mirror in the stream step: loading them, adding a read's items (fenced, idempotent
by stream id), retiring buffer slots, and purging by tag."""

from __future__ import annotations

import logging

import numpy as np
import torch
from redis.asyncio import Redis

from models.replay import GENERATIVE, make_buffer
from models.stream import StreamStep
from service.config import Settings
from service.store import buffers
from service.store.codec import encode_entries, encode_stored_entries, split_entry
from service.store.control import PurgeRequest
from service.store.ingest import HOLDOUT, IngestItem, ingest
from service.store.keys import Keys
from service.store.purge import matching_slots, purge_holdout, purge_stream
from service.store.scripts import Scripts
from service.worker.fencing import fenced
from service.worker.inputs import LearnerInputs
from service.worker.lease import Lease

log = logging.getLogger("service.worker.loop")  # one logger for the learner's lines


class SampleStore:
    def __init__(self, settings: Settings, redis: Redis, keys: Keys, scripts: Scripts,
                 lease: Lease, inputs: LearnerInputs | None = None) -> None:
        self._settings = settings
        self._inputs = inputs or LearnerInputs(settings)
        self._redis = redis
        self._keys = keys
        self._scripts = scripts
        self._lease = lease
        self._rng = np.random.default_rng()

    def _decoded(self, blobs: list[bytes]) -> list[tuple[np.ndarray, int, str]]:
        """Entries as the step keeps them: inputs encoded (records grow the vocabularies:
        they are learned from), class index, tag."""
        parts = [split_entry(blob) for blob in blobs]
        x = self._inputs.matrix([stored for stored, _, _ in parts], learn=True)
        return [(row, y, tag) for row, (_, y, tag) in zip(x, parts, strict=True)]

    async def load(self, step: StreamStep, *, reload: bool = False) -> None:
        """Mirror the Redis replay buffer and holdout into the step (a reservoir written by an
        older learner gets its class index rebuilt first, which the buffer scripts need).
        Generative replay keeps nothing in Redis: its generator is part of the learner state.
        `reload`: replace what the step holds (its rows were encoded otherwise)."""
        holdout = self._decoded(await self._redis.lrange(self._keys.holdout, 0, -1))
        if reload:
            step.holdout.replace(holdout)
        else:
            step.holdout.extend_oldest(holdout)
        if self._settings.buffer == GENERATIVE:
            step.buffer = step.learner.generator
            return
        if await self._redis.zcard(buffers.class_index_key(self._keys)) != await self._redis.hlen(
            self._keys.reservoir
        ):
            await fenced(buffers.reindex(self._redis, self._keys, self._lease.token or 0))
        step.replace_buffer(make_buffer(self._settings.buffer, self._settings.buffer_size,
                                        self._settings.input_dim))
        stored = sorted((await buffers.load(self._redis, self._keys)).items())
        for (slot, _), (x, y, tag) in zip(stored, self._decoded([b for _, b in stored]),
                                          strict=True):
            step.keep(slot, x, y, tag, new=False)

    async def add(self, step: StreamStep, ids: list[str], x: np.ndarray, y: np.ndarray,
                  holdout: np.ndarray, tags: list[str], stored: list[bytes] | None = None) -> None:
        """A read's items: the holdout ones to the holdout, the rest offered to the replay
        buffer by its policy (the Redis script decides, the mirror follows). Redis keeps
        `stored` (each input's stored form) where given, else the float32 rows of `x`."""
        u = self._rng.random(len(ids))
        generative = self._settings.buffer == GENERATIVE
        # Generative replay: raw inputs never enter the reservoir; the generator learns from
        # them in memory instead (they reach Redis only as holdout).
        kept = np.flatnonzero(holdout) if generative else np.arange(len(ids))
        # Python scalars once per read (tolist), not numpy ones per row: same values.
        held, draws, classes, rows = holdout.tolist(), u.tolist(), y.tolist(), kept.tolist()
        kept_classes, kept_tags = [classes[i] for i in rows], [tags[i] for i in rows]
        entries = (encode_entries(x[kept], kept_classes, kept_tags) if stored is None
                   else encode_stored_entries([stored[i] for i in rows], kept_classes, kept_tags))
        items = [IngestItem(ids[i], held[i], draws[i], classes[i], entry)
                 for i, entry in zip(rows, entries, strict=True)]
        if generative:
            assert step.buffer is not None
            for i in np.flatnonzero(~holdout):
                step.buffer.insert(torch.from_numpy(x[i].copy()), int(y[i]))
        slots = await fenced(ingest(
            self._redis, self._keys, self._scripts, token=self._lease.token or 0,
            policy=self._settings.buffer, capacity=self._settings.buffer_size,
            holdout_capacity=self._settings.holdout_size, items=items,
        ))
        for i, slot in zip(rows, slots, strict=True):
            if slot >= 0:  # mirror the script's decision: replay samples without a round trip
                step.keep(slot, x[i], classes[i], tags[i])
            elif slot == HOLDOUT:
                step.hold_out(x[i].copy(), classes[i], tags[i])

    async def retire(self, slots: list[int]) -> None:
        """Remove buffer slots in Redis (fenced, compacting as the mirror's retire does);
        the caller's step has already retired them from the mirror."""
        if slots:
            await fenced(buffers.retire(self._redis, self._keys, self._lease.token or 0, slots))

    async def purge(self, step: StreamStep, request: PurgeRequest, read_up_to: str) -> dict[str, int]:
        """Delete the request's raw inputs from the stream, the replay buffer and the holdout,
        here and in the mirror (the prediction log and golden set are the served part:
        store/purge.py `purge_served_inputs`)."""
        stream = await purge_stream(self._redis, self._keys, request.matches, read_up_to)
        slots = matching_slots(await buffers.load(self._redis, self._keys), request.matches)
        if slots:
            await self.retire(slots)
            if step.buffer is not None:
                mask = torch.zeros(len(step.buffer), dtype=torch.bool)
                mask[slots] = True
                step.retire(mask)
        holdout, kept = await purge_holdout(self._redis, self._keys, request.matches)
        if holdout:
            step.holdout.replace(self._decoded(kept))
        removed = {"stream": stream, "replay": len(slots), "holdout": holdout}
        log.info("purged", extra={"purge_id": request.purge_id, "tag": request.tag, **removed})
        return removed
