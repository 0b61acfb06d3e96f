"""Records through the service (MNEMO_FEATURES): predict and feedback by record, raw records in
Redis, a new category learned without a restart, a rollback that restores the older
vocabulary, validation errors naming row and field, and the API's and the learner's encodings
bit-identical. The app runs in-process against the real Redis; the learner is driven one
`step()` at a time."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from redis.asyncio import Redis

from models.checkpoint import blob_metadata
from models.features import record_to_bytes
from service.config import Settings
from service.store.codec import split_entry
from service.store.connection import StoreError
from service.store.keys import Keys
from service.worker.loop import LearnerService
from tests.conftest import running_app, snapshot
from tests.worker.test_loop import init_deployment, started
from tests.worker.test_operations import learner_running, stored_bytes, wait_for

FEATURES = {"amount": "numeric", "country": {"kind": "categorical", "max_categories": 8,
                                             "buckets": 4}, "mobile": "boolean"}
ADMIN = {"Authorization": "Bearer admin-secret"}
# The label is the country's: what a record says is what the model must learn.
ANSWER = {"FR": "a", "DE": "b", "IT": "c"}


@pytest.fixture
def record_settings(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"features": json.dumps(FEATURES), "input_dim": None,
                                  "labels": ["a", "b", "c"], "admin_token": "admin-secret",
                                  "publish_every_seconds": 3600.0, "publish_first_samples": 10**9,
                                  "publish_every_samples": 10**9, "holdout_fraction": 0.0,
                                  "swap_poll_seconds": 0.05, "max_batch": 1024}
        values.update(overrides)
        return make_settings(**values)

    return make


@asynccontextmanager
async def serving_and_learning(settings: Settings,
                               aredis: Redis) -> AsyncIterator[tuple[httpx.AsyncClient, LearnerService]]:
    """The deployment initialised, the app serving it, a learner the test steps itself."""
    await init_deployment(settings, aredis)
    async with running_app(settings) as client:
        yield client, await started(settings, aredis)


def records(countries: list[str], seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [{"amount": float(rng.normal()), "country": c, "mobile": bool(rng.random() < 0.5)}
            for c in countries]


async def teach(client: httpx.AsyncClient, learner: LearnerService, rows: list[dict[str, Any]],
                times: int = 6) -> int:
    """Feedback for `rows` (labelled by ANSWER), learned and published; the new version."""
    for _ in range(times):
        items = [{"inputs": r, "label": ANSWER[r["country"]]} for r in rows]
        assert (await client.post("/v1/feedback", json={"items": items})).status_code == 202
        while await learner.step(block_ms=10):
            pass
    assert await learner.publish() == "published"
    return learner.served_version


async def served_version(client: httpx.AsyncClient, version: int) -> None:
    """Until the app serves `version` (it follows the registry by itself)."""
    async with asyncio.timeout(10):
        while client.app.state.ctx.holder.served.version != version:  # type: ignore[attr-defined]
            await asyncio.sleep(0.02)


async def predict(client: httpx.AsyncClient, rows: list[dict[str, Any]]) -> dict[str, Any]:
    response = await client.post("/v1/predict", json={"inputs": rows})
    assert response.status_code == 200, response.text
    return response.json()


async def test_records_are_predicted_learned_and_stored_raw(
    record_settings: Callable[..., Settings], aredis: Redis, redis_client: redis.Redis,
) -> None:
    settings = record_settings()
    keys = Keys(settings.model_name)
    async with serving_and_learning(settings, aredis) as (client, learner):
        answer = await predict(client, [{"amount": 1.5, "country": "FR", "mobile": True},
                                        {"country": "DE"}])  # amount and mobile missing
        assert answer["model_version"] == 0 and len(answer["predictions"]) == 2
        # The prediction log keeps the raw record; feedback by prediction id carries it on.
        first = answer["predictions"][0]["id"]
        response = await client.post("/v1/feedback", json={"items": [
            {"prediction_id": first, "label": "a"},
            {"inputs": {"amount": -0.5, "country": "DE", "mobile": False}, "label": "b"}]})
        assert response.status_code == 202, response.text
        stream = [fields[b"x"] for _, fields in redis_client.xrange(keys.stream)]
        assert stream == [b'{"amount":1.5,"country":"FR","mobile":true}',
                          b'{"amount":-0.5,"country":"DE","mobile":false}']
        version = await teach(client, learner, records(["FR", "DE"] * 20, seed=1))
        # The replay buffer keeps raw records too (the learner's mirror holds their encoding).
        stored = [split_entry(blob)[0] for blob in redis_client.hvals(keys.reservoir)]
        assert stored and all(json.loads(blob)["country"] in ("FR", "DE") for blob in stored)
        await served_version(client, version)
        served = client.app.state.ctx.holder.served  # type: ignore[attr-defined]
        assert served.encoder.vocabulary("country") == ["FR", "DE"]
        answer = await predict(client, records(["FR", "DE"], seed=2))
        assert [p["label"] for p in answer["predictions"]] == ["a", "b"]


async def test_a_new_category_is_learned_without_a_restart_and_a_rollback_restores_the_older_vocabulary(
    record_settings: Callable[..., Settings], aredis: Redis,
) -> None:
    settings = record_settings()
    async with serving_and_learning(settings, aredis) as (client, learner):
        before = await teach(client, learner, records(["FR", "DE"] * 20, seed=1))
        await served_version(client, before)
        italy = records(["IT"] * 4, seed=3)
        # Unseen by the served version: answered (from a hashed bucket), not refused.
        assert len((await predict(client, italy))["predictions"]) == 4
        after = await teach(client, learner, records(["FR", "DE", "IT"] * 20, seed=4))
        await served_version(client, after)
        served = client.app.state.ctx.holder.served  # type: ignore[attr-defined]
        assert served.encoder.vocabulary("country") == ["FR", "DE", "IT"]
        assert [p["label"] for p in (await predict(client, italy))["predictions"]] == ["c"] * 4

        rolled = await client.post(f"/v1/versions/{before}/activate", headers=ADMIN)
        assert rolled.status_code == 200, rolled.text
        await served_version(client, before)
        served = client.app.state.ctx.holder.served  # type: ignore[attr-defined]
        assert served.encoder.vocabulary("country") == ["FR", "DE"]  # the older encoding too
        assert "c" not in {p["label"] for p in (await predict(client, italy))["predictions"]}
        # The weights export is self-describing: it carries that version's vocabularies.
        export = await client.get(f"/v1/versions/{before}/weights", headers=ADMIN)
        exported = json.loads(blob_metadata(export.content)["features"])
        assert exported["vocabularies"] == {"country": ["FR", "DE"]}


async def test_the_api_and_the_learner_encode_a_record_bit_identically(
    record_settings: Callable[..., Settings], aredis: Redis,
) -> None:
    settings = record_settings()
    async with serving_and_learning(settings, aredis) as (client, learner):
        version = await teach(client, learner, records(["FR", "DE", "IT"] * 10, seed=1))
        await served_version(client, version)
        probe = [*records(["FR", "DE", "IT", "ES"], seed=5), {}, {"country": "FR"},
                 {"amount": 3.4028234663852886e38, "mobile": False}]
        checked = [settings.feature_schema.check(r) for r in probe]  # type: ignore[union-attr]
        learner_rows = learner.inputs.matrix([record_to_bytes(r) for r in checked], learn=False)
        served = client.app.state.ctx.holder.served  # type: ignore[attr-defined]
        assert served.matrix(checked).tobytes() == learner_rows.tobytes()
        # And what the API answers is that encoding through the served network.
        answer = await predict(client, probe)
        expected = served.predict_proba(learner_rows)
        got = np.array([p["probabilities"] for p in answer["predictions"]], dtype=np.float32)
        assert np.array_equal(got, expected)


@pytest.mark.parametrize(("body", "loc", "says"), [
    ({"inputs": [{"country": "FR"}, {"amount": "12"}]}, ["body", "inputs", 1, "amount"],
     "numeric: expected a number"),
    ({"inputs": [{"colour": "red"}]}, ["body", "inputs", 0, "colour"], "unknown field"),
    ({"inputs": [{"mobile": "yes"}]}, ["body", "inputs", 0, "mobile"], "boolean"),
    ({"inputs": [[1.0, 2.0]]}, ["body", "inputs", 0], "expected a record"),
])
async def test_a_record_that_does_not_fit_is_a_422_naming_row_and_field_and_changes_nothing(
    record_settings: Callable[..., Settings], aredis: Redis, redis_client: redis.Redis,
    body: dict[str, Any], loc: list[Any], says: str,
) -> None:
    settings = record_settings(features=json.dumps({**FEATURES, "region": {
        "kind": "categorical", "required": True}}))
    await init_deployment(settings, aredis)
    async with running_app(settings) as client:
        before = snapshot(redis_client, settings.model_name)
        response = await client.post("/v1/predict", json={
            "inputs": [{**r, "region": "eu"} if isinstance(r, dict) else r for r in body["inputs"]]})
        assert response.status_code == 422
        detail = response.json()["detail"][0]
        assert detail["loc"] == loc and says in detail["msg"]
        items = [{"inputs": {**r, "region": "eu"} if isinstance(r, dict) else r, "label": "a"}
                 for r in body["inputs"]]
        response = await client.post("/v1/feedback", json={"items": items})
        assert response.status_code == 422
        detail = response.json()["detail"][0]
        assert detail["loc"] == ["body", "items", loc[2], "inputs", *loc[3:]], detail
        missing = await client.post("/v1/feedback", json={"items": [
            {"inputs": {"country": "FR"}, "label": "a"}]})
        assert missing.status_code == 422
        assert missing.json()["detail"][0]["loc"] == ["body", "items", 0, "inputs", "region"]
        assert "required" in missing.json()["detail"][0]["msg"]
        assert snapshot(redis_client, settings.model_name) == before


async def test_a_vector_deployment_refuses_records_naming_the_setting(
    make_settings: Callable[..., Settings], aredis: Redis,
) -> None:
    settings = make_settings()
    await init_deployment(settings, aredis)
    async with running_app(settings) as client:
        response = await client.post("/v1/predict", json={"inputs": [{"a": 1.0}]})
        assert response.status_code == 422
        detail = response.json()["detail"][0]
        assert detail["loc"] == ["body", "inputs", 0] and "MNEMO_FEATURES" in detail["msg"]


async def test_a_purge_by_tag_leaves_no_raw_record_of_it_anywhere(
    record_settings: Callable[..., Settings], redis_client: redis.Redis,
) -> None:
    settings = record_settings(publish_every_seconds=0.2, publish_every_samples=500,
                               publish_first_samples=16, buffer_size=50, holdout_fraction=0.3)
    # Distinctive amounts: a raw record's JSON holds them, an encoding would not.
    secret = [{"amount": 1000.5 + i, "country": "FR"} for i in range(30)]
    public = [{"amount": 5000.5 + i, "country": "DE"} for i in range(30)]

    def present(rows: list[dict[str, Any]]) -> list[bool]:
        blob = stored_bytes(redis_client, settings.model_name)
        return [record_to_bytes(settings.feature_schema.check(r)) in blob  # type: ignore[union-attr]
                for r in rows]

    async with running_app(settings) as api, learner_running(settings):
        predicted = (await predict_tagged(api, secret[:10], "secret"))["predictions"]
        items = ([{"prediction_id": p["id"], "label": "a"} for p in predicted]
                 + [{"inputs": r, "label": "a", "tag": "secret"} for r in secret[10:]]
                 + [{"inputs": r, "label": "b", "tag": "public"} for r in public])
        assert (await api.post("/v1/feedback", json={"items": items})).status_code == 202
        await wait_for(lambda: caught_up(api, 60), 15, "the learner to process everything")
        assert any(present(secret)) and any(present(public))
        response = await api.post("/v1/data/purge", json={"tag": "secret"}, headers=ADMIN)
        assert response.status_code == 200 and response.json()["status"] == "done"
        assert not any(present(secret))
        assert any(present(public)), "a tag purge must not touch other tags' data"


async def predict_tagged(api: httpx.AsyncClient, rows: list[dict[str, Any]],
                         tag: str) -> dict[str, Any]:
    response = await api.post("/v1/predict", json={"inputs": rows, "tag": tag})
    assert response.status_code == 200, response.text
    return response.json()


async def caught_up(api: httpx.AsyncClient, n: int) -> bool:
    stats = (await api.get("/v1/stats")).json()
    return stats["samples_seen"] == n and stats["feedback_lag"] == 0


async def test_a_deployment_refuses_to_start_under_another_schema_of_the_same_width(
    record_settings: Callable[..., Settings],
) -> None:
    settings = record_settings()
    async with running_app(settings):
        pass
    renamed = {("value" if name == "amount" else name): kind for name, kind in FEATURES.items()}
    other = record_settings(features=json.dumps(renamed))
    assert other.input_dim == settings.input_dim  # the width alone would not tell
    with pytest.raises(StoreError, match=r"MNEMO_FEATURES=.*value.* does not match this "
                                         r"deployment's stored features=.*amount"):
        async with running_app(other):
            pass
