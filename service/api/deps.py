"""Typed dependency aliases for route handlers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.api.context import AppContext


async def get_context(request: Request) -> AppContext:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hand-off per
    # request that cost about half of predict's time (profiled).
    return request.app.state.ctx


Ctx = Annotated[AppContext, Depends(get_context)]
