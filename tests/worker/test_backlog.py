"""A lasting backlog is read in larger pieces (fewer round trips per item), a single burst of
one read is not, every chunk trains in the live stream's chunk size (a larger one during a
backlog left Adam's moments mis-scaled for the live stream: see service/worker/loop.py), and
every item is processed exactly once."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from redis.asyncio import Redis

from models.stream import StreamParams, train_chunks
from service.config import Settings
from service.worker.loop import BACKLOG_READ_COUNT, READ_COUNT
from tests.worker.test_loop import append, blobs, init_deployment, started

TRAIN_CHUNK = StreamParams().train_chunk


async def test_backlog_reads_larger_pieces_and_trains_in_the_same_chunks(
        settings_for: Callable[..., Settings], aredis: Redis) -> None:
    settings = settings_for(holdout_fraction=0.0, publish_every_samples=100_000)
    await init_deployment(settings, aredis)
    service = await started(settings, aredis)
    total = READ_COUNT + BACKLOG_READ_COUNT + 300
    x, y = blobs(total, 7)
    await append(aredis, settings, x, y)

    chunks: list[int] = []
    reports: list[bool] = []
    learn_many = service.learner.learn_many

    def recording(bx: torch.Tensor, by: torch.Tensor, buffer: object, tags: object = None, *,
                  report: bool = True, **options: object) -> object:
        chunks.append(len(by))
        reports.append(report)
        return learn_many(bx, by, buffer, tags, report=report, **options)  # type: ignore[arg-type]

    service.learner.learn_many = recording  # type: ignore[method-assign]

    # A first full read: maybe a burst, so small chunks still, but the next read is larger.
    assert await service.step() == READ_COUNT
    assert chunks == [TRAIN_CHUNK] * (READ_COUNT // TRAIN_CHUNK) and service.backlog
    # Loss and penalty are evaluated once per read, on its last chunk, and reported.
    assert reports == [False] * (len(chunks) - 1) + [True]
    assert service.last_loss is not None and np.isfinite(service.last_loss)
    assert service.last_penalty is not None and np.isfinite(service.last_penalty)
    chunks.clear()
    # The backlog lasts: one large read, trained in the same chunks.
    assert await service.step() == BACKLOG_READ_COUNT
    assert chunks == [TRAIN_CHUNK] * (BACKLOG_READ_COUNT // TRAIN_CHUNK)
    chunks.clear()
    # The rest (less than a normal read): back to the live-stream chunk.
    assert await service.step() == 300
    assert chunks == [30] * 10  # 300 in ten nearly equal chunks, no 12-row remainder
    assert not service.backlog
    assert service.samples_seen == total
    # It still learned: the blobs are separable.
    predicted = service.learner.predict_proba(torch.from_numpy(x[-300:])).argmax(1).numpy()
    assert float(np.mean(predicted == y[-300:])) > 0.9


def test_train_chunks_split_evenly_without_a_small_remainder() -> None:
    assert train_chunks(0, TRAIN_CHUNK) == []
    for rows in (1, 4, 31, 32, 33, 100, 300, 2048):
        sizes = [c.stop - c.start for c in train_chunks(rows, TRAIN_CHUNK)]
        assert sum(sizes) == rows and len(sizes) == -(-rows // TRAIN_CHUNK)
        assert max(sizes) <= TRAIN_CHUNK and max(sizes) - min(sizes) <= 1, (rows, sizes)
        chunks = train_chunks(rows, TRAIN_CHUNK)
        assert [c.start for c in chunks][1:] == [c.stop for c in chunks][:-1]
