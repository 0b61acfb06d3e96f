"""What the learner reports: the stats JSON behind /v1/stats (fenced, with `processed`),
the Prometheus gauges, and the drift-sample reads that feed the drift statistics. Mixed into
LearnerService, whose state it uses."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from service.store.predictions import read_drift_samples
from service.worker.fencing import fenced_hset


class Reporting:
    async def _write_stats(self) -> None:
        recalls = self.window.recall_by_class()
        stats = {
            "model_version": self.served_version,
            "prequential_accuracy": self.window.accuracy(),
            "balanced_accuracy": self.window.balanced_accuracy(),
            "classes": {self.vocab_order[c]: {"recall": r} for c, r in recalls.items()
                        if c < len(self.vocab_order)} or None,
            "tags": self.tag_accuracy.as_json(),
            "drift": {"concept_drift_events": self.drift_events, **self.drift.snapshot()},
            "learning": self.learning,
            "loss": self.last_loss,
            "penalty": self.last_penalty,
        }
        # What StatsStore.write stores, behind the fence check.
        await fenced_hset(self.redis, self.keys, self.lease.token, self.keys.learner_stats,
                                {"stats": json.dumps(stats), "processed": self.samples_seen})
        self.last_stats = time.monotonic()
        await self._update_gauges(stats)

    async def _update_gauges(self, stats: dict[str, Any]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(self.keys.counters, "accepted", "purged")
        pipe.hlen(self.keys.reservoir)
        (accepted, purged), reservoir = await pipe.execute()
        lag = max(0, int(accepted or 0) - int(purged or 0) - self.samples_seen)  # as /v1/stats
        self.metrics.observe_stats(stats, lag, int(reservoir))
        self.metrics.observe_drift(stats["drift"], self.drift.feature_psi)

    async def _read_drift_samples(self) -> None:
        """New drift samples (one round trip, which also trims the stream to the TTL)."""
        new = await read_drift_samples(self.redis, self.keys, self.settings.input_dim,
                                       self.drift_read_id, self.settings.prediction_ttl_seconds)
        if len(new.x):  # may calibrate (a bootstrap): off the event loop
            await asyncio.to_thread(self.drift.add_samples, new.x, new.predicted)
        self.drift_read_id = new.last_id
