"""open_redis picks the client MNEMO_REDIS_MODE names, with the same timeouts everywhere; and
the prediction log's own connection works on both of its paths: the packed write on a kept
connection (standalone, Sentinel) and the public pipeline it falls back to (a cluster client,
or a redis-py without the internals the fast path uses). The cluster and Sentinel clients
against real servers: tests/reliability/test_redis_cluster.py and test_sentinel.py."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ResponseError

from service.config import Settings
from service.store.connection import (
    SentinelRedis,
    StoreError,
    connect,
    follows_failover,
    is_cluster,
    open_redis,
    pool_size,
)
from service.store.dedicated import DedicatedConnection, fast_path_available
from service.store.keys import Keys
from tests.conftest import REDIS_URL


def settings(**values: object) -> Settings:
    return Settings(input_dim=4, redis_timeout_seconds=1.5, **values)  # type: ignore[arg-type]


async def test_standalone_is_the_plain_client_of_the_url() -> None:
    client = open_redis(settings(redis_url=REDIS_URL))
    try:
        assert type(client) is Redis and not is_cluster(client) and not follows_failover(client)
        options = client.connection_pool.connection_kwargs
        assert options["socket_timeout"] == options["socket_connect_timeout"] == 1.5
        assert await client.ping()
    finally:
        await client.aclose()


async def test_cluster_is_the_cluster_client_seeded_by_the_url() -> None:
    client = open_redis(settings(redis_mode="cluster", redis_url="redis://127.0.0.1:7000/0"))
    try:
        assert isinstance(client, RedisCluster) and is_cluster(client) and follows_failover(client)
        assert not fast_path_available(client)  # no single pool: the pipeline path
    finally:
        await client.aclose()  # never connected: nothing to close but the object


def test_a_cluster_has_no_database_but_0() -> None:
    with pytest.raises(StoreError, match="database 0"):
        open_redis(settings(redis_mode="cluster", redis_url="redis://127.0.0.1:7000/3"))


async def test_sentinel_asks_the_sentinels_and_takes_credentials_and_db_from_the_url() -> None:
    client = open_redis(settings(
        redis_mode="sentinel", sentinels="10.0.0.1:26379,[::1]:26380", sentinel_master="main",
        redis_url="rediss://app:s3cret@ignored.example:6380/2?ssl_cert_reqs=none"))
    try:
        assert isinstance(client, SentinelRedis) and follows_failover(client)
        pool = client.connection_pool
        assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "main"
        options = pool.connection_kwargs
        # The primary: the URL's username, password, database and TLS; its host is unused.
        assert (options["username"], options["password"], options["db"]) == ("app", "s3cret", 2)
        assert "host" not in options and pool.connection_class.__name__.endswith("SSLConnection")
        assert options["socket_timeout"] == options["socket_connect_timeout"] == 1.5
        # The sentinels: the addresses, the same timeouts and TLS, not the primary's password.
        assert client.sentinel is not None
        sentinels = client.sentinel.sentinels
        assert [(s.connection_pool.connection_kwargs["host"],
                 s.connection_pool.connection_kwargs["port"]) for s in sentinels] == \
            [("10.0.0.1", 26379), ("::1", 26380)]
        for sentinel in sentinels:
            kwargs = sentinel.connection_pool.connection_kwargs
            assert kwargs["socket_timeout"] == 1.5 and kwargs.get("password") is None
            assert sentinel.connection_pool.connection_class.__name__ == "SSLConnection"
        assert fast_path_available(client)  # one pool, Sentinel-managed connections
    finally:
        await client.aclose()


def test_sentinel_without_a_url_is_plain_tcp_database_0() -> None:
    client = open_redis(settings(redis_mode="sentinel", sentinels="127.0.0.1:26379"))
    options = client.connection_pool.connection_kwargs
    assert options.get("db", 0) == 0 and "password" not in options


def test_run_embeds_a_standalone_server() -> None:
    # No URL and no sentinels: `run` starts its embedded Valkey and hands its URL on.
    plain = settings()
    assert plain.redis_mode == "standalone" and not plain.external_redis
    with pytest.raises(StoreError, match="MNEMO_REDIS_URL is required"):
        open_redis(plain)
    assert type(open_redis(plain.model_copy(update={"redis_url": REDIS_URL}))) is Redis


@pytest.mark.parametrize("fast", [True, False], ids=["packed write", "pipeline fallback"])
async def test_both_paths_of_the_log_connection_run_the_commands_in_order(
        model_name: str, fast: bool) -> None:
    redis = connect(REDIS_URL, 5)
    keys = Keys(model_name)
    key, text = keys.prediction_batch("a"), keys.prediction_batch("text")
    conn = DedicatedConnection(redis, fast=fast)
    assert conn.fast is fast
    try:
        await conn.open()
        replies = await conn.execute([("SET", key, b"v1", "EX", 60), ("APPEND", key, b"23"),
                                      ("GET", key), ("TTL", key)])
        assert replies[1:3] == [4, b"v123"] and 0 < replies[3] <= 60
        assert replies[0] in (b"OK", True)  # raw on the fast path, parsed by the pipeline
        await redis.set(text, b"not a number")
        with pytest.raises(ResponseError, match="not an integer"):
            await conn.execute([("INCR", text), ("SET", keys.prediction_batch("n"), b"1")])
        assert await redis.get(keys.prediction_batch("n")) == b"1"  # the rest still ran
        assert await conn.execute([("GET", key)]) == [b"v123"]  # nothing left over
    finally:
        await conn.close()
        await redis.aclose()


async def test_the_pool_has_room_for_every_model_in_every_mode() -> None:
    """Each model keeps connections of its own (the API's log writer and version follower,
    the learner's blocking read): redis-py's default of 100 ran out at about 35 models."""
    standalone = open_redis(settings(redis_url=REDIS_URL), models=100)
    sentinel = open_redis(settings(redis_mode="sentinel", sentinels="127.0.0.1:26379"),
                          models=100)
    cluster = open_redis(settings(redis_mode="cluster", redis_url="redis://127.0.0.1:7000/0"),
                         models=100)
    try:
        assert pool_size(100) >= 100 + 3 * 100
        assert standalone.connection_pool.max_connections == pool_size(100)
        assert sentinel.connection_pool.max_connections == pool_size(100)
        assert cluster.connection_kwargs["max_connections"] == pool_size(100)  # type: ignore[attr-defined]
        # A URL's own max_connections wins.
        own = open_redis(settings(redis_url=REDIS_URL + "?max_connections=7"), models=100)
        assert own.connection_pool.max_connections == 7
        await own.aclose()
    finally:
        for client in (standalone, sentinel, cluster):
            await client.aclose()
