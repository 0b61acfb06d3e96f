"""Opening a deployment: what every process (API or learner) does before serving or learning."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from service.config import Settings
from service.store.connection import (
    StoreError,
    check_noeviction,
    check_strict_durability,
    connect,
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


async def open_deployment(settings: Settings) -> Deployment:
    """Connect, refuse an unfit server (eviction on; strict durability without WAITAOF) or
    stored state that disagrees with the settings, and create version 0 on the first start.
    The client is closed again when any check refuses."""
    if settings.redis_url is None:
        raise StoreError("MNEMO_REDIS_URL is required (`run` starts an embedded server)")
    redis = connect(settings.redis_url, settings.redis_timeout_seconds)
    try:
        await wait_until_reachable(redis)
        await check_noeviction(redis)
        if settings.durability == "strict":
            await check_strict_durability(redis)
        keys = Keys(settings.model_name)
        scripts = Scripts(redis)
        registry = Registry(redis, keys, scripts)
        meta, weights = initial_version(settings)
        identity = DeploymentIdentity(settings.input_dim, settings.label_type, settings.model_name)
        await registry.init_deployment(identity, settings.labels, meta, weights)
    except BaseException:
        await redis.aclose()
        raise
    return Deployment(redis, keys, scripts, registry)
