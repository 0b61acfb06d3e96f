"""A new current version at a fixed interval, from a process of its own: what `make
bench-serve` runs while it measures latency with versions arriving.

It activates the given versions in turn through the admin route, as an operator's script or
a deploy job would. In its own process on purpose: the same requests sent from the load
generator's event loop delayed the generator's scheduled sends by a few milliseconds each
time (httpx's Python work), and the open-loop latencies counted that delay as the server's
(p99 2-4x quiet at 500/s, with the worst 1% all in the 100 ms after each activation; from a
process of its own, within the quiet run's noise).

`python -m load_tests.publisher --url http://127.0.0.1:8000 --token T --versions 3,4`
runs until stopped (SIGTERM or Ctrl-C) and prints how many activations it made.
"""

from __future__ import annotations

import argparse
import itertools
import signal
import sys
import time
from types import FrameType

import httpx


class _Stop(Exception):
    pass


def _stop(_signum: int, _frame: FrameType | None) -> None:
    raise _Stop


def publish(url: str, token: str, versions: list[int], every: float,
            limit: int | None = None) -> int:
    """Activate `versions` in turn, one every `every` seconds (the first after one interval),
    until stopped or `limit` activations; returns how many succeeded."""
    done = 0
    started = time.monotonic()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                      timeout=10) as client:
        try:
            for turn in itertools.count(1):
                if limit is not None and done >= limit:
                    break
                # On a fixed schedule, not `every` after the last one returned.
                time.sleep(max(0.0, started + turn * every - time.monotonic()))
                version = versions[(turn - 1) % len(versions)]
                client.post(f"/v1/versions/{version}/activate").raise_for_status()
                done += 1
        except (_Stop, KeyboardInterrupt):
            pass
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="an API process's base URL")
    parser.add_argument("--token", required=True, help="MNEMO_ADMIN_TOKEN")
    parser.add_argument("--versions", required=True,
                        type=lambda text: [int(v) for v in text.split(",")],
                        help="comma-separated versions to activate in turn")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between activations")
    parser.add_argument("--limit", type=int, default=None, help="stop after this many")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    print("ready", flush=True)  # imports done: a caller may start measuring
    done = publish(args.url, args.token, args.versions, args.every, args.limit)
    print(f"activations: {done}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
