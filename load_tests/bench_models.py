"""`make bench-models`: what one API process and one learner process carry per model.

For N in 1, 10 and 100 models, a fresh private Valkey (service/embedded.py's, as
`python -m service run` starts it: AOF, noeviction), one `python -m service serve` and one
`python -m service learn` (load_tests/processes.py) with MNEMO_MODELS listing N models of
input_dim 4 and 3 labels; every other setting at the service's default (strategy, buffer and
its size, hidden layers, publishing, retention, the Redis client). Then, in order:

1. at rest, once the API answers and the learner has reported for every model: API and
   learner RSS (VmRSS from /proc), Redis `used_memory` over the empty server's and a model's
   own keys (`MEMORY USAGE`), Redis connections, each process's CPU;
2. learner throughput, which also fills each model's replay buffer: learning paused on every
   model (admin route), a backlog of labelled items with their inputs (batches of 100, a
   learnable concept; `max(--fill, --items / N)` per model) sent through
   /v1/models/{name}/feedback by 16 clients (the API's ingestion rate, as information), then
   learning resumed on every model and timed until their /v1/models/{name}/stats
   samples_seen sum to the backlog, with the learner's CPU over that time;
3. once every model has published all it read (its cursor committed) and the learner has
   spent its rehearsal budget (timed): learner RSS, Redis memory as in 1, each model's
   reservoir, and the versions still holding blobs;
4. predict capacity: 16 clients sending 1-row requests back to back for `--seconds`, request i
   to model i mod N (load_tests/open_loop.py), with the CPU each process used meanwhile; then
   API RSS and whether either process logged an exhausted Redis connection pool.

Where N models cannot come up at the defaults (a process exits, logs redis-py's
`Too many connections`, or is not up in time), that is recorded and, unless
`--no-retry-pool`, N is measured again with a larger redis-py pool given in MNEMO_REDIS_URL
(`?max_connections=`: a deployment setting, no code change); the table says which.

The load generator shares the cores with the processes it measures, and on a shared machine
with other work: the CPU per request and per item are the figures that travel.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis

from load_tests import bench_table, open_loop
from load_tests.processes import cpu_seconds, free_port, started
from mnemo_client import Client, MnemoError
from service.embedded import EmbeddedRedis
from service.store.keys import Keys

COUNTS = (1, 10, 100)
DIM = 4  # MNEMO_INPUT_DIM's default
LABELS = ("a", "b", "c")
ADMIN = "bench-models-admin"
CLIENTS = 16
BATCH = 100  # labelled items per feedback request
# Enough labels per model that the default reservoir (MNEMO_BUFFER_SIZE=1000) is full after
# the default 10% holdout takes its share (1,200 × 0.9 = 1,080 trained on).
FILL = 1200
ITEMS = 30_000  # the learner's backlog at least, spread over the models
MIB = 1024 * 1024
START = "<!-- mnemo-bench-models:start -->"
END = "<!-- mnemo-bench-models:end -->"
HEADING = "## Models per process (`make bench-models`)"
# A learnable concept (the label is the argmax of a fixed projection), so candidates pass the
# gate and get published, as a real stream's would.
CONCEPT = np.random.default_rng(42).normal(size=(DIM, len(LABELS)))


def model_names(count: int) -> list[str]:
    return [f"m{i:03d}" for i in range(count)]


def models_yaml(names: list[str]) -> str:
    """MNEMO_MODELS's file: each model declares its dimension and labels, nothing else."""
    lines = ["models:"]
    lines += [f"  - {{name: {name}, input_dim: {DIM}, labels: \"{','.join(LABELS)}\"}}"
              for name in names]
    return "\n".join(lines) + "\n"


def rss_bytes(pid: int) -> int:
    """Resident memory of a process now (VmRSS, Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def items_per_model(count: int, fill: int, items: int) -> int:
    """Labelled items each model gets: the fill, or an even share of `items` if larger; in
    whole batches."""
    return BATCH * math.ceil(max(fill, math.ceil(items / count)) / BATCH)


def feedback_requests(base: str, names: list[str], per_model: int, seed: int = 0) -> list[bytes]:
    """Raw feedback requests, `per_model` items for each model in batches of BATCH, the
    models interleaved (request i to model i mod N); every item distinct."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(per_model // BATCH):
        for name in names:
            x = rng.normal(size=(BATCH, DIM)).round(4)
            y = np.argmax(x @ CONCEPT, axis=1)
            body = {"items": [{"inputs": row, "label": LABELS[k]}
                              for row, k in zip(x.tolist(), y.tolist(), strict=True)]}
            out.append(open_loop.http_request(f"{base}/v1/models/{name}/feedback",
                                              json.dumps(body).encode()))
    return out


