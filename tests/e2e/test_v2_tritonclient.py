"""A real `serve` process driven by tritonclient (HTTP, binary data off) exactly as its users
call it: health, metadata, infer with outputs by name and the request id echoed, the token."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import REDIS_URL, free_port
from tests.e2e.procs import Procs, base_env, wait_for

LABELS = ["setosa", "versicolor", "virginica"]
TOKEN = "v2-token"


def test_tritonclient_drives_a_real_serve_process(tmp_path: Path, procs: Procs,
                                                  model_name: str) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    port = free_port()
    proc = procs.start("serve", ["serve"], base_env(
        port=port, redis_url=REDIS_URL, model_name=model_name, input_dim=4,
        labels=",".join(LABELS), api_token=TOKEN))
    wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200, 60,
             "serve to be ready", procs.logs)
    assert proc.popen.poll() is None
    headers = {"Authorization": f"Bearer {TOKEN}"}
    client = triton.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready(model_name, headers=headers)
        assert not client.is_model_ready(model_name)  # the API token guards the model routes
        with pytest.raises(InferenceServerException, match="missing bearer token"):
            client.get_model_metadata(model_name)
        assert client.get_server_metadata(headers=headers)["name"] == "mnemo"
        meta = client.get_model_metadata(model_name, headers=headers)
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
        assert {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]} == {
            "label": ("INT64", [-1]), "probabilities": ("FP32", [-1, 3]),
            "prediction_id": ("BYTES", [-1])}

        x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
        tensor = triton.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=False)
        outputs = [triton.InferRequestedOutput(n, binary_data=False)
                   for n in ("label", "probabilities", "prediction_id")]
        result = client.infer(model_name, [tensor], outputs=outputs, request_id="req-7",
                              headers=headers)
        response = result.get_response()
        assert response["id"] == "req-7" and response["model_name"] == model_name
        assert response["model_version"] == "0"
        probabilities = result.as_numpy("probabilities")
        assert probabilities.shape == (5, 3) and probabilities.dtype == np.float32
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
        labels = result.as_numpy("label")
        assert labels.dtype == np.int64 and labels.tolist() == probabilities.argmax(1).tolist()
        ids = [str(i) for i in result.as_numpy("prediction_id")]
        assert len(set(ids)) == 5

        # The ids are /v1 prediction ids: feedback by id is accepted.
        feedback = httpx.post(f"http://127.0.0.1:{port}/v1/feedback", headers=headers, json={
            "items": [{"prediction_id": ids[0], "label": "setosa"}]})
        assert feedback.status_code == 202, feedback.text

        # Asking for one output by name returns that one only.
        only = client.infer(model_name, [tensor], headers=headers,
                            outputs=[triton.InferRequestedOutput("label", binary_data=False)])
        assert [o["name"] for o in only.get_response()["outputs"]] == ["label"]

        # Triton's binary extension (its default without named outputs) is refused by name.
        with pytest.raises(InferenceServerException, match="binary"):
            client.infer(model_name, [tensor], headers=headers)
        versioned = client.infer(model_name, [tensor], outputs=outputs, model_version="0",
                                 headers=headers)
        assert versioned.get_response()["model_version"] == "0"
        assert client.is_model_ready(model_name, model_version="0", headers=headers)
        with pytest.raises(InferenceServerException, match="version '7'"):
            client.infer(model_name, [tensor], outputs=outputs, model_version="7",
                         headers=headers)
        with pytest.raises(InferenceServerException, match="unknown model"):
            client.infer("other", [tensor], outputs=outputs, headers=headers)
    finally:
        client.close()
