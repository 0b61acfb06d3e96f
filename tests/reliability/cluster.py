"""Helpers for the reliability tests: Mnemo processes (`serve`, `learn`) on one Redis with
small, fast settings, a synthetic three-class stream, a background feedback sender that
records exactly which items were answered 202, and Redis-side checks of what was kept."""

from __future__ import annotations

import contextlib
import itertools
import re
import shutil
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis

from service.store.keys import Keys
from tests.conftest import free_port, seen_entries
from tests.e2e.procs import Proc, Procs, base_env, wait_for

LABELS = ["a", "b", "c"]
DIM = 8
ADMIN = "reliability-admin-token"
# Small and fast: a version every 40 items (or 0.5 s), a lease that lapses in 1.5 s.
FAST = {"input_dim": DIM, "labels": ",".join(LABELS), "publish_every_samples": 40,
        "publish_every_seconds": 0.5, "lease_ttl_seconds": 1.5, "swap_poll_seconds": 0.3,
        "buffer_size": 300, "admin_token": ADMIN, "redis_timeout_seconds": 1}


def blobs(n: int, seed: int, classes: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`n` points of three overlapping Gaussian classes in DIM dimensions (class indices)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(classes or [0, 1, 2], size=n)
    centres = np.eye(3, DIM) * 2.5
    return (centres[y] + rng.normal(size=(n, DIM))).astype(np.float32), y


def items(x: np.ndarray, y: np.ndarray, prefix: str) -> list[dict[str, Any]]:
    return [{"inputs": [float(v) for v in row], "label": LABELS[int(label)],
             "feedback_id": f"{prefix}-{i}"} for i, (row, label) in enumerate(zip(x, y, strict=True))]


@dataclass
class Node:
    proc: Proc
    port: int  # API port (serve) or metrics port (learn)
    headers: dict[str, str] = field(default_factory=dict)  # the API token, where one is set

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metric(self, name: str, **labels: str) -> float:
        """One sample of this process's /metrics (0 when the series does not exist yet)."""
        text = httpx.get(f"{self.url}/metrics", headers=self.headers, timeout=5).text
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
                if all(found.get(k) == v for k, v in labels.items()):
                    return float(line.rsplit(" ", 1)[1])
        return 0.0


class Cluster:
    """`serve` and `learn` processes of one model on one Redis, all with the FAST settings."""

    def __init__(self, procs: Procs, redis_url: str, model: str, **settings: object) -> None:
        self.procs = procs
        self.redis_url = redis_url
        self.model = model
        self.settings = {**FAST, "redis_url": redis_url, "model_name": model, **settings}
        self._names = itertools.count()

    def serve(self, **settings: object) -> Node:
        """An API process, once /readyz answers 200."""
        return self._start("serve", "port", "/readyz", settings)

    def learn(self, **settings: object) -> Node:
        """A learner process (holder or standby), once its /metrics answers."""
        return self._start("learn", "learner_metrics_port", "/metrics", settings)

    def _start(self, role: str, port_setting: str, ready_path: str,
               settings: dict[str, object]) -> Node:
        port = free_port()
        chosen = {**self.settings, **settings, port_setting: port}
        env = base_env(**chosen)
        # The learner's /metrics is behind the API token when one is set.
        headers = {"Authorization": f"Bearer {chosen['api_token']}"} \
            if chosen.get("api_token") else {}
        proc = self.procs.start(f"{role}{next(self._names)}", [role], env)
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}{ready_path}", headers=headers,
                                   timeout=1).status_code == 200,
                 60, f"the {role} process to be up", self.procs.logs)
        return Node(proc, port, headers)

    def holder_and_standby(self, learners: list[Node], r: redis.Redis) -> tuple[Node, Node]:
        """Of two learners, the lease holder (once it has published three versions) and the
        standby."""
        holder_pid = wait_for(lambda: self.lease_holder(r), 30, "a lease holder")
        holder, standby = sorted(learners, key=lambda n: n.proc.pid != holder_pid)
        wait_for(lambda: holder.metric("mnemo_model_publish_total", outcome="published") >= 3,
                 60, "the holder to publish", self.procs.logs)
        return holder, standby

    def lease_holder(self, r: redis.Redis) -> int | None:
        """The pid of the learner holding the lease (its owner is host:pid:nonce)."""
        owner = r.get(Keys(self.model).lease)
        return int(owner.decode().split(":")[1]) if owner else None


