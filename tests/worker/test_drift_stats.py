"""Calibrated drift statistics end to end: the API samples served inputs into the drift
stream in its prediction-log round trip, the learner keeps reference and current windows, and
psi_max crosses its bootstrap-calibrated level under a covariate shift but not without one."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from service.config import Settings
from service.monitor.drift_monitor import DriftMonitor
from service.monitor.learner_metrics import LearnerMetrics
from service.store.keys import Keys
from service.store.predictions import (
    DRIFT_SAMPLE_ROWS,
    PredictionLog,
    purge_drift_samples,
    read_drift_samples,
)
from service.worker.loop import LearnerService
from tests.conftest import running_app
from tests.worker.test_operations import learner_running, wait_for

DIM = 8
REFERENCE, WINDOW = 1000, 500
MEAN = np.linspace(-3.0, 4.0, DIM)
SCALE = np.linspace(0.5, 5.0, DIM)


def draw(rng: np.random.Generator, n: int, shift: bool) -> np.ndarray:
    x = rng.normal(MEAN, SCALE, size=(n, DIM))
    if shift:
        x[:, : DIM // 2] += SCALE[: DIM // 2]  # half the features, by one standard deviation
    return x


async def stream(client: httpx.AsyncClient, x: np.ndarray) -> None:
    for start in range(0, len(x), DRIFT_SAMPLE_ROWS):  # every row lands in the drift sample
        response = await client.post("/v1/predict",
                                     json={"inputs": x[start : start + DRIFT_SAMPLE_ROWS].tolist()})
        assert response.status_code == 200, response.text
        assert response.json()["logged"] is True


async def settled(client: httpx.AsyncClient, learner: LearnerService, aredis: Redis,
                  reported: Callable[[dict[str, Any]], bool] | None = None,
                  timeout: float = 15) -> dict[str, Any]:
    """/v1/stats's drift once the learner has read every drift sample and written stats after
    it (`reported`: the stats show what the learner holds; default: its psi_max)."""
    last = (await aredis.xrevrange(learner.keys.drift_samples, count=1))[0][0].decode()
    shows = reported or (lambda drift: drift["psi_max"] == learner.drift.psi_max)

    async def check() -> dict[str, Any] | None:
        if learner.reporter.drift_read_id != last:
            return None
        drift = (await client.get("/v1/stats")).json()["drift"]
        return drift if shows(drift) else None

    return await wait_for(check, timeout, "drift statistics of every streamed sample")


async def test_psi_max_crosses_its_calibrated_level_under_shift_and_not_without(
        settings_for: Callable[..., Settings], aredis: Redis) -> None:
    settings = settings_for(input_dim=DIM)
    rng = np.random.default_rng(11)
    async with running_app(settings) as client, learner_running(settings) as learner:
        learner.drift = DriftMonitor(DIM, REFERENCE, WINDOW, false_alarm=0.01, seed=0)
        gauge = learner.metrics.registry.get_sample_value
        model = {"model": settings.model_name}

        await stream(client, draw(rng, REFERENCE, shift=False))
        drift = await settled(client, learner, aredis)
        assert drift["psi_max"] is None  # no current window yet: null, never invented
        threshold = learner.drift.psi_threshold
        assert threshold is not None and 0 < threshold < 0.5

        # Control: a full window more from the same distribution stays below the level.
        await stream(client, draw(rng, WINDOW, shift=False))
        drift = await settled(client, learner, aredis)
        assert drift["psi_max"] < threshold
        assert gauge("mnemo_drift_psi_max", model) == pytest.approx(drift["psi_max"])
        stored = json.loads(await aredis.hget(learner.keys.learner_stats, "stats"))["drift"]
        assert stored["psi_threshold"] == threshold and "psi" not in stored["alarms"]
        control = drift["psi_max"]

        # Half the features shifted by one standard deviation: above the level.
        await stream(client, draw(rng, WINDOW, shift=True))
        drift = await settled(client, learner, aredis)
        assert drift["psi_max"] > threshold
        assert gauge("mnemo_drift_psi_max", model) == pytest.approx(drift["psi_max"])
        stored = json.loads(await aredis.hget(learner.keys.learner_stats, "stats"))["drift"]
        assert "psi" in stored["alarms"] and stored["psi_threshold"] == threshold
        # The per-feature gauges: the shifted features lead; the rest fold into "other".
        top = {str(j): gauge("mnemo_drift_psi", {**model, "feature": str(j)})
               for j in range(DIM)}
        assert {f for f, v in top.items() if v is not None} == {str(j) for j in range(5)}
        assert all(top[str(j)] > threshold for j in range(DIM // 2))
        assert gauge("mnemo_drift_psi", {**model, "feature": "other"}) < threshold
        assert drift["prediction_js"] is not None and drift["concept_drift_events"] == 0
        print(f"psi threshold {threshold:.4f}: control psi_max {control:.4f}, "
              f"shifted {drift['psi_max']:.4f}; prediction_js {drift['prediction_js']:.4f} "
              f"(level {stored['prediction_js_threshold']:.4f})")


def test_label_and_prediction_js_and_reset() -> None:
    rng = np.random.default_rng(3)
    monitor = DriftMonitor(2, reference_size=400, window=200, seed=1)
    monitor.add_labels(rng.choice(3, 400, p=[0.6, 0.3, 0.1]))
    assert monitor.snapshot()["label_js"] is None and monitor.labels.threshold is not None
    monitor.add_labels(rng.choice(3, 200, p=[0.6, 0.3, 0.1]))
    assert monitor.snapshot()["label_js"] < monitor.labels.threshold
    monitor.add_labels(rng.choice(3, 200, p=[0.1, 0.3, 0.6]))  # the label mix changed
    snap = monitor.snapshot()
    assert snap["label_js"] > snap["label_js_threshold"] and snap["alarms"] == ["label_js"]
    monitor.add_samples(rng.normal(size=(400, 2)), np.zeros(400, dtype=np.int64))
    monitor.add_samples(rng.normal(size=(200, 2)), np.ones(200, dtype=np.int64))
    assert monitor.snapshot()["prediction_js"] == pytest.approx(1.0)
    assert "prediction_js" in monitor.snapshot()["alarms"]
    monitor.reset()  # after a concept drift: a new reference, recalibrated when full
    assert monitor.snapshot() == {
        "psi_max": None, "prediction_js": None, "label_js": None, "psi_threshold": None,
        "prediction_js_threshold": None, "label_js_threshold": None, "alarms": []}


def test_psi_gauges_fold_features_beyond_the_top_five() -> None:
    metrics = LearnerMetrics(CollectorRegistry(), "m")
    get = metrics.registry.get_sample_value
    assert math.isnan(get("mnemo_drift_psi_max", {"model": "m"}))
    metrics.observe_drift({"psi_max": 0.9}, np.array([0.1, 0.9, 0.0, 0.3, 0.2, 0.4, 0.05]))
    assert get("mnemo_drift_psi", {"model": "m", "feature": "1"}) == 0.9
    assert get("mnemo_drift_psi", {"model": "m", "feature": "other"}) == 0.05
    assert get("mnemo_drift_psi", {"model": "m", "feature": "2"}) is None
    metrics.observe_drift({"psi_max": 0.9}, np.array([0.1, 0.0, 0.9, 0.3, 0.2, 0.4, 0.05]))
    assert get("mnemo_drift_psi", {"model": "m", "feature": "1"}) is None  # left the top five
    assert get("mnemo_drift_psi", {"model": "m", "feature": "2"}) == 0.9


async def test_drift_stream_is_one_pipeline_capped_trimmed_by_ttl_and_purged(
        aredis: Redis, redis_client: redis.Redis, model_name: str) -> None:
    keys = Keys(model_name)
    log = PredictionLog(aredis, keys, 3, ttl_seconds=60)
    x = np.arange(60, dtype=np.float32).reshape(20, 3)
    old = f"{int(time.time() * 1000) - 120_000}-0"  # older than the TTL
    await aredis.xadd(keys.drift_samples, {"x": x[0].tobytes(), "p": b"\0\0\0\0", "t": ""},
                      id=old)
    await log.log("b1", x, 0, "a", None, np.arange(20))
    await log.log("b2", x[:2], 0, "b", None, np.array([1, 2]))
    samples = await read_drift_samples(aredis, keys, 3, "0-0", ttl_seconds=60)
    # The read trimmed first: nothing older than now − TTL survives, nor is returned.
    assert redis_client.xrange(keys.drift_samples, "-", old) == []
    assert samples.x.shape == (DRIFT_SAMPLE_ROWS + 2, 3)
    assert samples.predicted[-2:].tolist() == [1, 2]
    assert set(map(tuple, samples.x[:DRIFT_SAMPLE_ROWS])) <= set(map(tuple, x))
    assert (await read_drift_samples(aredis, keys, 3, samples.last_id, 60)).x.shape == (0, 3)
    assert await purge_drift_samples(aredis, keys, "a") == 1
    assert await purge_drift_samples(aredis, keys, None) == 1
    assert redis_client.exists(keys.drift_samples) == 0


async def test_a_covariate_shift_after_a_concept_drift_event_alarms_within_a_window(
        settings_for: Callable[..., Settings], aredis: Redis) -> None:
    """The learner detects a label swap (a concept-drift event) while the covariate
    reference is in place; inputs that then move still raise the PSI alarm within 500
    predicted rows (a reset reference would stay blind for 1,500)."""
    settings = settings_for(input_dim=DIM, labels=["a", "b"], publish_every_samples=64,
                            holdout_fraction=0.0)
    rng = np.random.default_rng(12)
    async with running_app(settings) as client, learner_running(settings) as learner:
        learner.drift = DriftMonitor(DIM, REFERENCE, WINDOW, false_alarm=0.01, seed=0)
        await stream(client, draw(rng, REFERENCE, shift=False))
        assert (await settled(client, learner, aredis))["psi_max"] is None

        async def label(x: np.ndarray, swapped: bool) -> None:
            above = x[:, 0] > MEAN[0]
            labels = np.where(above != swapped, "a", "b")
            items = [{"inputs": row.tolist(), "label": str(c)} for row, c in zip(x, labels, strict=True)]
            for start in range(0, len(items), 100):
                response = await client.post("/v1/feedback", json={"items": items[start : start + 100]})
                assert response.status_code == 202, response.text

        await label(draw(rng, 800, shift=False), swapped=False)
        await wait_for(lambda: _processed(learner, 800), 30, "the first concept learned")
        await label(draw(rng, 800, shift=False), swapped=True)
        await wait_for(lambda: _processed(learner, 1600), 30, "the swapped labels learned")
        assert learner.drift_events >= 1  # a concept-drift event happened
        assert learner.drift.psi_threshold is not None  # ...and the reference survived it

        await stream(client, draw(rng, WINDOW, shift=True))
        drift = await settled(client, learner, aredis)
        assert drift["concept_drift_events"] >= 1
        assert drift["psi_max"] > learner.drift.psi_threshold


async def _processed(learner: LearnerService, n: int) -> bool:
    return learner.samples_seen >= n
