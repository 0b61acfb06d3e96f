"""An open-loop HTTP load generator: requests are scheduled at a fixed arrival rate and each
latency is measured from its *scheduled* send time, so a slow server cannot hide its tail by
slowing the client down (no coordinated omission); a request that goes out early (the event
loop's timers are coarse) is timed from when it went out. Keep-alive HTTP/1.1 on raw asyncio
streams, on uvloop where it is installed (`drive`): a Python client costs the shared CPU as
little as possible (which is also why this is raw HTTP, not mnemo_client: the requests'
own cost is what it measures).

    python -m load_tests.open_loop --url http://127.0.0.1:8000/v1/predict --rate 500 \
        --seconds 10 --rows 1 --dim 64 [--token T]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np

PERCENTILES = (50, 95, 99, 99.9)
T = TypeVar("T")


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a load coroutine to its end on uvloop where installed, asyncio's loop otherwise:
    the generator shares the cores with the servers it measures, and the less its own event
    loop costs, the more of them the servers get."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


@dataclass
class Report:
    offered_rate: float
    seconds: float
    sent: int = 0
    ok: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # seconds, from the due time
    elapsed: float = 0.0

    @classmethod
    def merged(cls, reports: list[Report]) -> Report:
        """Several windows at one rate as one report (their latencies pooled)."""
        out = cls(reports[0].offered_rate, sum(r.seconds for r in reports))
        for r in reports:
            out.sent += r.sent
            out.ok += r.ok
            out.errors += r.errors
            for status, count in r.statuses.items():
                out.statuses[status] = out.statuses.get(status, 0) + count
            out.latencies += r.latencies
            out.elapsed += r.elapsed
        return out

    @property
    def achieved_rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    def percentile(self, p: float) -> float:
        return float(np.percentile(self.latencies, p)) if self.latencies else float("nan")

    def summary(self) -> dict[str, float]:
        out = {"offered_rate": self.offered_rate, "achieved_rate": self.achieved_rate,
               "ok": self.ok, "errors": self.errors}
        for p in PERCENTILES:
            out[f"p{p:g}_ms"] = self.percentile(p) * 1000
        out["max_ms"] = max(self.latencies, default=float("nan")) * 1000
        return out

    def line(self) -> str:
        s = self.summary()
        tail = " ".join(f"p{p:g}={s[f'p{p:g}_ms']:.2f}ms" for p in PERCENTILES)
        return (f"offered {s['offered_rate']:.0f}/s achieved {s['achieved_rate']:.0f}/s "
                f"ok {self.ok} errors {self.errors} {tail} max={s['max_ms']:.2f}ms")


def quiet_collector() -> None:
    """The generator's own full garbage collections (numpy, httpx, the harness: ~100k
    long-lived objects) would stall its schedule and show up as server latency."""
    gc.collect()
    gc.freeze()


def http_request(url: str, body: bytes, token: str | None = None) -> bytes:
    """One keep-alive POST as raw bytes."""
    parts = urlsplit(url)
    head = [f"POST {parts.path or '/'} HTTP/1.1", f"Host: {parts.netloc}",
            "Content-Type: application/json", f"Content-Length: {len(body)}"]
    if token:
        head.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length) if length else b""
        return status, body


async def run(url: str, rate: float, seconds: float, requests: Callable[[int], bytes],
              connections: int = 64, check: Callable[[int, bytes], bool] | None = None,
              ) -> Report:
    """Send `rate` requests per second for `seconds`; request i is `requests(i)` (raw bytes).
    At most `connections` are in flight; a request waiting for one is late, and its latency
    says so. `check(status, body)` decides success (default: 2xx)."""
    quiet_collector()
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    idle: asyncio.Queue[_Connection] = asyncio.Queue()
    opened = 0
    report = Report(rate, seconds)
    total = int(rate * seconds)
    ok = check or (lambda status, _body: 200 <= status < 300)

    async def one(i: int, due: float) -> None:
        nonlocal opened
        if idle.empty() and opened < connections:
            opened += 1
            idle.put_nowait(_Connection(*await asyncio.open_connection(host, port)))
        conn = await idle.get()
        try:
            status, body = await conn.exchange(requests(i))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            report.errors += 1
            report.statuses[0] = report.statuses.get(0, 0) + 1
            conn.writer.close()
            idle.put_nowait(_Connection(*await asyncio.open_connection(host, port)))
            return
        idle.put_nowait(conn)
        report.latencies.append(time.perf_counter() - due)
        report.statuses[status] = report.statuses.get(status, 0) + 1
        if ok(status, body):
            report.ok += 1
        else:
            report.errors += 1

    # Only the requests in flight are held: finished tasks kept to the end would pile up in
    # the collector's oldest generation and make its passes (pauses in this schedule) longer.
    in_flight: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        # uvloop's timers count whole milliseconds and fire up to ~0.8 ms early (measured): an
        # early request is timed from when it went out, never from a later schedule, so its
        # latency cannot come out shorter than the server took (or negative).
        task = asyncio.create_task(one(i, min(scheduled, time.perf_counter())))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        report.sent += 1
    await asyncio.gather(*in_flight)
    report.elapsed = time.perf_counter() - start
    while not idle.empty():
        idle.get_nowait().writer.close()
    return report


async def saturate(url: str, seconds: float, requests: Callable[[int], bytes],
                   connections: int = 16) -> Report:
    """Capacity: `connections` clients each send back to back for `seconds` (closed loop; the
    cheapest load for the generator, which shares the CPU). Only the achieved rate is
    meaningful here: latencies are measured from each send, not from a schedule."""
    quiet_collector()
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    report = Report(float("nan"), seconds)
    start = time.perf_counter()
    counter = 0

    async def client() -> None:
        nonlocal counter
        conn = _Connection(*await asyncio.open_connection(host, port))
        try:
            while time.perf_counter() - start < seconds:
                counter += 1
                sent = time.perf_counter()
                status, _ = await conn.exchange(requests(counter))
                report.sent += 1
                report.latencies.append(time.perf_counter() - sent)
                report.statuses[status] = report.statuses.get(status, 0) + 1
                if 200 <= status < 300:
                    report.ok += 1
                else:
                    report.errors += 1
        finally:
            conn.writer.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    report.elapsed = time.perf_counter() - start
    return report


def predict_bodies(rows: int, dim: int, count: int = 256, seed: int = 0) -> list[bytes]:
    """Distinct predict bodies (cycled), numbers as a client would write them."""
    rng = np.random.default_rng(seed)
    return [json.dumps({"inputs": rng.normal(size=(rows, dim)).round(4).tolist()}).encode()
            for _ in range(count)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rows", type=int, default=1, help="rows per predict request")
    parser.add_argument("--dim", type=int, default=4, help="MNEMO_INPUT_DIM")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--token", default=None)
    args = parser.parse_args(argv)
    bodies = [http_request(args.url, b, args.token) for b in predict_bodies(args.rows, args.dim)]
    report = drive(run(args.url, args.rate, args.seconds, lambda i: bodies[i % len(bodies)],
                       args.connections))
    print(report.line())
    return 0 if report.errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
