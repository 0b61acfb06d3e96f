"""What the learner reports: the stats JSON behind /v1/stats (fenced, with `processed`), its
history stream, and the Prometheus gauges; and the drift-sample reads that feed the drift
statistics of served inputs."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from service.config import Settings
from service.monitor.drift_monitor import DriftMonitor
from service.monitor.learner_metrics import LearnerMetrics
from service.monitor.record_drift import RecordDriftMonitor
from service.store.history import queue_append
from service.store.keys import Keys
from service.store.predictions import read_drift_samples
from service.worker.fencing import fenced_write
from service.worker.lease import Lease

HISTORY_EVERY_SECONDS = 60.0  # besides an entry per publish (docs/DESIGN.md §5)


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


class StatsReporter:
    def __init__(self, settings: Settings, redis: Redis, keys: Keys, lease: Lease,
                 metrics: LearnerMetrics) -> None:
        self._settings = settings
        self._redis = redis
        self._keys = keys
        self._lease = lease
        self._metrics = metrics
        self.last_written = 0.0  # monotonic time of the last write
        self.last_history: float | None = None
        self._drift_read_id = "0-0"

    async def write(self, stats: dict[str, Any], samples_seen: int,
                    feature_psi: np.ndarray | Mapping[str, float] | None,
                    *, published: bool = False) -> None:
        """The stats hash (every call), a history entry (after a publish, and once a minute),
        then the gauges."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hmget(self._keys.counters, "accepted", "purged")
        pipe.hlen(self._keys.reservoir)
        (accepted, purged), reservoir = await pipe.execute()
        lag = max(0, int(accepted or 0) - int(purged or 0) - samples_seen)  # as /v1/stats
        now = time.monotonic()
        entry = None
        if published or self.last_history is None or now - self.last_history >= HISTORY_EVERY_SECONDS:
            entry = history_entry(stats, samples_seen, lag, "publish" if published else "tick")
            self.last_history = now

        def queue(tx: Pipeline) -> None:  # what StatsStore.write stores, + history, fenced
            tx.hset(self._keys.learner_stats,
                    mapping={"stats": json.dumps(stats), "processed": samples_seen})
            if entry is not None:
                queue_append(tx, self._keys, entry)

        await fenced_write(self._redis, self._keys, self._lease.token, queue)
        self.last_written = now
        self._metrics.observe_stats(stats, lag, int(reservoir))
        self._metrics.observe_drift(stats["drift"], feature_psi)

    async def read_drift_samples(self, monitor: DriftMonitor | RecordDriftMonitor) -> None:
        """New drift samples (one round trip, which also trims the stream to the TTL). Each
        monitor takes its own kind (vectors or records); samples of the other kind, written
        before the deployment changed mode, are not comparable and are passed over."""
        new = await read_drift_samples(self._redis, self._keys, self._settings.input_dim,
                                       self._drift_read_id, self._settings.prediction_ttl_seconds)
        # Either may calibrate (a bootstrap): off the event loop.
        if isinstance(monitor, RecordDriftMonitor):
            if new.records:
                await asyncio.to_thread(monitor.add_samples, new.records, new.record_predicted)
        elif len(new.x):
            await asyncio.to_thread(monitor.add_samples, new.x, new.predicted)
        self._drift_read_id = new.last_id

    @property
    def drift_read_id(self) -> str:
        return self._drift_read_id
