"""Typed dependency aliases for route handlers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from service.api.context import AppContext
from service.api.model_prefix import SCOPE_KEY


async def get_context(request: Request) -> AppContext:
    """The context of the model the request names (`/v1/models/{name}/…`), else the
    default model's."""
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hand-off per
    # request that cost about half of predict's time (profiled).
    name = request.scope.get(SCOPE_KEY)
    if name is None:
        return request.app.state.ctx
    return context_of(request, name)


def context_of(request: Request, name: str) -> AppContext:
    """The context of the model `name`; 404 naming it when this deployment has none."""
    ctx: AppContext | None = request.app.state.models.get(name)
    if ctx is None:
        raise HTTPException(404, f"unknown model {name!r} (GET /v1/models lists them)")
    return ctx


Ctx = Annotated[AppContext, Depends(get_context)]
