"""Exceptions the client raises: one class per kind of refusal, each carrying the HTTP status
and the server's own `detail` (or `error`, the /v2 routes' key)."""

from __future__ import annotations

from typing import Any

import httpx


class MnemoError(Exception):
    """A request Mnemo refused or could not answer.

    `status` is the HTTP status (None when no answer came), `detail` the server's `detail`
    (a string, or FastAPI's list of {loc, msg, type} for a 422), `body` the whole JSON body
    (e.g. a purge's 503 carries `purge_id`), `retry_after` the seconds the server asked for.
    """

    def __init__(self, message: str, *, status: int | None = None, detail: Any = None,
                 body: Any = None, method: str = "", path: str = "",
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail
        self.body = body
        self.method = method
        self.path = path
        self.retry_after = retry_after


class AuthError(MnemoError):
    """401 (missing or wrong token) or 403 (admin routes disabled: no MNEMO_ADMIN_TOKEN)."""


class NotFoundError(MnemoError):
    """404: no such version (or retention deleted its weights), purge, or route."""


class ConflictError(MnemoError):
    """409: predict before any class exists, or activating a version the gate rejected."""


class PayloadTooLargeError(MnemoError):
    """413: the body is over MNEMO_MAX_BODY_BYTES; send fewer rows or items per request."""


class ValidationError(MnemoError):
    """422: the body was refused; `errors` lists FastAPI's {loc, msg, type} entries, whose
    `loc` names the item and field (e.g. ["body", "items", 3, "label"])."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [e for e in self.detail if isinstance(e, dict)] if isinstance(self.detail, list) else []

    @property
    def locations(self) -> list[tuple[str | int, ...]]:
        """Each error's `loc` without the leading "body"/"query"/"path"."""
        out = []
        for e in self.errors:
            loc = tuple(e.get("loc") or ())
            out.append(loc[1:] if loc[:1] in (("body",), ("query",), ("path",)) else loc)
        return out


class UnavailableError(MnemoError):
    """429 (load shed) or 503 (Redis unavailable, connection cap) after the client's retries
    ran out or its deadline passed. Retrying later with the same ids is safe."""


class ConnectionFailedError(MnemoError):
    """No answer at all (refused, reset, timed out) after the client's retries: `status` is
    None and the outcome of a write is unknown; retrying with the same ids is safe."""


class ResponseError(MnemoError):
    """An answer outside the v1 contract (not JSON, or missing a field)."""


_BY_STATUS: dict[int, type[MnemoError]] = {
    401: AuthError, 403: AuthError, 404: NotFoundError, 409: ConflictError,
    413: PayloadTooLargeError, 422: ValidationError, 429: UnavailableError, 503: UnavailableError,
}


def _summary(detail: Any) -> str:
    if isinstance(detail, list):  # 422: "items.3.label: msg; …"
        return "; ".join(
            ".".join(str(part) for part in (e.get("loc") or [])[1:]) + f": {e.get('msg', '')}"
            if isinstance(e, dict) else str(e) for e in detail
        )
    return str(detail)


def error_from(response: httpx.Response, retry_after: float | None = None) -> MnemoError:
    """The exception for a refused request, with the server's words in its message."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("detail" in body or "error" in body):
        detail = body.get("detail", body.get("error"))
    else:
        detail = response.text[:500] or response.reason_phrase
    request = response.request
    status = response.status_code
    kind = _BY_STATUS.get(status, MnemoError)
    message = f"{status} {response.reason_phrase} on {request.method} {request.url.path}: {_summary(detail)}"
    return kind(message, status=status, detail=detail, body=body, method=request.method,
                path=request.url.path, retry_after=retry_after)
