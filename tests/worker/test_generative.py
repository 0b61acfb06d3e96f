"""MNEMO_BUFFER=generative through the API and the learner loop (real Redis): replay comes from
a generator, raw inputs never enter the reservoir, and a scan of every key of the deployment
finds them only where docs/DESIGN.md §5 allows — after the run in the holdout, the golden set and the
places bounded by the prediction TTL; once the TTL has passed, in the holdout and golden only."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import redis
import torch
from redis.asyncio import Redis

from models.checkpoint import tensors_from_bytes
from models.generative import GenerativeReplay
from service.config import Settings
from service.store.keys import Keys
from service.worker.state import restore
from tests.conftest import running_app
from tests.worker.test_loop import LABELS, blobs, init_deployment, started

TTL = 6  # long enough that the run below (five learner steps) ends well inside it under load
ADMIN = "admin-secret"


def _values(client: redis.Redis, key: bytes) -> list[bytes]:
    kind = client.type(key)
    if kind == b"string":
        return [client.get(key) or b""]
    if kind == b"hash":
        return [v for pair in client.hgetall(key).items() for v in pair]
    if kind == b"list":
        return client.lrange(key, 0, -1)
    if kind == b"set":
        return list(client.smembers(key))
    if kind == b"zset":
        return [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
    if kind == b"stream":
        return [v for _, fields in client.xrange(key) for pair in fields.items() for v in pair]
    return []


def holders(client: redis.Redis, model: str, rows: np.ndarray) -> dict[str, int]:
    """Every key holding one of the rows' raw bytes, with how many rows it holds."""
    needles = [np.ascontiguousarray(r, dtype="<f4").tobytes() for r in rows]
    found: dict[str, int] = {}
    for pattern in Keys(model).all_patterns():
        for key in client.scan_iter(match=pattern, count=1000):
            blob = b"\x00".join(_values(client, key))
            hits = sum(needle in blob for needle in needles)
            if hits:
                found[key.decode()] = hits
    return found


async def test_no_raw_input_outlives_the_ttl_outside_holdout_and_golden(
    settings_for: Callable[..., Settings], aredis: Redis, redis_client: redis.Redis,
    model_name: str,
) -> None:
    settings = settings_for(buffer="generative", strategy="replay", prediction_ttl_seconds=TTL,
                            publish_every_samples=100, holdout_fraction=0.1,
                            admin_token=ADMIN)
    keys = Keys(model_name)
    registry = await init_deployment(settings, aredis)
    learner = await started(settings, aredis)
    x, y = blobs(300, 7)
    golden_x, golden_y = blobs(10, 8)
    async with running_app(settings) as c:
        # Predictions (logged with their inputs, and drift samples), then labels by id.
        predicted = (await c.post("/v1/predict", json={"inputs": x.tolist()})).json()
        ids = [p["id"] for p in predicted["predictions"]]
        items = [{"prediction_id": i, "label": LABELS[int(c_)]} for i, c_ in zip(ids, y, strict=True)]
        assert (await c.post("/v1/feedback", json={"items": items})).status_code == 202
        golden = [{"inputs": r.tolist(), "label": LABELS[int(c_)]}
                  for r, c_ in zip(golden_x, golden_y, strict=True)]
        response = await c.post("/v1/golden", json={"items": golden},
                                headers={"Authorization": f"Bearer {ADMIN}"})
        assert response.status_code == 201, response.text
    for _ in range(5):
        await learner.step()
    assert (await registry.current()).version >= 1
    assert redis_client.xlen(keys.stream) == 0  # published: trimmed, the committed entry too
    assert redis_client.hlen(keys.reservoir) == 0  # the reservoir never got an input
    assert isinstance(learner.stream.buffer, GenerativeReplay) and learner.stream.buffer.trained > 200

    everything = np.concatenate([x, golden_x])
    after_run = holders(redis_client, model_name, everything)
    held = redis_client.llen(keys.holdout)
    assert 10 <= held <= 60
    assert after_run.pop(keys.holdout) == held
    assert after_run.pop(keys.golden) == len(golden_x)
    # What is left is bounded by the prediction TTL: the prediction log and drift samples.
    assert after_run and all(k == keys.drift_samples or ":pred" in k for k in after_run), after_run

    async def only_holdout_and_golden_left() -> bool:
        await learner.step()  # the learner trims the drift samples to the TTL as it runs
        return set(holders(redis_client, model_name, everything)) == {keys.holdout, keys.golden}

    async with asyncio.timeout(TTL + 10):
        while not await only_holdout_and_golden_left():
            await asyncio.sleep(0.2)

    # The generator is learner state: a restarted learner resumes it.
    version = (await registry.current()).version
    resumed, _, _ = restore(settings, await registry.weights(version), await registry.state(version))
    saved, _ = tensors_from_bytes(await registry.state(version))
    assert resumed.generator is not None and resumed.generator.classes
    for name, value in resumed.generator.vae.state_dict().items():
        assert torch.equal(value, saved[f"generator.vae.{name}"])
