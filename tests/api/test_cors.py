"""CORS: with MNEMO_CORS_ORIGINS set, allowed origins get Access-Control-Allow-Origin (on the
preflight and on the actual response, errors included), others do not; unset, no CORS headers
at all."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from service.config import Settings, load_settings
from tests.conftest import REDIS_URL, running_app

ALLOWED = "https://app.example.com"
OTHER = "https://evil.example.net"
ROW = [5.1, 3.5, 1.4, 0.2]


def _preflight(origin: str) -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"}


def _cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


async def test_allowed_origin_gets_the_header_and_others_do_not(model_name: str) -> None:
    # From the environment, as a deployment sets it.
    settings = load_settings(
        {"MNEMO_CORS_ORIGINS": f"{ALLOWED}, http://localhost:3000", "MNEMO_API_TOKEN": "tok",
         "MNEMO_REDIS_URL": REDIS_URL, "MNEMO_MODEL_NAME": model_name,
         "MNEMO_LABELS": "setosa,versicolor,virginica"}
    )
    assert settings.cors_origins == [ALLOWED, "http://localhost:3000"]
    async with running_app(settings) as c:
        ok = await c.options("/v1/predict", headers=_preflight(ALLOWED))
        assert ok.status_code == 200  # a preflight needs no token
        assert ok.headers["access-control-allow-origin"] == ALLOWED
        assert "POST" in ok.headers["access-control-allow-methods"]
        assert "authorization" in ok.headers["access-control-allow-headers"].lower()
        assert ok.headers["x-request-id"]  # the request-id middleware wraps CORS too

        refused = await c.options("/v1/predict", headers=_preflight(OTHER))
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers

        # The actual requests: the browser may read the answer (even a 401) only when allowed.
        auth = {"Authorization": "Bearer tok"}
        served = await c.post("/v1/predict", json={"inputs": [ROW]}, headers={"Origin": ALLOWED, **auth})
        assert served.status_code == 200
        assert served.headers["access-control-allow-origin"] == ALLOWED
        unauthorised = await c.get("/v1/stats", headers={"Origin": ALLOWED})
        assert unauthorised.status_code == 401
        assert unauthorised.headers["access-control-allow-origin"] == ALLOWED
        other = await c.post("/v1/predict", json={"inputs": [ROW]}, headers={"Origin": OTHER, **auth})
        assert other.status_code == 200  # CORS is the browser's check, not authentication
        assert "access-control-allow-origin" not in other.headers


async def test_no_cors_headers_when_unset(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    assert settings.cors_origins == []
    async with running_app(settings) as c:
        preflight = await c.options("/v1/predict", headers=_preflight(ALLOWED))
        assert preflight.status_code == 405  # no CORS handling: OPTIONS is not a route
        assert _cors_headers(preflight) == {}
        served = await c.post("/v1/predict", json={"inputs": [ROW]}, headers={"Origin": ALLOWED})
        assert served.status_code == 200
        assert _cors_headers(served) == {}
