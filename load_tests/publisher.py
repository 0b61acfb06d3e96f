"""A new current version at a fixed interval, from a process of its own: what `make
bench-serve` runs while it measures latency with versions arriving.

It activates the given versions in turn, either in Redis (`--redis-url`, `--model`: the
registry's activate script moves the current pointer and announces it, as the learner's publish
does, so every API replica follows) or through one API process's admin route (`--url`), as an
operator's rollback would: that also costs the process answering it a request on FastAPI's
full path, about 1.8 ms of CPU each (server CPU per activation, measured side by side).

In its own process on purpose: the same requests sent from the load generator's event loop
delayed the generator's scheduled sends by a few milliseconds each time (httpx's Python work),
and the open-loop latencies counted that delay as the server's (p99 2-4x quiet at 500/s, with
the worst 1% all in the 100 ms after each activation; from a process of its own, within the
quiet run's noise).

`python -m load_tests.publisher --redis-url redis://127.0.0.1:6379/0 --model NAME --versions 3,4`
(or `--url http://127.0.0.1:8000 --token T`) runs until stopped (SIGTERM or Ctrl-C) and prints
how many activations it made.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from types import FrameType

from load_tests.processes import ROOT
from mnemo_client import Client


class _Stop(Exception):
    pass


def _stop(_signum: int, _frame: FrameType | None) -> None:
    raise _Stop


def publish(activate: Callable[[int], object], versions: list[int], every: float,
            limit: int | None = None) -> int:
    """Activate `versions` in turn, one every `every` seconds (the first after one interval),
    until stopped or `limit` activations; returns how many succeeded."""
    done = 0
    started = time.monotonic()
    try:
        for turn in itertools.count(1):
            if limit is not None and done >= limit:
                break
            # On a fixed schedule, not `every` after the last one returned.
            time.sleep(max(0.0, started + turn * every - time.monotonic()))
            activate(versions[(turn - 1) % len(versions)])
            done += 1
    except (_Stop, KeyboardInterrupt):
        pass
    return done


@contextlib.contextmanager
def through_admin_route(url: str, token: str) -> Iterator[Callable[[int], object]]:
    # As an operator's tooling would; no retries: one activation per interval, on schedule.
    with Client(url, admin_token=token, timeout=10, retries=0) as client:
        yield client.activate


@contextlib.contextmanager
def in_redis(redis_url: str, model: str) -> Iterator[Callable[[int], object]]:
    from service.store.connection import connect
    from service.store.keys import Keys
    from service.store.registry import Registry
    from service.store.scripts import Scripts

    with asyncio.Runner() as runner:
        client = connect(redis_url, 10)
        registry = Registry(client, Keys(model), Scripts(client))
        try:
            yield lambda version: runner.run(registry.activate(version))
        finally:
            runner.run(client.aclose())


@contextlib.contextmanager
def running(route: list[str], versions: tuple[int, ...]) -> Iterator[None]:
    """This publisher in a process of its own for the body of the `with`: a new current
    version every second, `versions` in turn, activated where `route` (its command-line
    arguments) says. Its start-up is done before the body starts; a failure is raised."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "load_tests.publisher", *route,
         "--versions", ",".join(map(str, versions))],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the publisher did not start")
        yield
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
        if proc.returncode:
            raise RuntimeError(f"the publisher failed ({proc.returncode}): {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", help="activate in Redis, as the learner publishes")
    parser.add_argument("--model", help="MNEMO_MODEL_NAME (with --redis-url)")
    parser.add_argument("--url", help="or through this API process's admin route")
    parser.add_argument("--token", help="MNEMO_ADMIN_TOKEN (with --url)")
    parser.add_argument("--versions", required=True,
                        type=lambda text: [int(v) for v in text.split(",")],
                        help="comma-separated versions to activate in turn")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between activations")
    parser.add_argument("--limit", type=int, default=None, help="stop after this many")
    args = parser.parse_args(argv)
    if args.redis_url and args.model and not args.url:
        route = in_redis(args.redis_url, args.model)
    elif args.url and args.token and not args.redis_url:
        route = through_admin_route(args.url, args.token)
    else:
        parser.error("give --redis-url and --model, or --url and --token")
    signal.signal(signal.SIGTERM, _stop)
    with route as activate:
        print("ready", flush=True)  # imports and connections done: a caller may start measuring
        done = publish(activate, args.versions, args.every, args.limit)
    print(f"activations: {done}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
