"""Per-field drift of records (service/monitor/record_drift.py, MNEMO_FEATURES): PSI over a
numeric field's quantile bins, category shares (top values + other + missing) and boolean
shares, against one calibrated family-wise level; bounded memory whatever the number of
distinct values; and end to end: records predicted through the API reach the learner's
per-field figures in /v1/stats and the `mnemo_drift_psi{feature="<field>"}` gauges."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from models.features import FeatureSchema, record_to_bytes
from service.config import Settings
from service.monitor.learner_metrics import LearnerMetrics
from service.monitor.record_drift import RecordDriftMonitor
from service.records import RecordRows
from service.store.keys import Keys
from service.store.predictions import DRIFT_SAMPLE_ROWS, PredictionLog, read_drift_samples
from service.worker.loop import LearnerService
from tests.conftest import running_app
from tests.worker.test_drift_stats import settled
from tests.worker.test_operations import learner_running

SCHEMA = {"amount": "numeric", "country": "categorical", "mobile": "boolean",
          "age": "numeric"}
REFERENCE, WINDOW = 1000, 500
COUNTRIES = [f"c{i:02d}" for i in range(30)]  # 3 common, 27 rare (the rare ones fold into other)
SHARES = np.array([0.3, 0.2, 0.1] + [0.4 / 27] * 27)


def schema() -> FeatureSchema:
    return FeatureSchema.from_mapping(SCHEMA)


def draw(rng: np.random.Generator, n: int, *, amount_shift: float = 0.0,
         new_country: float = 0.0, mobile: float = 0.2,
         age_missing: float = 0.05) -> list[dict[str, Any]]:
    """Records with a numeric, a categorical (2% missing), a boolean and a numeric field that
    is sometimes missing; each keyword moves one field's distribution."""
    out = []
    for _ in range(n):
        record: dict[str, Any] = {"amount": float(rng.normal(10.0 + amount_shift, 3.0)),
                                  "mobile": bool(rng.random() < mobile)}
        if rng.random() >= age_missing:
            record["age"] = float(rng.integers(18, 90))
        if rng.random() >= 0.02:
            record["country"] = ("zz" if rng.random() < new_country
                                 else COUNTRIES[rng.choice(len(COUNTRIES), p=SHARES)])
        out.append(record)
    return out


def monitor(seed: int = 0, **kwargs: Any) -> RecordDriftMonitor:
    return RecordDriftMonitor(schema(), REFERENCE, WINDOW, seed=seed, **kwargs)


def fed(rng: np.random.Generator, seed: int = 0) -> RecordDriftMonitor:
    """A monitor with its reference and one stationary window."""
    m = monitor(seed)
    m.add_samples(draw(rng, REFERENCE), np.zeros(REFERENCE, dtype=np.int64))
    assert m.psi_threshold is not None and m.snapshot()["fields"] is None  # not measured yet
    m.add_samples(draw(rng, WINDOW), np.zeros(WINDOW, dtype=np.int64))
    return m


def test_a_numeric_field_shift_alarms_on_that_field() -> None:
    rng = np.random.default_rng(1)
    m = fed(rng)
    level = m.psi_threshold
    assert level is not None and 0 < level < 0.5
    assert m.snapshot()["alarms"] == [] and set(m.snapshot()["fields"]) == set(SCHEMA)
    m.add_samples(draw(rng, WINDOW, amount_shift=1.5), np.zeros(WINDOW, dtype=np.int64))
    snap = m.snapshot()
    assert snap["fields"]["amount"] > level and snap["psi_max"] == snap["fields"]["amount"]
    assert all(v < level for f, v in snap["fields"].items() if f != "amount"), snap
    assert snap["alarms"] == ["psi"] and snap["psi_threshold"] == level


