"""Bearer tokens (docs/DESIGN.md §3 Auth): every v1 route behind MNEMO_API_TOKEN, admin routes behind
MNEMO_ADMIN_TOKEN and closed (403) while it is unset, the open routes open, and X-Request-ID
on every response."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis

from service.config import Settings
from tests.conftest import running_app, snapshot

API_TOKEN = "api-secret-1"
ADMIN_TOKEN = "admin-secret-2"
ROW = [5.1, 3.5, 1.4, 0.2]

# (method, path, JSON body) of every v1 route of this issue that the API token guards.
V1_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/v1/predict", {"inputs": [ROW]}),
    ("POST", "/v1/feedback", {"items": [{"inputs": ROW, "label": "setosa"}]}),
    ("GET", "/v1/versions", None),
    ("GET", "/v1/versions/current", None),
    ("GET", "/v1/versions/0", None),
    ("GET", "/v1/versions/0/weights", None),
    ("GET", "/v1/stats", None),
    ("GET", "/v1/stats/history", None),
]
OPEN_ROUTES = ["/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/dashboard"]
ADMIN_ROUTES: list[tuple[str, dict[str, Any] | None]] = [
    ("/v1/versions/0/activate", None),
    ("/v1/golden", {"items": [{"inputs": ROW, "label": "setosa"}]}),
]
HEX_ID = re.compile(r"^[0-9a-f]{32}$")


def _bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token is not None else {}


async def _call(client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None,
                headers: dict[str, str]) -> httpx.Response:
    response = await client.request(method, path, json=body, headers=headers)
    assert "x-request-id" in response.headers, (path, response.status_code)
    return response


@pytest.mark.parametrize(("method", "path", "body"), V1_ROUTES, ids=[f"{m} {p}" for m, p, _ in V1_ROUTES])
async def test_v1_route_needs_the_api_token(
    make_settings: Callable[..., Settings], redis_client: redis.Redis, model_name: str,
    method: str, path: str, body: dict[str, Any] | None,
) -> None:
    async with running_app(make_settings(api_token=API_TOKEN)) as c:
        before = snapshot(redis_client, model_name)
        for headers in ({}, _bearer("wrong"), _bearer(API_TOKEN + "x"), _bearer(API_TOKEN[:-1]),
                        {"Authorization": API_TOKEN}, {"Authorization": f"Basic {API_TOKEN}"},
                        _bearer("")):
            refused = await _call(c, method, path, body, headers)
            assert refused.status_code == 401, (headers, refused.text)
            assert refused.headers["www-authenticate"] == "Bearer"
            assert "token" in refused.json()["detail"]
        # Refused requests wrote nothing (predict logs, feedback appends only when let in).
        assert snapshot(redis_client, model_name) == before
        allowed = await _call(c, method, path, body, _bearer(API_TOKEN))
        assert 200 <= allowed.status_code < 300, allowed.text
        # The scheme is case-insensitive (RFC 7235).
        allowed = await _call(c, method, path, body, {"Authorization": f"bearer {API_TOKEN}"})
        assert 200 <= allowed.status_code < 300, allowed.text


async def test_auth_is_checked_before_the_body(
    make_settings: Callable[..., Settings], redis_client: redis.Redis, model_name: str
) -> None:
    """An unauthenticated client learns nothing about validation: 401, not 422."""
    async with running_app(make_settings(api_token=API_TOKEN)) as c:
        before = snapshot(redis_client, model_name)
        for path, body in (("/v1/predict", {"inputs": [[1, 2]]}),
                           ("/v1/feedback", {"items": [{"prediction_id": "nope", "label": "x"}]})):
            response = await c.post(path, json=body)
            assert response.status_code == 401, response.text
        assert snapshot(redis_client, model_name) == before


async def test_open_routes_need_no_token(make_settings: Callable[..., Settings]) -> None:
    async with running_app(make_settings(api_token=API_TOKEN, admin_token=ADMIN_TOKEN)) as c:
        for path in OPEN_ROUTES:
            response = await _call(c, "GET", path, None, {})
            assert response.status_code == 200, (path, response.text)
        assert (await c.get("/readyz")).json()["ready"] is True
        assert "mnemo_predict_requests_total" in (await c.get("/metrics")).text
        assert "/v1/feedback" in (await c.get("/openapi.json")).json()["paths"]


@pytest.mark.parametrize(("path", "body"), ADMIN_ROUTES, ids=[p for p, _ in ADMIN_ROUTES])
async def test_admin_routes_closed_without_admin_token(
    make_settings: Callable[..., Settings], redis_client: redis.Redis, model_name: str,
    path: str, body: dict[str, Any] | None,
) -> None:
    async with running_app(make_settings(api_token=API_TOKEN)) as c:
        before = snapshot(redis_client, model_name)
        for headers in ({}, _bearer(API_TOKEN), _bearer("anything")):
            response = await _call(c, "POST", path, body, headers)
            assert response.status_code == 403, (headers, response.text)
            assert "MNEMO_ADMIN_TOKEN" in response.json()["detail"]
        assert snapshot(redis_client, model_name) == before
    # Closed as well where no API token is configured at all: never open.
    async with running_app(make_settings()) as c:
        assert (await _call(c, "POST", path, body, {})).status_code == 403


async def test_admin_routes_with_admin_token(
    make_settings: Callable[..., Settings], redis_client: redis.Redis, model_name: str
) -> None:
    async with running_app(make_settings(api_token=API_TOKEN, admin_token=ADMIN_TOKEN)) as c:
        before = snapshot(redis_client, model_name)
        for path, body in ADMIN_ROUTES:
            # The API token is not the admin token.
            for headers in ({}, _bearer("wrong"), _bearer(API_TOKEN)):
                response = await _call(c, "POST", path, body, headers)
                assert response.status_code == 401, (path, headers, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
        assert snapshot(redis_client, model_name) == before

        activated = await _call(c, "POST", "/v1/versions/0/activate", None, _bearer(ADMIN_TOKEN))
        assert activated.status_code == 200, activated.text
        assert activated.json() == {"current": 0, "epoch": 1}  # already current: same epoch
        golden = await _call(c, "POST", "/v1/golden", ADMIN_ROUTES[1][1], _bearer(ADMIN_TOKEN))
        assert golden.status_code == 201, golden.text
        assert golden.json() == {"added": 1, "size": 1}
        # The admin token does not open the API routes: those take the API token.
        assert (await c.get("/v1/stats", headers=_bearer(ADMIN_TOKEN))).status_code == 401


async def test_every_response_carries_x_request_id(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(api_token=API_TOKEN, admin_token=ADMIN_TOKEN, max_body_bytes=1024)
    async with running_app(settings) as c:
        auth = _bearer(API_TOKEN)
        requests: list[tuple[str, str, dict[str, Any] | str | None, dict[str, str], int]] = [
            ("GET", "/healthz", None, {}, 200),
            ("POST", "/v1/predict", {"inputs": [ROW]}, auth, 200),
            ("POST", "/v1/feedback", {"items": [{"inputs": ROW, "label": "setosa"}]}, auth, 202),
            ("POST", "/v1/predict", {"inputs": [ROW]}, {}, 401),
            ("POST", "/v1/golden", {"items": []}, {}, 401),
            ("GET", "/v1/versions/99", None, auth, 404),
            ("GET", "/v1/nowhere", None, auth, 404),
            ("POST", "/v1/predict", {"inputs": [[1]]}, auth, 422),
            ("POST", "/v1/predict", "x" * 2000, auth, 413),
        ]
        seen_ids = set()
        for method, path, body, headers, status in requests:
            kwargs: dict[str, Any] = {"content": body} if isinstance(body, str) else {"json": body}
            # The client's id comes back unchanged...
            given = await c.request(method, path, headers={**headers, "X-Request-ID": "client-id.42:a_b"},
                                    **kwargs)
            assert given.status_code == status, (path, given.text)
            assert given.headers.get_list("x-request-id") == ["client-id.42:a_b"]
            # ...otherwise (absent, or not a sane id) a fresh one per response.
            for extra in ({}, {"X-Request-ID": "has spaces"}, {"X-Request-ID": "x" * 129}):
                made = await c.request(method, path, headers={**headers, **extra}, **kwargs)
                assert made.status_code == status, (path, made.text)
                new_id = made.headers["x-request-id"]
                assert HEX_ID.match(new_id), new_id
                assert new_id not in seen_ids
                seen_ids.add(new_id)
