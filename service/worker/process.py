"""`python -m service learn`: one learner process (a standby until it holds the lease)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time

import torch
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.config import Settings
from service.monitor.learner_metrics import LearnerMetrics
from service.monitor.metrics_server import MetricsServer, start_metrics_server
from service.store.connection import UNAVAILABLE, check_noeviction, connect, wait_until_reachable
from service.store.keys import Keys
from service.store.registry import DeploymentIdentity, Registry
from service.store.scripts import Scripts
from service.versioning import initial_version
from service.worker.loop import LearnerService

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 8.0


def serve_metrics(settings: Settings, registry: CollectorRegistry) -> MetricsServer | None:
    """/metrics on MNEMO_LEARNER_METRICS_PORT (0: not served), behind MNEMO_API_TOKEN when it is
    set (the per-tag series name tags). A port already taken (a second learner on the same host)
    costs the metrics, never the learner. Returns the server, or None where nothing is served."""
    if settings.learner_metrics_port == 0:
        return None
    try:
        server = start_metrics_server(registry, settings.host, settings.learner_metrics_port,
                                      settings.api_token)
    except OSError as exc:
        log.warning("learner metrics not served on %s:%s: %s", settings.host,
                    settings.learner_metrics_port, exc)
        return None
    log.info("learner metrics on http://%s:%s/metrics%s", settings.host, server.port,
             " (bearer token required)" if settings.api_token else "")
    return server


async def _main(settings: Settings) -> int:
    assert settings.redis_url is not None
    registry = CollectorRegistry()
    metrics = LearnerMetrics(registry, settings.model_name, process_metrics=True)
    serve_metrics(settings, registry)
    redis = connect(settings.redis_url, settings.redis_timeout_seconds)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Finish the current step, then stop: nothing half-written (acks follow publishes).
        loop.add_signal_handler(sig, stop.set)
    try:
        await wait_until_reachable(redis)
        await check_noeviction(redis)
        # The learner may start before any API process: it creates version 0 the same way.
        meta, weights = initial_version(settings)
        identity = DeploymentIdentity(settings.input_dim, settings.label_type, settings.model_name)
        await Registry(redis, Keys(settings.model_name), Scripts(redis)).init_deployment(
            identity, settings.labels, meta, weights
        )
        return await _learn_until_stopped(settings, redis, metrics, stop)
    finally:
        await redis.aclose()


async def _learn_until_stopped(settings: Settings, redis: Redis, metrics: LearnerMetrics,
                               stop: asyncio.Event) -> int:
    """Run a learner; when Redis goes away or the lease is lost, drop everything in memory and
    start over from the last published version once Redis answers (what a restarted process
    would do, and proven by the crash tests), instead of exiting. Returns 0 once stopped."""
    failures = 0
    while True:
        service = LearnerService(settings, redis, metrics)
        started = time.monotonic()
        try:
            await service.run(stop)
        except (*UNAVAILABLE, RedisError) as exc:
            # A write may or may not have been applied: only the registry knows, so re-read it.
            # Any other Redis error too (a reply the code did not expect): restart, not exit.
            expected = isinstance(exc, UNAVAILABLE)
            log.log(logging.WARNING if expected else logging.ERROR,
                    "Redis error (%s: %s): restarting from the last published version once "
                    "it answers", type(exc).__name__, exc, exc_info=not expected)
            with contextlib.suppress(*UNAVAILABLE):
                await service.lease.release()
            # A full or read-only Redis still answers PING: back off (0.5 s, doubling to
            # 8 s) instead of restarting in a tight loop until it takes writes again.
            failures = 0 if time.monotonic() - started > MAX_BACKOFF_SECONDS else failures + 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff_seconds(failures))
        if stop.is_set():
            return 0
        log.info("learner restarting as a standby")
        while not stop.is_set():
            try:
                await redis.ping()
                break
            except UNAVAILABLE:
                await asyncio.sleep(RECONNECT_SECONDS)


def backoff_seconds(failures: int) -> float:
    """The pause before the next start after `failures` failed ones in a row."""
    return min(MAX_BACKOFF_SECONDS, RECONNECT_SECONDS * 2 ** max(0, failures - 1))


# The learner is background work: where it shares cores with API processes, their requests
# come first. Measured on 2 cores at half the API's capacity: the learner's drift calibration
# (numpy on both cores for a second or two) took p99 from 14 to 39 ms at normal priority.
# Nice changes nothing while a core is free (a learner host of its own, or an idle API).
LEARNER_NICENESS = 10


def run_learner(settings: Settings) -> int:
    torch.set_num_threads(1)  # one core for the learner, the other for the API (2-core boxes)
    lower_priority(LEARNER_NICENESS)
    return asyncio.run(_main(settings))


def lower_priority(niceness: int) -> None:
    """Raise this process's niceness to at least `niceness` (never lowers it: an operator's
    `nice` stays)."""
    current = os.nice(0)
    if current < niceness:
        os.nice(niceness - current)
