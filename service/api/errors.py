"""Error bodies: {"detail": ...} naming what is wrong and where."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


def invalid(loc: tuple[str | int, ...], msg: str, kind: str = "value_error") -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors, for checks made after parsing."""
    return HTTPException(422, detail=[{"loc": ["body", *loc], "msg": msg, "type": kind}])


def retry_later(status: int, msg: str, seconds: int) -> HTTPException:
    return HTTPException(status, detail=msg, headers={"Retry-After": str(seconds)})


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    _count_schema_refusal(request, exc)
    # Keep loc, msg and type; drop the echoed input (it can be megabytes of numbers).
    detail: list[dict[str, Any]] = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return JSONResponse({"detail": detail}, status_code=422)


def _count_schema_refusal(request: Request, exc: RequestValidationError) -> None:
    """A body the schema refuses never reaches the predict/feedback handlers, which count their
    own refusals; count it here the same way (a request, or the items it carried)."""
    ctx = getattr(request.app.state, "ctx", None)
    if ctx is None:
        return
    if request.url.path == "/v1/predict":
        ctx.metrics.requests_by_status["client_error"].inc()
    elif request.url.path == "/v1/feedback":
        items = exc.body.get("items") if isinstance(exc.body, dict) else None
        if isinstance(items, list) and items:
            ctx.metrics.feedback_by_outcome["rejected"].inc(len(items))
