"""The lean predict/feedback routes: the OpenAPI schema describes them exactly as plain FastAPI
routes with the same declaration would, the token is checked before the body, and a body the
fast parser refuses gets FastAPI's own error shape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI

from service.api.routes import feedback, predict
from service.config import Settings
from tests.conftest import running_app


def _plain_spec() -> dict[str, Any]:
    """The same endpoints declared on plain APIRoutes (FastAPI's default route class)."""
    app = FastAPI(title="Mnemo")
    for module in (predict, feedback):
        plain = APIRouter()
        for route in module.router.routes:
            plain.add_api_route(
                route.path, route.endpoint, methods=list(route.methods),  # type: ignore[attr-defined]
                response_model=route.response_model,  # type: ignore[attr-defined]
                status_code=route.status_code,  # type: ignore[attr-defined]
                responses=route.responses)  # type: ignore[attr-defined]
        app.include_router(plain)
    return app.openapi()


async def test_openapi_describes_the_lean_routes_exactly(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    plain = _plain_spec()
    for path in ("/v1/predict", "/v1/feedback"):
        assert spec["paths"][path] == plain["paths"][path], path
    for name, schema in plain["components"]["schemas"].items():
        assert spec["components"]["schemas"][name] == schema, name


async def test_a_body_that_is_not_json_is_refused_like_fastapi_does(
        client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/predict", content=b'{"inputs": [[1, 2',
                                 headers={"content-type": "application/json"})
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["type"] == "json_invalid" and error["loc"] == ["body", 17]  # the end: cut off
    assert error["msg"] == "JSON decode error: EOF while parsing a list"


async def test_a_body_that_is_not_text_is_a_422_naming_it_not_a_500(
        client: httpx.AsyncClient) -> None:
    for path in ("/v1/predict", "/v1/feedback"):  # found by tests/reliability/test_fuzzing.py
        response = await client.post(path, content=b"\xd8",
                                     headers={"content-type": "application/json"})
        assert response.status_code == 422, (path, response.text)
        (error,) = response.json()["detail"]
        assert error["type"] == "json_invalid" and error["loc"] == ["body", 0]
        assert error["msg"].startswith("JSON decode error: the body is not UTF-8 text")


async def test_refused_feedback_items_are_counted_as_before(
        make_settings: Callable[..., Settings], model_name: str) -> None:
    async with running_app(make_settings()) as c:
        body = {"items": [{"inputs": [1, 2, 3, 4], "label": "setosa"}, {"label": "x"}]}
        assert (await c.post("/v1/feedback", json=body)).status_code == 422
        metrics = c.app.state.ctx.metrics  # type: ignore[attr-defined]
        rejected = metrics.registry.get_sample_value(
            "mnemo_feedback_items_total", {"model": model_name, "outcome": "rejected"})
        assert rejected == 2.0


async def test_lean_posts_skip_route_matching_and_everything_else_still_routes(
        client: httpx.AsyncClient) -> None:
    app = client.app  # type: ignore[attr-defined]
    matched: list[str] = []
    hot = app.router.middleware_stack  # exact-path dispatch, in front of route matching
    route_matching = hot._fallback

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        matched.append(f"{scope['method']} {scope['path']}")
        await route_matching(scope, receive, send)

    hot._fallback = counting
    response = await client.post("/v1/predict", json={"inputs": [[1.0, 2.0, 3.0, 4.0]]})
    assert response.status_code == 200 and response.headers["x-request-id"]
    bad = await client.post("/v1/feedback", json={"items": []})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][:2] == ["body", "items"]
    assert matched == []  # both answered by exact-path dispatch, errors formatted as before
    wrong_method = await client.get("/v1/predict")
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    slash = await client.post("/v1/predict/", json={"inputs": [[1.0, 2.0, 3.0, 4.0]]})
    assert slash.status_code == 307 and slash.headers["location"].endswith("/v1/predict")
    health = await client.get("/healthz")
    assert health.status_code == 200
    assert matched == ["GET /v1/predict", "POST /v1/predict/", "GET /healthz"]
