"""GET /v1/stats, the version registry routes, weight export and the OpenAPI description."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import torch

from models.checkpoint import model_from_bytes
from service.config import Settings
from service.store.registry import Registry
from service.versioning import initial_version, version_meta
from tests.conftest import running_app

LABELS = ["setosa", "versicolor", "virginica"]
ROW = [5.1, 3.5, 1.4, 0.2]
STATS_FIELDS = {"model_version", "samples_seen", "feedback_lag", "reservoir_size",
                "prequential_accuracy", "balanced_accuracy", "classes", "tags", "drift", "learning"}


async def test_stats_before_any_learner(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/stats")
    assert response.status_code == 200
    stats = response.json()
    assert set(stats) >= STATS_FIELDS
    assert stats == {
        "model_version": 0, "samples_seen": 0, "feedback_lag": 0, "reservoir_size": 0,
        # Nothing computes these until a learner runs: null, never invented.
        "prequential_accuracy": None, "balanced_accuracy": None, "classes": None, "tags": None,
        "drift": {"psi_max": None, "prediction_js": None, "label_js": None,
                  "concept_drift_events": None, "psi_threshold": None,
                  "prediction_js_threshold": None, "label_js_threshold": None, "alarms": None},
        "learning": None,
        # The API's own figure: nothing logged yet, the default budget, no shedding.
        "prediction_log": {"bytes": 0, "budget_bytes": 1 << 30, "shedding": False,
                           "retry_after_seconds": None},
    }


async def test_feedback_lag_counts_accepted_items(client: httpx.AsyncClient) -> None:
    items = [{"inputs": [float(i), 1, 2, 3], "label": LABELS[i % 3], "feedback_id": f"s-{i}"}
             for i in range(5)]
    assert (await client.post("/v1/feedback", json={"items": items})).status_code == 202
    # Duplicates are counted, not appended: they add no lag.
    again = await client.post("/v1/feedback", json={"items": items[:2]})
    assert again.json() == {"accepted": 0, "duplicates": 2}
    predicted = (await client.post("/v1/predict", json={"inputs": [ROW, ROW]})).json()
    by_id = [{"prediction_id": p["id"], "label": "setosa"} for p in predicted["predictions"]]
    assert (await client.post("/v1/feedback", json={"items": by_id})).status_code == 202
    stats = (await client.get("/v1/stats")).json()
    assert (stats["feedback_lag"], stats["samples_seen"], stats["reservoir_size"]) == (7, 0, 0)


async def test_version_zero_exists_on_first_start(
    client: httpx.AsyncClient, make_settings: Callable[..., Settings]
) -> None:
    v0 = (await client.get("/v1/versions/0")).json()
    assert v0["version"] == 0
    assert v0["parent"] is None
    assert v0["status"] == "active"
    assert v0["labels"] == LABELS
    assert v0["samples_seen"] == 0
    assert v0["last_stream_id"] == "0-0"
    assert v0["strategy"] == make_settings().strategy
    assert v0["eval"] == {}
    assert v0["created_at"].endswith("Z")
    assert (await client.get("/v1/versions/current")).json() == v0
    listing = (await client.get("/v1/versions")).json()
    assert listing == {"current": 0, "epoch": 1, "versions": [v0], "next": None}
    for missing in ("/v1/versions/1", "/v1/versions/1/weights"):
        response = await client.get(missing)
        assert response.status_code == 404
        assert "version 1" in response.json()["detail"]


async def test_int_labels_are_listed_as_integers(make_settings: Callable[..., Settings]) -> None:
    async with running_app(make_settings(label_type="int", labels=["3", "1", "2"])) as c:
        assert (await c.get("/v1/versions/0")).json()["labels"] == [3, 1, 2]


async def test_version_zero_weights_are_the_served_model(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/versions/0/weights")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert ".safetensors" in response.headers["content-disposition"]
    model, _ = model_from_bytes(response.content)
    assert model.config.num_classes == 3
    assert model.config.input_dim == 4
    rows = [ROW, [6.7, 3.0, 5.2, 2.3]]
    served = (await client.post("/v1/predict", json={"inputs": rows})).json()
    with torch.inference_mode():
        local = torch.softmax(model(torch.tensor(rows, dtype=torch.float32)), dim=1).numpy()
    np.testing.assert_allclose([p["probabilities"] for p in served["predictions"]], local, rtol=1e-5)


async def _publish(registry: Registry, token: int, settings: Settings, parent: int,
                   status: str = "active") -> int:
    version = await registry.allocate_version()
    meta = version_meta(settings, version=version, parent=parent, samples_seen=10 * version,
                        last_stream_id=f"{version}-0", labels=list(LABELS), evaluation={"holdout": 0.5})
    _, weights = initial_version(settings)
    await registry.publish(token=token, version=version, meta=meta, weights=weights, state=b"",
                           status=status, last_stream_id=f"{version}-0", samples_seen=10 * version)
    return version


async def _wait_served(client: httpx.AsyncClient, version: int) -> None:
    deadline = time.monotonic() + 10
    while (await client.get("/readyz")).json()["model_version"] != version:
        assert time.monotonic() < deadline, f"version {version} was not swapped in"
        await asyncio.sleep(0.05)


async def test_versions_pagination_and_statuses(
    make_settings: Callable[..., Settings], learner_registry: tuple[Registry, int]
) -> None:
    reg, token = learner_registry
    settings = make_settings(admin_token="adm")
    admin = {"Authorization": "Bearer adm"}
    async with running_app(settings) as c:
        for parent in (0, 1, 2):
            assert await _publish(reg, token, settings, parent) == parent + 1
        assert await _publish(reg, token, settings, 3, status="rejected") == 4
        await _wait_served(c, 3)

        pages: list[dict[str, Any]] = []
        query: dict[str, Any] = {"limit": 2}
        while True:
            page = (await c.get("/v1/versions", params=query)).json()
            pages.append(page)
            if page["next"] is None:
                break
            query = {"limit": 2, "before": page["next"]}
        assert [[v["version"] for v in p["versions"]] for p in pages] == [[4, 3], [2, 1], [0]]
        assert [p["next"] for p in pages] == ["3", "1", None]
        assert all((p["current"], p["epoch"]) == (3, 4) for p in pages)  # 1 + three publishes
        everything = [v for p in pages for v in p["versions"]]
        assert [v["status"] for v in everything] == ["rejected", "active", "archived", "archived", "archived"]
        assert [v["parent"] for v in everything] == [3, 2, 1, 0, None]
        assert [v["samples_seen"] for v in everything] == [40, 30, 20, 10, 0]
        one = (await c.get("/v1/versions", params={"limit": 1})).json()
        assert [v["version"] for v in one["versions"]] == [4] and one["next"] == "4"
        assert (await c.get("/v1/versions/current")).json()["version"] == 3
        for bad in ({"limit": 0}, {"limit": 1001}, {"before": "abc"}):
            assert (await c.get("/v1/versions", params=bad)).status_code == 422

        # Activation (admin): a rejected version is final; a missing one is 404; an archived
        # one becomes current with a higher epoch and every replica follows it.
        assert (await c.post("/v1/versions/4/activate", headers=admin)).status_code == 409
        assert (await c.post("/v1/versions/9/activate", headers=admin)).status_code == 404
        rolled = await c.post("/v1/versions/1/activate", headers=admin)
        assert rolled.json() == {"current": 1, "epoch": 5}
        await _wait_served(c, 1)
        listing = (await c.get("/v1/versions")).json()
        assert (listing["current"], listing["epoch"]) == (1, 5)
        assert {v["version"]: v["status"] for v in listing["versions"]} == {
            4: "rejected", 3: "archived", 2: "archived", 1: "active", 0: "archived"}
        assert (await c.get("/v1/stats")).json()["model_version"] == 1


async def test_openapi_describes_predict_and_feedback(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]

    def request_schema(path: str) -> dict[str, Any]:
        body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        ref = body["schema"]["$ref"]
        return schemas[ref.rsplit("/", 1)[-1]]

    predict = request_schema("/v1/predict")
    assert predict["examples"] and all("inputs" in e for e in predict["examples"])
    assert set(predict["properties"]) == {"inputs", "tag", "ids"}
    assert predict["required"] == ["inputs"]

    feedback = request_schema("/v1/feedback")
    assert feedback["examples"]
    example_items = feedback["examples"][0]["items"]
    assert {"prediction_id" in i for i in example_items} == {True, False}  # both shapes shown
    item = feedback["properties"]["items"]["items"]
    shapes = item.get("oneOf")
    assert shapes is not None and len(shapes) == 2, item
    by_prediction, with_inputs = (schemas[s["$ref"].rsplit("/", 1)[-1]] for s in shapes)
    assert set(by_prediction["required"]) == {"prediction_id", "label"}
    assert set(by_prediction["properties"]) == {"prediction_id", "label", "tag"}
    assert set(with_inputs["required"]) == {"inputs", "label"}
    assert set(with_inputs["properties"]) == {"inputs", "label", "tag", "feedback_id"}
    for shape in (by_prediction, with_inputs):
        assert shape["additionalProperties"] is False
        labels = shape["properties"]["label"]["oneOf"]
        assert {s["type"] for s in labels} == {"string", "integer"}
    responses = spec["paths"]["/v1/feedback"]["post"]["responses"]
    assert {"202", "422", "429", "503"} <= set(responses)
    assert "/docs" not in spec["paths"]  # the docs page itself is not an API route
    assert (await client.get("/docs")).status_code == 200
