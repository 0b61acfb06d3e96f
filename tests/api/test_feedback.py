"""POST /v1/feedback against the real Redis: what lands in the stream, idempotency, load
shedding, Redis outages, and the metrics that count all of it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis
from prometheus_client.parser import text_string_to_metric_families

from service.config import Settings
from service.embedded import EmbeddedRedis
from service.store.keys import Keys
from tests.conftest import running_app, seen_entries, snapshot

ROW_A = [5.1, 3.5, 1.4, 0.2]
ROW_B = [6.7, 3.0, 5.2, 2.3]
ROW_C = [0.1, -2.5, 1e-3, 123.456]


def _stream(redis_client: redis.Redis, model: str) -> list[dict[str, Any]]:
    """The feedback stream, decoded: x as float32 little-endian, the rest as text."""
    out = []
    for sid, fields in redis_client.xrange(Keys(model).stream):
        entry: dict[str, Any] = {k.decode(): v.decode() for k, v in fields.items() if k != b"x"}
        entry["x"] = np.frombuffer(fields[b"x"], dtype="<f4")
        entry["sid"] = sid.decode()
        out.append(entry)
    return out


def _f32(row: list[float]) -> np.ndarray:
    return np.asarray(row, dtype=np.float32)


async def _predict(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/v1/predict", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["logged"] is True
    return data


async def _feedback(client: httpx.AsyncClient, items: list[dict[str, Any]],
                    expect: tuple[int, int]) -> None:
    response = await client.post("/v1/feedback", json={"items": items})
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": expect[0], "duplicates": expect[1]}


async def test_feedback_by_prediction_id_copies_input_version_and_tag(
    client: httpx.AsyncClient, redis_client: redis.Redis, model_name: str
) -> None:
    predicted = await _predict(client, {"inputs": [ROW_A, ROW_B, ROW_C], "tag": "store-7"})
    ids = [p["id"] for p in predicted["predictions"]]
    assert len(set(ids)) == 3
    before_ms = int(time.time() * 1000)
    await _feedback(client, [
        {"prediction_id": ids[1], "label": "virginica"},
        {"prediction_id": ids[2], "label": "setosa", "tag": "override"},  # item tag wins
    ], expect=(2, 0))
    after_ms = int(time.time() * 1000)
    entries = _stream(redis_client, model_name)
    assert len(entries) == 2
    first, second = entries
    np.testing.assert_array_equal(first["x"], _f32(ROW_B))
    assert (first["y"], first["tag"], first["v"], first["id"]) == ("virginica", "store-7", "0", f"p:{ids[1]}")
    np.testing.assert_array_equal(second["x"], _f32(ROW_C))
    assert (second["y"], second["tag"], second["v"]) == ("setosa", "override", "0")
    assert before_ms <= int(first["t"]) <= after_ms
    # The dedupe record points at the entry it made.
    assert seen_entries(redis_client, model_name)[f"p:{ids[1]}"] == first["sid"]


async def test_client_chosen_ids(client: httpx.AsyncClient, redis_client: redis.Redis,
                                 model_name: str) -> None:
    predicted = await _predict(client, {"inputs": [ROW_A, ROW_B], "ids": ["order-41", "order-42"]})
    assert [p["id"] for p in predicted["predictions"]] == ["order-41", "order-42"]
    await _feedback(client, [{"prediction_id": "order-42", "label": "virginica", "tag": "late"}],
                    expect=(1, 0))
    await _feedback(client, [{"prediction_id": "order-41", "label": "setosa"}], expect=(1, 0))
    entries = _stream(redis_client, model_name)
    np.testing.assert_array_equal(entries[0]["x"], _f32(ROW_B))
    np.testing.assert_array_equal(entries[1]["x"], _f32(ROW_A))
    assert [(e["y"], e["tag"], e["v"]) for e in entries] == [("virginica", "late", "0"), ("setosa", "", "0")]


async def test_accepted_item_outlives_the_prediction_log(
    make_settings: Callable[..., Settings], redis_client: redis.Redis, model_name: str
) -> None:
    async with running_app(make_settings(prediction_ttl_seconds=1)) as c:
        # Dedupe ids are looked up in the window before, this one and the next (one window =
        # the 1 s TTL here): a repeat is sure to be caught within a window of the first label.
        # The repeat below comes right after the log expired, ~1 s on: label just after a
        # window begins, or a label accepted late in its window falls out of reach (a flake).
        time.sleep(1.0 - time.time() % 1.0)
        predicted = await _predict(c, {"inputs": [ROW_A, ROW_B], "tag": "t1"})
        pid_a, pid_b = (p["id"] for p in predicted["predictions"])
        await _feedback(c, [{"prediction_id": pid_a, "label": "setosa"}], expect=(1, 0))
        log_keys = list(redis_client.scan_iter(match=Keys(model_name).prediction_batch("*")))
        assert len(log_keys) == 1
        assert 0 < redis_client.pttl(log_keys[0]) <= 1000
        deadline = time.monotonic() + 5
        while redis_client.exists(*log_keys):
            assert time.monotonic() < deadline, "prediction log entry did not expire"
            time.sleep(0.05)
        entries = _stream(redis_client, model_name)
        assert len(entries) == 1
        np.testing.assert_array_equal(entries[0]["x"], _f32(ROW_A))
        assert (entries[0]["y"], entries[0]["tag"], entries[0]["v"]) == ("setosa", "t1", "0")
        before = snapshot(redis_client, model_name)
        # A repeat of the accepted label (even a different one): a duplicate, nothing appended.
        await _feedback(c, [{"prediction_id": pid_a, "label": "virginica"}], expect=(0, 1))
        after = snapshot(redis_client, model_name)
        counters = Keys(model_name).counters.encode()
        assert after.pop(counters)[b"duplicates"] == b"1"
        assert before.pop(counters).get(b"duplicates") is None
        assert after == before
        # The never-labelled id of the same expired batch is unknown now, and refused whole.
        refused = await c.post("/v1/feedback", json={"items": [
            {"inputs": ROW_C, "label": "setosa"}, {"prediction_id": pid_b, "label": "setosa"}]})
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["loc"] == ["body", "items", 1, "prediction_id"]
        # Mixed with a new item: the repeat counts, the new one is appended.
        await _feedback(c, [{"prediction_id": pid_a, "label": "setosa"},
                            {"inputs": ROW_C, "label": "virginica"}], expect=(1, 1))
        entries = _stream(redis_client, model_name)
        assert [e["y"] for e in entries] == ["setosa", "virginica"]
        np.testing.assert_array_equal(entries[1]["x"], _f32(ROW_C))


async def test_deleted_client_id_alias_keeps_accepted_item(
    client: httpx.AsyncClient, redis_client: redis.Redis, model_name: str
) -> None:
    await _predict(client, {"inputs": [ROW_B], "ids": ["req-9"]})
    await _feedback(client, [{"prediction_id": "req-9", "label": "virginica"}], expect=(1, 0))
    deleted = [*redis_client.scan_iter(match=Keys(model_name).prediction_batch("*")),
               *redis_client.scan_iter(match=Keys(model_name).prediction_alias("*"))]
    assert len(deleted) == 2  # the batch record and the client id's alias
    redis_client.delete(*deleted)
    await _feedback(client, [{"prediction_id": "req-9", "label": "setosa"}], expect=(0, 1))
    entries = _stream(redis_client, model_name)
    assert len(entries) == 1
    np.testing.assert_array_equal(entries[0]["x"], _f32(ROW_B))
    assert entries[0]["y"] == "virginica"


async def test_same_prediction_id_twice_in_one_batch(
    client: httpx.AsyncClient, redis_client: redis.Redis, model_name: str
) -> None:
    predicted = await _predict(client, {"inputs": [ROW_A]})
    pid = predicted["predictions"][0]["id"]
    await _feedback(client, [{"prediction_id": pid, "label": "setosa"},
                             {"prediction_id": pid, "label": "virginica"}], expect=(1, 1))
    entries = _stream(redis_client, model_name)
    assert [e["y"] for e in entries] == ["setosa"]  # the first label wins
    assert redis_client.hgetall(Keys(model_name).counters) == {b"accepted": b"1", b"duplicates": b"1"}


async def test_feedback_id_dedupes_inputs_items(
    client: httpx.AsyncClient, redis_client: redis.Redis, model_name: str
) -> None:
    await _feedback(client, [{"inputs": ROW_A, "label": "setosa", "feedback_id": "fb-1"},
                             {"inputs": ROW_B, "label": "virginica", "feedback_id": "fb-1"},
                             {"inputs": ROW_B, "label": "virginica", "feedback_id": "fb-2"}],
                    expect=(2, 1))
    await _feedback(client, [{"inputs": ROW_C, "label": "versicolor", "feedback_id": "fb-2"}],
                    expect=(0, 1))
    # Without a feedback_id nothing identifies a repeat: both are appended.
    await _feedback(client, [{"inputs": ROW_C, "label": "setosa"},
                             {"inputs": ROW_C, "label": "setosa", "tag": "x"}], expect=(2, 0))
    entries = _stream(redis_client, model_name)
    assert [(e["y"], e["id"], e["v"], e["tag"]) for e in entries] == [
        ("setosa", "f:fb-1", "", ""), ("virginica", "f:fb-2", "", ""),
        ("setosa", "", "", ""), ("setosa", "", "", "x")]
    np.testing.assert_array_equal(entries[0]["x"], _f32(ROW_A))
    np.testing.assert_array_equal(entries[1]["x"], _f32(ROW_B))


async def test_redis_away_predict_unlogged_feedback_503(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    server = EmbeddedRedis(tmp_path)
    url = server.start()
    port = server.port
    try:
        async with running_app(make_settings(redis_url=url, redis_timeout_seconds=1)) as c:
            predicted = await _predict(c, {"inputs": [ROW_A]})
            pid = predicted["predictions"][0]["id"]
            server.stop()

            unlogged = await c.post("/v1/predict", json={"inputs": [ROW_A, ROW_B]})
            assert unlogged.status_code == 200, unlogged.text
            body = unlogged.json()
            assert body["logged"] is False
            assert body["model_version"] == 0 and len(body["predictions"]) == 2
            # The same model's answer; a 2-row pass may round differently from a 1-row one.
            np.testing.assert_allclose(body["predictions"][0]["probabilities"],
                                       predicted["predictions"][0]["probabilities"], rtol=1e-5)

            for items in ([{"inputs": ROW_A, "label": "setosa"}],
                          [{"prediction_id": pid, "label": "setosa"}]):
                refused = await c.post("/v1/feedback", json={"items": items})
                assert refused.status_code == 503, refused.text
                assert int(refused.headers["retry-after"]) >= 1
                assert "unavailable" in refused.json()["detail"]

            ready = await c.get("/readyz")
            assert ready.status_code == 200
            model = c.app.state.ctx.settings.model_name  # type: ignore[attr-defined]
            assert ready.json() == {"ready": True, "model_version": 0, "redis": False,
                                    "models": {model: 0}}

            # Back on the same port: the same app recovers without a restart.
            server = EmbeddedRedis(tmp_path, port=port)
            server.start()
            await _feedback(c, [{"prediction_id": pid, "label": "setosa"}], expect=(1, 0))
            assert (await c.get("/readyz")).json()["redis"] is True
    finally:
        server.stop()


def _metrics(text: str, model: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every mnemo_ sample by (name, labels without model); asserts each carries model (the
    process_/python_ collectors' series are the process's, not a model's)."""
    out = {}
    families = [f for f in text_string_to_metric_families(text) if f.name.startswith("mnemo_")]
    assert families
    for family in families:
        for sample in family.samples:
            labels = dict(sample.labels)
            assert labels.pop("model", None) == model, sample
            out[(sample.name, tuple(sorted(labels.items())))] = sample.value
    return out


