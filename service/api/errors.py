"""Error bodies: {"detail": ...} naming what is wrong and where; on /v2 the Open Inference
Protocol's {"error": "<message>"}, with KServe's 400 for a refused body (422 elsewhere).
None of them quotes the request body, and nothing here logs."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException


def invalid(loc: tuple[str | int, ...], msg: str, kind: str = "value_error") -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors, for checks made after parsing."""
    return HTTPException(422, detail=[{"loc": ["body", *loc], "msg": msg, "type": kind}])


def retry_later(status: int, msg: str, seconds: int) -> HTTPException:
    return HTTPException(status, detail=msg, headers={"Retry-After": str(seconds)})


def is_v2(path: str) -> bool:
    """A path of the Open Inference Protocol (routes/v2.py), whose errors are {"error": ...}."""
    return path == "/v2" or path.startswith("/v2/")


def describe(detail: Any) -> str:
    """One line for {"error": ...}: FastAPI-shaped details become "where: what"."""
    if not isinstance(detail, list):
        return str(detail)
    return "; ".join(_describe_one(e) for e in detail)


def _describe_one(error: dict[str, Any]) -> str:
    where = [str(p) for p in error.get("loc", ()) if p != "body"]
    if error.get("type") == "json_invalid":  # its location is a byte offset, not a field
        return f"{error.get('msg')} (at byte {where[0]} of the body)" if where \
            else str(error.get("msg"))
    return f"{'.'.join(where) or 'body'}: {error.get('msg')}"


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    _count_schema_refusal(request, exc)
    # Keep loc, msg and type; drop the echoed input (it can be megabytes of numbers).
    detail: list[dict[str, Any]] = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    if is_v2(request.url.path):
        return JSONResponse({"error": describe(detail)}, status_code=400)
    return JSONResponse({"detail": detail}, status_code=422)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """FastAPI's own answer off /v2; on /v2 (the token check's 401, an unknown path's 404, a
    route's refusals) {"error": ...} with the same status, but 400 for a 422 as in KServe."""
    assert isinstance(exc, StarletteHTTPException)
    if not is_v2(request.url.path):
        return await http_exception_handler(request, exc)
    status = 400 if exc.status_code == 422 else exc.status_code
    return JSONResponse({"error": describe(exc.detail)}, status_code=status,
                        headers=exc.headers)


def _count_schema_refusal(request: Request, exc: RequestValidationError) -> None:
    """A body the schema refuses never reaches the predict/feedback/infer handlers, which count
    their own refusals; count it here the same way (a request, or the items it carried)."""
    ctx = getattr(request.app.state, "ctx", None)
    if ctx is None:
        return
    path = request.url.path
    if path == "/v1/predict" or (is_v2(path) and request.method == "POST"):  # POST: infer
        ctx.metrics.requests_by_status["client_error"].inc()
    elif path == "/v1/feedback":
        items = exc.body.get("items") if isinstance(exc.body, dict) else None
        if isinstance(items, list) and items:
            ctx.metrics.feedback_by_outcome["rejected"].inc(len(items))
