"""The Open Inference Protocol under a feature schema (MNEMO_FEATURES): one named input per field
(FP32 numeric, BYTES categorical, BOOL boolean), driven by tritonclient against a real `serve`
process as users call it, answering as /v1/predict does on the same records; and the refusals,
which name the input (or the row and field) and change nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from service.config import Settings
from tests.conftest import REDIS_URL, free_port, running_app, snapshot
from tests.e2e.procs import Procs, base_env, wait_for

LABELS = ["churn", "stay", "upsell"]
FEATURES: dict[str, Any] = {
    "amount": "numeric",
    "country": {"kind": "categorical", "max_categories": 8, "buckets": 4},
    "mobile": "boolean",
    "age": {"kind": "numeric", "required": True},
}
RECORDS: list[dict[str, Any]] = [
    {"amount": 12.5, "country": "FR", "mobile": True, "age": 31.0},
    {"amount": 80.25, "country": "DE", "mobile": False, "age": 45.0},
    {"amount": 0.0, "country": "never-seen", "mobile": True, "age": 19.0},
]


def _column(field: str, records: list[dict[str, Any]]) -> np.ndarray:
    values = [r[field] for r in records]
    if FEATURES[field] == "boolean":
        return np.array(values, dtype=bool).reshape(-1, 1)  # [N, 1] is accepted too
    if isinstance(values[0], str):
        return np.array(values, dtype=object)
    return np.array(values, dtype=np.float32)


def test_tritonclient_named_inputs_answer_as_v1_does(tmp_path: Path, procs: Procs,
                                                     model_name: str) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    port = free_port()
    procs.start("serve", ["serve"], base_env(
        port=port, redis_url=REDIS_URL, model_name=model_name, labels=",".join(LABELS),
        features=json.dumps(FEATURES)))
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, 60, "serve to be ready",
             procs.logs)
    client = triton.InferenceServerClient(f"127.0.0.1:{port}")
    outputs = [triton.InferRequestedOutput(n, binary_data=False)
               for n in ("label", "probabilities", "prediction_id")]

    def tensors(records: list[dict[str, Any]], fields: list[str]) -> list[triton.InferInput]:
        out = []
        for field in fields:
            data = _column(field, records)
            datatype = {np.dtype(object): "BYTES", np.dtype(bool): "BOOL"}.get(data.dtype, "FP32")
            tensor = triton.InferInput(field, list(data.shape), datatype)
            tensor.set_data_from_numpy(data, binary_data=False)
            out.append(tensor)
        return out

    def v1(records: list[dict[str, Any]]) -> dict[str, Any]:
        response = httpx.post(f"{base}/v1/predict", json={"inputs": records})
        assert response.status_code == 200, response.text
        return response.json()

    try:
        meta = client.get_model_metadata(model_name)
        assert meta["inputs"] == [
            {"name": "amount", "datatype": "FP32", "shape": [-1]},
            {"name": "country", "datatype": "BYTES", "shape": [-1]},
            {"name": "mobile", "datatype": "BOOL", "shape": [-1]},
            {"name": "age", "datatype": "FP32", "shape": [-1]},
        ]
        assert {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]} == {
            "label": ("INT64", [-1]), "probabilities": ("FP32", [-1, 3]),
            "prediction_id": ("BYTES", [-1])}

        # Every field, in an order of the client's choosing.
        result = client.infer(model_name, tensors(RECORDS, ["mobile", "age", "country",
                                                            "amount"]),
                              outputs=outputs, request_id="rec-1")
        expected = v1(RECORDS)
        assert result.get_response()["model_version"] == str(expected["model_version"])
        probabilities = result.as_numpy("probabilities")
        assert probabilities.shape == (3, 3)
        np.testing.assert_allclose(
            probabilities, [p["probabilities"] for p in expected["predictions"]],
            rtol=1e-6, atol=1e-7)
        assert result.as_numpy("label").tolist() == probabilities.argmax(1).tolist()

        # An optional field's input left out: that field is missing in every row, as in /v1.
        partial = client.infer(model_name, tensors(RECORDS, ["age", "country"]), outputs=outputs)
        expected = v1([{"age": r["age"], "country": r["country"]} for r in RECORDS])
        np.testing.assert_allclose(
            partial.as_numpy("probabilities"),
            [p["probabilities"] for p in expected["predictions"]], rtol=1e-6, atol=1e-7)

        # The prediction ids are /v1's: the logged records take feedback.
        ids = [str(i) for i in result.as_numpy("prediction_id")]
        feedback = httpx.post(f"{base}/v1/feedback", json={
            "items": [{"prediction_id": ids[0], "label": "stay"}]})
        assert feedback.status_code == 202, feedback.text

        refusals: list[tuple[list[triton.InferInput], str]] = [
            ([*tensors(RECORDS, ["age"]), _input(triton, "zip", [3], "BYTES", ["a", "b", "c"])],
             "unknown input 'zip'"),
            ([*tensors(RECORDS, ["age"]), _input(triton, "country", [3], "FP32", [1.0, 2.0, 3.0])],
             "input 'country': field 'country' is categorical, its datatype must be BYTES"),
            (tensors(RECORDS, ["country", "mobile"]), "input 'age' is missing"),
            ([*tensors(RECORDS, ["age"]), *tensors(RECORDS[:2], ["country"])],
             "input 'country': batch size 2, but input 'age' has 3"),
            (tensors([*RECORDS[:1], {**RECORDS[1], "country": "x" * 300}], ["age", "country"]),
             "row 1.country: field 'country': values are at most 256 characters"),
        ]
        for inputs, message in refusals:
            with pytest.raises(InferenceServerException, match=message) as refused:
                client.infer(model_name, inputs, outputs=outputs)
            assert refused.value.status() == "400"
    finally:
        client.close()


def _input(triton: Any, name: str, shape: list[int], datatype: str, data: list[Any]) -> Any:
    tensor = triton.InferInput(name, shape, datatype)
    tensor.set_data_from_numpy(np.array(data, dtype={"BYTES": object, "FP32": np.float32}[
        datatype]), binary_data=False)
    return tensor


def _t(name: str, datatype: str, data: list[Any], shape: list[int] | None = None,
       **extra: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape or [len(data)], "data": data,
            **extra}


AGE = _t("age", "FP32", [31, 45])
REFUSALS = [
    ([AGE, _t("mobile", "BOOL", [1, 0])], "inputs.1.BOOL.data"),
    ([AGE, _t("country", "BYTES", [1, 2])], "inputs.1.BYTES.data"),
    ([AGE, _t("mobile", "INT8", [1, 0])], "input 'mobile': field 'mobile' is boolean, its "
                                          "datatype must be BOOL, got INT8"),
    ([AGE, AGE], "input 'age' is given twice"),
    ([_t("age", "FP32", [31, 45], [1, 2])], "input 'age': shape must be [N] or [N, 1]"),
    ([_t("age", "FP32", [31, 45], [2, 2])], "input 'age': shape must be [N] or [N, 1]"),
    ([_t("age", "FP32", [31], [2])], "input 'age': shape [2] needs 2 values, got 1"),
    ([_t("age", "FP32", [[31, 45]], [2, 1])], "input 'age': nested data needs one value per row"),
    ([_t("age", "FP32", [31, 1e39])], "row 1.age: field 'age': 1e+39 is not a finite number"),
    ([_t("age", "FP32", [0.0] * 33)], "inputs.0.shape: at most 32 per request"),
    ([AGE | {"parameters": {"binary_data_size": 8}}], "input 'age': binary tensor data"),
    ([_t("amount", "FP32", [1, 2])], "input 'age' is missing: field 'age' is required"),
]


@pytest.mark.parametrize(("inputs", "message"), REFUSALS, ids=[m for _, m in REFUSALS])
async def test_refusals_name_the_input_and_change_nothing(
        make_settings: Callable[..., Settings], redis_client: redis.Redis, model_name: str,
        inputs: list[dict[str, Any]], message: str) -> None:
    async with running_app(make_settings(input_dim=None, features=FEATURES)) as c:
        before = snapshot(redis_client, model_name)
        response = await c.post(f"/v2/models/{model_name}/infer", json={"inputs": inputs})
        assert response.status_code == 400, response.text
        assert set(response.json()) == {"error"}
        assert message in response.json()["error"]
        assert snapshot(redis_client, model_name) == before


async def test_nested_data_and_the_versioned_forms(make_settings: Callable[..., Settings],
                                                   model_name: str) -> None:
    async with running_app(make_settings(input_dim=None, features=FEATURES)) as c:
        url = f"/v2/models/{model_name}/versions/0"
        meta = (await c.get(url)).json()
        assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [
            ("amount", "FP32"), ("country", "BYTES"), ("mobile", "BOOL"), ("age", "FP32")]
        body = {"inputs": [_t("age", "FP32", [[31], [45]], [2, 1]),
                           _t("mobile", "BOOL", [[True], [False]], [2, 1]),
                           _t("country", "BYTES", ["FR", "DE"])],
                "outputs": [{"name": "probabilities"}]}
        response = await c.post(f"{url}/infer", json=body)
        assert response.status_code == 200, response.text
        expected = (await c.post("/v1/predict", json={"inputs": [
            {"age": 31, "mobile": True, "country": "FR"},
            {"age": 45, "mobile": False, "country": "DE"}]})).json()
        (out,) = response.json()["outputs"]
        np.testing.assert_allclose(np.array(out["data"]).reshape(2, 3),
                                   [p["probabilities"] for p in expected["predictions"]],
                                   rtol=1e-6, atol=1e-7)


async def test_vector_deployments_take_one_input(make_settings: Callable[..., Settings],
                                                  model_name: str) -> None:
    async with running_app(make_settings()) as c:
        meta = (await c.get(f"/v2/models/{model_name}")).json()
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
        tensor = _t("input", "FP32", [1, 2, 3, 4], [1, 4])
        response = await c.post(f"/v2/models/{model_name}/infer",
                                json={"inputs": [tensor, tensor]})
        assert response.status_code == 400
        assert "expected one input (FP32 [N, 4]), got 2" in response.json()["error"]
        named = await c.post(f"/v2/models/{model_name}/infer",
                             json={"inputs": [_t("amount", "BYTES", ["FR"])]})
        assert named.status_code == 400
        assert "input 'amount': datatype must be FP32, got BYTES" in named.json()["error"]
