"""The load generators against a real `serve` process: a few seconds of the open-loop generator
(every request answered, latencies from scheduled send times) and of the locust mix (in its own
process: locust patches the standard library with gevent)."""

from __future__ import annotations

import asyncio
import csv
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from load_tests import open_loop, publisher
from service.config import Settings
from service.worker.state import restore
from tests.conftest import REDIS_URL, delete_model_keys, free_port
from tests.e2e.procs import ROOT, Proc, Procs, base_env, wait_for
from tests.publishing import open_store, publish_learned

ADMIN = "load-tests-admin"


def _start_serve(procs: Procs, model: str) -> tuple[str, Proc]:
    """A `serve` process of `model` on a free port, once it is ready: its base URL and it."""
    port = free_port()
    proc = procs.start("serve", ["serve"], base_env(
        port=port, redis_url=REDIS_URL, model_name=model, input_dim=4,
        labels="setosa,versicolor,virginica", admin_token=ADMIN))
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, 60, "serve", procs.logs)
    return url, proc


@pytest.fixture
def serve_proc(tmp_path: Path, model_name: str) -> Iterator[tuple[str, Proc]]:
    """A real `serve` process: its base URL and the process."""
    procs = Procs(tmp_path)
    try:
        yield _start_serve(procs, model_name)
    finally:
        procs.stop_all()


@pytest.fixture
def server(serve_proc: tuple[str, Proc]) -> str:
    return serve_proc[0]


@pytest.fixture(scope="module")
def shared_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Proc]]:
    """One `serve` process (of its own model) for the tests that only send it predictions and
    feedback and read nothing back but the answers: what one sends, no other reads. The
    publisher's tests, which activate versions and count swaps, each get their own."""
    procs = Procs(tmp_path_factory.mktemp("shared-serve"))
    model = f"t-{uuid.uuid4().hex[:12]}"
    try:
        yield _start_serve(procs, model)
    finally:
        procs.stop_all()
        with redis.Redis.from_url(REDIS_URL) as client:
            delete_model_keys(client, model)


@pytest.fixture
def shared_server(shared_serve: tuple[str, Proc]) -> str:
    return shared_serve[0]


def test_serve_runs_on_uvloop_and_httptools(shared_serve: tuple[str, Proc]) -> None:
    """What uvicorn picks by itself once they are installed (pyproject.toml says why)."""
    _url, proc = shared_serve
    maps = Path(f"/proc/{proc.pid}/maps").read_text()
    assert "/uvloop/loop." in maps and "/httptools/parser/parser." in maps


def test_drive_runs_the_load_on_uvloop() -> None:
    import uvloop

    async def running_loop() -> type:
        return type(asyncio.get_running_loop())

    assert open_loop.drive(running_loop()) is uvloop.Loop


def test_open_loop_generator_sends_at_the_rate_and_times_from_the_schedule(shared_server: str) -> None:
    url = f"{shared_server}/v1/predict"
    bodies = [open_loop.http_request(url, b) for b in open_loop.predict_bodies(2, 4, count=8)]
    report = open_loop.drive(open_loop.run(url, rate=100, seconds=2,
                                           requests=lambda i: bodies[i % len(bodies)]))
    assert report.sent == 200 and report.ok == 200 and report.errors == 0
    assert report.statuses == {200: 200}
    assert len(report.latencies) == 200 and min(report.latencies) > 0
    # The schedule spans 2 s: finishing it cannot take less, however fast the server is.
    assert report.elapsed >= 1.99
    summary = report.summary()
    assert summary["p50_ms"] <= summary["p99_ms"] <= summary["p99.9_ms"] <= summary["max_ms"]
    assert "achieved" in report.line()


def test_a_request_sent_early_is_timed_from_when_it_went_out(
        shared_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """uvloop's timers fire up to ~0.8 ms early; here every wait ends at once, so the whole
    second's schedule goes out immediately: timed from the schedule, the late-scheduled ones
    would show up to a second of negative latency."""
    url = f"{shared_server}/v1/predict"
    bodies = [open_loop.http_request(url, b) for b in open_loop.predict_bodies(1, 4, count=4)]

    async def wakes_at_once(_delay: float) -> None:
        return None

    monkeypatch.setattr(open_loop.asyncio, "sleep", wakes_at_once)
    report = open_loop.drive(open_loop.run(url, rate=50, seconds=1.0,
                                           requests=lambda i: bodies[i % len(bodies)]))
    assert report.ok == 50 and report.elapsed < 1.0  # it did not wait for the schedule
    assert min(report.latencies) > 0


def test_saturate_keeps_its_clients_busy_until_the_deadline(shared_server: str) -> None:
    url = f"{shared_server}/v1/predict"
    bodies = [open_loop.http_request(url, b) for b in open_loop.predict_bodies(1, 4, count=4)]
    report = asyncio.run(open_loop.saturate(url, 1.0, lambda i: bodies[i % len(bodies)],
                                            connections=4))
    assert report.ok == report.sent > 0 and report.errors == 0
    assert report.elapsed >= 1.0 and report.achieved_rate == report.ok / report.elapsed


def test_open_loop_counts_refusals_as_errors(shared_server: str) -> None:
    url = f"{shared_server}/v1/predict"
    bad = open_loop.http_request(url, b'{"inputs": [[1, 2]]}')  # wrong dimension: 422
    report = asyncio.run(open_loop.run(url, rate=50, seconds=0.4, requests=lambda i: bad))
    assert report.ok == 0 and report.errors == 20 and report.statuses == {422: 20}


def test_locust_mix_runs_without_failures(shared_server: str, tmp_path: Path) -> None:
    prefix = tmp_path / "locust"
    done = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "load_tests" / "locustfile.py"),
         "--host", shared_server, "--headless", "-u", "4", "-r", "4", "-t", "4s",
         "--csv", str(prefix), "--only-summary"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**base_env(), "LOAD_FEEDBACK_FRACTION": "0.5"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with (tmp_path / "locust_stats.csv").open() as f:
        rows = {r["Name"]: r for r in csv.DictReader(f)}
    assert int(rows["/v1/predict"]["Request Count"]) > 0
    assert int(rows["/v1/feedback"]["Request Count"]) > 0  # the mix labels a fraction
    assert int(rows["Aggregated"]["Failure Count"]) == 0


