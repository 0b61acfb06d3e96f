"""Opening a deployment: what every process (API or learner) does before serving or learning."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from service.config import Settings
from service.store.connection import (
    StoreError,
    check_noeviction,
    check_strict_durability,
    open_redis,
    wait_until_reachable,
)
from service.store.keys import Keys
from service.store.registry import DeploymentIdentity, Registry
from service.store.scripts import Scripts
from service.versioning import initial_version


@dataclass(frozen=True)
class Deployment:
    redis: Redis
    keys: Keys
    scripts: Scripts
    registry: Registry


async def open_store(settings: Settings, models: int = 1) -> Redis:
    """Connect (a pool sized for `models`) and refuse an unfit server (eviction on; strict
    durability without WAITAOF). The client is closed again when a check refuses."""
    if not settings.external_redis:
        raise StoreError("MNEMO_REDIS_URL is required (`run` starts an embedded server)")
    redis = open_redis(settings, models)
    try:
        await wait_until_reachable(redis)
        await check_noeviction(redis)
        if settings.durability == "strict":
            await check_strict_durability(redis)
    except BaseException:
        await redis.aclose()
        raise
    return redis


async def open_model(settings: Settings, redis: Redis) -> Deployment:
    """One model's store on a checked client: refuse stored state that disagrees with the
    settings, and create version 0 on the first start."""
    keys = Keys(settings.model_name)
    scripts = Scripts(redis)
    registry = Registry(redis, keys, scripts)
    meta, weights = initial_version(settings)
    identity = DeploymentIdentity.of(settings)
    await registry.init_deployment(identity, settings.labels, meta, weights)
    return Deployment(redis, keys, scripts, registry)


async def open_deployment(settings: Settings) -> Deployment:
    """open_store, then open_model on it (the client is closed when either refuses)."""
    redis = await open_store(settings)
    try:
        return await open_model(settings, redis)
    except BaseException:
        await redis.aclose()
        raise
