"""A running API swaps in the learner's next version of the same architecture without building
a module: the served one's is copied and bound to the new weights (models/rebind.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
import pytest
import torch

from models import checkpoint
from models.checkpoint import model_from_bytes
from service.config import Settings
from service.worker.state import restore
from tests.conftest import running_app
from tests.publishing import open_store, publish_learned

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [-3.0, 40.0, 0.0, 7.5]]


async def test_the_next_version_is_bound_to_a_copy_of_the_served_module(
        make_settings: Callable[..., Settings], model_name: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings()
    async with open_store(model_name) as (registry, scripts, keys), running_app(settings) as c:
        holder = c.app.state.ctx.holder  # type: ignore[attr-defined]
        first = holder.served
        assert first.version == 0 and first.fast is not None

        learner, _, _ = restore(settings, await registry.weights(0), None)
        gen = torch.Generator().manual_seed(1)
        for _ in range(5):
            learner.learn_many(torch.randn(32, 4, generator=gen) * 3 + 5,
                               torch.randint(0, 3, (32,), generator=gen))
        builds: list[object] = []
        real_build = checkpoint.build_model
        monkeypatch.setattr(checkpoint, "build_model",
                            lambda *a, **k: builds.append(a) or real_build(*a, **k))
        _version, weights = await publish_learned(settings, registry, scripts, keys, learner,
                                                  await registry.labels(), samples_seen=160)
        deadline = time.monotonic() + 10
        while holder.served.version != 1:
            assert time.monotonic() < deadline, "version 1 was not swapped in"
            await asyncio.sleep(0.05)

        second = holder.served
        assert builds == []  # nothing was built for the swap
        assert type(second.module) is type(first.module) and second.module is not first.module
        assert second.fast is not None
        answer = (await c.post("/v1/predict", json={"inputs": ROWS})).json()
        assert answer["model_version"] == 1
        rebuilt, _ = model_from_bytes(weights)
        with torch.inference_mode():
            expected = torch.softmax(rebuilt(torch.tensor(ROWS)), dim=1).numpy()
        served = np.array([p["probabilities"] for p in answer["predictions"]])
        np.testing.assert_allclose(served, expected, rtol=1e-6, atol=1e-8)
        assert np.array_equal(second.predict_proba(np.asarray(ROWS, dtype=np.float32)),
                              expected)
        # The first version still answers as it did: nothing of it was changed.
        v0 = model_from_bytes(await registry.weights(0))[0]
        with torch.inference_mode():
            assert np.array_equal(first.predict_proba(np.asarray(ROWS, dtype=np.float32)),
                                  torch.softmax(v0(torch.tensor(ROWS)), dim=1).numpy())
