"""`python -m service learn`: one learner process (a standby until it holds the lease)."""

from __future__ import annotations

import asyncio
import logging
import signal

import torch
from prometheus_client import CollectorRegistry, start_http_server

from service.config import Settings
from service.monitor.learner_metrics import LearnerMetrics
from service.store.connection import check_noeviction, connect, wait_until_reachable
from service.store.keys import Keys
from service.store.registry import DeploymentIdentity, Registry
from service.store.scripts import Scripts
from service.versioning import initial_version
from service.worker.loop import LearnerService

log = logging.getLogger(__name__)


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
        return await LearnerService(settings, redis, metrics).run(stop)
    finally:
        await redis.aclose()


def run_learner(settings: Settings) -> int:
    torch.set_num_threads(1)  # one core for the learner, the other for the API (2-core boxes)
    return asyncio.run(_main(settings))
