"""Redis connections and the start-up checks every process makes."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from service.config import Settings

log = logging.getLogger(__name__)

# What "Redis cannot take this now" looks like to callers: answer 503 / log false, never 500.
# Unreachable or hung (connection errors, timeouts; a server still loading its data is a
# ConnectionError too), full (OOM under maxmemory with noeviction: reads and deletes still
# work, writes do not) and read-only (a replica, or a primary demoted by a failover).
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OutOfMemoryError, ReadOnlyError, OSError)


class StoreError(RuntimeError):
    """Stored state or the Redis server is unfit for this deployment; refuse to start."""


def open_redis(settings: Settings) -> Redis:
    """The client for MNEMO_REDIS_MODE: standalone (MNEMO_REDIS_URL)."""
    assert settings.redis_url is not None
    return connect(settings.redis_url, settings.redis_timeout_seconds)


def connect(url: str, timeout: float) -> Redis:
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        decode_responses=False,
    )


async def wait_until_reachable(redis: Redis, attempts: int = 20, delay: float = 0.25) -> None:
    for attempt in range(attempts):
        try:
            await redis.ping()
            return
        except UNAVAILABLE as exc:
            if attempt == attempts - 1:
                raise StoreError(f"Redis is not reachable: {exc}") from exc
            await asyncio.sleep(delay)


async def check_noeviction(redis: Redis) -> None:
    """Mnemo's keys are data, not cache: an evicting server would silently lose labels."""
    try:
        config = await redis.config_get("maxmemory-policy")
    except ResponseError:  # CONFIG disabled (managed Redis): nothing to check against
        log.warning("cannot read maxmemory-policy; make sure it is noeviction")
        return
    except RedisError as exc:
        raise StoreError(f"cannot read maxmemory-policy: {exc}") from exc
    # redis-py 8 answers CONFIG GET with str keys and values even without decode_responses.
    policy = config.get("maxmemory-policy", config.get(b"maxmemory-policy"))
    if isinstance(policy, bytes):
        policy = policy.decode()
    if policy is not None and policy != "noeviction":
        raise StoreError(
            f"Redis maxmemory-policy is {policy}; Mnemo needs noeviction "
            "(its keys are data, not cache)"
        )


async def check_strict_durability(redis: Redis) -> None:
    """MNEMO_DURABILITY=strict answers 202 only after WAITAOF: refuse to start where the
    server cannot give that promise (no WAITAOF before Redis 7.2, or AOF switched off)."""
    try:
        await redis.execute_command("WAITAOF", 1, 0, 100)
    except ResponseError as exc:
        raise StoreError(
            f"MNEMO_DURABILITY=strict needs WAITAOF with appendonly yes on the server: {exc}"
        ) from exc
