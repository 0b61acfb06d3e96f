"""Every validation rule of docs/DESIGN.md §3: the status, a message naming the item and field, and
Redis holding exactly what it held before."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import running_app, snapshot

GOOD_ROW = [5.1, 3.5, 1.4, 0.2]


async def _assert_refused(
    client: httpx.AsyncClient, redis_client: redis.Redis, model: str, path: str,
    body: Any, loc: list[Any], fragment: str, status: int = 422,
) -> None:
    before = snapshot(redis_client, model)
    content = body if isinstance(body, str) else json.dumps(body, allow_nan=True)
    response = await client.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert any(d["loc"][: len(loc)] == loc and fragment in d["msg"] for d in detail), detail
    assert snapshot(redis_client, model) == before


PREDICT_CASES = [
    ({"inputs": [[5.1, "3.5", 1.4, 0.2]]}, ["body", "inputs", 0, 1], "valid number"),
    ({"inputs": [[5.1, True, 1.4, 0.2]]}, ["body", "inputs", 0, 1], "valid number"),
    ({"inputs": [[5.1, None, 1.4, 0.2]]}, ["body", "inputs", 0, 1], "valid number"),
    # NaN and Infinity are no JSON: refused where the literal starts (byte offset).
    ('{"inputs": [[5.1, NaN, 1.4, 0.2]]}', ["body", 18], "JSON decode error"),
    ('{"inputs": [[5.1, 3.5, Infinity, 0.2]]}', ["body", 23], "JSON decode error"),
    ('{"inputs": [[5.1, 3.5, 1e400, 0.2]]}', ["body", "inputs", 0, 2], "not finite"),
    ({"inputs": [GOOD_ROW, [1e39, 0, 0, 0]]}, ["body", "inputs", 1, 0], "float32 range"),
    ({"inputs": [GOOD_ROW, [1, 2, 3]]}, ["body", "inputs", 1], "exactly 4 numbers"),
    ({"inputs": [[1, 2, 3, 4, 5]]}, ["body", "inputs", 0], "exactly 4 numbers"),
    ({"inputs": []}, ["body", "inputs"], "at least 1"),
    ({"inputs": [GOOD_ROW] * 33}, ["body", "inputs"], "at most 32"),
    ({"inputs": [GOOD_ROW], "tag": "bad tag!"}, ["body", "tag"], "pattern"),
    ({"inputs": [GOOD_ROW], "tag": "t" * 65}, ["body", "tag"], "pattern"),
    ({"inputs": [GOOD_ROW], "tag": 7}, ["body", "tag"], "valid string"),
    ({"inputs": [GOOD_ROW], "ids": ["a", "b"]}, ["body", "ids"], "one id per row"),
    ({"inputs": [GOOD_ROW, GOOD_ROW], "ids": ["a", "a"]}, ["body", "ids"], "unique"),
    ({"inputs": [GOOD_ROW], "ids": ["x" * 65]}, ["body", "ids", 0], "at most 64"),
    ({"inputs": [GOOD_ROW], "colour": "red"}, ["body", "colour"], "Extra inputs"),
    ({"inputs": GOOD_ROW}, ["body", "inputs", 0], "valid list"),
    ('{"inputs": [[1, 2', ["body"], "JSON"),
]


@pytest.mark.parametrize(("body", "loc", "fragment"), PREDICT_CASES)
async def test_predict_refuses(client: httpx.AsyncClient, redis_client: redis.Redis,
                               model_name: str, body: Any, loc: list[Any], fragment: str) -> None:
    await _assert_refused(client, redis_client, model_name, "/v1/predict", body, loc, fragment)


def _item(**fields: Any) -> dict[str, Any]:
    return {"inputs": GOOD_ROW, "label": "setosa", **fields}


FEEDBACK_CASES = [
    ({"items": [_item(), _item(label=True)]}, ["body", "items", 1], "label"),
    ({"items": [_item(label=1.5)]}, ["body", "items", 0], "label"),
    ({"items": [_item(label="")]}, ["body", "items", 0], "1-64 characters"),
    ({"items": [_item(label="l" * 65)]}, ["body", "items", 0], "1-64 characters"),
    ({"items": [_item(), _item(label=3)]}, ["body", "items", 1, "label"], "must be a string"),
    ({"items": [_item(inputs=[1, 2, 3])]}, ["body", "items", 0, "inputs"], "exactly 4 numbers"),
    ({"items": [_item(), _item(), _item(inputs=[1, "2", 3, 4])]},
     ["body", "items", 2], "valid number"),
    ('{"items": [{"inputs": [1, 2, NaN, 4], "label": "setosa"}]}', ["body", 29],
     "JSON decode error"),
    ('{"items": [{"inputs": [1, 2, -1e400, 4], "label": "setosa"}]}',
     ["body", "items", 0, "inputs", 2], "not finite"),
    ({"items": [_item(inputs=[3.5e38, 0, 0, 0])]}, ["body", "items", 0, "inputs", 0], "float32"),
    ({"items": [_item(tag="no spaces")]}, ["body", "items", 0], "pattern"),
    ({"items": [{"label": "setosa"}]}, ["body", "items", 0], "exactly one of prediction_id or inputs"),
    ({"items": [{"prediction_id": "abc", "inputs": GOOD_ROW, "label": "setosa"}]},
     ["body", "items", 0], "exactly one of prediction_id or inputs"),
    ({"items": [{"prediction_id": "abc", "label": "setosa", "feedback_id": "f"}]},
     ["body", "items", 0], "Extra inputs"),
    ({"items": [_item(), {"prediction_id": "0123456789abcdef-0", "label": "setosa"}]},
     ["body", "items", 1, "prediction_id"], "unknown or expired"),
    ({"items": []}, ["body", "items"], "at least 1"),
    ({"items": [_item()] * 33}, ["body", "items"], "at most 32"),
    ({"items": [_item(feedback_id="")]}, ["body", "items", 0], "at least 1"),
]


@pytest.mark.parametrize(("body", "loc", "fragment"), FEEDBACK_CASES)
async def test_feedback_refuses_whole_batch(
    client: httpx.AsyncClient, redis_client: redis.Redis, model_name: str,
    body: Any, loc: list[Any], fragment: str,
) -> None:
    await _assert_refused(client, redis_client, model_name, "/v1/feedback", body, loc, fragment)


async def test_int_deployment_refuses_string_label(make_settings, redis_client, model_name) -> None:
    async with running_app(make_settings(label_type="int", labels=["0", "1"])) as c:
        await _assert_refused(c, redis_client, model_name, "/v1/feedback",
                              {"items": [_item(label=1), _item(label="1")]},
                              ["body", "items", 1, "label"], "must be an integer")
        ok = await c.post("/v1/feedback", json={"items": [_item(label=1), _item(label=7)]})
        assert ok.status_code == 202, ok.text
        predicted = await c.post("/v1/predict", json={"inputs": [GOOD_ROW]})
        assert predicted.json()["labels"] == [0, 1]


async def test_label_beyond_max_classes_is_refused_by_name(make_settings, redis_client, model_name) -> None:
    async with running_app(make_settings(max_classes=4)) as c:
        await _assert_refused(
            c, redis_client, model_name, "/v1/feedback",
            {"items": [_item(label="setosa"), _item(label="new-1"), _item(label="new-2")]},
            ["body", "items", 2, "label"], "'new-2' would exceed MNEMO_MAX_CLASSES",
        )
        ok = await c.post("/v1/feedback", json={"items": [_item(label="new-1")]})
        assert ok.status_code == 202


async def test_body_over_limit_is_413(make_settings, redis_client, model_name) -> None:
    async with running_app(make_settings(max_body_bytes=1024)) as c:
        before = snapshot(redis_client, model_name)
        body = json.dumps({"items": [_item()] * 30})
        assert len(body) > 1024
        response = await c.post("/v1/feedback", content=body,
                                headers={"content-type": "application/json"})
        assert response.status_code == 413
        assert "MNEMO_MAX_BODY_BYTES" in response.json()["detail"]
        # Without Content-Length (chunked), the stream is counted instead.
        async def chunks():
            for start in range(0, len(body), 500):
                yield body[start : start + 500].encode()
        chunked = await c.post("/v1/feedback", content=chunks(),
                               headers={"content-type": "application/json"})
        assert chunked.status_code == 413
        assert snapshot(redis_client, model_name) == before


async def test_predict_before_any_class_is_409(make_settings) -> None:
    async with running_app(make_settings(labels=[])) as c:
        response = await c.post("/v1/predict", json={"inputs": [GOOD_ROW]})
        assert response.status_code == 409
        assert "no class" in response.json()["detail"]
