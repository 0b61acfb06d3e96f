"""The learner process loop: read feedback, score it (test-then-train), keep replay and
holdout, train, consolidate, and publish gated versions; ack only after publishing."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import zlib
from collections import deque

import numpy as np
import torch
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from torch import nn

from models.checkpoint import CheckpointError
from models.drift import make_detector
from models.learner import IncrementalLearner
from models.replay import GENERATIVE, make_buffer
from models.strategies.base import SCALE_KEY
from service.config import Settings
from service.monitor.drift_monitor import DriftMonitor
from service.monitor.learner_metrics import LearnerMetrics
from service.monitor.tag_accuracy import TagAccuracy
from service.store import buffers
from service.store.codec import decode_entry, encode_entries
from service.store.control import Control
from service.store.golden import GoldenSet
from service.store.ingest import HOLDOUT, IngestItem, ingest
from service.store.keys import Keys
from service.store.registry import Registry
from service.store.scripts import Scripts
from service.worker.feed import FeedbackBatch, FeedbackReader, stream_id_key
from service.worker.fencing import Fenced, fenced, fenced_hset
from service.worker.golden_baseline import GoldenBaseline
from service.worker.lease import Lease
from service.worker.publishing import Publishing
from service.worker.removal import SampleRemoval
from service.worker.reporting import Reporting
from service.worker.scoring import PrequentialWindow, predict_classes
from service.worker.state import restore

log = logging.getLogger(__name__)

READ_COUNT = 512
# One training chunk for every read, backlog or not. Training a backlog in chunks of 256 was
# 2× faster end to end but Adam's second moments, estimated from 256-row gradients, then
# under-estimate the noise of the live stream's 32-row ones: steps came out too large for
# ~1,000 steps, and a model at 0.90 fell to 0.71-0.79 (64 → 32: 0.87 → 0.82) — in the service,
# every candidate after a backlog was rejected by the gate and the learner, reloading the
# served state after each rejection, never got out (measured 2026-11-28, /tmp experiment
# described in BENCHMARKS.md "Serving").
TRAIN_CHUNK = 32


def train_chunks(rows: int) -> list[slice]:
    """`rows` in ceil(rows / TRAIN_CHUNK) chunks of nearly equal size (100 → 4 × 25), never a
    small remainder: a 4-row step after 32-row ones is as large but far noisier (a model at
    0.85 trained 32,32,32,4 fell to 0.78–0.84; 25-row chunks held it)."""
    if rows <= 0:
        return []
    count = -(-rows // TRAIN_CHUNK)
    bounds = [rows * i // count for i in range(count + 1)]
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


# With a backlog (the last read came back full), read in larger pieces: fewer publishes, acks
# and polls per item.
BACKLOG_READ_COUNT = 2048
CONSOLIDATION_SAMPLE = 512
# Post-drift evidence the drift response fits the new concept on: about the detector's delay
# (~55 samples on a label swap), so the window is mostly post-change. 300 mixed in so much of
# the old concept that the label-swap phase reached only 0.84 (48: 0.97; python -m service.bench).
RECENT_WINDOW = 48
STATS_EVERY_SECONDS = 1.0


class LearnerService(SampleRemoval, Reporting, Publishing):
    def __init__(self, settings: Settings, redis: Redis,
                 metrics: LearnerMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or LearnerMetrics(CollectorRegistry(), settings.model_name)
        self.tag_accuracy = TagAccuracy(settings.max_tags)
        self.redis = redis
        self.keys = Keys(settings.model_name)
        self.scripts = Scripts(redis)
        self.registry = Registry(redis, self.keys, self.scripts)
        self.reader = FeedbackReader(redis, self.keys, settings.input_dim)
        self.golden = GoldenSet(redis, self.keys, self.scripts)
        self.lease = Lease(redis, self.keys, self.scripts, settings.lease_ttl_seconds)
        # Only ever told the Redis script's decisions (put/retire), never deciding itself: Redis
        # is the buffer of record, this is its in-memory mirror for sampling without round trips.
        self.replay = make_buffer(settings.buffer, settings.buffer_size, settings.input_dim)
        self.holdout: deque[tuple[np.ndarray, int, str]] = deque(maxlen=settings.holdout_size)
        self.window = PrequentialWindow()
        self.vocab: dict[str, int] = {}
        self.vocab_order: list[str] = []
        self.rng = np.random.default_rng()
        # Set by _restore / _publish
        self.learner: IncrementalLearner
        self.served: nn.Module
        self.served_version = 0
        self.epoch = 0
        self.committed = "0-0"
        self.samples_seen = 0
        self.unacked: list[str] = []
        self.last_id: str | None = None
        self.unpublished = 0
        self.backlog = False
        self.oldest_unpublished_ms: int | None = None
        self.since_consolidation = 0
        self.last_publish = time.monotonic()
        self.last_stats = 0.0
        self.last_history: float | None = None
        self.last_loss: float | None = None
        self.last_penalty: float | None = None
        self.learning = "running"
        self.control = Control(redis, self.keys)
        self.detector = (None if settings.drift_detector == "none"
                         else make_detector(settings.drift_detector))
        self.recent: deque[tuple[np.ndarray, int]] = deque(maxlen=RECENT_WINDOW)
        self.golden_baseline: GoldenBaseline | None = None  # set with the loaded version
        # Replay entries inserted since the last publish: retired if that candidate is rejected.
        self.inserted: set[bytes] = set()
        self.drift_events = 0
        # Drift statistics of served inputs; read from the oldest retained sample (module note).
        self.drift = DriftMonitor(settings.input_dim)
        self.drift_read_id = "0-0"

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
        await self._restore()

    async def step(self, block_ms: int = 200) -> int:
        """One read → learn → maybe publish cycle; returns the number of entries read."""
        paused, purge = await self.control.poll()
        while purge is not None:  # privacy first: purges run even while learning is paused
            await self.control.finish_purge(purge, await self._purge(purge))
            purge = await self.control.next_purge()
        self.learning = "paused" if paused else "running"
        await self._read_drift_samples()  # serving goes on while learning is paused
        if paused:  # feedback keeps being accepted; the learner catches up on resume
            if time.monotonic() - self.last_stats >= STATS_EVERY_SECONDS:
                await self._write_stats()
            await asyncio.sleep(block_ms / 1000)
            return 0
        batch = await self.reader.read(BACKLOG_READ_COUNT if self.backlog else READ_COUNT,
                                       block_ms)
        self.backlog = len(batch) >= READ_COUNT
        # Before learning: labels read now are learned on top of whatever is current now (an
        # operator's activation), not on the version it replaced and then dropped with it.
        await self._follow_pointer()
        if len(batch):
            await self._process(batch)
        if self.unpublished and (
            self.unpublished >= self.settings.publish_every_samples
            or time.monotonic() - self.last_publish >= self.settings.publish_every_seconds
        ) and not await self.reader.unread_pending():  # never commit past an unread entry
            await self._publish()
        if time.monotonic() - self.last_stats >= STATS_EVERY_SECONDS:
            await self._write_stats()
        return len(batch)

    # ---- restore / follow -------------------------------------------------------------
    async def _restore(self) -> None:
        pointer = await self.registry.current()
        if pointer is None:
            raise RuntimeError("no current version: the deployment was not initialised")
        await self._load_loadable(pointer.version)
        self.epoch = pointer.epoch
        self.committed, self.samples_seen = await self.registry.cursor()
        await self._refresh_vocab()
        await self._load_buffer()
        self.drift_events = int(await self.redis.hget(self.keys.counters,
                                                      "concept_drift_events") or 0)
        self.holdout.extend(map(decode_entry, await self.redis.lrange(self.keys.holdout, 0, -1)))
        self.tag_accuracy.observe(tag for _, _, tag in reversed(self.holdout))
        previous = await self.redis.hget(self.keys.learner_stats, "stats")
        self.tag_accuracy.seed(json.loads(previous).get("tags") if previous else None)
        self._evaluate_tags()
        await self._write_stats()
        log.info("learner resumed from version %s at %s (%s samples seen) on %s, %s",
                 self.served_version, self.committed, self.samples_seen,
                 self.learner.device, self.learner.precision)

    async def _load_buffer(self) -> None:
        """Mirror the Redis replay buffer (a reservoir written by an older learner gets its
        class index rebuilt first, which the buffer scripts need). Generative replay keeps
        nothing in Redis: its generator is part of the learner state."""
        if self.settings.buffer == GENERATIVE:
            self.replay = self.learner.generator
            return
        if await self.redis.zcard(buffers.class_index_key(self.keys)) != await self.redis.hlen(
            self.keys.reservoir
        ):
            await fenced(buffers.reindex(self.redis, self.keys, self.lease.token or 0))
        self.replay = make_buffer(self.settings.buffer, self.settings.buffer_size,
                                  self.settings.input_dim)
        for slot, blob in sorted((await buffers.load(self.redis, self.keys)).items()):
            x, y, _ = decode_entry(blob)
            self.replay.put(slot, torch.from_numpy(x.copy()), y)

    async def _load_loadable(self, version: int) -> None:
        """Load `version`, or, if its blobs are corrupt, the nearest ancestor that loads (a
        restart must not crash-loop on one bad blob)."""
        while True:
            try:
                await self._load_version(version)
                return
            except CheckpointError as exc:
                parent = (await self.registry.meta(version)).get("parent")
                if parent is None:
                    raise
                log.error("version %s cannot be loaded (%s); trying its parent %s",
                          version, exc, parent)
                version = parent

    async def _load_version(self, version: int) -> None:
        weights = await self.registry.weights(version)
        state = await self.registry.state(version)
        self.learner, self.served = await asyncio.to_thread(restore, self.settings, weights, state)
        self.golden_baseline = GoldenBaseline.from_meta(await self.registry.meta(version))
        if self.settings.buffer == GENERATIVE:  # an activated version brings its generator
            self.replay = self.learner.generator
        self.served_version = version
        self.since_consolidation = 0

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
        committed = stream_id_key(self.committed)
        fresh = [i for i, sid in enumerate(batch.ids) if stream_id_key(sid) > committed]
        stale = [batch.ids[i] for i in range(len(batch)) if stream_id_key(batch.ids[i]) <= committed]
        if stale:  # published before a crash, never acked: ack now, learn nothing twice
            await self.reader.ack_and_trim(stale, self.committed)
        if not fresh:
            return
        ids = [batch.ids[i] for i in fresh]
        x = batch.x[fresh]
        if any(batch.labels[i] not in self.vocab for i in fresh):
            await self._refresh_vocab()
        y = np.array([self.vocab[batch.labels[i]] for i in fresh], dtype=np.int64)
        self.learner.ensure_classes(len(self.vocab_order))
        self.tag_accuracy.observe(batch.tags[i] for i in fresh)
        self.drift.add_labels(y)

        # Test-then-train: the served version answers each new label before any training.
        predicted = predict_classes(self.served, x, self._routing([batch.tags[i] for i in fresh]))
        self.window.add(y.tolist(), predicted.tolist())
        drifted = False
        if self.detector is not None:
            for wrong in (predicted != y).tolist():
                drifted = self.detector.update(float(wrong)) or drifted

        holdout = np.array([self._is_holdout(sid) for sid in ids], dtype=bool)
        await self._ingest(ids, x, y, holdout, [batch.tags[i] for i in fresh])

        train_x, train_y = torch.from_numpy(x[~holdout]), torch.from_numpy(y[~holdout])
        buffer = self.replay if self.settings.use_replay else None
        tags = None
        if self.settings.routes_by_tag:  # each tag's head or column learns its tag's labels
            tags = [batch.tags[i] for i, held in zip(fresh, holdout, strict=True) if not held]
            self.learner.ensure_tags(tags, train_y, self.settings.max_tags)
        chunks = train_chunks(len(train_y))
        for n, chunk in enumerate(chunks, 1):
            # Only the read's last chunk is reported (loss, penalty): one evaluation per read.
            stats = self.learner.learn_many(train_x[chunk], train_y[chunk], buffer,
                                            None if tags is None else tags[chunk],
                                            report=n == len(chunks))
            self.metrics.steps.inc(stats.steps)
        if chunks:
            self.last_loss, self.last_penalty = stats.loss, stats.penalty
        self.recent.extend(zip(x[~holdout], y[~holdout].tolist(), strict=True))
        if drifted:
            await self._on_concept_drift()
        self.since_consolidation += len(train_y)
        if self.since_consolidation >= self.settings.consolidate_every_samples:
            self._consolidate(train_x, train_y)

        self.samples_seen += len(ids)
        self.metrics.samples.inc(len(ids))
        self.unpublished += len(ids)
        self.unacked.extend(ids)
        # Monotonic even when entries a fenced-out learner took are read late, out of order.
        self.last_id = max(self.last_id or ids[-1], ids[-1], key=stream_id_key)
        oldest = min(batch.accepted_ms[i] for i in fresh)
        self.oldest_unpublished_ms = min(self.oldest_unpublished_ms or oldest, oldest)
        await fenced_hset(self.redis, self.keys, self.lease.token, self.keys.learner_stats,
                          {"processed": self.samples_seen})

    def _is_holdout(self, stream_id: str) -> bool:
        # Decided by the id alone, so a re-read after a restart splits the same way.
        return zlib.crc32(stream_id.encode()) % 10_000 < self.settings.holdout_fraction * 10_000

    async def _ingest(self, ids: list[str], x: np.ndarray, y: np.ndarray, holdout: np.ndarray,
                      tags: list[str]) -> None:
        u = self.rng.random(len(ids))
        # Generative replay: raw inputs never enter the reservoir; the generator learns from
        # them in memory instead (they reach Redis only as holdout).
        kept = (np.flatnonzero(holdout) if self.settings.buffer == GENERATIVE
                else np.arange(len(ids)))
        # Python scalars once per read (tolist), not numpy ones per row: same values.
        held, draws, classes, rows = holdout.tolist(), u.tolist(), y.tolist(), kept.tolist()
        entries = encode_entries(x[kept], [classes[i] for i in rows], [tags[i] for i in rows])
        items = [IngestItem(ids[i], held[i], draws[i], classes[i], entry)
                 for i, entry in zip(rows, entries, strict=True)]
        if self.settings.buffer == GENERATIVE:
            for i in np.flatnonzero(~holdout):
                self.replay.insert(torch.from_numpy(x[i].copy()), int(y[i]))
        slots = await fenced(ingest(
            self.redis, self.keys, self.scripts, token=self.lease.token or 0,
            policy=self.settings.buffer, capacity=self.settings.buffer_size,
            holdout_capacity=self.settings.holdout_size, items=items,
        ))
        for item, i, slot in zip(items, kept, slots, strict=True):
            if slot >= 0:  # mirror the script's decision: replay samples without a round trip
                self.replay.put(slot, torch.from_numpy(x[i].copy()), int(y[i]))
                self.inserted.add(item.entry)
            elif slot == HOLDOUT:
                self.holdout.appendleft((x[i].copy(), int(y[i]), tags[i]))

    def _consolidate(self, recent_x: torch.Tensor, recent_y: torch.Tensor) -> None:
        if len(self.replay):
            gen = torch.Generator().manual_seed(int(self.rng.integers(2**31)))
            x, y = self.replay.sample(min(CONSOLIDATION_SAMPLE, len(self.replay)), gen)
        else:
            x, y = recent_x, recent_y
        if len(y):
            seconds = self.learner.consolidate(x, y)
            log.debug("consolidated in %.1f ms", seconds * 1000)
        self.since_consolidation = 0
        # Anchored on the post-drift state now: protect it at full strength again. Read from
        # the strategy's own (persisted) scale, so this holds across restarts too.
        scale = float(self.learner.strategy.state_dict().get(SCALE_KEY, torch.tensor(1.0)))
        if scale < 1.0:
            self.learner.relax(1.0 / scale)

    def _routing(self, tags: list[str]) -> list[str] | None:
        """Tags that select heads or columns when the deployment routes by tag (else None)."""
        return tags if self.settings.routes_by_tag else None
