"""Prediction ids have one spelling each (issue 18): a server id only in its canonical form
(`<16 lowercase hex>-<row>`, ASCII digits, no leading zeros), ids in visible ASCII, and no
client id in the server-id form, so one prediction cannot collect several labels and one
client cannot shadow another's prediction."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
import redis

from service.store.keys import Keys
from tests.conftest import snapshot

ROW_A = [5.1, 3.5, 1.4, 0.2]
ROW_B = [6.7, 3.0, 5.2, 2.3]
# Look-alike spellings of row 0: int() and a Unicode \d read every one of them as 0.
UNICODE_ZEROS = ["\u0660", "\uff10", "\u0966", "\U0001d7ce"]  # ٠ ０ ० 𝟎
ASCII_NOT_CANONICAL = ["00", "000000"]


async def _server_id(client: httpx.AsyncClient, row: list[float]) -> str:
    response = await client.post("/v1/predict", json={"inputs": [row]})
    assert response.status_code == 200, response.text
    assert response.json()["logged"] is True
    return str(response.json()["predictions"][0]["id"])


async def _refused(client: httpx.AsyncClient, redis_client: redis.Redis, model: str, path: str,
                   body: dict[str, Any]) -> list[dict[str, Any]]:
    """POST that must answer 422 and leave Redis exactly as it was; its error details."""
    before = snapshot(redis_client, model)
    response = await client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert snapshot(redis_client, model) == before
    return list(response.json()["detail"])


def _labels(redis_client: redis.Redis, model: str) -> list[tuple[bytes, bytes]]:
    """(label, input bytes) of every feedback stream entry."""
    return [(f[b"y"], f[b"x"]) for _, f in redis_client.xrange(Keys(model).stream)]


async def test_one_prediction_takes_one_label_whatever_its_spelling(
    client: httpx.AsyncClient, redis_client: redis.Redis, model_name: str,
) -> None:
    pid = await _server_id(client, ROW_A)
    batch, row = pid.split("-")
    assert row == "0"
    variants = [pid, *(f"{batch}-{z}" for z in ASCII_NOT_CANONICAL + UNICODE_ZEROS),
                f"{batch.upper()}-0", f"{pid}\n"]
    items = [{"prediction_id": v, "label": "setosa"} for v in variants]
    detail = await _refused(client, redis_client, model_name, "/v1/feedback", {"items": items})
    # The schema refuses every non-ASCII spelling, each naming its item.
    named = {d["loc"][2] for d in detail if d["loc"][-1] == "prediction_id"}
    assert named == {3, 4, 5, 6, 8}, detail

    # ASCII spellings in the server's form that are not its canonical one: refused by item.
    for i, variant in enumerate([f"{batch}-00", f"{batch}-000000", f"{batch.upper()}-0"]):
        body = {"items": [{"prediction_id": pid, "label": "setosa"}] * (i > 0)
                + [{"prediction_id": variant, "label": "virginica"}]}
        (error,) = await _refused(client, redis_client, model_name, "/v1/feedback", body)
        assert error["loc"] == ["body", "items", int(i > 0), "prediction_id"], error
        assert "not a prediction id as the server made it" in error["msg"]

    response = await client.post("/v1/feedback", json={"items": items[:1]})
    assert (response.status_code, response.json()) == (202, {"accepted": 1, "duplicates": 0})
    assert [label for label, _ in _labels(redis_client, model_name)] == [b"setosa"]


@pytest.mark.parametrize("make_id", [
    lambda pid: pid,  # another client's server id, exactly
    lambda pid: pid.split("-")[0] + "-7",  # a row that does not exist (yet)
    lambda pid: pid.split("-")[0] + "-07",
    lambda pid: pid.upper(),
    lambda pid: "0123456789abcdef-123456789012",
])
async def test_a_client_id_may_not_take_the_server_id_form(
    client: httpx.AsyncClient, redis_client: redis.Redis, model_name: str, make_id: Any,
) -> None:
    taken = make_id(await _server_id(client, ROW_A))
    body = {"inputs": [ROW_B, ROW_B], "ids": ["mine-1", taken]}
    (error,) = await _refused(client, redis_client, model_name, "/v1/predict", body)
    assert error["loc"] == ["body", "ids", 1], error
    assert "form of a server-made prediction id" in error["msg"]


@pytest.mark.parametrize("client_id", ["order 42", "caf\u00e9", "tab\tid", "", "x" * 65])
async def test_client_ids_are_visible_ascii(client: httpx.AsyncClient,
                                            redis_client: redis.Redis, model_name: str,
                                            client_id: str) -> None:
    body = {"inputs": [ROW_A], "ids": [client_id]}
    (error,) = await _refused(client, redis_client, model_name, "/v1/predict", body)
    assert error["loc"] == ["body", "ids", 0], error


async def test_a_prediction_cannot_be_shadowed_by_another_client(
    client: httpx.AsyncClient, redis_client: redis.Redis, model_name: str,
) -> None:
    pid_a = await _server_id(client, ROW_A)
    # Client B tries to plant its own input under A's id: refused, nothing written.
    await _refused(client, redis_client, model_name, "/v1/predict",
                   {"inputs": [ROW_B], "ids": [pid_a]})
    # B's ids that merely look alike stay B's own; ids of every other shape work as before.
    response = await client.post("/v1/predict", json={
        "inputs": [ROW_B, ROW_B], "ids": [f"{pid_a}x", "order:42/b@example.com"]})
    assert response.status_code == 200, response.text
    response = await client.post("/v1/feedback", json={"items": [
        {"prediction_id": pid_a, "label": "setosa"},
        {"prediction_id": f"{pid_a}x", "label": "virginica"},
        {"prediction_id": "order:42/b@example.com", "label": "virginica"}]})
    assert (response.status_code, response.json()) == (202, {"accepted": 3, "duplicates": 0})
    a_row, b_row = (np.asarray(r, "<f4").tobytes() for r in (ROW_A, ROW_B))
    assert _labels(redis_client, model_name) == [
        (b"setosa", a_row), (b"virginica", b_row), (b"virginica", b_row)]
