"""Publishing a candidate: gate it on the recent holdout and the golden set, store it as a
version (weights, learner state, meta) through the fenced publish script, commit the stream
position, and on a rejection return to the served version and retire what the candidate was
trained on. Mixed into LearnerService, whose state it uses."""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
from torch import nn

from models.checkpoint import labels_metadata, model_to_bytes, tensors_to_bytes
from models.replay import GENERATIVE
from service.store import buffers
from service.store.codec import label_from_text
from service.versioning import version_meta
from service.worker.fencing import fenced
from service.worker.golden_baseline import advance, fingerprint
from service.worker.scoring import as_arrays, gate, predict_classes

log = logging.getLogger("service.worker.loop")  # one logger for the learner's lines


class Publishing:
    def _growth(self, candidate: nn.Module) -> dict[str, object]:
        """MNEMO_STRATEGY=expand: the widths this version has and the growths behind them."""
        record = getattr(self.learner.strategy, "growth_record", None)
        if record is None:
            return {}
        return {"growth": {"hidden": list(candidate.config.hidden), **record()}}

    async def _publish(self) -> None:
        try:
            outcome = await self._publish_candidate()
        except Exception:
            self.metrics.publish["failed"].inc()
            raise
        self.metrics.publish[outcome].inc()
        self._evaluate_tags()
        await self._write_stats(published=True)

    async def _publish_candidate(self) -> str:
        """Gate, publish and commit a candidate; returns the publish metric's outcome."""
        assert self.last_id is not None
        candidate = self.learner.snapshot()
        golden = await self._golden_arrays()
        golden_fp = fingerprint(*golden)
        floor = self.golden_baseline.floor_for(golden_fp) if self.golden_baseline else None
        checks = {"holdout": self._holdout_arrays(), "golden": golden}
        result = await asyncio.to_thread(gate, candidate, self.served, checks,
                                         self.settings.gate_tolerance,
                                         floors=None if floor is None else {"golden": floor})
        baseline = advance(self.golden_baseline, golden_fp, result.evaluation, result.passed)
        if baseline is not None:
            baseline.record(result.evaluation)
        version = await fenced(self.registry.allocate_version(self.lease.token))
        labels = [label_from_text(t, self.settings.label_type)
                  for t in self.vocab_order[: candidate.config.num_classes]]
        status = "active" if result.passed else "rejected"
        meta = version_meta(
            self.settings, version=version, parent=self.served_version,
            samples_seen=self.samples_seen, last_stream_id=self.last_id, labels=labels,
            evaluation=result.evaluation, oldest_new_accepted_ms=self.oldest_unpublished_ms,
            **self._growth(candidate),
        )
        weights = model_to_bytes(candidate, labels_metadata(
            self.vocab_order[: candidate.config.num_classes]))
        state = tensors_to_bytes(self.learner.state_dict(), self.learner.meta())
        epoch = await fenced(self.registry.publish(
            token=self.lease.token or 0, version=version, meta=meta, weights=weights,
            state=state, status=status, last_stream_id=self.last_id,
            samples_seen=self.samples_seen, parent=self.served_version,
        ))
        if self.settings.buffer == GENERATIVE:  # raw inputs no longer than needed: all of them
            await self.reader.ack_and_trim(self.unacked, self.last_id, inclusive=True)
        else:
            await self.reader.ack_and_trim(self.unacked, self.last_id)
        self.committed, self.unacked = self.last_id, []
        self.unpublished, self.oldest_unpublished_ms = 0, None
        self.last_publish = time.monotonic()
        inserted, self.inserted = self.inserted, set()
        if epoch < 0:
            # An operator activated another version while this candidate was evaluated: their
            # choice stands (the candidate is kept, archived); continue from it.
            log.warning("version %s not made current: another version was activated meanwhile",
                        version)
            await self._follow_pointer()
            return "failed"
        if result.passed:
            self.served, self.served_version, self.epoch = candidate, version, epoch
            self.golden_baseline = baseline
            self.learner.on_publish()  # LwF: the published version is the new teacher
            log.info("published", extra={"version": version, "parent": meta["parent"],
                                          "samples_seen": self.samples_seen,
                                          "eval": result.evaluation})
            await fenced(self.registry.prune(self.settings.keep_versions,
                                                   self.lease.token or 0))
            return "published"
        # Drop what was learned since the served version: it made the model worse.
        log.warning("rejected", extra={"version": version, "eval": result.evaluation})
        await self._load_version(self.served_version)
        self.learner.ensure_classes(len(self.vocab_order))
        # ...and do not replay it into the next candidate (a poisoning burst would otherwise
        # keep failing, or slowly steering, every candidate after it).
        slots = [slot for slot, entry in (await buffers.load(self.redis, self.keys)).items()
                 if entry in inserted]
        if slots:
            await self._retire_slots(slots)
        return "rejected"

    def _holdout_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return as_arrays([(x, y) for x, y, _ in self.holdout], self.settings.input_dim)

    def _evaluate_tags(self) -> None:
        """The served version on the holdout, per tag (DESIGN §6 forgetting)."""
        if self.holdout:
            x, y = self._holdout_arrays()
            tags = [tag for _, _, tag in self.holdout]
            correct = (predict_classes(self.served, x, self._routing(tags)) == y).tolist()
            self.tag_accuracy.evaluate(tags, correct)
        self.metrics.set_tags(self.tag_accuracy.report())

    async def _golden_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        # A golden label the model has no class for yet counts as wrong (index -1).
        items = await self.golden.items()
        return as_arrays([(x, self.vocab.get(label, -1)) for x, label, _ in items],
                         self.settings.input_dim)
