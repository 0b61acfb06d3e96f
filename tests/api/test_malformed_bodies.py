"""Bodies that are no JSON, whatever their shape, on every POST route: one json_invalid error
at the byte where parsing stopped (/v1: 422 {"detail": [...]}, /v2: 400 {"error": "..."}),
never a 500 or FastAPI's bare 400; nothing stored, no ERROR line and no byte of the body in
any log line or answer. And /v2 answers every error as {"error": ...}."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest
import redis

from service.config import Settings
from service.logs import JsonFormatter
from tests.conftest import running_app, snapshot

ADMIN, TOKEN = "admin-token", "api-token"
MARK = b"SECRET-7f3a"  # inside bodies: in no answer and no log line
AT_MARK = b'{"tag": "' + MARK + b'", "inputs": '  # 33 bytes

# name: (body, offset where parsing stops, why). Refused on every route, FastAPI's included.
EVERYWHERE = {
    "1,000 [": (b"[" * 1000, 201, "recursion limit exceeded"),
    "1,000 [ closed": (b"[" * 1000 + b"]" * 1000, 201, "recursion limit exceeded"),
    "100,000 [": (b"[" * 100_000, 201, "recursion limit exceeded"),
    "100,000 [ closed": (b"[" * 100_000 + b"]" * 100_000, 201, "recursion limit exceeded"),
    "1,000 objects": (b'{"a":' * 1000, 1005, "recursion limit exceeded"),
    "nested in a field": (AT_MARK + b"[" * 1000, 233, "recursion limit exceeded"),
    "invalid UTF-8": (b'{"tag": "' + MARK + b'\xff"}', 20,
                      "the body is not UTF-8 text (invalid start byte)"),
    "5,000-digit integer": (b'{"inputs": [[' + b"1" * 5000 + b"]]}", 4314, "number out of range"),
}
# What FastAPI's json.loads let through or refused otherwise: the routes parsed strictly.
STRICT = {
    "truncated": (b'{"inputs": [[1, 2', 17, "EOF while parsing a list"),
    "lone high surrogate": (b'{"tag": "\\ud800"}', 15, "unexpected end of hex escape"),
    "lone low surrogate": (b'{"tag": "\\udc00"}', 14, "lone leading surrogate in hex escape"),
    "NaN": (b'{"inputs": [[NaN, 1, 2, 3]]}', 13, "expected value"),
    "Infinity": (b'{"inputs": [[Infinity, 1, 2, 3]]}', 13, "expected value"),
    "-Infinity": (b'{"inputs": [[-Infinity, 1, 2, 3]]}', 14, "invalid number"),
    "empty": (b"", 0, "EOF while parsing a value"),
    "whitespace": (b" \n ", 3, "EOF while parsing a value"),
    "UTF-8 byte order mark": (b"\xef\xbb\xbf{}", 0, "expected value"),
}
JSON = {"content-type": "application/json"}


def _json_invalid(offset: int, why: str) -> list[dict[str, object]]:
    return [{"loc": ["body", offset], "msg": f"JSON decode error: {why}", "type": "json_invalid"}]


def _clean_logs(caplog: pytest.LogCaptureFixture) -> None:
    """No ERROR line, and no line (as the JSON formatter writes it) with body bytes."""
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    formatter = JsonFormatter("api")
    for line in map(formatter.format, caplog.records):
        assert MARK.decode() not in line and "[[[[" not in line and '{"a":{' not in line, line


def _client_errors(client: httpx.AsyncClient, model: str) -> float | None:
    registry = client.app.state.ctx.metrics.registry  # type: ignore[attr-defined]
    return registry.get_sample_value("mnemo_predict_requests_total",
                                     {"model": model, "status": "client_error"})


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(admin_token=ADMIN, max_body_bytes=300_000)


async def test_malformed_json_is_one_json_invalid_error_on_every_v1_body_route(
        settings: Settings, redis_client: redis.Redis, model_name: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_app(settings, token=ADMIN) as c:
        before = snapshot(redis_client, model_name)
        cases = [(path, shape) for path in ("/v1/predict", "/v1/feedback")
                 for shape in {**EVERYWHERE, **STRICT}.items()]
        cases += [(path, shape) for path in ("/v1/golden", "/v1/data/purge")
                  for shape in EVERYWHERE.items()]
        for path, (name, (body, offset, why)) in cases:
            response = await c.post(path, content=body, headers=JSON)
            assert response.status_code == 422, (path, name, response.text)
            assert response.json() == {"detail": _json_invalid(offset, why)}, (path, name)
            assert MARK not in response.content
        # FastAPI's own parsing (golden, purge: routes/admin.py) lets these in or says
        # "Field required": refused all the same, never 400 or 500.
        for path in ("/v1/golden", "/v1/data/purge"):
            for name, (body, _, _) in STRICT.items():
                response = await c.post(path, content=body, headers=JSON)
                assert response.status_code == 422, (path, name, response.text)
        assert snapshot(redis_client, model_name) == before
        # Counted as predict's other refusals; no feedback item was read, none rejected.
        assert _client_errors(c, model_name) == len(EVERYWHERE) + len(STRICT)
    _clean_logs(caplog)


async def test_valid_json_of_the_wrong_shape_or_range(settings: Settings) -> None:
    async with running_app(settings, token=ADMIN) as c:
        for path in ("/v1/predict", "/v1/feedback", "/v1/golden", "/v1/data/purge"):
            for scalar in (b"42", b'"x"', b"null", b"[]"):
                response = await c.post(path, content=scalar, headers=JSON)
                assert response.status_code == 422, (path, scalar)
                (error,) = response.json()["detail"]
                assert (error["loc"], error["type"]) == (["body"], "model_attributes_type")
        # 1e400 is JSON out of float range: infinity, refused where it stands.
        huge = await c.post("/v1/predict", content=b'{"inputs": [[1e400, 1, 2, 3]]}',
                            headers=JSON)
        assert huge.status_code == 422
        assert huge.json()["detail"] == [{"loc": ["body", "inputs", 0, 0], "type": "value_error",
                                          "msg": "number inf is not finite"}]
        # Duplicate keys: the last one counts, on the lean routes and FastAPI's alike.
        twice = await c.post("/v1/predict", headers=JSON, content=b'{"inputs": [[1, 2, 3, 4]], '
                             b'"inputs": [[1, 2, 3, 4], [4, 3, 2, 1]]}')
        assert twice.status_code == 200 and len(twice.json()["predictions"]) == 2
        one, two = (b'{"inputs": [%d, 2, 3, 4], "label": "setosa"}' % i for i in (1, 2))
        golden = await c.post("/v1/golden", headers=JSON,
                              content=b'{"items": [' + one + b'], "items": [' + one + b", "
                              + two + b"]}")
        assert golden.status_code == 201 and golden.json()["added"] == 2
        purge = await c.post("/v1/data/purge", headers=JSON,
                             content=b'{"tag": "fine", "tag": "not fine!"}')
        assert purge.status_code == 422 and purge.json()["detail"][0]["loc"] == ["body", "tag"]
        # N and I letters only inside strings: the strict path, which accepts the body.
        named = await c.post("/v1/predict", headers=JSON,
                             content=b'{"inputs": [[1, 2, 3, 4]], "tag": "NaN-Infinity"}')
        assert named.status_code == 200, named.text


async def test_routes_without_a_body_never_read_one(settings: Settings) -> None:
    async with running_app(settings, token=ADMIN) as c:
        nested = b"[" * 100_000
        assert (await c.post("/v1/learning/pause", content=nested, headers=JSON)).json() == {
            "learning": "paused"}
        assert (await c.post("/v1/learning/resume", content=nested, headers=JSON)).json() == {
            "learning": "running"}
        missing = await c.post("/v1/versions/99/activate", content=nested, headers=JSON)
        assert missing.status_code == 404 and "version 99 does not exist" in missing.json()[
            "detail"]


async def test_v2_answers_every_error_as_an_error_body(
        make_settings: Callable[..., Settings], model_name: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_app(make_settings(api_token=TOKEN, max_body_bytes=300_000),
                           token=TOKEN) as c:
        infer = f"/v2/models/{model_name}/infer"
        shapes = {**EVERYWHERE, **STRICT}
        for name, (body, offset, why) in shapes.items():
            response = await c.post(infer, content=body)  # any content type: read as JSON
            assert response.status_code == 400, (name, response.text)
            assert response.json() == {
                "error": f"JSON decode error: {why} (at byte {offset} of the body)"}, name
        assert _client_errors(c, model_name) == len(shapes)  # counted as predict's are

        wrong = await c.post(infer, content=b"[]")
        assert (wrong.status_code, wrong.json()) == (400, {
            "error": "body: Input should be a valid dictionary or object to extract fields from"})
        unknown = await c.get(f"/v2/models/{model_name}/nope")
        assert (unknown.status_code, unknown.json()) == (404, {"error": "Not Found"})
        method = await c.get(infer)
        assert (method.status_code, method.json()) == (405, {"error": "Method Not Allowed"})
        assert method.headers["allow"] == "POST"
        unauthenticated = await c.get("/v2", headers={"Authorization": "Bearer no"})
        assert (unauthenticated.status_code, unauthenticated.json()) == (
            401, {"error": "invalid bearer token"})
        assert unauthenticated.headers["www-authenticate"] == "Bearer"
        too_big = await c.post(infer, content=b" " * 300_001)
        assert (too_big.status_code, too_big.json()) == (413, {
            "error": "request body larger than 300000 bytes (MNEMO_MAX_BODY_BYTES)"})
        # Off /v2, FastAPI's own shapes are unchanged.
        assert (await c.get("/v1/nope")).json() == {"detail": "Not Found"}
        assert (await c.post("/v1/stats", content=b" " * 300_001)).json() == {
            "detail": "request body larger than 300000 bytes (MNEMO_MAX_BODY_BYTES)"}
    _clean_logs(caplog)


async def test_a_lone_surrogate_in_a_golden_label_is_refused(settings: Settings) -> None:
    async with running_app(settings, token=ADMIN) as c:
        response = await c.post("/v1/golden", headers=JSON, content=(
            b'{"items": [{"inputs": [1, 2, 3, 4], "label": "\\ud800"}]}'))
        assert response.json() == {"detail": _json_invalid(52, "unexpected end of hex escape")}