def test_a_new_dominant_category_alarms_on_its_field() -> None:
    rng = np.random.default_rng(2)
    m = fed(rng)
    level = m.psi_threshold
    assert level is not None
    # "zz" never appeared in the reference: it lands in `other`, whose share jumps.
    m.add_samples(draw(rng, WINDOW, new_country=0.5), np.zeros(WINDOW, dtype=np.int64))
    snap = m.snapshot()
    assert snap["fields"]["country"] > level and "psi" in snap["alarms"]
    assert all(v < level for f, v in snap["fields"].items() if f != "country"), snap
    # A known category taking over (c02 from 10% to ~60%) is a share shift too.
    m.reset()
    m.add_samples(draw(rng, REFERENCE), np.zeros(REFERENCE, dtype=np.int64))
    takeover = [{**r, "country": "c02"} if rng.random() < 0.5 else r for r in draw(rng, WINDOW)]
    m.add_samples(takeover, np.zeros(WINDOW, dtype=np.int64))
    assert m.snapshot()["fields"]["country"] > m.psi_threshold  # type: ignore[operator]


def test_boolean_shares_and_missing_values_are_drift_too() -> None:
    rng = np.random.default_rng(3)
    m = fed(rng)
    level = m.psi_threshold
    assert level is not None
    m.add_samples(draw(rng, WINDOW, mobile=0.6), np.zeros(WINDOW, dtype=np.int64))
    assert m.snapshot()["fields"]["mobile"] > level
    m.add_samples(draw(rng, WINDOW, age_missing=0.4), np.zeros(WINDOW, dtype=np.int64))
    fields = m.snapshot()["fields"]
    assert fields["age"] > level and fields["mobile"] < level, fields  # missing: its own bin


def test_no_alarm_on_a_stationary_stream() -> None:
    """3 references × 20 fresh windows each: the family-wise level (1% per evaluation, for
    99% of references) holds; at most one alarm in 60 evaluations."""
    alarms, ratios = 0, []
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        m = fed(rng, seed)
        for _ in range(20):
            m.add_samples(draw(rng, WINDOW), np.zeros(WINDOW, dtype=np.int64))
            alarms += "psi" in m.snapshot()["alarms"]
            ratios.append(m.psi_max / m.psi_threshold)  # type: ignore[operator]
    assert alarms <= 1, (alarms, max(ratios))
    assert np.median(ratios) < 0.6, ratios  # the level is not just barely above the noise


def test_memory_stays_bounded_with_100000_distinct_values() -> None:
    s = FeatureSchema.from_mapping({"user": "categorical", "amount": "numeric"})
    m = RecordDriftMonitor(s, REFERENCE, WINDOW, n_boot=50, seed=0)

    def batch(start: int, n: int, users: int | None = None) -> list[dict[str, Any]]:
        """Rows start.. with user `user-i` (or one of `users` regulars) each."""
        return [{"user": f"user-{i if users is None else i % users}", "amount": float(i % 97)}
                for i in range(start, start + n)]

    zeros = np.zeros(1000, dtype=np.int64)
    for start in range(0, 2000, 1000):  # a reference and a window of 20 regulars: at rest
        m.add_samples(batch(start, 1000, users=20), zeros)
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        for start in range(2000, 102_000, 1000):  # 100,000 values never seen before
            m.add_samples(batch(start, 1000), zeros)
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 256 * 1024, grown
    # Only the reference's top values are kept (the raw reference went after calibration).
    assert m.retained_values() <= m.top_categories
    # Every user is new: all of the window is `other`, where the reference had its 10 least
    # frequent regulars (half of it).
    assert m.snapshot()["fields"]["user"] > m.psi_threshold  # type: ignore[operator]


def test_records_outside_the_schema_are_skipped_with_their_prediction() -> None:
    m = monitor()
    good = {"amount": 1.0, "country": "c00", "mobile": True}
    m.add_samples([good, {"amount": "high"}, {"unknown": 1}, [1, 2]], np.array([0, 1, 1, 1]))
    assert m.retained_values() == len(SCHEMA)  # one record's values (absent ones as None)
    assert m.predictions.reference == [0]


