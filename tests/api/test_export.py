"""Model export: GET /v1/versions/{v}/weights of a learned version (a grown head, a fitted
standardiser) loads outside the service and predicts exactly what /v1/predict serves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import numpy as np
import torch

from models.checkpoint import model_from_bytes
from service.config import Settings
from service.worker.state import restore
from tests.conftest import running_app
from tests.publishing import open_store, publish_learned

LABELS = ["setosa", "versicolor", "virginica"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [-3.0, 40.0, 0.0, 7.5]]


async def _wait_served(client: httpx.AsyncClient, version: int) -> None:
    deadline = time.monotonic() + 10
    while (await client.get("/readyz")).json()["model_version"] != version:
        assert time.monotonic() < deadline, f"version {version} was not swapped in"
        await asyncio.sleep(0.05)


async def test_exported_weights_predict_like_the_service(
    make_settings: Callable[..., Settings], model_name: str
) -> None:
    settings = make_settings()
    async with open_store(model_name) as (registry, scripts, keys), running_app(settings) as c:
        # A fourth class arrives with feedback: the vocabulary grows.
        item = {"inputs": ROWS[3], "label": "hybrid"}
        assert (await c.post("/v1/feedback", json={"items": [item]})).status_code == 202
        vocab = await registry.labels()
        assert vocab == [*LABELS, "hybrid"]

        # What the learner does: continue from version 0, grow the head, train, publish.
        learner, _, _ = restore(settings, await registry.weights(0), None)
        learner.ensure_classes(len(vocab))
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(64, 4, generator=gen) * 3 + 5
        y = torch.randint(0, 4, (64,), generator=gen)
        for _ in range(5):
            learner.learn_many(x, y)
        version, weights = await publish_learned(settings, registry, scripts, keys, learner,
                                                 vocab, samples_seen=64)
        assert version == 1
        await _wait_served(c, 1)

        exported = await c.get("/v1/versions/1/weights")
        assert exported.status_code == 200
        assert exported.headers["content-type"] == "application/octet-stream"
        assert f"{model_name}-v1.safetensors" in exported.headers["content-disposition"]
        assert exported.content == weights  # byte for byte what the learner published

        # Outside the service: only the blob, no Redis, no settings.
        loaded, _ = model_from_bytes(exported.content)
        assert loaded.config.num_classes == 4 and loaded.config.input_dim == 4
        assert float(loaded.standardizer.count) == 5 * 64  # the fitted standardiser came along
        with torch.inference_mode():
            local = torch.softmax(loaded(torch.tensor(ROWS, dtype=torch.float32)), dim=1).numpy()

        served = (await c.post("/v1/predict", json={"inputs": ROWS})).json()
        assert served["model_version"] == 1
        assert served["labels"] == vocab
        probabilities = np.array([p["probabilities"] for p in served["predictions"]])
        assert probabilities.shape == (4, 4)
        np.testing.assert_allclose(probabilities, local, rtol=1e-5, atol=1e-7)
        assert [p["label"] for p in served["predictions"]] == [vocab[k] for k in local.argmax(1)]
        # And it is the learned model, not version 0's untrained one.
        np.testing.assert_allclose(local, learner.predict_proba(torch.tensor(ROWS)).numpy(),
                                   rtol=1e-5, atol=1e-7)
        v0 = model_from_bytes((await c.get("/v1/versions/0/weights")).content)[0]
        assert v0.config.num_classes == 3
