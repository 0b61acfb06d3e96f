"""`python -m service learn`: one learner process (a standby until it holds the lease)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

import torch
from prometheus_client import CollectorRegistry, start_http_server
from redis.asyncio import Redis

from service.config import Settings
from service.monitor.learner_metrics import LearnerMetrics
from service.store.connection import UNAVAILABLE, check_noeviction, connect, wait_until_reachable
from service.store.keys import Keys
from service.store.registry import DeploymentIdentity, Registry
from service.store.scripts import Scripts
from service.versioning import initial_version
from service.worker.loop import LearnerService

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 0.5


def serve_metrics(settings: Settings, registry: CollectorRegistry) -> None:
    """/metrics on MNEMO_LEARNER_METRICS_PORT (0: not served). A port already taken (a second
    learner on the same host) costs the metrics, never the learner."""
    if settings.learner_metrics_port == 0:
        return
    try:
        start_http_server(settings.learner_metrics_port, settings.host, registry)
    except OSError as exc:
        log.warning("learner metrics not served on %s:%s: %s", settings.host,
                    settings.learner_metrics_port, exc)
        return
    log.info("learner metrics on http://%s:%s/metrics", settings.host,
             settings.learner_metrics_port)


async def _main(settings: Settings) -> int:
    assert settings.redis_url is not None
    registry = CollectorRegistry()
    metrics = LearnerMetrics(registry, settings.model_name)
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
    while True:
        service = LearnerService(settings, redis, metrics)
        try:
            await service.run(stop)
        except UNAVAILABLE as exc:
            # A write may or may not have been applied: only the registry knows, so re-read it.
            log.warning("Redis unavailable (%s): restarting from the last published version "
                        "once it answers", exc)
            with contextlib.suppress(*UNAVAILABLE):
                await service.lease.release()
        if stop.is_set():
            return 0
        log.info("learner restarting as a standby")
        while not stop.is_set():
            try:
                await redis.ping()
                break
            except UNAVAILABLE:
                await asyncio.sleep(RECONNECT_SECONDS)


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
