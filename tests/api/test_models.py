"""Several models in one API process (MNEMO_MODELS): every /v1 route under
/v1/models/{name}/, the unprefixed routes are the first model's, /v2 serves each by name, a
prediction id resolves only within its model, and the metrics carry every model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from mnemo_client import AsyncClient, WithInputs
from service.config import Settings
from service.store.keys import Keys
from tests.conftest import delete_model_keys, running_app

ADMIN = {"Authorization": "Bearer admin"}


@pytest.fixture
def names(model_name: str, redis_client: redis.Redis) -> Iterator[tuple[str, str]]:
    pair = (f"{model_name}-iris", f"{model_name}-bits")
    yield pair
    for name in pair:
        delete_model_keys(redis_client, name)


@pytest.fixture
async def api(make_settings: Callable[..., Settings], tmp_path: Path,
              names: tuple[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    iris, bits = names
    path = tmp_path / "models.yaml"
    path.write_text(f"models:\n  - name: {iris}\n  - name: {bits}\n    input_dim: 2\n"
                    "    label_type: int\n    labels: [0, 1]\n")
    async with running_app(make_settings(models=path, admin_token="admin")) as client:
        yield client


async def test_the_catalog_lists_every_model_the_first_as_default(
        api: httpx.AsyncClient, names: tuple[str, str]) -> None:
    iris, bits = names
    listed = (await api.get("/v1/models")).json()
    assert listed["default"] == iris
    assert [(m["name"], m["default"], m["input_dim"], m["label_type"], m["version"])
            for m in listed["models"]] == [(iris, True, 4, "str", 0), (bits, False, 2, "int", 0)]
    one = (await api.get(f"/v1/models/{bits}")).json()
    assert one["prefix"] == f"/v1/models/{bits}" and one["labels"] == [0, 1]
    missing = await api.get("/v1/models/nope")
    assert missing.status_code == 404 and "unknown model 'nope'" in missing.json()["detail"]


async def test_each_model_answers_under_its_prefix_with_its_own_shape(
        api: httpx.AsyncClient, names: tuple[str, str]) -> None:
    iris, bits = names
    # The unprefixed routes and the first model's prefix are the same model.
    for path in ("/v1/predict", f"/v1/models/{iris}/predict"):
        answer = await api.post(path, json={"inputs": [[1, 2, 3, 4]]})
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"][0]["probabilities"]) == 3
    answer = await api.post(f"/v1/models/{bits}/predict", json={"inputs": [[1, 2]]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["label"] in (0, 1)
    wrong = await api.post(f"/v1/models/{bits}/predict", json={"inputs": [[1, 2, 3, 4]]})
    assert wrong.status_code == 422
    unknown = await api.post("/v1/models/nope/predict", json={"inputs": [[1, 2]]})
    assert unknown.status_code == 404 and "unknown model 'nope'" in unknown.json()["detail"]
    for path in ("stats", "versions/current", "versions"):
        assert (await api.get(f"/v1/models/{bits}/{path}")).status_code == 200, path
    assert (await api.get(f"/v1/models/{bits}/stats")).json()["samples_seen"] == 0


async def test_a_prediction_id_resolves_only_within_its_model(
        api: httpx.AsyncClient, names: tuple[str, str], redis_client: redis.Redis) -> None:
    iris, bits = names
    predicted = (await api.post(f"/v1/models/{bits}/predict", json={"inputs": [[1, 2]]})).json()
    pid = predicted["predictions"][0]["id"]
    other = await api.post(f"/v1/models/{iris}/feedback",
                           json={"items": [{"prediction_id": pid, "label": "setosa"}]})
    assert other.status_code == 422 and "unknown or expired prediction id" in other.text
    own = await api.post(f"/v1/models/{bits}/feedback",
                         json={"items": [{"prediction_id": pid, "label": 1}]})
    assert own.status_code == 202 and own.json()["accepted"] == 1
    assert redis_client.xlen(Keys(bits).stream) == 1 and redis_client.xlen(Keys(iris).stream) == 0


async def test_v2_serves_each_model_by_name(api: httpx.AsyncClient,
                                            names: tuple[str, str]) -> None:
    iris, bits = names
    meta = (await api.get(f"/v2/models/{bits}")).json()
    assert meta["inputs"][0]["shape"] == [-1, 2]
    body = {"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
    answer = await api.post(f"/v2/models/{bits}/infer", json=body)
    assert answer.status_code == 200 and answer.json()["model_name"] == bits
    assert (await api.post(f"/v2/models/{iris}/infer", json=body)).status_code == 400
    assert (await api.get("/v2/health/ready")).status_code == 200


async def test_admin_routes_act_on_the_named_model_only(
        api: httpx.AsyncClient, names: tuple[str, str], redis_client: redis.Redis) -> None:
    iris, bits = names
    paused = await api.post(f"/v1/models/{bits}/learning/pause", headers=ADMIN)
    assert paused.status_code == 200
    assert redis_client.hget(Keys(bits).control, "paused") == b"1"
    assert redis_client.hget(Keys(iris).control, "paused") is None


async def test_metrics_carry_every_model(api: httpx.AsyncClient, names: tuple[str, str]) -> None:
    bits = names[1]
    await api.post("/v1/predict", json={"inputs": [[1, 2, 3, 4]]})
    await api.post(f"/v1/models/{bits}/predict", json={"inputs": [[1, 2]]})
    text = (await api.get("/metrics")).text
    for name in names:
        assert f'mnemo_predict_requests_total{{model="{name}",status="ok"}} 1.0' in text
        assert f'mnemo_build_info{{model="{name}"' in text
    assert text.count("# TYPE process_cpu_seconds_total") == 1


async def test_the_python_client_speaks_to_one_named_model(
        api: httpx.AsyncClient, names: tuple[str, str]) -> None:
    bits = names[1]
    client = AsyncClient(http=api, model=bits)
    answer = await client.predict([[1.0, 2.0]])
    assert answer.predictions[0].label in (0, 1)
    result = await client.feedback([WithInputs([1.0, 2.0], 1)])
    assert result.accepted == 1
    assert (await api.get(f"/v1/models/{bits}/stats")).json()["feedback_lag"] == 1
    assert (await api.get("/v1/stats")).json()["feedback_lag"] == 0  # the default model's


async def test_a_hundred_and_twenty_models_in_one_process_each_answer(
        make_settings: Callable[..., Settings], tmp_path: Path, model_name: str,
        redis_client: redis.Redis) -> None:
    """Every model holds connections of its own (log writer, version follower): past ~35
    models redis-py's default pool of 100 ran out; the pool is sized by the model count."""
    names = [f"{model_name}-{i}" for i in range(120)]
    path = tmp_path / "models.yaml"
    path.write_text("models:\n" + "".join(f"  - name: {n}\n" for n in names))
    try:
        async with running_app(make_settings(models=path, hidden=[8])) as api:
            for name in names:
                answer = await api.post(f"/v1/models/{name}/predict",
                                        json={"inputs": [[1, 2, 3, 4]]})
                assert answer.status_code == 200, (name, answer.text)
                assert answer.json()["logged"] is True
            ready = (await api.get("/readyz")).json()
            assert ready["ready"] and len(ready["models"]) == 120
    finally:
        for name in names:
            delete_model_keys(redis_client, name)
