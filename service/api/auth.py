"""Bearer-token checks: tokens compared in constant time; admin routes closed when no admin
token is configured (403), never open."""

from __future__ import annotations

from fastapi import HTTPException, Request

from service.tokens import bearer_token, token_matches

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _bearer(request: Request) -> str | None:
    return bearer_token(request.headers.get("authorization", ""))


async def require_api_token(request: Request) -> None:
    expected = request.app.state.settings.api_token
    if expected is None:
        return
    given = _bearer(request)
    if given is None:
        raise HTTPException(401, "missing bearer token", headers=_CHALLENGE)
    if not token_matches(given, expected):
        raise HTTPException(401, "invalid bearer token", headers=_CHALLENGE)


async def require_admin_token(request: Request) -> None:
    expected = request.app.state.settings.admin_token
    if expected is None:
        raise HTTPException(403, "admin routes are disabled: MNEMO_ADMIN_TOKEN is not set")
    given = _bearer(request)
    if given is None:
        raise HTTPException(401, "missing admin bearer token", headers=_CHALLENGE)
    if not token_matches(given, expected):
        raise HTTPException(401, "invalid admin bearer token", headers=_CHALLENGE)
