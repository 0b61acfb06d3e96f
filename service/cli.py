"""`python -m service` / `mnemo`: run (everything), serve (API), learn (learner), replay (CSV),
report (PNG charts)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from service.catalog import load_models
from service.config import Settings, SettingsError, load_settings
from service.logs import configure_logging
from service.store.connection import StoreError
from service.version import package_version

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger("service")


def _preflight(settings: Settings, models: list[Settings]) -> None:
    """Run the start-up checks before uvicorn, whose lifespan would swallow a StoreError
    into a traceback and exit 3 instead of naming the problem."""
    import asyncio

    from service.store.deployment import open_model, open_store

    async def check() -> None:
        redis = await open_store(settings)
        try:
            for model in models:
                await open_model(model, redis)
        finally:
            await redis.aclose()

    asyncio.run(check())


def uvicorn_config(settings: Settings, app: Any) -> uvicorn.Config:
    """How `serve` runs `app` (an ASGI app): write coalescing, the connection timeouts and
    cap (service/api/connection_guard.py), graceful shutdown."""
    import uvicorn

    from service.api.connection_guard import ConnectionLimits, guarded_http_protocol
    from service.api.write_coalescing import coalescing_http_protocol

    http = coalescing_http_protocol()  # a response's head and body in one send
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        access_log=False,  # costs about a third of throughput; request ids are in our logs
        log_config=None,
        http=guarded_http_protocol(http, ConnectionLimits.from_settings(settings)),
        # uvicorn types it int, but uses it as call_later's delay: fractions work.
        timeout_keep_alive=settings.keep_alive_seconds,  # type: ignore[arg-type]
        # No limit_concurrency: it answers 503 to requests but keeps idle sockets open; the
        # guard's cap closes connections themselves. No websocket routes, so no upgrades
        # (which would also hand sockets to a protocol the cap does not count).
        ws="none",
        timeout_graceful_shutdown=10,
        lifespan="on",
    )


def _serve(settings: Settings) -> int:
    import uvicorn

    from service.api import create_app
    from service.serving.holder import use_one_compute_thread

    models = load_models(settings)
    _preflight(settings, models)
    use_one_compute_thread()
    server = uvicorn.Server(uvicorn_config(settings, create_app(settings, models)))
    # uvicorn re-raises the signal that stopped it once it has drained; with the default
    # handler that would kill the process before `run` stops the learner and Redis.
    received: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    server.run()  # SIGTERM/SIGINT: stop accepting, drain in-flight requests, run shutdown
    return 0 if server.started else 1


def _learn(settings: Settings) -> int:
    from service.worker.process import run_learner

    return run_learner(settings)


def _run(settings: Settings) -> int:
    from service.supervisor import LearnerSupervisor

    embedded = None
    if not settings.external_redis:
        from service.embedded import EmbeddedRedis

        embedded = EmbeddedRedis(settings.data_dir)
        url = embedded.start()
        log.info("embedded Redis-compatible server at %s (data in %s)", url, settings.data_dir)
        settings = settings.model_copy(update={"redis_url": url})
    supervisor = LearnerSupervisor({**os.environ, "MNEMO_REDIS_URL": settings.redis_url or ""})
    try:
        supervisor.start()
        return _serve(settings)
    finally:
        supervisor.stop()
        if embedded is not None:
            embedded.stop()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnemo", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mnemo {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="API + learner (+ embedded Redis when MNEMO_REDIS_URL is unset)")
    sub.add_parser("serve", help="one API process (needs MNEMO_REDIS_URL)")
    sub.add_parser("learn", help="one learner process (needs MNEMO_REDIS_URL)")
    from service import replay_client

    replay = sub.add_parser("replay", help="stream a CSV through predict, then feedback")
    replay_client.add_arguments(replay)
    from service import report

    report.add_arguments(sub.add_parser("report", help="the live page's charts as a PNG, "
                                        "from the learner's history stream"))
    sub.add_parser("bench", add_help=False,
                   help="continual-learning benchmark (`mnemo bench --help` for its options)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its own option parser, and no service settings needed
        from service.bench import main as bench_main

        return bench_main(argv[1:]) or 0
    args = _parser().parse_args(argv)
    if args.command == "replay":
        from service import replay_client

        return replay_client.main(args)
    try:
        settings = load_settings()
        load_models(settings)  # MNEMO_MODELS is checked by every command, before anything runs
    except SettingsError as exc:
        print(f"mnemo: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, args.command, settings.log_format)
    if args.command == "report":
        from service import report

        return report.main(args, settings)
    if args.command in ("serve", "learn") and not settings.external_redis:
        print(f"mnemo {args.command}: MNEMO_REDIS_URL is required (two processes cannot share "
              "a private embedded server; use `run`)", file=sys.stderr)
        return 2
    try:
        return {"run": _run, "serve": _serve, "learn": _learn}[args.command](settings)
    except StoreError as exc:
        print(f"mnemo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
