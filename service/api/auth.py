"""Bearer-token checks: tokens compared in constant time; admin routes closed when no admin
token is configured (403), never open."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _matches(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


async def require_api_token(request: Request) -> None:
    expected = request.app.state.settings.api_token
    if expected is None:
        return
    given = _bearer(request)
    if given is None:
        raise HTTPException(401, "missing bearer token", headers=_CHALLENGE)
    if not _matches(given, expected):
        raise HTTPException(401, "invalid bearer token", headers=_CHALLENGE)


async def require_admin_token(request: Request) -> None:
    expected = request.app.state.settings.admin_token
    if expected is None:
        raise HTTPException(403, "admin routes are disabled: MNEMO_ADMIN_TOKEN is not set")
    given = _bearer(request)
    if given is None:
        raise HTTPException(401, "missing admin bearer token", headers=_CHALLENGE)
    if not _matches(given, expected):
        raise HTTPException(401, "invalid admin bearer token", headers=_CHALLENGE)