def _counter(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
             **labels: str) -> float:
    return metrics[(name, tuple(sorted(labels.items())))]


async def _scrape(client: httpx.AsyncClient, model: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return _metrics(response.text, model)


async def test_load_shedding_429(
    make_settings: Callable[..., Settings], redis_client: redis.Redis, model_name: str
) -> None:
    item = {"inputs": ROW_A, "label": "setosa"}
    async with running_app(make_settings(max_lag=3)) as c:
        await _feedback(c, [item, item], expect=(2, 0))
        before = snapshot(redis_client, model_name)
        shed = await c.post("/v1/feedback", json={"items": [item, item]})  # 2 + 2 > 3
        assert shed.status_code == 429, shed.text
        assert int(shed.headers["retry-after"]) >= 1
        assert snapshot(redis_client, model_name) == before
        await _feedback(c, [item], expect=(1, 0))  # 2 + 1 == 3: still allowed
        assert (await c.post("/v1/feedback", json={"items": [item]})).status_code == 429
        # The learner catches up: lag = accepted - processed drops, and feedback flows again.
        redis_client.hset(Keys(model_name).learner_stats, "processed", 2)
        await _feedback(c, [item, item], expect=(2, 0))
        assert (await c.get("/v1/stats")).json()["feedback_lag"] == 3
        metrics = await _scrape(c, model_name)
        assert _counter(metrics, "mnemo_feedback_items_total", outcome="shed") == 3
        assert _counter(metrics, "mnemo_feedback_items_total", outcome="accepted") == 5
        assert len(_stream(redis_client, model_name)) == 5


async def test_metrics_move_by_the_right_amounts(client: httpx.AsyncClient, model_name: str) -> None:
    start = await _scrape(client, model_name)
    assert _counter(start, "mnemo_model_version") == 0

    predicted = await _predict(client, {"inputs": [ROW_A, ROW_B, ROW_C]})
    await _predict(client, {"inputs": [ROW_A]})
    wrong_dim = await client.post("/v1/predict", json={"inputs": [[1, 2, 3]]})
    assert wrong_dim.status_code == 422
    not_a_number = await client.post("/v1/predict", json={"inputs": [[1, 2, 3, "4"]]})
    assert not_a_number.status_code == 422

    pid = predicted["predictions"][0]["id"]
    await _feedback(client, [{"prediction_id": pid, "label": "setosa"},
                             {"inputs": ROW_B, "label": "virginica", "feedback_id": "m-1"},
                             {"inputs": ROW_B, "label": "virginica", "feedback_id": "m-1"}],
                    expect=(2, 1))
    await _feedback(client, [{"prediction_id": pid, "label": "setosa"}], expect=(0, 1))
    unknown = await client.post("/v1/feedback", json={"items": [
        {"inputs": ROW_A, "label": "setosa"}, {"prediction_id": "nope", "label": "setosa"}]})
    assert unknown.status_code == 422
    bad_label = await client.post("/v1/feedback", json={"items": [
        {"inputs": ROW_A, "label": "setosa"}, {"inputs": ROW_A, "label": True},
        {"inputs": ROW_A, "label": "setosa"}]})
    assert bad_label.status_code == 422

    end = await _scrape(client, model_name)

    def moved(name: str, **labels: str) -> float:
        return _counter(end, name, **labels) - _counter(start, name, **labels)

    assert moved("mnemo_predict_requests_total", status="ok") == 2
    assert moved("mnemo_predict_requests_total", status="client_error") == 2
    assert moved("mnemo_predict_requests_total", status="server_error") == 0
    assert moved("mnemo_predict_latency_seconds_count") == 2
    assert moved("mnemo_predict_batch_size_count") == 2
    assert moved("mnemo_predict_batch_size_sum") == 4
    assert moved("mnemo_feedback_items_total", outcome="accepted") == 2
    assert moved("mnemo_feedback_items_total", outcome="duplicate") == 2
    assert moved("mnemo_feedback_items_total", outcome="rejected") == 2 + 3
    assert moved("mnemo_feedback_items_total", outcome="shed") == 0
