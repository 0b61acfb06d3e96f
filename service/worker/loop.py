"""The learner process loop: read feedback, run the stream step on it (models/stream.py: score
with the served version, train, answer drift, consolidate), keep its samples in Redis, publish
gated versions on the step's cadence, and acknowledge only what a version includes.

LearnerService orchestrates collaborators that each own their part: the stream cursor
(position, unacked, unpublished), the sample store (replay buffer and holdout of record and
their mirror), the publisher (gate, version, commit), the stats reporter, the lease."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import numpy as np
import torch
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from torch import nn

from models.checkpoint import CheckpointError, blob_metadata, encoder_from_metadata
from models.gate import predict_classes
from models.learner import IncrementalLearner
from models.stream import StreamStep, is_holdout
from service.config import Settings
from service.monitor.drift_monitor import DriftMonitor
from service.monitor.learner_metrics import LearnerMetrics
from service.monitor.record_drift import RecordDriftMonitor
from service.monitor.tag_accuracy import TagAccuracy
from service.store.control import Control, PurgeRequest
from service.store.golden import GoldenSet
from service.store.keys import Keys
from service.store.predictions import PredictionLog
from service.store.purge import purge_served_inputs
from service.store.registry import Registry
from service.store.scripts import Scripts
from service.worker.cursor import StreamCursor
from service.worker.feed import FeedbackBatch, FeedbackReader
from service.worker.fencing import Fenced, fenced_hset
from service.worker.golden_baseline import GoldenBaseline
from service.worker.inputs import LearnerInputs
from service.worker.lease import Lease
from service.worker.publisher import Candidate, Publisher
from service.worker.reporter import StatsReporter
from service.worker.samples import SampleStore
from service.worker.scoring import PrequentialWindow
from service.worker.state import new_step, restore

log = logging.getLogger(__name__)

READ_COUNT = 512
# With a backlog (the last read came back full), read in larger pieces: fewer publishes, acks
# and polls per item.
BACKLOG_READ_COUNT = 2048
STATS_EVERY_SECONDS = 1.0
# Rehearsal between reads while labels are scarce: a slice this long, then look for new labels
# again (a read that waits is what would otherwise happen; new labels go first).
REHEARSAL_SLICE_STEPS = 16
# A young model (fewer labels than MNEMO_PUBLISH_EVERY_SAMPLES) spends up to this much of its
# rehearsal budget before each publish: its first versions come after 16, 48, 112... labels,
# each right after the read that made it due, with two steps per 32 labels behind it (Telco
# churn's rows 250-500 were served at 0.70, below the majority class's 0.735).
YOUNG_REHEARSAL_STEPS = 64


class LearnerService:
    def __init__(self, settings: Settings, redis: Redis,
                 metrics: LearnerMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or LearnerMetrics(CollectorRegistry(), settings.model_name)
        self.redis = redis
        self.keys = Keys(settings.model_name)
        scripts = Scripts(redis)
        self.registry = Registry(redis, self.keys, scripts)
        self.reader = FeedbackReader(redis, self.keys, settings.input_dim,
                                     records=settings.features is not None)
        # Stored inputs as the network reads them; the record encoder lives here.
        self.inputs = LearnerInputs(settings)
        self.lease = Lease(redis, self.keys, scripts, settings.lease_ttl_seconds)
        self.control = Control(redis, self.keys)
        self.samples = SampleStore(settings, redis, self.keys, scripts, self.lease, self.inputs)
        self.golden = GoldenSet(redis, self.keys, scripts)
        # Only for purges the API could not finish (its own connection is never opened).
        self.prediction_log = PredictionLog(redis, self.keys, settings.input_dim,
                                            settings.prediction_ttl_seconds,
                                            records=settings.features is not None)
        self.publisher = Publisher(settings, redis, self.registry, self.golden,
                                   self.reader, self.lease, self.metrics, self.inputs)
        self.reporter = StatsReporter(settings, redis, self.keys, self.lease, self.metrics)
        self.cursor = StreamCursor()
        self.tag_accuracy = TagAccuracy(settings.max_tags)
        self.window = PrequentialWindow()
        # Drift statistics of served inputs; read from the oldest retained sample (module note).
        # Records are compared per field, not per encoded column (monitor/record_drift.py).
        schema = settings.feature_schema
        self.drift: DriftMonitor | RecordDriftMonitor = (
            DriftMonitor(settings.input_dim) if schema is None else RecordDriftMonitor(schema))
        self.vocab: dict[str, int] = {}
        self.vocab_order: list[str] = []
        # Set by prepare(): the stream step (learner, replay mirror, detector, holdout) and
        # the served version it continues from.
        self.stream: StreamStep
        self.served: nn.Module
        self.served_version = 0
        self.epoch = 0
        self.golden_baseline: GoldenBaseline | None = None
        self.drift_events = 0
        self.learning = "running"
        self.backlog = False
        self.last_publish = time.monotonic()
        self.last_loss: float | None = None
        self.last_penalty: float | None = None

    @property
    def learner(self) -> IncrementalLearner:
        return self.stream.learner

    @property
    def samples_seen(self) -> int:
        return self.cursor.samples_seen

    # ---- life cycle -------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> int:
        """0 on a clean stop, 1 when the lease was lost (the process starts over as a standby)."""
        if not await self.lease.acquire(stop):
            return 0
        keeper = asyncio.create_task(self.lease.keep(), name="lease-keeper")
        try:
            await self.prepare()
            while not stop.is_set() and not self.lease.lost.is_set():
                await self.step()
        except Fenced:
            log.error("fenced: another learner took the lease; stopping")
            return 1
        finally:
            keeper.cancel()
        if self.lease.lost.is_set():
            return 1
        await self.lease.release()
        return 0

    async def prepare(self) -> None:
        """Join the consumer group and resume from the current version; call once, after the
        lease is held and before the first step."""
        await self.reader.ensure_group()
        pointer = await self.registry.current()
        if pointer is None:
            raise RuntimeError("no current version: the deployment was not initialised")
        await self._load_loadable(pointer.version)
        self.epoch = pointer.epoch
        committed, samples_seen = await self.registry.cursor()
        self.cursor = StreamCursor(committed, samples_seen)
        await self._refresh_vocab()
        await self.samples.load(self.stream)
        self.drift_events = int(await self.redis.hget(self.keys.counters,
                                                      "concept_drift_events") or 0)
        self.tag_accuracy.observe(tag for _, _, tag in reversed(list(self.stream.holdout)))
        previous = await self.redis.hget(self.keys.learner_stats, "stats")
        self.tag_accuracy.seed(json.loads(previous).get("tags") if previous else None)
        self._evaluate_tags()
        await self.report()
        log.info("learner resumed from version %s at %s (%s samples seen) on %s, %s",
                 self.served_version, self.cursor.committed, self.samples_seen,
                 self.learner.device, self.learner.precision)

    async def _purge(self, request: PurgeRequest) -> None:
        """The learner's part of a purge, and the API's part too when the API could not
        finish it (Redis failed it half way: the request was recorded first)."""
        served = None
        if not await self.control.served_part(request.purge_id):
            served = await purge_served_inputs(self.prediction_log, self.golden, request)
        removed = await self.samples.purge(self.stream, request,
                                           self.cursor.last_id or self.cursor.committed)
        await self.control.finish_purge(request, removed, served)

    async def step(self, block_ms: int = 200) -> int:
        """One read → learn → maybe publish cycle; returns the number of entries read."""
        paused, purge = await self.control.poll()
        while purge is not None:  # privacy first: purges run even while learning is paused
            await self._purge(purge)
            purge = await self.control.next_purge()
        self.learning = "paused" if paused else "running"
        await self.reporter.read_drift_samples(self.drift)  # serving goes on while paused
        if paused:  # feedback keeps being accepted; the learner catches up on resume
            if time.monotonic() - self.reporter.last_written >= STATS_EVERY_SECONDS:
                await self.report()
            await asyncio.sleep(block_ms / 1000)
            return 0
        rehearsing = self.stream.rehearsal_budget >= 1 and not self.backlog
        batch = await self.reader.read(BACKLOG_READ_COUNT if self.backlog else READ_COUNT,
                                       None if rehearsing else block_ms)
        self.backlog = len(batch) >= READ_COUNT
        # Before learning: labels read now are learned on top of whatever is current now (an
        # operator's activation), not on the version it replaced and then dropped with it.
        await self._follow_pointer()
        if len(batch):
            await self._process(batch)
        elif rehearsing:  # no labels waiting: spend a slice of the rehearsal budget
            steps = await asyncio.to_thread(self.stream.rehearse, REHEARSAL_SLICE_STEPS)
            self.metrics.steps.inc(steps)
        if self.cursor.unpublished and (
            self.stream.publish_due(self.cursor.unpublished)
            or time.monotonic() - self.last_publish >= self.settings.publish_every_seconds
        ) and not await self.reader.unread_pending():  # never commit past an unread entry
            if self.samples_seen < self.settings.publish_every_samples:
                steps = await asyncio.to_thread(self.stream.rehearse, YOUNG_REHEARSAL_STEPS)
                self.metrics.steps.inc(steps)
            await self.publish()
        if time.monotonic() - self.reporter.last_written >= STATS_EVERY_SECONDS:
            await self.report()
        return len(batch)

    # ---- versions ---------------------------------------------------------------------
    async def _load_loadable(self, version: int) -> None:
        """Load `version`, or, if its blobs are corrupt, the nearest ancestor that loads (a
        restart must not crash-loop on one bad blob)."""
        while True:
            try:
                await self._load_version(version, resume=True)
                return
            except CheckpointError as exc:
                parent = (await self.registry.meta(version)).get("parent")
                if parent is None:
                    raise
                log.error("version %s cannot be loaded (%s); trying its parent %s",
                          version, exc, parent)
                version = parent

    async def _load_version(self, version: int, *, resume: bool = False) -> None:
        """Continue from `version`'s learner. `resume` (a start): the stream step too, with
        its detector and counters as that version saved them; otherwise (a refusal, an
        activation) the step keeps its own — the stream it has seen did happen."""
        weights = await self.registry.weights(version)
        state = await self.registry.state(version)
        learner, self.served, stream_state = await asyncio.to_thread(
            restore, self.settings, weights, state)
        reencode = self.inputs.adopt(encoder_from_metadata(blob_metadata(weights)))
        self.golden_baseline = GoldenBaseline.from_meta(await self.registry.meta(version))
        if resume:
            self.stream = new_step(self.settings, learner, None)
            self.stream.load_state_dict(stream_state)
        else:
            self.stream.learner = learner
            if learner.generator is not None:  # an activated version brings its generator
                self.stream.buffer = learner.generator
            if reencode:  # another lineage's vocabularies: the mirror again, encoded by them
                await self.samples.load(self.stream, reload=True)
        self.served_version = version

    async def _follow_pointer(self) -> None:
        """An operator's activate moves `current`: continue from that version's state, while
        the stream position and samples_seen keep moving forward."""
        pointer = await self.registry.current()
        if pointer is None or pointer.epoch == self.epoch:
            return
        if pointer.version != self.served_version:
            log.info("current moved to version %s: continuing from it", pointer.version)
            try:
                await self._load_version(pointer.version)
            except CheckpointError as exc:
                # A corrupt or foreign blob must not stop learning (nor crash-loop the learner):
                # keep the version we have, like every API replica does.
                log.error("version %s cannot be loaded (%s); continuing from version %s",
                          pointer.version, exc, self.served_version)
            self.learner.ensure_classes(len(self.vocab_order))
        self.epoch = pointer.epoch

    async def _refresh_vocab(self) -> None:
        self.vocab_order = await self.registry.labels()
        self.vocab = {label: i for i, label in enumerate(self.vocab_order)}

    # ---- learning ---------------------------------------------------------------------
    async def _process(self, batch: FeedbackBatch) -> None:
        fresh, stale = self.cursor.split(batch.ids)
        if stale:  # published before a crash, never acked: ack now, learn nothing twice
            await self.reader.ack_and_trim(stale, self.cursor.committed)
        if not fresh:
            return
        ids = [batch.ids[i] for i in fresh]
        tags = [batch.tags[i] for i in fresh]
        stored = [batch.stored[i] for i in fresh]
        x = (batch.x[fresh] if batch.x is not None
             else self.inputs.matrix(stored, learn=True))
        if any(batch.labels[i] not in self.vocab for i in fresh):
            await self._refresh_vocab()
        y = np.array([self.vocab[batch.labels[i]] for i in fresh], dtype=np.int64)
        self.tag_accuracy.observe(tags)
        self.drift.add_labels(y)

        scored = self.stream.score(self.served, x, y, tags)
        self.window.add(y.tolist(), scored.predicted.tolist())
        holdout = np.array([is_holdout(sid, self.settings.holdout_fraction) for sid in ids],
                           dtype=bool)
        await self.samples.add(self.stream, ids, x, y, holdout, tags, stored)
        train = ~holdout
        learned = await asyncio.to_thread(
            self.stream.learn, torch.from_numpy(x[train]), torch.from_numpy(y[train]),
            [t for t, keep in zip(tags, train.tolist(), strict=True) if keep],
            drifted=scored.drifted, num_classes=len(self.vocab_order))
        self.metrics.steps.inc(learned.steps)
        if learned.loss is not None:
            self.last_loss, self.last_penalty = learned.loss, learned.penalty
        if learned.drifted:
            await self._on_concept_drift(learned.retired)
        elif learned.retired:  # a caught-up drift's later looks (models/stream.py)
            await self.samples.retire(learned.retired)
        self.cursor.advance(ids, [batch.accepted_ms[i] for i in fresh])
        self.metrics.samples.inc(len(ids))
        await fenced_hset(self.redis, self.keys, self.lease.token, self.keys.learner_stats,
                          {"processed": self.samples_seen})

    async def _on_concept_drift(self, retired: list[int]) -> None:
        """The step answered the drift in memory; here its retirements reach Redis, the
        counters move and operators see the event at once."""
        await self.samples.retire(retired)
        # Same inputs, new answers: the covariate reference stays (module note there).
        self.drift.on_concept_drift()
        self.drift_events = int(await self.redis.hincrby(self.keys.counters,
                                                         "concept_drift_events", 1))
        self.metrics.drift_events.inc()
        log.info("concept drift", extra={"retired": len(retired), "events": self.drift_events})
        await self.report()

    # ---- publishing -------------------------------------------------------------------
    async def publish(self) -> str:
        """Gate and publish the learner's current model; returns the outcome."""
        learner = self.learner
        model = learner.snapshot()
        candidate = Candidate(
            model, {**learner.state_dict(), **self.stream.state_dict()}, learner.meta(),
            self.stream.holdout.check_set(self.settings.routes_by_tag), self._growth(model),
            self.inputs.metadata())
        publication = await self.publisher.publish(
            candidate, served=self.served, served_version=self.served_version,
            baseline=self.golden_baseline, cursor=self.cursor, vocab=self.vocab,
            vocab_order=self.vocab_order)
        self.last_publish = time.monotonic()
        if publication.outcome == "published":
            self.served, self.served_version = model, publication.version
            self.epoch, self.golden_baseline = publication.epoch, publication.baseline
            learner.on_publish()  # LwF: the published version is the new teacher
            self.stream.published()
        elif publication.outcome == "rejected":
            # Drop what was learned since the served version: it made the model worse, and
            # what it was trained on leaves the buffer.
            await self._load_version(self.served_version)
            self.learner.ensure_classes(len(self.vocab_order))
            await self.samples.retire(self.stream.rejected())
        else:
            await self._follow_pointer()
        self._evaluate_tags()
        await self.report(published=True)
        return publication.outcome

    def _growth(self, model: nn.Module) -> dict[str, Any]:
        """MNEMO_STRATEGY=expand: the widths this version has and the growths behind them."""
        record = getattr(self.learner.strategy, "growth_record", None)
        if record is None:
            return {}
        return {"growth": {"hidden": list(model.config.hidden), **record()}}

    # ---- reporting --------------------------------------------------------------------
    def _evaluate_tags(self) -> None:
        """The served version on the holdout, per tag (docs/DESIGN.md §6 forgetting)."""
        if len(self.stream.holdout):
            x, y, tags = self.stream.holdout.arrays()
            routed = tags if self.settings.routes_by_tag else None
            correct = (predict_classes(self.served, x, routed) == y).tolist()
            self.tag_accuracy.evaluate(tags, correct)
        self.metrics.set_tags(self.tag_accuracy.report())

    def stats(self) -> dict[str, Any]:
        """The learner's view behind /v1/stats."""
        recalls = self.window.recall_by_class()
        return {
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

    async def report(self, published: bool = False) -> None:
        """Write the stats, a history entry when due, and the gauges."""
        await self.reporter.write(self.stats(), self.samples_seen, self.drift.feature_psi,
                                  published=published)