@dataclass
class Feeder:
    """Sends feedback batches (unique feedback ids) from a thread, round-robin over `urls`,
    until stopped or `limit` items were sent. Records every id answered 202, every other HTTP
    status, and every connection error, per URL."""

    urls: list[str]
    prefix: str
    batch: int = 8
    limit: int | None = None
    pause: float = 0.01
    seed: int = 0
    model: str | None = None  # send to /v1/models/{model}/feedback; None: /v1/feedback
    accepted: list[str] = field(default_factory=list)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Feeder:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
            assert not self._thread.is_alive(), "the feeder did not stop"

    @property
    def path(self) -> str:
        return f"/v1/models/{self.model}/feedback" if self.model else "/v1/feedback"

    def drop(self, url: str) -> None:
        """Stop sending to `url` (e.g. after it was killed)."""
        self.urls = [u for u in self.urls if u != url]

    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def _run(self) -> None:
        x, y = blobs(100_000 if self.limit is None else self.limit, self.seed)
        with httpx.Client(timeout=30) as http:
            for n in itertools.count():
                start = n * self.batch
                if self._stop.is_set() or start >= len(y):
                    return
                url = self.urls[n % len(self.urls)]
                chunk = items(x[start : start + self.batch], y[start : start + self.batch],
                              f"{self.prefix}{start}")
                try:
                    response = http.post(f"{url}{self.path}", json={"items": chunk})
                except httpx.TransportError as exc:
                    self.transport_errors[url] += 1
                    del exc
                else:
                    self.statuses[(url, response.status_code)] += 1
                    if response.status_code == 202:
                        assert response.json()["duplicates"] == 0
                        self.accepted += [f"f:{it['feedback_id']}" for it in chunk]
                time.sleep(self.pause)


def seen_ids(r: redis.Redis, model: str) -> set[str]:
    """Every feedback id the feedback script appended (its dedupe hashes)."""
    return set(seen_entries(r, model))


def stream_ids(r: redis.Redis, model: str) -> list[str]:
    return [fields[b"id"].decode() for _, fields in r.xrange(Keys(model).stream)]


def accepted_counter(r: redis.Redis, model: str) -> int:
    return int(r.hget(Keys(model).counters, "accepted") or 0)


def versions(api: httpx.Client) -> dict[int, dict[str, Any]]:
    body = api.get("/v1/versions", params={"limit": 1000}).raise_for_status().json()
    assert body["next"] is None
    return {v["version"]: v for v in body["versions"]}


def check_version_history(api: httpx.Client) -> dict[int, dict[str, Any]]:
    """No version lost and none published twice: numbers 0..n without a gap, each version
    including strictly more items (and a later stream position) than the one before."""
    listed = versions(api)
    assert sorted(listed) == list(range(len(listed))), sorted(listed)
    ordered = [listed[v] for v in sorted(listed)][1:]
    for before, after in itertools.pairwise(ordered):
        assert after["samples_seen"] > before["samples_seen"], (before, after)
        b, a = (tuple(map(int, v["last_stream_id"].split("-"))) for v in (before, after))
        assert a > b, (before, after)
    return listed


def wait_caught_up(api: httpx.Client, total: int, procs: Procs, timeout: float = 90) -> None:
    """The learner processed every accepted item and a version includes them all."""
    wait_for(lambda: (s := api.get("/v1/stats").json())["samples_seen"] == total
             and s["feedback_lag"] == 0, timeout, f"the learner to process {total} items",
             procs.logs)
    wait_for(lambda: max(versions(api).values(), key=lambda v: v["version"])["samples_seen"]
             == total, timeout, "a version that includes every item", procs.logs)


def answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


class RedisServer:
    """The machine's redis-server on a free port with AOF (everysec) in its own directory;
    stoppable by SIGKILL and restartable on the same port and directory."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
             "--maxmemory-policy", "noeviction", *self.args],
            stdout=(self.dir / "redis.log").open("ab"), stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port)
        try:
            wait_for(lambda: answers(client), 20, "redis-server to answer",
                     lambda: (self.dir / "redis.log").read_text())
        finally:
            client.close()
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self.kill()
