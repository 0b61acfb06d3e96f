"""Redis connections and the start-up checks every process makes.

One client per process, by MNEMO_REDIS_MODE (open_redis): a plain client (standalone), the
cluster client (every key of a model carries the hash tag ``{model}``, so each model lives on
one slot and every script, pipeline and transaction stays on one node), or a client of the
primary that Sentinel names (a failover is followed on the next connection). Callers annotate
it as `Redis`: the cluster client is no subclass of it but answers every command Mnemo sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, Literal, cast

import redis.exceptions as _errors
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import ConnectionPool, SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from service.config import Settings
    from service.store.keys import Keys

log = logging.getLogger(__name__)

# What "Redis cannot take this now" looks like to callers: answer 503 / log false, never 500.
# Unreachable or hung (connection errors, timeouts; a server still loading its data is a
# ConnectionError too), full (OOM under maxmemory with noeviction: reads and deletes still
# work, writes do not) and read-only (a replica, or a primary demoted by a failover). On a
# cluster also: a slot without a live primary while a failover runs (CLUSTERDOWN, TRYAGAIN,
# an uncovered slot, no node reachable: newer redis-py names that last one).
UNAVAILABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, OutOfMemoryError, ReadOnlyError, OSError,
    ClusterDownError, TryAgainError, SlotNotCoveredError,
    *((_errors.RedisClusterUnreachableError,)
      if hasattr(_errors, "RedisClusterUnreachableError") else ()),
)


class StoreError(RuntimeError):
    """Stored state or the Redis server is unfit for this deployment; refuse to start."""


# redis-py's pool default (100 connections) is for the requests in flight; every model of
# the process also keeps some for itself: the API its prediction-log writer and its version
# follower's subscription, the learner its blocking stream read and its lease renewals.
POOL_BASE = 100
POOL_PER_MODEL = 4


def pool_size(models: int) -> int:
    """Connections one process may open (per node on a cluster) when it serves `models`."""
    return POOL_BASE + POOL_PER_MODEL * models


def open_redis(settings: Settings, models: int = 1) -> Redis:
    """The client for MNEMO_REDIS_MODE: standalone (MNEMO_REDIS_URL), cluster (MNEMO_REDIS_URL
    names any node) or sentinel (MNEMO_SENTINELS find MNEMO_SENTINEL_MASTER; the URL, when
    set, gives the primary's credentials, database and TLS). The same timeouts everywhere;
    a pool sized for `models` (a `max_connections` in the URL wins)."""
    timeout = settings.redis_timeout_seconds
    size = pool_size(models)
    if settings.redis_mode == "cluster":
        assert settings.redis_url is not None  # the settings refuse cluster without it
        return connect_cluster(settings.redis_url, timeout, size)
    if settings.redis_mode == "sentinel":
        return connect_sentinel(settings.sentinels, settings.sentinel_master, timeout,
                                settings.redis_url, size)
    if settings.redis_url is None:
        raise StoreError("MNEMO_REDIS_URL is required (`run` starts an embedded server)")
    return connect(settings.redis_url, timeout, size)


def _timeouts(timeout: float) -> dict[str, Any]:
    return {"socket_timeout": timeout, "socket_connect_timeout": timeout,
            "health_check_interval": 30, "decode_responses": False}


def connect(url: str, timeout: float, max_connections: int = POOL_BASE) -> Redis:
    return Redis.from_url(url, max_connections=max_connections, **_timeouts(timeout))


def connect_cluster(url: str, timeout: float, max_connections: int = POOL_BASE) -> Redis:
    """The cluster client, seeded by one node (it discovers the others and follows slot
    moves and failovers itself)."""
    if parse_url(url).get("db", 0) not in (0, None):
        raise StoreError("a Redis Cluster has database 0 only: drop the /<db> from MNEMO_REDIS_URL")
    return cast(Redis, RedisCluster.from_url(url, max_connections=max_connections,
                                             **_timeouts(timeout)))


class SentinelRedis(Redis):
    """The client of the primary that Sentinel names; closing it closes the clients of the
    sentinels too (redis-py leaves those open)."""

    sentinel: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel is not None:
            for client in self.sentinel.sentinels:
                await client.aclose()


def connect_sentinel(sentinels: list[str], master: str, timeout: float,
                     url: str | None = None, max_connections: int = POOL_BASE) -> Redis:
    """A client of `master` as the sentinels name it: each new connection asks them where the
    primary is, and a connection to a demoted or dead one is dropped, so a failover is
    followed without a restart. `url`'s username, password and database apply to the primary
    (and so its replicas) only; its TLS (rediss://, ssl_* parameters) to the sentinels too.
    Its host and port are not used."""
    primary: dict[str, Any] = dict(parse_url(url)) if url else {}
    if primary.get("path"):
        raise StoreError("MNEMO_REDIS_MODE=sentinel needs a redis:// or rediss:// MNEMO_REDIS_URL")
    for name in ("host", "port"):
        primary.pop(name, None)
    if primary.pop("connection_class", None) is SSLConnection:
        primary["ssl"] = True  # SentinelConnectionPool picks its TLS connection class by this
    tls = {k: v for k, v in primary.items() if k == "ssl" or k.startswith("ssl_")}
    options = _timeouts(timeout)
    manager = Sentinel(
        [_address(a) for a in sentinels],
        sentinel_kwargs={**{k: v for k, v in options.items() if k.startswith("socket_")}, **tls},
        **options,
    )
    client = manager.master_for(master, redis_class=SentinelRedis,
                                **{"max_connections": max_connections, **primary})
    client.sentinel = manager
    return client


def _address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)  # [::1]:26379 -> ::1


def is_cluster(redis: Redis) -> bool:
    return isinstance(redis, RedisCluster)


def follows_failover(redis: Redis) -> bool:
    """Whether the client follows a primary failover (cluster, Sentinel): there a write is
    only as safe as the replica that may be promoted, so strict durability waits for one."""
    return is_cluster(redis) or isinstance(redis.connection_pool, SentinelConnectionPool)


async def node_of(redis: Redis, key: str) -> ClusterNode:
    """The cluster node serving `key`'s slot now (the client learns the slots first)."""
    cluster = cast(RedisCluster, redis)
    await cluster.initialize()  # returns at once where it knows them
    return cluster.get_node_from_key(key)


@contextlib.asynccontextmanager
async def node_client(redis: Redis, key: str) -> AsyncIterator[Redis]:
    """A client whose pipelines run on the node serving `key`: on a cluster a plain client of
    that node (the cluster's credentials, TLS and timeouts; closed on exit) — the cluster
    pipeline may re-route a command on retry (a keyless one then goes to every primary), so
    it cannot keep commands on one connection — elsewhere the client itself. A node no longer
    serving the slot answers MOVED (an error reply)."""
    if not is_cluster(redis):
        yield redis
        return
    node = await node_of(redis, key)
    # No retry of its own: a node that went away is the cluster client's to route around.
    options = {**node.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
    client = Redis.from_pool(ConnectionPool(connection_class=node.connection_class, **options))
    try:
        yield client
    finally:
        await client.aclose()


async def scan_model_keys(redis: Redis, keys: Keys, match: str) -> AsyncIterator[bytes]:
    """SCAN for `match` among one model's keys: on a cluster only on the primary that holds
    the model's slot (no other node has any of them), elsewhere over the one server."""
    route = {"target_nodes": await node_of(redis, keys.meta)} if is_cluster(redis) else {}
    async for key in redis.scan_iter(match=match, count=1000, **route):
        yield key


async def wait_until_reachable(redis: Redis, attempts: int = 20, delay: float = 0.25) -> None:
    for attempt in range(attempts):
        try:
            await redis.ping()
            return
        except (*UNAVAILABLE, RedisClusterException) as exc:  # a cluster client finding none
            if attempt == attempts - 1:
                raise StoreError(f"Redis is not reachable: {exc}") from exc
            await asyncio.sleep(delay)


async def _on_every_primary(redis: Redis, *command: Any) -> list[Any]:
    """One command's reply from each primary: a cluster's (its slots are all Mnemo's), or the
    one server."""
    if not is_cluster(redis):
        return [await redis.execute_command(*command)]
    cluster = cast(RedisCluster, redis)
    replies = await cluster.execute_command(*command, target_nodes=RedisCluster.PRIMARIES)
    # Several nodes answer as {node name: reply}; a one-node cluster answers plainly.
    if isinstance(replies, dict) and len(cluster.get_primaries()) > 1:
        return list(replies.values())
    return [replies]


async def check_noeviction(redis: Redis) -> None:
    """Mnemo's keys are data, not cache: an evicting server would silently lose labels. On a
    cluster every primary must say noeviction (a model may live on any of them)."""
    try:
        replies = await _on_every_primary(redis, "CONFIG GET", "maxmemory-policy")
    except ResponseError:  # CONFIG disabled (managed Redis): nothing to check against
        log.warning("cannot read maxmemory-policy; make sure it is noeviction")
        return
    except RedisError as exc:
        raise StoreError(f"cannot read maxmemory-policy: {exc}") from exc
    for config in replies:
        policy = _config_value(config, "maxmemory-policy")
        if policy is not None and policy != "noeviction":
            raise StoreError(
                f"Redis maxmemory-policy is {policy}; Mnemo needs noeviction "
                "(its keys are data, not cache)"
            )


def _config_value(config: Any, name: str) -> str | None:
    """CONFIG GET's value: redis-py answers with a dict (str or bytes keys, by version) or,
    for a raw reply, a flat [name, value] list."""
    if isinstance(config, (list, tuple)):
        config = dict(zip(config[::2], config[1::2], strict=True))
    value = config.get(name, config.get(name.encode()))
    return value.decode() if isinstance(value, bytes) else value


async def check_strict_durability(redis: Redis) -> None:
    """MNEMO_DURABILITY=strict answers 202 only after WAITAOF: refuse to start where the
    server cannot give that promise (no WAITAOF before Redis 7.2, or AOF switched off) — on
    a cluster, any primary."""
    try:
        await _on_every_primary(redis, "WAITAOF", 1, 0, 100)
    except ResponseError as exc:
        raise StoreError(
            f"MNEMO_DURABILITY=strict needs WAITAOF with appendonly yes on the server: {exc}"
        ) from exc


async def count_and_delete(redis: Redis, key: str, count: Literal["llen", "xlen"]) -> int:
    """Delete `key`, returning its size (the `count` command: llen, xlen) read in the same
    transaction: of two concurrent callers, one gets the size and the other 0."""
    pipe = redis.pipeline(transaction=True)
    pipe.execute_command(count.upper(), key)
    pipe.delete(key)
    size, _ = await pipe.execute()
    return int(size)
