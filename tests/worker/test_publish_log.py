"""The learner writes one structured log line per published version, with its evaluation."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from service.config import Settings
from service.logs import JsonFormatter
from tests.worker.test_loop import append, blobs, init_deployment, started


async def test_one_json_line_per_published_version_with_its_evaluation(
    settings_for: Callable[..., Settings], aredis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(publish_every_samples=100, holdout_fraction=0.3)
    await init_deployment(settings, aredis)
    learner = await started(settings, aredis)
    caplog.set_level(logging.INFO, logger="service.worker.loop")
    x, y = blobs(300, 5)
    for start in range(0, 300, 100):
        await append(aredis, settings, x[start : start + 100], y[start : start + 100])
        await learner.step(block_ms=10)
    published = [r for r in caplog.records if r.getMessage() == "published"]
    assert [r.version for r in published] == [1, 2, 3]  # type: ignore[attr-defined]
    line = json.loads(JsonFormatter("learn").format(published[-1]))
    assert line["role"] == "learn" and line["parent"] == 2 and line["samples_seen"] == 300
    assert line["eval"]["holdout_items"] >= 20 and 0.0 <= line["eval"]["holdout_accuracy"] <= 1.0
