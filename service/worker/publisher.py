"""Publishing a candidate: gate it against the served version on the holdout since the last
change point and on the golden set (against the lineage's best, see golden_baseline.py), store
it as a version (weights, learner state, meta) through the fenced publish script, and commit
the stream position. What the learner does after a refusal is its own business (it goes back
to the served version); this object reports the outcome."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from redis.asyncio import Redis
from torch import Tensor, nn

from models.checkpoint import labels_metadata, model_to_bytes, tensors_to_bytes
from models.gate import CheckSet, gate
from models.replay import GENERATIVE
from service.config import Settings
from service.monitor.learner_metrics import LearnerMetrics
from service.store.codec import label_from_text
from service.store.golden import GoldenSet
from service.store.registry import Registry
from service.versioning import version_meta
from service.worker.cursor import StreamCursor
from service.worker.feed import FeedbackReader
from service.worker.fencing import fenced
from service.worker.golden_baseline import GoldenBaseline, advance, fingerprint
from service.worker.inputs import LearnerInputs
from service.worker.lease import Lease

log = logging.getLogger("service.worker.loop")  # one logger for the learner's lines


@dataclass(frozen=True)
class Candidate:
    model: nn.Module  # what would be served
    state: dict[str, Tensor]  # learner + stream state, what a restart resumes from
    state_meta: dict[str, str]
    holdout: CheckSet  # the recent holdout since the last change point
    extra_meta: dict[str, Any]
    # What the weights carry beside labels and config: the record encoder's state, as it was
    # when the model was taken (models/checkpoint.py features_metadata).
    weights_meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Publication:
    outcome: str  # "published" | "rejected" | "failed" (another version was activated meanwhile)
    version: int
    epoch: int
    baseline: GoldenBaseline | None  # the golden baseline to carry on with, when published


class Publisher:
    def __init__(self, settings: Settings, redis: Redis, registry: Registry, golden: GoldenSet,
                 reader: FeedbackReader, lease: Lease, metrics: LearnerMetrics,
                 inputs: LearnerInputs | None = None) -> None:
        self._settings = settings
        self._inputs = inputs or LearnerInputs(settings)
        self._redis = redis
        self._registry = registry
        self._golden = golden
        self._reader = reader
        self._lease = lease
        self._metrics = metrics

    async def publish(self, candidate: Candidate, *, served: nn.Module, served_version: int,
                      baseline: GoldenBaseline | None, cursor: StreamCursor,
                      vocab: dict[str, int], vocab_order: list[str]) -> Publication:
        """Gate, store and commit; counts the outcome in mnemo_model_publish_total."""
        try:
            publication = await self._publish(candidate, served, served_version, baseline,
                                              cursor, vocab, vocab_order)
        except Exception:
            self._metrics.publish["failed"].inc()
            raise
        self._metrics.publish[publication.outcome].inc()
        return publication

    async def _publish(self, candidate: Candidate, served: nn.Module, served_version: int,
                       baseline: GoldenBaseline | None, cursor: StreamCursor,
                       vocab: dict[str, int], vocab_order: list[str]) -> Publication:
        assert cursor.last_id is not None
        golden_x, golden_y = await self._golden_arrays(vocab)
        golden_fp = fingerprint(golden_x, golden_y)
        floor = baseline.floor_for(golden_fp) if baseline else None
        checks = {"holdout": candidate.holdout,
                  # Trusted and fixed: judged on the tolerance alone (models/gate.py).
                  "golden": CheckSet(golden_x, golden_y, noise_z=0.0, floor=floor)}
        result = await asyncio.to_thread(gate, candidate.model, served, checks,
                                         self._settings.gate_tolerance)
        new_baseline = advance(baseline, golden_fp, result.evaluation, result.passed)
        if new_baseline is not None:
            new_baseline.record(result.evaluation)
        token = self._lease.token or 0
        version = await fenced(self._registry.allocate_version(self._lease.token))
        num_classes = candidate.model.config.num_classes
        labels = [label_from_text(t, self._settings.label_type) for t in vocab_order[:num_classes]]
        meta = version_meta(
            self._settings, version=version, parent=served_version,
            samples_seen=cursor.samples_seen, last_stream_id=cursor.last_id, labels=labels,
            evaluation=result.evaluation, oldest_new_accepted_ms=cursor.oldest_unpublished_ms,
            hyperparameters=self._settings.hyperparameters(), **candidate.extra_meta,
        )
        weights = model_to_bytes(candidate.model, labels_metadata(vocab_order[:num_classes])
                                 | candidate.weights_meta)
        state = tensors_to_bytes(candidate.state, candidate.state_meta)
        epoch = await fenced(self._registry.publish(
            token=token, version=version, meta=meta, weights=weights, state=state,
            status="active" if result.passed else "rejected", last_stream_id=cursor.last_id,
            samples_seen=cursor.samples_seen, parent=served_version,
        ))
        last_id = cursor.last_id
        acked = cursor.commit()
        if self._settings.buffer == GENERATIVE:  # raw inputs no longer than needed: all of them
            await self._reader.ack_and_trim(acked, last_id, inclusive=True)
        else:
            await self._reader.ack_and_trim(acked, last_id)
        if epoch < 0:
            # An operator activated another version while this candidate was evaluated: their
            # choice stands (the candidate is kept, archived).
            log.warning("version %s not made current: another version was activated meanwhile",
                        version)
            return Publication("failed", version, epoch, baseline)
        if not result.passed:
            log.warning("rejected", extra={"version": version, "eval": result.evaluation})
            return Publication("rejected", version, epoch, baseline)
        log.info("published", extra={"version": version, "parent": served_version,
                                      "samples_seen": cursor.samples_seen, "eval": result.evaluation})
        await fenced(self._registry.prune(self._settings.keep_versions, token))
        return Publication("published", version, epoch, new_baseline)

    async def _golden_arrays(self, vocab: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
        # A golden label the model has no class for yet counts as wrong (index -1).
        items = await self._golden.items()
        if not items:
            return np.empty((0, self._settings.input_dim), np.float32), np.empty(0, np.int64)
        return (self._inputs.matrix([x for x, _, _ in items], learn=False),
                np.array([vocab.get(label, -1) for _, label, _ in items], dtype=np.int64))
