"""Micro-batching: predict requests that arrive while a forward pass runs join the next one.

An idle batcher runs a request at once (no added wait). While a pass is running, arrivals
queue; the next pass takes whole requests up to `max_rows` rows, waiting for more only while
its oldest request has waited less than `max_wait` (so the wait is bounded, and only ever
spent under load). One served-model reference is read per pass, so every request of a pass
answers from one version, whatever is swapped in meanwhile. A failed pass fails every request
in it.

Logging and drift sampling cost one pipelined Redis round trip per write, and at most one
write is in flight: the passes that finish while it is out go together in the next one (group
commit). Idle, a pass is written at once; under load a write carries several passes, and the
round trip, the most expensive part of a small pass (measured: about a third of a 1-row
request's CPU at ~4 rows a pass), is shared by all of them. Answers wait for their write: feedback by
prediction id must work as soon as predict has answered.

While the prediction log is over its budget (store/log_budget.py) a request is refused at once
(429 with Retry-After), before it queues: one comparison, no round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from fastapi import HTTPException

from service.monitor.api_metrics import ApiMetrics
from service.records import RecordRows
from service.serving.holder import ModelHolder, ServedModel
from service.serving.tag_heads import predict_for_tag
from service.store.connection import UNAVAILABLE
from service.store.predictions import LogGroup, PredictionLog

log = logging.getLogger(__name__)

# rows × parameters above which the forward pass goes to a thread: below it, handing off to
# a thread costs more than the pass itself blocks the event loop.
THREAD_MIN_WORK = 2_000_000


@dataclass(frozen=True)
class BatchAnswer:
    """One request's share of a pass."""

    served: ServedModel
    labels: list[str | int]  # what the probabilities are over: the tag's head's under routing
    probabilities: np.ndarray  # float32 (rows, len(labels))
    best: np.ndarray  # int64 (rows,), an index into labels
    ids: list[str]
    logged: bool


@dataclass(frozen=True)
class _Output:
    """A pass's answer for one request: probabilities over `labels`, whose global class
    indices (what the prediction log records) are `classes`; `best` indexes labels."""

    labels: list[str | int]
    classes: np.ndarray
    probabilities: np.ndarray
    best: np.ndarray


@dataclass
class _Pending:
    x: np.ndarray | RecordRows  # records are encoded in the pass, by the version answering
    tag: str
    client_ids: list[str] | None
    queued_at: float
    future: asyncio.Future[BatchAnswer] = field(repr=False)


@dataclass(frozen=True)
class _Computed:
    """A request whose pass has run, waiting for its log write."""

    pending: _Pending
    served: ServedModel
    output: _Output


@dataclass
class BatcherCounters:
    """What the batcher did, for tests and benchmarks (timing-free assertions)."""

    passes: int = 0
    waits: int = 0  # passes that waited for more rows (only ever while busy)
    threaded: int = 0  # passes run in a worker thread
    log_writes: int = 0  # Redis round trips of the prediction log (one or more passes each)


