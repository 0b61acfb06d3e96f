"""How JSON request bodies are read: the hot routes (predict, feedback) and every other route
that takes a JSON body.

A route class for the hot JSON routes (predict, feedback): the OpenAPI schema still comes
from the declared endpoint (body model, response model, responses), but at run time the body
is parsed once, straight from bytes, by pydantic-core's JSON parser into the same strict model,
and the endpoint is called without FastAPI's per-request dependency solving. Profiled, that
solving and the json.loads + validate_python double pass were most of predict's own cost.

`install_hot_routes` then sends a POST to a lean route's exact path straight to that handler,
past the router's linear matching over every route and FastAPI's per-request wrapper; it sits
inside the app's middleware, so error handling, exception handlers, the body limit, request
ids and CORS apply unchanged.

Contract kept: the route's own dependencies (the token check, declared on its router: those
given at include time are not seen here) run first, so an unauthenticated
client still gets 401 and never a validation error; schema refusals raise the same
RequestValidationError (locations under "body") the app's handler formats and counts.

Bodies are JSON by one strict parser, `parse_json_body`, on the lean routes and on routes of
`StrictJsonRoute` (/v2): a body that is no JSON, whatever its shape (nested 100,000 deep,
NaN, a lone surrogate, bytes that are no UTF-8), is one json_invalid error, never a
RecursionError 500 or FastAPI's bare 400 (errors.py maps that one to the same error on
routes of FastAPI's own class).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from pydantic_core import from_json, to_json
from starlette._utils import get_route_path
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.deps import get_context

Endpoint = Callable[[Any, Any], Awaitable[Response]]
Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class LeanJSONResponse(JSONResponse):
    """JSONResponse rendered by pydantic-core (byte-identical for these bodies, ~8x faster
    than json.dumps on a 16-row predict answer: float formatting dominated)."""

    def render(self, content: Any) -> bytes:
        return to_json(content)


class LeanJsonRoute(APIRoute):
    """For `async def endpoint(body: Model, ctx: Ctx) -> Response` routes whose dependencies
    are `async def dep(request)` checks."""

    def get_route_handler(self) -> Handler:
        self.lean_handler = self._lean_handler()
        return self.lean_handler

    def _lean_handler(self) -> Handler:
        assert self.body_field is not None, f"{self.path}: a lean route needs a body model"
        model: type[BaseModel] = self.body_field.field_info.annotation  # type: ignore[assignment]
        checks = [d.dependency for d in self.dependencies]
        for check in checks:
            assert check is not None and inspect.iscoroutinefunction(check), check
            assert list(inspect.signature(check).parameters) == ["request"], check
        endpoint: Endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            for check in checks:
                await check(request)  # type: ignore[misc]
            ctx = await get_context(request)
            raw = await read_body(request)
            body = _validate_fast(model, raw)
            if body is None:  # refused: parse and validate again, for FastAPI's own errors
                body = _validate_as_fastapi_does(model, parse_json_body(raw))
            return await endpoint(body, ctx)

        return handle


def _validate_fast(model: type[BaseModel], raw: bytes) -> BaseModel | None:
    """One pass of pydantic-core's JSON mode, or None where it refuses the body. That mode
    reads NaN and Infinity as numbers, which JSON has not: a body with any N or I byte
    (memchr, ~0.3 us for a 16-row predict) takes the strict path, which also accepts the
    body when those letters were only inside strings."""
    if b"N" in raw or b"I" in raw:
        return None
    try:
        return model.model_validate_json(raw)
    except ValidationError:  # not raised from here: its text quotes the body
        return None


class _HotRoutes:
    """Exact-path dispatch of POSTs to lean routes; everything else goes to the router."""

    def __init__(self, routes: list[LeanJsonRoute], router: Any, fallback: ASGIApp) -> None:
        self._routes = {route.path: route for route in routes}
        self._router = router
        self._fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = (self._routes.get(get_route_path(scope))
                 if scope["type"] == "http" and scope["method"] == "POST" else None)
        if route is None:
            await self._fallback(scope, receive, send)
            return
        # What the router's match would have put in the scope (url_for, exception handlers).
        scope.setdefault("router", self._router)
        scope.update(endpoint=route.endpoint, route=route, path_params={})
        response = await route.lean_handler(Request(scope, receive, send))
        await response(scope, receive, send)


def install_hot_routes(app: FastAPI, routers: list[APIRouter]) -> None:
    """Route POSTs to these routers' lean routes by exact path (the routers are included in
    `app` without a prefix)."""
    lean = [r for router in routers for r in router.routes
            if isinstance(r, LeanJsonRoute) and r.methods == {"POST"} and not r.param_convertors]
    app.router.middleware_stack = _HotRoutes(lean, app.router, app.router.middleware_stack)


class StrictJsonRoute(APIRoute):
    """An APIRoute (declared as FastAPI has it) whose JSON body is parsed by
    `parse_json_body` before FastAPI's handler runs. FastAPI reads the parsed value back from
    `request.json()` (Starlette caches it in `_json`) and never runs its own json.loads, which
    recursed into a RecursionError on deep nesting, answered 400 "There was an error parsing
    the body" for that and for bytes that are no UTF-8, and let NaN and lone surrogates in."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        if self.body_field is None:  # the body, if any, is not read: nothing to parse
            return handler
        required = self.body_field.field_info.is_required()

        async def handle(request: Request) -> Response:
            raw = await read_body(request)
            if raw or required:  # an empty optional body stays absent, as FastAPI has it
                parsed = parse_json_body(raw)
                if parsed is None and required:  # FastAPI < 0.151 reads null as "missing"
                    raise RequestValidationError([_NOT_AN_OBJECT])
                request._json = parsed  # type: ignore[attr-defined]
            return await handler(request)

        return handle


