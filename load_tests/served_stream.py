"""A labelled stream sent through a running Mnemo as an application sends it: POST /v1/predict
(ROWS rows per request, the task's tag), then POST /v1/feedback with the true labels by
prediction id, paced to a fixed label rate. Every answer the service gave (its `label`, from the
version it served then) is scored against the true label: the served prequential accuracy.

Also the reads a benchmark needs around it: a test set's accuracy through /v1/predict, the
version registry (paginated), and the settings a fresh `python -m service run` gets.

Predict and feedback go through mnemo_client, as an application's would (its retries, its
feedback ids), vectors and records (a scenario with MNEMO_FEATURES) alike. The registry reads
stay plain GETs: their callers (tables, e2e tests) take the registry's JSON objects as they
are."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from load_tests.learning_scores import Run
from load_tests.learning_streams import Labelled, Rows, Scenario
from load_tests.processes import free_port, started
from mnemo_client import ByPrediction, Client, ConflictError, WithInputs

ROWS = 16  # rows per predict request (as the bug report sent them)
RATE = 200.0  # labels per second
MAX_ROWS = 1024  # MNEMO_MAX_BATCH's default: rows per test-set predict request
SETTLE_SECONDS = 60.0


def scenario_settings(scenario: Scenario) -> dict[str, str]:
    """What the scenario must declare; everything else stays at the service's defaults. A
    scenario of records declares its schema (the input dimension follows from it)."""
    if scenario.features is not None:
        return {"MNEMO_FEATURES": json.dumps(scenario.features, separators=(",", ":")),
                "MNEMO_LABEL_TYPE": "int"}
    return {"MNEMO_INPUT_DIM": str(scenario.input_dim), "MNEMO_LABEL_TYPE": "int"}


def service_env(settings: dict[str, str], data_dir: Path) -> dict[str, str]:
    """This process's environment without any MNEMO_* name, plus the settings, free loopback
    ports and a data directory of its own (no MNEMO_REDIS_URL: the embedded server)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MNEMO_")}
    env.update(settings)
    env.update({"MNEMO_HOST": "127.0.0.1", "MNEMO_PORT": str(free_port()),
                "MNEMO_LEARNER_METRICS_PORT": str(free_port()), "MNEMO_DATA_DIR": str(data_dir),
                "PYTHONUNBUFFERED": "1"})
    return env


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy (returned) or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.TransportError):
            value = check()
            if value:
                return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def ready(client: httpx.Client) -> bool:
    """The API serves a version and the learner has reported once."""
    return (client.get("/readyz").status_code == 200
            and client.get("/v1/stats").json().get("learning") is not None)


@contextlib.contextmanager
def running_service(env: dict[str, str], log: Path, timeout: float = 120) -> Iterator[httpx.Client]:
    """`python -m service run` with `env`, a client on its API once ready; stopped on exit."""
    log.parent.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{env['MNEMO_PORT']}"
    with started(["-m", "service", "run"], env, log), httpx.Client(base_url=url, timeout=30) as client:
        wait_until(lambda: ready(client), timeout, f"the service at {url} ({log})")
        yield client


class ServedStream:
    """Sends labelled rows through predict then feedback at `rate` labels/s and keeps, per
    label, whether the served answer was right. A request is sent no earlier than its slot;
    after a pause (a test-set read) the schedule restarts instead of bursting to catch up."""

    def __init__(self, client: httpx.Client, rate: float = RATE, rows: int = ROWS) -> None:
        self.http, self.mnemo, self.rate, self.rows = client, Client(http=client), rate, rows
        self.correct: list[bool] = []
        self.unpredicted = 0  # rows predict refused (409: no class yet), scored wrong
        self.streaming_seconds = 0.0
        self._next = 0.0

    @property
    def sent(self) -> int:
        return len(self.correct)

    def send(self, x: Rows, y: np.ndarray, tag: str | None = None) -> list[bool]:
        """Stream the rows in order; returns whether each served answer was right."""
        out: list[bool] = []
        began = time.monotonic()
        for start in range(0, len(y), self.rows):
            self._wait_slot()
            out += self._one_request(x[start:start + self.rows], y[start:start + self.rows], tag)
        # The last request holds its slot too: on pace, `sent / streaming_seconds` is the rate.
        self.streaming_seconds += max(time.monotonic(), self._next) - began
        self.correct += out
        return out

    def _wait_slot(self) -> None:
        now, interval = time.monotonic(), self.rows / self.rate
        if now > self._next + interval:  # idle for a while: start afresh
            self._next = now
        time.sleep(max(0.0, self._next - now))  # pacing, not waiting for a condition
        self._next += interval

    def _one_request(self, x: Rows, y: np.ndarray, tag: str | None) -> list[bool]:
        labels = [int(v) for v in y]
        try:
            answer = self.mnemo.predict(x, tag=tag)
        except ConflictError:  # no class yet: the labels still teach the model
            self.unpredicted += len(labels)
            self._label_inputs(x, labels, tag)
            return [False] * len(labels)
        self.mnemo.feedback([ByPrediction(p.id, label) for p, label in zip(answer, labels, strict=True)])
        return [p.label == label for p, label in zip(answer, labels, strict=True)]

    def _label_inputs(self, x: Rows, labels: list[int], tag: str | None) -> None:
        rows = x.tolist() if isinstance(x, np.ndarray) else x
        self.mnemo.feedback([WithInputs(row, label, tag)
                             for row, label in zip(rows, labels, strict=True)])


