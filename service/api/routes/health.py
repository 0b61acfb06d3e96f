"""Liveness, readiness and Prometheus metrics: open without a token."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.deps import Ctx
from service.store.connection import UNAVAILABLE

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(ctx: Ctx) -> JSONResponse:
    served = ctx.holder.served
    try:
        await ctx.redis.ping()
        redis_ok = True
    except UNAVAILABLE:
        redis_ok = False
    body = {
        "ready": served is not None,
        "model_version": served.version if served else None,
        "redis": redis_ok,
    }
    return JSONResponse(body, status_code=200 if served is not None else 503)


@router.get("/metrics", response_class=Response)
async def metrics(ctx: Ctx) -> Response:
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