class MicroBatcher:
    def __init__(
        self,
        holder: ModelHolder,
        predictions: PredictionLog,
        metrics: ApiMetrics,
        max_rows: int,
        max_wait_seconds: float,
        thread_min_work: int = THREAD_MIN_WORK,
        routes_by_tag: bool = False,
    ) -> None:
        self._holder = holder
        self._predictions = predictions
        self._metrics = metrics
        self._max_rows = max_rows
        self._max_wait = max_wait_seconds
        self._thread_min_work = thread_min_work
        self._routes_by_tag = routes_by_tag  # per-tag heads / progressive columns (docs/DESIGN.md §3)
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._runner: asyncio.Task[None] | None = None
        self._more = asyncio.Event()
        self._unlogged: list[_Computed] = []
        self._logger: asyncio.Task[None] | None = None
        self.counters = BatcherCounters()

    async def predict(self, x: np.ndarray | RecordRows, tag: str,
                      client_ids: list[str] | None) -> BatchAnswer:
        """Answer `x` (float32 rows, or checked records) within the next pass; raises what
        the pass raised, or 429 while the prediction log is over its budget."""
        budget = self._predictions.budget
        if budget.exceeded:
            raise HTTPException(
                429, "load shed: the prediction log is over its budget "
                f"(MNEMO_PREDICTION_LOG_MAX_BYTES); retry after {budget.retry_after} s",
                headers={"Retry-After": str(budget.retry_after)})
        future: asyncio.Future[BatchAnswer] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(x, tag, client_ids, time.monotonic(), future))
        self._queued_rows += len(x)
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="micro-batcher")
        elif self._queued_rows >= self._max_rows:
            self._more.set()
        return await future

    async def _run(self) -> None:
        try:
            first = True
            while self._queue:
                if not first:
                    await self._wait_for_rows()
                first = False
                await self._pass(self._take())
        finally:
            self._runner = None

    async def _wait_for_rows(self) -> None:
        """Under load only: let the batch fill until full or its oldest request waited
        max_wait."""
        deadline = self._queue[0].queued_at + self._max_wait
        remaining = deadline - time.monotonic()
        if self._queued_rows >= self._max_rows or remaining <= 0:
            return
        self.counters.waits += 1
        self._more.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(remaining):  # a timer, not wait_for's extra task
                await self._more.wait()

    def _take(self) -> list[_Pending]:
        """Whole requests up to max_rows rows (a larger request goes alone)."""
        taken = [self._queue.popleft()]
        rows = len(taken[0].x)
        while self._queue and rows + len(self._queue[0].x) <= self._max_rows:
            taken.append(self._queue.popleft())
            rows += len(taken[-1].x)
        self._queued_rows -= rows
        return taken

    async def _pass(self, batch: list[_Pending]) -> None:
        self.counters.passes += 1
        try:
            served = self._holder.served  # one reference read: the whole pass uses it
            if served is None:
                raise HTTPException(503, "no model version is loaded yet",
                                    headers={"Retry-After": "1"})
            if not served.labels:
                raise HTTPException(409, "no class exists yet: send feedback with labels first")
            outputs = await self._forward(served, batch)
            self._metrics.batch_size.observe(sum(len(p.x) for p in batch))
        except BaseException as exc:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        self._unlogged += [_Computed(p, served, o) for p, o in zip(batch, outputs, strict=True)]
        if self._logger is None:
            self._logger = asyncio.create_task(self._log_all(), name="prediction-log")

    async def _log_all(self) -> None:
        """Write what has been computed, one write at a time, until nothing is left."""
        try:
            while self._unlogged:
                taken, self._unlogged = self._unlogged, []
                self.counters.log_writes += 1
                await self._log_and_answer(taken)
        finally:
            self._logger = None

    async def _forward(self, served: ServedModel, batch: list[_Pending]) -> list[_Output]:
        """One forward pass per head the pass needs: one for the whole pass, or, when the
        deployment routes by tag, one per distinct tag (its head or column, its labels)."""
        by_head: dict[str, list[int]] = {}
        for i, pending in enumerate(batch):
            by_head.setdefault(pending.tag if self._routes_by_tag else "", []).append(i)
        outputs: list[_Output | None] = [None] * len(batch)
        for tag, members in by_head.items():
            parts = [served.matrix(batch[i].x) for i in members]
            x = parts[0] if len(parts) == 1 else np.concatenate(parts)
            if len(x) * served.parameter_count >= self._thread_min_work:
                self.counters.threaded += 1
                probabilities, labels, classes = await asyncio.to_thread(
                    predict_for_tag, served, x, tag or None, self._routes_by_tag)
            else:
                probabilities, labels, classes = predict_for_tag(served, x, tag or None,
                                                                 self._routes_by_tag)
            best = probabilities.argmax(axis=1)  # once a pass, not once a request
            start = 0
            for i, part in zip(members, parts, strict=True):
                stop = start + len(part)
                outputs[i] = _Output(labels, classes, probabilities[start:stop], best[start:stop])
                start = stop
        return [o for o in outputs if o is not None]

    async def _log_and_answer(self, computed: list[_Computed]) -> None:
        groups = [LogGroup(c.pending.x, c.pending.tag, c.pending.client_ids, c.served.version)
                  for c in computed]
        try:
            plan = self._predictions.plan(groups)
            try:
                await self._predictions.write(  # the log records global class indices
                    plan, groups, [c.output.classes[c.output.best] for c in computed])
                logged = True
            except UNAVAILABLE as exc:  # away, hung or full: answer, unlogged
                log.warning("prediction log unavailable, answering unlogged: %s", exc)
                logged = False
        except Exception as exc:  # the answers must not hang on an unexpected failure
            for c in computed:
                if not c.pending.future.done():
                    c.pending.future.set_exception(exc)
            return
        for c, own_ids in zip(computed, plan.ids, strict=True):
            pending = c.pending
            if not pending.future.done():  # a cancelled caller (client went away) is skipped
                pending.future.set_result(BatchAnswer(
                    c.served, c.output.labels, c.output.probabilities, c.output.best,
                    pending.client_ids or own_ids, logged))