def predict_requests(base: str, names: list[str], count: int = 64) -> list[list[bytes]]:
    """Per model, `count` distinct 1-row predict requests."""
    bodies = open_loop.predict_bodies(1, DIM, count=count)
    return [[open_loop.http_request(f"{base}/v1/models/{name}/predict", b) for b in bodies]
            for name in names]


def _env(redis_url: str, models: Path, port: int, data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MNEMO_")}
    env.update({
        "MNEMO_REDIS_URL": redis_url, "MNEMO_MODELS": str(models), "MNEMO_PORT": str(port),
        "MNEMO_LEARNER_METRICS_PORT": str(free_port()), "MNEMO_DATA_DIR": str(data),
        "MNEMO_ADMIN_TOKEN": ADMIN, "MNEMO_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1",
    })
    return env


def _until(check: Any, timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class Models:
    """The control calls (stats, pause, resume) to every model, through mnemo_client."""

    def __init__(self, http: httpx.Client, names: list[str]) -> None:
        self.names = names
        self.clients = {name: Client(http=http, admin_token=ADMIN, model=name) for name in names}

    def stats(self, names: list[str] | None = None) -> dict[str, Any]:
        return {name: self.clients[name].stats() for name in (self.names if names is None else names)}

    def all_reported(self) -> bool:
        return all(s.learning is not None for s in self.stats().values())

    def pause(self) -> None:
        for client in self.clients.values():
            client.pause()

    def resume(self) -> None:
        for client in self.clients.values():
            client.resume()

    def seen_until(self, target: int, each: int, timeout: float) -> int:
        """Poll until samples_seen sums to `target`; a model that reached `each` is not read
        again (the polls cost API CPU the learner may share). Returns the sum reached."""
        seen: dict[str, int] = {}
        deadline = time.monotonic() + timeout
        while True:
            pending = [n for n in self.names if seen.get(n, -1) < each]
            for name, s in self.stats(pending).items():
                seen[name] = s.samples_seen
            total = sum(seen.values())
            if total >= target or time.monotonic() > deadline:
                return total
            time.sleep(0.25)


def _committed(client: redis.Redis, names: list[str], seen: dict[str, int]) -> bool:
    """Every model's cursor (committed at publish) holds all it processed."""
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hget(Keys(name).cursor, "samples_seen")
    return all(int(v or 0) >= seen[n] for n, v in zip(names, pipe.execute(), strict=True))


def key_memory(client: redis.Redis, names: list[str]) -> dict[str, float]:
    """What each model's own keys take (MEMORY USAGE, exact), averaged over the models: in
    all, in the blobs of the versions that still hold them, and how many versions do."""
    totals, blobs, held, sizes = [], [], [], []
    for name in names:
        keys = Keys(name)
        found = [k for pattern in keys.all_patterns() for k in client.scan_iter(pattern, 1000)]
        versions = [keys.version(int(v)).encode() for v in client.zrange(keys.versions, 0, -1)]
        pipe = client.pipeline(transaction=False)
        for key in versions:
            pipe.hexists(key, "weights")
        with_blobs = {k for k, has in zip(versions, pipe.execute(), strict=True) if has}
        for key in found:
            pipe.memory_usage(key, samples=0)
        usage = dict(zip(found, (int(u or 0) for u in pipe.execute()), strict=True))
        totals.append(sum(usage.values()))
        blobs.append(sum(usage.get(k, 0) for k in with_blobs))
        held.append(len(with_blobs))
        sizes += [usage[k] for k in with_blobs if k in usage]
    return {"keys_bytes": float(np.mean(totals)), "version_blobs_bytes": float(np.mean(blobs)),
            "versions_with_blobs": float(np.mean(held)),
            "version_bytes": float(np.median(sizes)) if sizes else 0.0}


def cpu_shares(pids: tuple[int, ...], seconds: float) -> list[float | None]:
    """The share of one core each process used over the next `seconds`."""
    before = [cpu_seconds(pid) for pid in pids]
    time.sleep(seconds)
    return [None if a is None or b is None else (b - a) / seconds
            for a, b in zip(before, (cpu_seconds(pid) for pid in pids), strict=True)]


def cpu_share(pid: int, seconds: float) -> float | None:
    return cpu_shares((pid,), seconds)[0]


def _until_quiet(pid: int, at_rest: float | None, timeout: float) -> float:
    """Seconds until the learner's CPU is back near its at-rest share (its rehearsal budget
    spent); `timeout` at most."""
    began = time.monotonic()
    threshold = max(0.15, 1.5 * (at_rest or 0.0) + 0.05)
    while time.monotonic() - began < timeout:
        share = cpu_share(pid, 1.0)
        if share is None or share <= threshold:
            break
    return time.monotonic() - began


class DeploymentFailed(RuntimeError):
    """The processes did not come up serving every model (the message says why)."""


# redis-py's message when a client's connection pool is at its max_connections (default 100).
POOL_EXHAUSTED = "Too many connections"


def _log_tail(log: Path, chars: int = 400) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


def _wait_up(procs: dict[str, subprocess.Popen[bytes]], logs: dict[str, Path], base: str,
             models: Models, timeout: float) -> None:
    """Until the API answers ready and the learner has reported for every model; a process
    that exits, or logs an exhausted Redis connection pool, fails it at once."""
    deadline = time.monotonic() + timeout
    while True:
        for role, proc in procs.items():
            if proc.poll() is not None:
                raise DeploymentFailed(f"`{role}` exited ({proc.returncode}): "
                                       f"{_log_tail(logs[role])}")
            if POOL_EXHAUSTED in _log_tail(logs[role], 100_000):
                raise DeploymentFailed(f"`{role}`: its Redis connection pool ran out "
                                       f"({POOL_EXHAUSTED})")
        with contextlib.suppress(httpx.HTTPError, MnemoError):
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200 and \
                    models.all_reported():
                return
        if time.monotonic() > deadline:
            raise DeploymentFailed(f"not up after {timeout:.0f} s")
        time.sleep(0.5)


@contextlib.contextmanager
def _deployment(count: int, workdir: Path, max_connections: int | None,
                timeout: float) -> Iterator[dict[str, Any]]:
    """A fresh Valkey, `serve` and `learn` with `count` models: their handles.
    `max_connections`: a redis-py pool size given in MNEMO_REDIS_URL (None: its default)."""
    workdir.mkdir(parents=True, exist_ok=True)
    names = model_names(count)
    (workdir / "models.yaml").write_text(models_yaml(names))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    logs = {role: workdir / f"{role}.log" for role in ("serve", "learn")}
    with EmbeddedRedis(workdir / "data") as server:
        client = redis.Redis.from_url(server.url)
        empty = used_memory(client)
        url = server.url + (f"?max_connections={max_connections}" if max_connections else "")
        env = _env(url, workdir / "models.yaml", port, workdir / "data")
        began = time.monotonic()
        try:
            with started(["-m", "service", "serve"], env, logs["serve"]) as api, \
                    started(["-m", "service", "learn"], env, logs["learn"]) as learner, \
                    httpx.Client(base_url=base, timeout=30) as http:
                models = Models(http, names)
                _wait_up({"serve": api, "learn": learner}, logs, base, models, timeout)
                yield {"names": names, "base": base, "redis": client, "empty": empty,
                       "server": server.pid,
                       "api": api.pid, "learner": learner.pid, "models": models, "logs": logs,
                       "start_seconds": time.monotonic() - began}
        finally:
            client.close()


def pool_size(count: int) -> int:
    """The pool a retry gives each process: the API holds two connections per model for as
    long as it runs (the prediction log's writer, the version follower's subscription) and the
    learner up to about two per model at once; room to spare for requests in flight."""
    return 4 * count + 100


def measure(count: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The figures for one N at the service's defaults; if the processes cannot come up that
    way and `args.retry_pool`, the reason and the figures with a larger redis-py pool
    (`?max_connections=` in MNEMO_REDIS_URL: a deployment setting, not a code change)."""
    try:
        return _measure(count, args, workdir / "defaults", None)
    except DeploymentFailed as exc:
        reason = str(exc)
        print(f"  {count} models do not come up at the defaults: {reason}", flush=True)
    if not args.retry_pool:
        return {"models": count, "defaults_failed": reason}
    out = _measure(count, args, workdir / "pool", pool_size(count))
    out["defaults_failed"] = reason
    return out


def _pool_exhausted(logs: dict[str, Path]) -> dict[str, int]:
    return {role: log.read_text(errors="replace").count(POOL_EXHAUSTED)
            for role, log in logs.items()}


def connected_clients(client: redis.Redis) -> int:
    return int(client.info("clients")["connected_clients"])


def _measure(count: int, args: argparse.Namespace, workdir: Path,
             max_connections: int | None) -> dict[str, Any]:
    """The figures for one N (module docstring)."""
    with _deployment(count, workdir, max_connections, args.start_timeout) as d:
        out: dict[str, Any] = {"models": count, "start_seconds": round(d["start_seconds"], 1),
                               "max_connections": max_connections}
        time.sleep(args.settle)  # start-up's last writes and collections
        out.update(_at_rest(d, args.idle_seconds))
        out.update(_learner(d, args))
        out.update(_filled(d, args, out["learner_cpu_idle"]))
        out["predict"] = _predict(d, args.seconds)
        time.sleep(args.settle)
        out["api_rss_after"] = rss_bytes(d["api"])
        out["redis_clients_after"] = connected_clients(d["redis"])
        out["pool_exhausted"] = _pool_exhausted(d["logs"])
    return out


def _at_rest(d: dict[str, Any], seconds: float) -> dict[str, Any]:
    """1. Once up: memory of each process and of Redis, connections, CPU at rest."""
    client = d["redis"]
    out = {"api_rss_idle": rss_bytes(d["api"]), "learner_rss_idle": rss_bytes(d["learner"]),
           "redis_start": used_memory(client) - d["empty"],
           "redis_clients_idle": connected_clients(client),
           "redis_keys_start": key_memory(client, d["names"])["keys_bytes"]}
    out["learner_cpu_idle"], out["api_cpu_idle"], out["redis_cpu_idle"] = cpu_shares(
        (d["learner"], d["api"], d["server"]), seconds)
    return out


def _learner(d: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """2. A backlog ingested with learning paused, then trained on: both rates."""
    names, models = d["names"], d["models"]
    per_model = items_per_model(len(names), args.fill, args.items)
    requests = feedback_requests(d["base"], names, per_model)
    models.pause()
    print(f"  {per_model} labels per model, learning paused while they arrive", flush=True)
    # All of them due at once (a fixed count, not a rate: 1/64 s is exact in binary, so the
    # generator sends exactly len(requests)), CLIENTS at a time.
    ingest = open_loop.drive(open_loop.run(
        f"{d['base']}/v1/feedback", 64.0 * len(requests), 1 / 64, requests.__getitem__,
        connections=CLIENTS))
    sent = BATCH * ingest.ok
    # What the learner took before it saw the pause is not part of the backlog timed.
    before = sum(s.samples_seen for s in models.stats().values())
    started_at, cpu_before = time.monotonic(), cpu_seconds(d["learner"])
    models.resume()
    reached = models.seen_until(sent, per_model, args.learner_timeout)
    elapsed, cpu_after = time.monotonic() - started_at, cpu_seconds(d["learner"])
    processed = reached - before
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    print(f"  learner: {processed} items in {elapsed:.1f} s = {processed / elapsed:.0f}/s",
          flush=True)
    return {"feedback": {"items": sent, "per_model": per_model, "errors": ingest.errors,
                         "items_per_s": sent / ingest.elapsed},
            "learner": {"backlog": sent - before, "processed": processed,
                        "seconds": round(elapsed, 2), "items_per_s": processed / elapsed,
                        "caught_up": reached >= sent, "cpu_seconds": cpu,
                        "items_per_cpu_s": processed / cpu if cpu else None}}


def _filled(d: dict[str, Any], args: argparse.Namespace,
            learner_at_rest: float | None) -> dict[str, Any]:
    """3. Every model published, the learner at rest again: memory, reservoirs, keys."""
    client, names, models = d["redis"], d["names"], d["models"]
    seen = {name: s.samples_seen for name, s in models.stats().items()}
    with contextlib.suppress(TimeoutError):  # a rejected candidate commits later
        _until(lambda: _committed(client, names, seen), args.learner_timeout,
               "every model's last publish")
    # After a backlog each model spends its rehearsal budget (models/stream.py: a replay
    # step per label, 512 kept at most): timed, and waited for, so that predict below gets
    # the cores the learner leaves at rest.
    rehearsal = _until_quiet(d["learner"], learner_at_rest, args.learner_timeout)
    time.sleep(args.settle)
    reservoirs = [s.reservoir_size for s in models.stats().values()]
    return {"rehearsal_seconds": round(rehearsal, 1),
            "learner_rss_trained": rss_bytes(d["learner"]),
            "redis_filled": used_memory(client) - d["empty"],
            "fill": {"reservoir_min": min(reservoirs),
                     "reservoir_mean": float(np.mean(reservoirs)), **key_memory(client, names)}}


def _predict(d: dict[str, Any], seconds: float) -> dict[str, Any]:
    """4. Predict capacity over the models, and where the CPU went meanwhile."""
    count = len(d["names"])
    bodies = predict_requests(d["base"], d["names"])
    pids = (d["api"], d["learner"], d["server"])
    before, generator = [cpu_seconds(pid) for pid in pids], time.process_time()
    predict = open_loop.drive(open_loop.saturate(
        f"{d['base']}/v1/predict", seconds,
        lambda i: bodies[i % count][(i // count) % len(bodies[0])], connections=CLIENTS))
    generator = time.process_time() - generator
    spent = [None if a is None or b is None else b - a
             for a, b in zip(before, (cpu_seconds(pid) for pid in pids), strict=True)]
    # Shares of one core: the API, the learner (drift statistics of what is served), Redis,
    # this load generator; on a shared machine what they leave is other work's.
    shares = {role: None if cpu is None else cpu / predict.elapsed
              for role, cpu in zip(("api", "learner", "redis"), spent, strict=True)}
    print(f"  predict: {predict.achieved_rate:.0f} req/s ({predict.errors} errors)", flush=True)
    return {"requests_per_s": predict.achieved_rate, "ok": predict.ok, "errors": predict.errors,
            "p50_ms": predict.percentile(50) * 1000,
            "api_cpu_us": None if spent[0] is None else spent[0] / max(predict.ok, 1) * 1e6,
            "cpu_shares": {**shares, "generator": generator / predict.elapsed}}


def _mib(value: float) -> str:
    return f"{value / MIB:.0f}"


def _kib(value: float) -> str:
    return f"{value / 1024:,.0f}"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _cells(r: dict[str, Any]) -> list[str]:
    """One N's column, in the order of ROWS."""
    if "learner" not in r:  # it did not come up, and was not measured again
        return [f"did not come up: {r['defaults_failed']}"] + ["—"] * (len(ROWS) - 1)
    n, lr, f, p = r["models"], r["learner"], r["fill"], r["predict"]
    per_cpu = f"{lr['items_per_cpu_s']:,.0f}" if lr["items_per_cpu_s"] else "n/a"
    cpu_us = f"{p['api_cpu_us']:.0f} µs" if p["api_cpu_us"] else "n/a"
    per_api_cpu_s = f" = {1e6 / p['api_cpu_us']:,.0f} per API CPU-second" if p["api_cpu_us"] else ""
    started_with = ("defaults" if not r.get("max_connections") else
                    f"**not at the defaults** ({r['defaults_failed']}); measured with "
                    f"`?max_connections={r['max_connections']}` in MNEMO_REDIS_URL")
    exhausted = r["pool_exhausted"]
    return [
        started_with,
        f"{_mib(r['api_rss_idle'])} / {_mib(r['api_rss_after'])}",
        f"{_mib(r['learner_rss_idle'])} / {_mib(r['learner_rss_trained'])}",
        " / ".join(_share(r[f"{role}_cpu_idle"]) for role in ("api", "learner", "redis")),
        f"{r['redis_clients_idle']} / {r['redis_clients_after']}",
        f"{p['requests_per_s']:,.0f} ({cpu_us}{per_api_cpu_s}; {p['errors']} errors)",
        " / ".join(_share(p["cpu_shares"][role]) for role in ("api", "learner", "redis",
                                                               "generator")),
        f"{r['feedback']['items_per_s']:,.0f} ({r['feedback']['errors']} errors)",
        f"{lr['items_per_s']:,.0f} ({per_cpu}; {lr['backlog']:,} items"
        f"{'' if lr['caught_up'] else ', not caught up'}); then {r['rehearsal_seconds']:.0f} s",
        f"{r['feedback']['per_model']:,}; {f['reservoir_mean']:,.0f} (min "
        f"{f['reservoir_min']:,})",
        f"{_kib(r['redis_start'] / n)} / {_kib(r['redis_filled'] / n)}",
        f"{_kib(r['redis_keys_start'])} / {_kib(f['keys_bytes'])} "
        f"({f['versions_with_blobs']:.1f} × {_kib(f['version_bytes'])} in versions' blobs)",
        f"{exhausted['serve']} / {exhausted['learn']}",
    ]


ROWS = (
    "started with",
    "API process RSS, MiB: at rest / after traffic",
    "learner process RSS, MiB: at rest / every model trained",
    "CPU at rest, share of a core: API / learner / Redis",
    "Redis connections: at rest / after traffic",
    "predict, 1 row, 16 clients over the models: req/s (API CPU per request)",
    "meanwhile, share of a core: API / learner / Redis / load generator",
    "feedback ingestion, batches of 100, learning paused: items/s",
    "learner, summed over the models: items/s (per learner CPU-second; backlog); then "
    "rehearsing",
    "fill per model: labels; reservoir (min)",
    "Redis `used_memory` over the empty server's ÷ models, KiB: at start / filled",
    "one model's keys, KiB: at start / filled (versions holding blobs × KiB each)",
    "`Too many connections` logged: API / learner",
)


def markdown(results: dict[str, Any]) -> str:
    """The table: a column per N, then what each model added from the fewest to the most."""
    counts = results["counts"]
    columns = [_cells(r) for r in counts]
    rows = ["| measure | " + " | ".join(f"{r['models']} model{'s' if r['models'] > 1 else ''}"
                                        for r in counts) + " |",
            "| --- |" + " --- |" * len(counts)]
    rows += [f"| {name} | " + " | ".join(col[i] for col in columns) + " |"
             for i, name in enumerate(ROWS)]
    measured = [r for r in counts if "learner" in r]
    if len(measured) > 1:
        a, b = measured[0], measured[-1]
        added = b["models"] - a["models"]

        def each(key: str) -> str:
            return f"{(b[key] - a[key]) / added / MIB:+.2f} MiB"

        rows += ["", f"Each model added ({a['models']} → {b['models']} models): API process "
                 f"{each('api_rss_idle')} idle, {each('api_rss_after')} after traffic; learner "
                 f"{each('learner_rss_idle')} idle, {each('learner_rss_trained')} trained."]
    return "\n".join(rows)


def run(args: argparse.Namespace) -> dict[str, Any]:
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                       f"{platform.python_version()}", "seconds": args.seconds,
            "fill": args.fill, "items": args.items}
    counts = []
    with tempfile.TemporaryDirectory(prefix="mnemo-bench-models-") as tmp:
        workdir = Path(args.logs) if args.logs else Path(tmp)
        for count in args.counts:
            print(f"{count} model{'s' if count > 1 else ''}", flush=True)
            counts.append(measure(count, args, workdir / f"n{count}"))
    return {"run": meta, "counts": counts}


def _counts(text: str) -> list[int]:
    try:
        counts = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated model counts, got {text!r}")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=_counts, default=list(COUNTS),
                        help="comma-separated numbers of models (default 1,10,100)")
    parser.add_argument("--seconds", type=float, default=10.0, help="predict capacity, per N")
    parser.add_argument("--fill", type=int, default=FILL, help="labels per model at least")
    parser.add_argument("--items", type=int, default=ITEMS,
                        help="the learner's backlog at least, spread over the models")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds before each memory reading")
    parser.add_argument("--idle-seconds", type=float, default=3.0,
                        help="CPU at rest measured over this long")
    parser.add_argument("--learner-timeout", type=float, default=300)
    parser.add_argument("--start-timeout", type=float, default=300)
    parser.add_argument("--no-retry-pool", dest="retry_pool", action="store_false",
                        help="where N models cannot come up at the defaults, fail instead of "
                        "measuring them again with ?max_connections= in MNEMO_REDIS_URL")
    parser.add_argument("--logs", default=None, help="keep each N's logs and data here")
    parser.add_argument("--markdown", default=None, help="write the table here too")
    parser.add_argument("--json", default=None)
    parser.add_argument("--benchmarks", type=Path, default=None,
                        help="splice the table into this file (BENCHMARKS.md)")
    args = parser.parse_args(argv)
    results = run(args)
    table = markdown(results)
    print(table)
    bench_table.save(table, results, args.markdown, args.json)
    if args.benchmarks:
        from service.bench.report import splice  # the mechanism `make bench` writes with

        splice(args.benchmarks, table, START, END, HEADING)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
