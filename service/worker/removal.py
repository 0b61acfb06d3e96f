"""Taking samples out of the learner's replay buffer and holdout — on a concept drift (the
old concept's contradicted samples) and on an operator's purge — in Redis and in the
in-memory mirror alike. Mixed into LearnerService, whose state it uses."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import torch

from models.adaptation import respond_to_drift
from service.store import buffers
from service.store.codec import decode_entry
from service.store.control import PurgeRequest
from service.store.purge import matching_slots, purge_holdout, purge_stream
from service.worker.fencing import fenced

log = logging.getLogger("service.worker.loop")  # one logger for the learner's lines

DRIFT_RELAX = 0.1  # regulariser strength while the new concept settles, until re-anchored


class SampleRemoval:
    async def _on_concept_drift(self) -> None:
        """Same inputs, new answers (DESIGN §6): retire the buffered samples the new concept
        contradicts where the recent data lies (other domains' samples stay), consolidate,
        and relax the regulariser until the next consolidation re-anchors it."""
        buffer_x, buffer_y = self.replay.items()
        recent_x = torch.from_numpy(np.stack([x for x, _ in self.recent]))
        recent_y = torch.tensor([y for _, y in self.recent], dtype=torch.int64)
        response = await asyncio.to_thread(respond_to_drift, self.learner.snapshot(),
                                           buffer_x.clone(), buffer_y.clone(), recent_x, recent_y)
        slots = response.retire.nonzero().flatten().tolist()
        if slots:
            await self._retire_slots(slots)
        # Anchor what the unchanged domains taught (DESIGN §6: consolidate when drift fires),
        # then relax, so the changed concept can move; the next scheduled consolidation
        # re-anchors on the post-drift state and restores full strength.
        self._consolidate(recent_x, recent_y)
        self.learner.relax(DRIFT_RELAX)
        # The adapted model and the inputs it now serves are the new normal: the drift
        # statistics rebuild their references (and recalibrate) from the samples that follow.
        self.drift.reset()
        self.drift_events = int(await self.redis.hincrby(self.keys.counters,
                                                         "concept_drift_events", 1))
        self.metrics.drift_events.inc()
        log.info("concept drift", extra={"retired": len(slots), "events": self.drift_events,
                                         "seconds": round(response.seconds, 3)})
        await self._write_stats()  # operators see the event at once, not a second later

    async def _retire_slots(self, slots: list[int]) -> None:
        """Remove buffer slots in Redis (fenced, compacting) and the same way in the mirror."""
        await fenced(buffers.retire(self.redis, self.keys, self.lease.token or 0, slots))
        mask = torch.zeros(len(self.replay), dtype=torch.bool)
        mask[slots] = True
        self.replay.retire(mask)

    async def _purge(self, request: PurgeRequest) -> dict[str, int]:
        """Delete the request's raw inputs from the stream, the replay buffer and the holdout
        (the API purges the prediction log and, when named, the golden set)."""
        stream = await purge_stream(self.redis, self.keys, request.matches,
                                    self.last_id or self.committed)
        slots = matching_slots(await buffers.load(self.redis, self.keys), request.matches)
        if slots:
            await self._retire_slots(slots)
        holdout, kept = await purge_holdout(self.redis, self.keys, request.matches)
        if holdout:
            self.holdout.clear()
            self.holdout.extend(map(decode_entry, kept))
        removed = {"stream": stream, "replay": len(slots), "holdout": holdout}
        log.info("purged", extra={"purge_id": request.purge_id, "tag": request.tag, **removed})
        return removed