@pytest.mark.parametrize("tuned", [False, True])
def test_the_floor_parses_like_predict_and_answers_a_constant(tuned: bool, tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "floor.log").open("wb")
    args = [sys.executable, "-m", "load_tests.floor_app", "--port", str(port)]
    proc = subprocess.Popen([*args, "--tuned"] if tuned else args, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/v1/predict"
        wait_for(lambda: httpx.get(url).status_code == 405, 60, "floor",
                 lambda: (tmp_path / "floor.log").read_text())
        ok = httpx.post(url, json={"inputs": [[1.0, 2.0]], "tag": "t"})
        assert ok.status_code == 200 and ok.json() == {"ok": 1}
        for bad in ({"inputs": []}, {"inputs": [["1"]]}, {"inputs": [[1.0]], "extra": 1}):
            assert httpx.post(url, json=bad).status_code == 422, bad
    finally:
        proc.terminate()
        proc.wait(20)


def _swaps(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(float(v) for v in re.findall(r"^mnemo_model_swaps_total\{.*\} (\S+)$", text, re.M))


def _publisher(*route: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "load_tests.publisher", *route, "--versions", "1,0",
         "--every", "0.3"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=base_env())


async def _publish_second_version(settings: Settings) -> None:
    """Version 1 beside the initial 0 (the same weights: a swap is a new epoch either way)."""
    async with open_store(settings.model_name) as (registry, scripts, keys):
        learner, _, _ = restore(settings, await registry.weights(0), None)
        await publish_learned(settings, registry, scripts, keys, learner,
                              await registry.labels(), samples_seen=0)
        await registry.activate(0)


@pytest.mark.parametrize("where", ["redis", "admin route"])
def test_the_publisher_makes_the_api_swap_at_each_activation(
        where: str, server: str, model_name: str,
        make_settings: Callable[..., Settings]) -> None:
    asyncio.run(_publish_second_version(make_settings()))
    before = _swaps(server)
    route = (["--redis-url", REDIS_URL, "--model", model_name] if where == "redis"
             else ["--url", server, "--token", ADMIN])
    done = _publisher(*route, "--limit", "3")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["ready", "activations: 3"]
    # Each activation moves the current pointer (1, 0, 1): the API loads and swaps each one.
    wait_for(lambda: _swaps(server) - before == 3, 10, "three swaps")
    assert httpx.get(f"{server}/v1/versions/current").json()["version"] == 1


def test_the_publisher_fails_loudly_when_an_activation_is_refused(
        server: str, model_name: str, make_settings: Callable[..., Settings]) -> None:
    asyncio.run(_publish_second_version(make_settings()))
    before = _swaps(server)
    done = _publisher("--url", server, "--token", "not-the-token", "--limit", "1")
    assert done.returncode != 0 and "401" in done.stderr
    missing = subprocess.run(  # a version that does not exist, activated in Redis
        [sys.executable, "-m", "load_tests.publisher", "--redis-url", REDIS_URL, "--model",
         model_name, "--versions", "7", "--limit", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=base_env())
    assert missing.returncode != 0 and "VersionNotFound" in missing.stderr
    assert _swaps(server) == before


def test_running_publishes_during_the_body_and_raises_the_publishers_failure(
        server: str, model_name: str, make_settings: Callable[..., Settings]) -> None:
    asyncio.run(_publish_second_version(make_settings()))
    before = _swaps(server)
    with publisher.running(["--redis-url", REDIS_URL, "--model", model_name], (1, 0)):
        wait_for(lambda: _swaps(server) - before >= 2, 10, "two swaps")
    with pytest.raises(RuntimeError, match="the publisher failed"), \
            publisher.running(["--url", server, "--token", "not-the-token"], (1, 0)):
        time.sleep(2.5)  # its first activation, a second in, is refused (a margin for slow CI)


@pytest.mark.parametrize("route", [[], ["--url", "http://x"], ["--redis-url", "redis://x"],
                                   ["--url", "http://x", "--token", "t", "--redis-url", "r",
                                    "--model", "m"]])
def test_the_publisher_needs_one_complete_route(route: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "load_tests.publisher", *route,
                           "--versions", "1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=base_env())
    assert done.returncode == 2 and "give --redis-url and --model, or --url and --token" in \
        done.stderr
