"""Liveness, readiness and Prometheus metrics: open without a token."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.deps import Ctx
from service.store.connection import UNAVAILABLE

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(ctx: Ctx, request: Request) -> JSONResponse:
    """Ready once every model has a version loaded; model_version is the default model's."""
    versions = {name: model.holder.served.version if model.holder.served else None
                for name, model in request.app.state.models.items()}
    try:
        await ctx.redis.ping()
        redis_ok = True
    except UNAVAILABLE:
        redis_ok = False
    ready = None not in versions.values()
    body = {
        "ready": ready,
        "model_version": versions[ctx.settings.model_name],
        "redis": redis_ok,
        "models": versions,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response)
async def metrics(ctx: Ctx) -> Response:
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
