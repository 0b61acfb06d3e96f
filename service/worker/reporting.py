"""What the learner reports: the stats JSON behind /v1/stats (fenced, with `processed`), its
history stream, the Prometheus gauges, and the drift-sample reads that feed the drift
statistics. Mixed into LearnerService, whose state it uses."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from redis.asyncio.client import Pipeline

from service.store.history import queue_append
from service.store.predictions import read_drift_samples
from service.worker.fencing import fenced_write

HISTORY_EVERY_SECONDS = 60.0  # besides an entry per publish (DESIGN §5)


def history_entry(stats: dict[str, Any], samples_seen: int, lag: int, event: str) -> dict[str, Any]:
    """One history-stream entry: what the live page and the PNG report plot, in the names
    and shape of /v1/stats."""
    drift = stats["drift"]
    return {
        "event": event,
        "model_version": stats["model_version"],
        "samples_seen": samples_seen,
        "feedback_lag": lag,
        "prequential_accuracy": stats["prequential_accuracy"],
        "balanced_accuracy": stats["balanced_accuracy"],
        "tags": stats["tags"],
        "drift": {name: drift.get(name) for name in
                  ("psi_max", "prediction_js", "label_js", "concept_drift_events")},
        "loss": stats["loss"],
    }


class Reporting:
    async def _write_stats(self, published: bool = False) -> None:
        """The stats hash (every call), a history entry (after a publish, and once a minute),
        then the gauges."""
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
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(self.keys.counters, "accepted", "purged")
        pipe.hlen(self.keys.reservoir)
        (accepted, purged), reservoir = await pipe.execute()
        lag = max(0, int(accepted or 0) - int(purged or 0) - self.samples_seen)  # as /v1/stats
        now = time.monotonic()
        entry = None
        if published or self.last_history is None or now - self.last_history >= HISTORY_EVERY_SECONDS:
            entry = history_entry(stats, self.samples_seen, lag, "publish" if published else "tick")
            self.last_history = now

        def queue(tx: Pipeline) -> None:  # what StatsStore.write stores, + history, fenced
            tx.hset(self.keys.learner_stats,
                    mapping={"stats": json.dumps(stats), "processed": self.samples_seen})
            if entry is not None:
                queue_append(tx, self.keys, entry)

        await fenced_write(self.redis, self.keys, self.lease.token, queue)
        self.last_stats = now
        self.metrics.observe_stats(stats, lag, int(reservoir))
        self.metrics.observe_drift(stats["drift"], self.drift.feature_psi)

    async def _read_drift_samples(self) -> None:
        """New drift samples (one round trip, which also trims the stream to the TTL)."""
        new = await read_drift_samples(self.redis, self.keys, self.settings.input_dim,
                                       self.drift_read_id, self.settings.prediction_ttl_seconds)
        if len(new.x):  # may calibrate (a bootstrap): off the event loop
            await asyncio.to_thread(self.drift.add_samples, new.x, new.predicted)
        self.drift_read_id = new.last_id
