"""A route class for the hot JSON routes (predict, feedback): the OpenAPI schema still comes
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
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from pydantic_core import to_json
from starlette._utils import get_route_path
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Any, Any], Awaitable[Response]]


class LeanJSONResponse(JSONResponse):
    """JSONResponse rendered by pydantic-core (byte-identical for these bodies, ~8x faster
    than json.dumps on a 16-row predict answer: float formatting dominated)."""

    def render(self, content: Any) -> bytes:
        return to_json(content)


class LeanJsonRoute(APIRoute):
    """For `async def endpoint(body: Model, ctx: Ctx) -> Response` routes whose dependencies
    are `async def dep(request)` checks."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        self.lean_handler = self._lean_handler()
        return self.lean_handler

    def _lean_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
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
            try:
                raw = await request.body()
            except ClientDisconnect:  # gone, or cut off by the body limit (which answered 413)
                raise HTTPException(400, "the client disconnected while sending the body") \
                    from None
            try:
                body = model.model_validate_json(raw)
            except ValidationError:
                body = _validate_as_fastapi_does(model, raw)
            return await endpoint(body, request.app.state.ctx)

        return handle


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


def _validate_as_fastapi_does(model: type[BaseModel], raw: bytes) -> BaseModel:
    """The refusal path: FastAPI's own two passes (json.loads, then validation of Python
    values), so a refused body gets exactly the messages it always got (JSON-mode messages
    differ: "valid array" for "valid list")."""
    try:
        decoded = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RequestValidationError([{
            "type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error",
            "input": {}, "ctx": {"error": exc.msg},
        }], body=exc.doc) from None
    except UnicodeDecodeError as exc:  # bytes that are no UTF-8/16/32 text at all
        raise RequestValidationError([{
            "type": "json_invalid", "loc": ("body", exc.start),
            "msg": f"JSON decode error: the body is not UTF-8 text ({exc.reason})", "input": {},
        }]) from None
    try:
        return model.model_validate(decoded)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])}
                  for error in exc.errors(include_url=False)]
        raise RequestValidationError(errors, body=decoded) from None
