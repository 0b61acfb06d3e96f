"""Concept drift in the live learner: a label swap is detected, the buffered samples of the
old concept are retired, the regulariser is relaxed and then restored, and the served model
adopts the new concept — the drift count shows in /v1/stats' source."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from redis.asyncio import Redis

from models.gate import accuracy
from models.strategies.base import SCALE_KEY
from service.config import Settings
from service.store.stats import StatsStore
from tests.worker.test_loop import LABELS, append, blobs, init_deployment, started


def swapped(y: np.ndarray) -> np.ndarray:
    return (y + 1) % len(LABELS)  # every class relabelled: same inputs, new answers


async def test_label_swap_is_detected_retired_and_adopted(
    settings_for: Callable[..., Settings], aredis: Redis
) -> None:
    torch.set_num_threads(1)
    settings = settings_for(publish_every_samples=100, buffer_size=300, holdout_fraction=0.0,
                            consolidate_every_samples=200, gate_tolerance=1.0)
    await init_deployment(settings, aredis)
    learner = await started(settings, aredis)
    x_old, y_old = blobs(600, 1)
    for start in range(0, 600, 50):
        await append(aredis, settings, x_old[start : start + 50], y_old[start : start + 50])
        await learner.step(block_ms=10)
    assert learner.drift_events == 0, "no drift while the concept holds"
    x_test, y_test = blobs(300, 99)
    assert accuracy(learner.served, x_test, y_test) > 0.95

    x_new, y_new = blobs(900, 2)
    y_new = swapped(y_new)
    retired_at_detection = None
    for start in range(0, 900, 50):
        await append(aredis, settings, x_new[start : start + 50], y_new[start : start + 50])
        await learner.step(block_ms=10)
        if learner.drift_events and retired_at_detection is None:
            _, buffer_y = learner.stream.buffer.items()
            retired_at_detection = len(buffer_y)
            scale = float(learner.learner.strategy.state_dict()[SCALE_KEY])
            assert scale < 1.0, "the regulariser is relaxed right after the drift"
    assert learner.drift_events >= 1
    assert retired_at_detection is not None and retired_at_detection < 300, \
        "old-concept samples were retired from the buffer"
    # The served model has adopted the new concept, and the strength is back after the
    # post-drift consolidation.
    assert accuracy(learner.served, x_test, swapped(y_test)) > 0.9
    assert float(learner.learner.strategy.state_dict()[SCALE_KEY]) == 1.0
    stats = await StatsStore(aredis, learner.keys).read()
    assert stats.learner["drift"]["concept_drift_events"] == learner.drift_events
    # Every retirement reached the buffer of record, the second look's after the drift too.
    assert await aredis.hlen(learner.keys.reservoir) == len(learner.stream.buffer)
