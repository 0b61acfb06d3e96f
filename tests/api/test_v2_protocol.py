"""The Open Inference Protocol (KServe V2, JSON) in-process: nested data and KServe-style
parameters, and the refusals, which answer {"error": ...} and change nothing (the tritonclient
run against a real process is tests/e2e/test_v2_tritonclient.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
import redis
import torch

from service.config import Settings
from service.version import package_version
from tests.conftest import running_app, snapshot

TOKEN = "v2-token"


def _expected(app_client: httpx.AsyncClient, x: np.ndarray) -> np.ndarray:
    module = app_client.app.state.ctx.holder.served.module  # type: ignore[attr-defined]
    with torch.inference_mode():
        return torch.softmax(module(torch.from_numpy(x)), dim=1).numpy()


def _body(data: Any, shape: list[int], **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": data}],
            **extra}


async def test_nested_data_and_kserve_parameters(make_settings: Callable[..., Settings],
                                                 model_name: str) -> None:
    async with running_app(make_settings()) as c:
        rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3, 5.2, 2.3]]
        response = await c.post(f"/v2/models/{model_name}/infer", json=_body(
            rows, [2, 4], id="abc", parameters={"content_type": "np"},
            outputs=[{"name": "probabilities", "parameters": {"binary_data": False}}]))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["id"] == "abc" and body["parameters"] == {"logged": True}
        (out,) = body["outputs"]
        assert (out["name"], out["datatype"], out["shape"]) == ("probabilities", "FP32", [2, 3])
        expected = _expected(c, np.array(rows, np.float32))
        np.testing.assert_allclose(np.array(out["data"]).reshape(2, 3), expected,
                                   rtol=1e-5, atol=1e-6)
        assert (await c.get("/v2/health/live")).json() == {"live": True}
        assert (await c.get("/v2/health/ready")).json() == {"ready": True}
        assert (await c.get(f"/v2/models/{model_name}/ready")).json() == {
            "name": model_name, "ready": True}


REFUSALS = [
    (_body([1, 2, 3], [1, 4]), 400, "needs 4 numbers, got 3"),
    (_body([1, 2, 3, 4], [1, 5]), 400, "shape must be [N, 4]"),
    (_body([[1, 2, 3, 4]], [2, 4]), 400, "needs 2 rows, got 1"),
    (_body([[1, 2, 3]], [1, 4]), 400, "expected exactly 4 numbers"),
    (_body([1, 2, True, 4], [1, 4]), 400, "valid number"),
    (_body([1, 2, "3", 4], [1, 4]), 400, "valid number"),
    (_body([1, 2, 1e39, 4], [1, 4]), 400, "outside the float32 range"),
    (_body([1, 2, 3, 4], [1, 4]) | {"inputs": [{"name": "input", "shape": [1, 4],
                                                 "datatype": "INT64", "data": [1, 2, 3, 4]}]},
     400, "datatype must be FP32"),
    (_body([1, 2, 3, 4], [1, 4], outputs=[{"name": "logits"}]), 400, "unknown output 'logits'"),
    (_body([0.0] * 4 * 33, [33, 4]), 400, "at most 32 per request"),
    ({"inputs": []}, 400, "inputs"),
]


@pytest.mark.parametrize(("body", "status", "message"), REFUSALS,
                         ids=[m for _, _, m in REFUSALS])
async def test_refusals_answer_an_error_and_change_nothing(
        make_settings: Callable[..., Settings], redis_client: redis.Redis, model_name: str,
        body: dict[str, Any], status: int, message: str) -> None:
    async with running_app(make_settings()) as c:
        before = snapshot(redis_client, model_name)
        response = await c.post(f"/v2/models/{model_name}/infer", json=body)
        assert response.status_code == status, response.text
        assert set(response.json()) == {"error"}
        assert message in response.json()["error"]
        assert snapshot(redis_client, model_name) == before


async def test_token_and_unknown_model(make_settings: Callable[..., Settings],
                                       model_name: str) -> None:
    async with running_app(make_settings(api_token=TOKEN)) as c:
        for path in ("/v2", f"/v2/models/{model_name}", f"/v2/models/{model_name}/ready"):
            refused = await c.get(path)
            assert refused.status_code == 401 and "token" in refused.json()["error"]
            assert refused.headers["www-authenticate"] == "Bearer"
        assert (await c.get("/v2/health/live")).status_code == 200  # open, like /healthz
        auth = {"Authorization": f"Bearer {TOKEN}"}
        server = (await c.get("/v2", headers=auth)).json()
        assert server == {"name": "mnemo", "version": package_version(), "extensions": []}
        assert (await c.get("/openapi.json")).json()["info"]["version"] == package_version()
        missing = await c.get("/v2/models/nope", headers=auth)
        assert missing.status_code == 404 and "unknown model 'nope'" in missing.json()["error"]
        spec = (await c.get("/openapi.json")).json()
        infer = spec["paths"]["/v2/models/{name}/infer"]["post"]
        assert infer["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
            "/InferRequest")
        assert infer["responses"]["400"]["content"]["application/json"]["schema"][
            "$ref"].endswith("/V2Error")


async def test_infer_is_counted_like_predict(make_settings: Callable[..., Settings],
                                             model_name: str) -> None:
    async with running_app(make_settings()) as c:
        url = f"/v2/models/{model_name}/infer"
        assert (await c.post(url, json=_body([1, 2, 3, 4], [1, 4]))).status_code == 200
        assert (await c.post(url, json=_body([1, 2, 1e39, 4], [1, 4]))).status_code == 400
        # Refused before the handler runs: by the schema, binary data.
        assert (await c.post(url, json={"inputs": "nope"})).status_code == 400
        assert (await c.post(url, json=_body([1, 2, 3, 4], [1, 4]),
                             headers={"Inference-Header-Content-Length": "10"})).status_code == 400
        # A model the deployment does not serve is no model's request: counted nowhere.
        assert (await c.post("/v2/models/other/infer",
                             json=_body([1, 2, 3, 4], [1, 4]))).status_code == 404
        get = c.app.state.ctx.metrics.registry.get_sample_value  # type: ignore[attr-defined]
        count = {s: get("mnemo_predict_requests_total", {"model": model_name, "status": s})
                 for s in ("ok", "client_error")}
        assert count == {"ok": 1.0, "client_error": 3.0}
        assert get("mnemo_predict_requests_total", {"model": "other", "status": "client_error"}) \
            is None
        assert get("mnemo_predict_latency_seconds_count", {"model": model_name}) == 1.0