def test_psi_gauges_are_labelled_by_field_name() -> None:
    metrics = LearnerMetrics(CollectorRegistry(), "m")
    get = metrics.registry.get_sample_value
    psi = {"amount": 0.3, "country": 0.9, "a": 0.0, "b": 0.1, "c": 0.2, "d": 0.05, "e": 0.01}
    metrics.observe_drift({"psi_max": 0.9}, psi)
    assert get("mnemo_drift_psi", {"model": "m", "feature": "country"}) == 0.9
    assert get("mnemo_drift_psi", {"model": "m", "feature": "other"}) == 0.01
    assert get("mnemo_drift_psi", {"model": "m", "feature": "a"}) is None


async def test_read_drift_samples_returns_records_and_keeps_vectors(
        aredis: Redis, model_name: str) -> None:
    keys = Keys(model_name)
    records = [{"amount": float(i), "country": f"c{i}"} for i in range(3)]
    log = PredictionLog(aredis, keys, 4, ttl_seconds=60, records=True)
    await log.log("b1", RecordRows(records, [record_to_bytes(r) for r in records]),  # type: ignore[arg-type]
                  0, "", None, np.array([2, 1, 0]))
    await PredictionLog(aredis, keys, 4, ttl_seconds=60).log(
        "b2", np.ones((2, 4), np.float32), 0, "", None, np.array([1, 1]))
    await aredis.xadd(keys.drift_samples, {"r": b"not json", "p": b"\0\0\0\0", "t": ""})
    samples = await read_drift_samples(aredis, keys, 4, "0-0", ttl_seconds=60)
    assert samples.records == records and samples.record_predicted.tolist() == [2, 1, 0]
    assert samples.x.shape == (2, 4) and samples.predicted.tolist() == [1, 1]


# ---- end to end ------------------------------------------------------------------------------

async def stream(client: httpx.AsyncClient, records: list[dict[str, Any]]) -> None:
    for start in range(0, len(records), DRIFT_SAMPLE_ROWS):  # every row lands in the sample
        response = await client.post("/v1/predict",
                                     json={"inputs": records[start : start + DRIFT_SAMPLE_ROWS]})
        assert response.status_code == 200, response.text
        assert response.json()["logged"] is True


async def settled_fields(client: httpx.AsyncClient, learner: LearnerService,
                         aredis: Redis) -> dict[str, Any]:
    """/v1/stats's drift once it shows the learner's per-field statistics of every record."""
    return await settled(client, learner, aredis, timeout=30, reported=lambda drift: drift.get(
        "fields") == learner.drift.snapshot()["fields"])


async def test_records_predicted_through_the_api_give_per_field_drift(
        settings_for: Callable[..., Settings], aredis: Redis) -> None:
    settings = settings_for(input_dim=None, features=SCHEMA)
    rng = np.random.default_rng(7)
    async with running_app(settings) as client, learner_running(settings) as learner:
        assert isinstance(learner.drift, RecordDriftMonitor)  # picked by the schema
        learner.drift = RecordDriftMonitor(schema(), REFERENCE, WINDOW, seed=0)
        gauge = learner.metrics.registry.get_sample_value
        model = {"model": settings.model_name}

        await stream(client, draw(rng, REFERENCE))
        drift = await settled_fields(client, learner, aredis)
        assert drift["fields"] is None and drift["psi_max"] is None  # null, never invented
        level = learner.drift.psi_threshold
        assert level is not None

        await stream(client, draw(rng, WINDOW))
        drift = await settled_fields(client, learner, aredis)
        assert set(drift["fields"]) == set(SCHEMA) and drift["psi_max"] < level
        assert drift["psi_threshold"] == level and "psi" not in drift["alarms"]

        await stream(client, draw(rng, WINDOW, amount_shift=1.5, new_country=0.5))
        drift = await settled_fields(client, learner, aredis)
        assert drift["fields"]["amount"] > level and drift["fields"]["country"] > level
        assert drift["fields"]["mobile"] < level and "psi" in drift["alarms"]
        assert gauge("mnemo_drift_psi_max", model) == pytest.approx(drift["psi_max"])
        for field, value in drift["fields"].items():  # 4 fields: all within the top five
            assert gauge("mnemo_drift_psi", {**model, "feature": field}) == pytest.approx(value)
        assert gauge("mnemo_drift_alarm", {**model, "statistic": "psi"}) == 1.0
        assert drift["prediction_js"] is not None