# What pydantic says of a JSON null where a body model belongs (every FastAPI version alike).
_NOT_AN_OBJECT = {"type": "model_attributes_type", "loc": ("body",), "input": None,
                  "msg": "Input should be a valid dictionary or object to extract fields from"}


async def read_body(request: Request) -> bytes:
    """The whole body; a client gone before its end is a 400 (nobody reads it)."""
    try:
        return await request.body()
    except ClientDisconnect:  # gone, or cut off by the body limit (which answered 413)
        raise HTTPException(400, "the client disconnected while sending the body") from None


_WHERE = re.compile(r"^(.*) at line (\d+) column (\d+)$")


def parse_json_body(raw: bytes) -> Any:
    """Strict JSON (RFC 8259) by pydantic-core's parser: UTF-8 text only, no NaN or Infinity,
    no lone surrogate escapes, at most 200 levels deep (its limit), integers of at most
    4,300 digits. Duplicate keys: the last one counts, as in every parser here. A number
    beyond float range (1e400) reads as infinity, which the value checks refuse where it
    stands. Anything else is one json_invalid error at the byte where parsing stopped, whose
    message never quotes the body."""
    try:
        return from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        refusal = _json_invalid(raw, str(exc))
    raise refusal  # outside the except: no chained context in a traceback


def _json_invalid(raw: bytes, reason: str) -> RequestValidationError:
    try:
        raw.decode()  # the parser only says "expected value" for bytes that are no text
    except UnicodeDecodeError as exc:
        return _decode_error(exc.start, f"the body is not UTF-8 text ({exc.reason})")
    where = _WHERE.match(reason)
    if where is None:
        return _decode_error(0, reason)
    what, line, column = where[1], int(where[2]), int(where[3])
    if what.startswith("EOF"):
        return _decode_error(len(raw), what)
    start = 0  # the parser counts lines by "\n" and columns in bytes, from 1
    for _ in range(line - 1):
        start = raw.find(b"\n", start) + 1
    return _decode_error(min(start + max(column - 1, 0), len(raw)), what)


def _decode_error(offset: int, what: str) -> RequestValidationError:
    """FastAPI's shape for a body that is no JSON (its offset counts characters, this one
    bytes: the same for ASCII)."""
    return RequestValidationError([{
        "type": "json_invalid", "loc": ("body", offset), "msg": f"JSON decode error: {what}",
        "input": {},
    }])


def _validate_as_fastapi_does(model: type[BaseModel], decoded: Any) -> BaseModel:
    """The refusal path: validation of Python values as FastAPI does it (from_attributes
    too), so a refused body gets exactly the messages it always got (JSON-mode messages
    differ: "valid array" for "valid list")."""
    try:
        return model.model_validate(decoded, from_attributes=True)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])}
                  for error in exc.errors(include_url=False)]
        refusal = RequestValidationError(errors, body=decoded)
    raise refusal
