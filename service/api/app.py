"""The app factory: everything is built in the lifespan from injected settings (no globals)."""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.auth import require_api_token
from service.api.context import AppContext
from service.api.errors import http_error_handler, validation_error_handler
from service.api.lean_route import install_hot_routes
from service.api.middleware import BodyLimitMiddleware, RequestIdMiddleware
from service.api.model_prefix import ModelPrefixMiddleware
from service.api.routes import admin, dashboard, feedback, health, predict, stats, v2, versions
from service.api.routes import models as catalog_routes
from service.api.unavailable import redis_unavailable_handler, unavailable_error_types
from service.catalog import load_models
from service.config import Settings
from service.monitor.api_metrics import ApiMetrics
from service.serving.batcher import MicroBatcher
from service.serving.follower import VersionFollower
from service.serving.holder import ModelHolder
from service.store.control import Control
from service.store.deployment import open_model, open_store
from service.store.feedback import FeedbackStore
from service.store.golden import GoldenSet
from service.store.predictions import PredictionLog
from service.store.stats import StatsStore
from service.version import package_version

log = logging.getLogger(__name__)


async def build_context(settings: Settings, redis: Redis,
                        metrics_registry: CollectorRegistry) -> AppContext:
    """One model's context on the process's shared client and metrics registry."""
    deployment = await open_model(settings, redis)
    keys, scripts = deployment.keys, deployment.scripts
    holder = ModelHolder()
    metrics = ApiMetrics(metrics_registry, settings.model_name, process_metrics=True)
    predictions = PredictionLog(redis, keys, settings.input_dim, settings.prediction_ttl_seconds,
                                settings.prediction_log_max_bytes,
                                records=settings.features is not None)
    metrics.watch_prediction_log(lambda: predictions.budget.used,
                                 settings.prediction_log_max_bytes)
    return AppContext(
        settings=settings,
        redis=redis,
        keys=keys,
        registry=deployment.registry,
        feedback=FeedbackStore(redis, keys, scripts, strict=settings.durability == "strict",
                               dedupe_window_seconds=settings.prediction_ttl_seconds),
        predictions=predictions,
        golden=GoldenSet(redis, keys, scripts),
        stats=StatsStore(redis, keys),
        holder=holder,
        control=Control(redis, keys),
        metrics=metrics,
        batcher=MicroBatcher(holder, predictions, metrics, settings.batch_max_rows,
                             settings.batch_max_wait_ms / 1000,
                             routes_by_tag=settings.routes_by_tag),
    )


async def build_contexts(models: list[Settings], redis: Redis) -> dict[str, AppContext]:
    """Every model's context, the default (first) model first, sharing one registry."""
    metrics_registry = CollectorRegistry(auto_describe=True)
    return {model.model_name: await build_context(model, redis, metrics_registry)
            for model in models}


def without_framework_telemetry() -> dict[str, object]:
    """FastAPI >= 0.16x checks for an OpenTelemetry provider on every request (os.environ
    reads, profiled at about a quarter of predict's CPU); Mnemo exports Prometheus metrics and
    does not use it. Older FastAPI has no such option."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def freeze_startup_objects() -> None:
    """Move everything built so far (torch, FastAPI, the model: ~200k objects) out of the
    collector's reach. Otherwise each full collection traverses them all, a 50-300 ms stall
    every few seconds under load (measured with gc.callbacks), which is the latency tail.
    Later garbage is still collected; only these long-lived objects are never rescanned."""
    gc.collect()
    gc.freeze()


def create_app(settings: Settings, models: list[Settings] | None = None) -> FastAPI:
    """The API of every model `models` lists (default: MNEMO_MODELS, else the one model of
    `settings`); the first is the default model, served by the unprefixed /v1 routes."""
    models = load_models(settings) if models is None else models

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = await open_store(settings, len(models))
        try:
            contexts = await build_contexts(models, redis)
        except BaseException:
            await redis.aclose()
            raise
        app.state.models = contexts
        app.state.ctx = next(iter(contexts.values()))
        followers = [VersionFollower(ctx.redis, ctx.keys, ctx.registry, ctx.holder, ctx.metrics,
                                     settings.swap_poll_seconds) for ctx in contexts.values()]
        for ctx, follower in zip(contexts.values(), followers, strict=True):
            await ctx.predictions.open()
            await follower.sync_once()
        tasks = [asyncio.create_task(f.run(), name=f"version-follower-{name}")
                 for name, f in zip(contexts, followers, strict=True)]
        freeze_startup_objects()
        try:
            yield
        finally:
            for follower in followers:
                follower.stop()
            _, pending = await asyncio.wait(tasks, timeout=5)
            if pending:
                log.warning("%d version followers did not stop in time", len(pending))
            for ctx in contexts.values():
                await ctx.predictions.close()
            await redis.aclose()

    app = FastAPI(
        title="Mnemo",
        version=package_version(),  # the OpenAPI document's version: the package's
        description="Online continual-learning model server: predict, send labels later, "
        "and the served model keeps learning without forgetting. Where the deployment serves "
        "several models (MNEMO_MODELS; GET /v1/models lists them), every /v1 route below also "
        "lives under /v1/models/{name}/ for each; unprefixed, it is the default model's.",
        lifespan=lifespan,
        **without_framework_telemetry(),
    )
    app.state.settings = settings
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)  # /v2 shape
    for error_type in unavailable_error_types():
        app.add_exception_handler(error_type, redis_unavailable_handler)
    protected = [Depends(require_api_token)]
    for router in (predict.router, feedback.router, versions.router, stats.router):
        app.include_router(router, dependencies=protected)
    app.include_router(admin.router)
    app.include_router(catalog_routes.router, dependencies=protected)
    app.include_router(health.router)
    app.include_router(dashboard.router)
    app.include_router(v2.open_router)  # Open Inference Protocol: health open, the rest
    app.include_router(v2.router)  # behind the API token (its own dependency)
    install_hot_routes(app, [predict.router, feedback.router])
    app.add_middleware(ModelPrefixMiddleware)  # innermost: logs show the path as sent
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["*"], allow_headers=["*"])
    app.add_middleware(RequestIdMiddleware)
    return app
