"""GET /dashboard: the built-in live page (docs/DESIGN.md §3), open without a token: it holds no data
and no secret; its script asks for the token and sends it on the /v1 calls it makes. Plain
HTML, CSS and one hand-written script shipped in the package (no CDN, no build step)."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter, HTTPException, Response

router = APIRouter(include_in_schema=False)

_FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
# Only this origin's scripts, styles and API calls: no remote or inline script can run.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


@cache
def _asset(name: str) -> bytes:
    return files("service.api").joinpath("static", name).read_bytes()


@router.get("/dashboard")
async def dashboard_page() -> Response:
    return Response(_asset("dashboard.html"), media_type="text/html; charset=utf-8",
                    headers=_HEADERS)


@router.get("/dashboard/{name}")
async def dashboard_asset(name: str) -> Response:
    if name not in _FILES:
        raise HTTPException(404, f"no dashboard file {name!r}")
    return Response(_asset(name), media_type=_FILES[name], headers=_HEADERS)