def _ok(response: httpx.Response, status: int) -> Any:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.url.path} answered {response.status_code}: "
                           f"{response.text[:300]}")
    return response.json()


def served_accuracy(client: httpx.Client, test: Labelled) -> float:
    """The test set's accuracy through /v1/predict with its tag (no class yet: 0)."""
    mnemo, right = Client(http=client), 0
    for start in range(0, len(test), MAX_ROWS):
        x, y = test.x[start:start + MAX_ROWS], test.y[start:start + MAX_ROWS]
        try:
            answer = mnemo.predict(x, tag=test.tag)
        except ConflictError:
            continue
        right += sum(p.label == int(b) for p, b in zip(answer, y, strict=True))
    return right / len(test)


def versions(client: httpx.Client, page: int = 100, max_pages: int = 1000) -> list[dict[str, Any]]:
    """Every version, newest first, paging with limit/before."""
    out: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": page}
    for _ in range(max_pages):
        listing = _ok(client.get("/v1/versions", params=params), 200)
        out += listing["versions"]
        if not listing["next"]:
            return out
        params["before"] = listing["next"]
    raise RuntimeError(f"more than {page * max_pages} versions")


def published(listing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Learned versions that passed the gate (active or archived), oldest first."""
    return sorted((v for v in listing if v["version"] > 0 and v["status"] in ("active", "archived")),
                  key=lambda v: v["version"])


def registry_summary(client: httpx.Client) -> dict[str, Any]:
    """Versions published and rejected, and the learner's concept drift events."""
    listing = versions(client)
    stats = _ok(client.get("/v1/stats"), 200)
    return {"published": len(published(listing)),
            "rejected": sum(v["status"] == "rejected" for v in listing),
            "current": _ok(client.get("/v1/versions/current"), 200)["version"],
            "concept_drift_events": (stats.get("drift") or {}).get("concept_drift_events"),
            "samples_seen": stats.get("samples_seen")}


def decided(client: httpx.Client, labels: int) -> bool:
    """Whether the newest version, published or rejected, includes `labels` labels: the
    served version is then the gate's decision on all of them."""
    newest = _ok(client.get("/v1/versions", params={"limit": 1}), 200)["versions"][0]
    return bool(newest["samples_seen"] >= labels)


def settled(client: httpx.Client, labels: int, timeout: float = SETTLE_SECONDS) -> float:
    """Wait until the learner has decided on `labels` labels; seconds waited."""
    began = time.monotonic()
    wait_until(lambda: decided(client, labels), timeout, f"a version including {labels} labels")
    return time.monotonic() - began


def drive(client: httpx.Client, scenario: Scenario, rate: float = RATE, rows: int = ROWS,
          ) -> tuple[Run, dict[str, Any]]:
    """The scenario through the service: each phase streamed, then (once settled) every test
    set read; the run and how the stream went."""
    stream, run, waits = ServedStream(client, rate, rows), Run(), []
    began = time.monotonic()
    for phase in scenario.phases:
        stream.send(phase.x, phase.y, phase.tag)
        if scenario.tests:
            waits.append(round(settled(client, stream.sent), 1))
            run.matrix.append([served_accuracy(client, test) for test in scenario.tests])
    if scenario.overall is not None:
        run.overall = served_accuracy(client, scenario.overall)
    run.correct, run.seconds = stream.correct, time.monotonic() - began
    return run, {"labels": stream.sent, "rate": stream.sent / max(stream.streaming_seconds, 1e-9),
                 "unpredicted": stream.unpredicted, "settle_seconds": waits}
