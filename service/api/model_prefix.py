"""`/v1/models/{name}/…` is `/v1/…` for the model `name`.

Every /v1 route of one model also lives under its name's prefix. Rather than declaring each
route twice, this ASGI middleware moves the name out of the path into the scope before
routing; handlers find their model's context through `service/api/deps.py`. `/v1/models` and
`/v1/models/{name}` themselves (the catalog) pass through untouched."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

PREFIX = "/v1/models/"
SCOPE_KEY = "mnemo.model"  # the model a prefixed request named; absent: the default model


class ModelPrefixMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PREFIX):
            name, slash, rest = scope["path"][len(PREFIX):].partition("/")
            if name and slash and rest:
                scope = {**scope, "path": f"/v1/{rest}", "raw_path": f"/v1/{rest}".encode(),
                         SCOPE_KEY: name}
        await self.app(scope, receive, send)
