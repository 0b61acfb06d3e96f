"""`python -m service learn`: one learner process, training the models whose leases it takes
(a standby for the others)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import torch
from prometheus_client import CollectorRegistry

from service.catalog import load_models
from service.config import Settings
from service.monitor.learner_metrics import LearnerMetrics
from service.monitor.metrics_server import MetricsServer, start_metrics_server
from service.store.connection import check_noeviction, open_redis, wait_until_reachable
from service.store.deployment import open_model
from service.worker.loop import LearnerService
from service.worker.scheduler import ModelScheduler

log = logging.getLogger(__name__)


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


async def _main(settings: Settings, models: list[Settings]) -> int:
    registry = CollectorRegistry()
    metrics = {model.model_name: LearnerMetrics(registry, model.model_name, process_metrics=True)
               for model in models}
    serve_metrics(settings, registry)
    redis = open_redis(settings, len(models))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Finish the current step, then stop: nothing half-written (acks follow publishes).
        loop.add_signal_handler(sig, stop.set)
    try:
        await wait_until_reachable(redis)
        await check_noeviction(redis)
        for model in models:
            # The learner may start before any API process: it creates version 0 the same way.
            await open_model(model, redis)
        scheduler = ModelScheduler(
            models, redis, settings.learner_capacity,
            lambda model: LearnerService(model, redis, metrics[model.model_name]))
        return await scheduler.run(stop)
    finally:
        await redis.aclose()


# The learner is background work: where it shares cores with API processes, their requests
# come first. Measured on 2 cores at half the API's capacity: the learner's drift calibration
# (numpy on both cores for a second or two) took p99 from 14 to 39 ms at normal priority.
# Nice changes nothing while a core is free (a learner host of its own, or an idle API).
LEARNER_NICENESS = 10


def run_learner(settings: Settings, models: list[Settings] | None = None) -> int:
    """Train the models (default: MNEMO_MODELS, else the one of `settings`) this process
    takes the leases of (service/worker/scheduler.py) until SIGTERM."""
    torch.set_num_threads(1)  # one core for the learner, the other for the API (2-core boxes)
    lower_priority(LEARNER_NICENESS)
    return asyncio.run(_main(settings, load_models(settings) if models is None else models))


def lower_priority(niceness: int) -> None:
    """Raise this process's niceness to at least `niceness` (never lowers it: an operator's
    `nice` stays)."""
    current = os.nice(0)
    if current < niceness:
        os.nice(niceness - current)
