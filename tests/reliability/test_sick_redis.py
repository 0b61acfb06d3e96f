"""A sick Redis — hung (SIGSTOP) or full (maxmemory with noeviction) — gets 503 with
Retry-After on every route that needs it, never a 500; predict answers unlogged. What a 503
says holds afterwards: a refused write (OOM) changed nothing, a timed-out one is "unknown" and
its retry is safe; a purge refused under OOM deleted nothing, and completes once Redis takes
writes again. The learner rides out a full Redis without exiting, logging JSON lines only."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from service.config import Settings
from service.store.keys import Keys
from tests.conftest import running_app
from tests.e2e.procs import Procs, wait_for
from tests.reliability.cluster import Cluster, RedisServer
from tests.worker.test_operations import present, rows, stored_bytes

API, ADMIN = "api-secret", "admin-secret"
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}
ROW = [0.5, 1.5, 2.5, 3.5]
TIMEOUT = 0.5  # MNEMO_REDIS_TIMEOUT_SECONDS here
GENEROUS = TIMEOUT + 5  # "no hang", with room for a loaded machine

# Every route that talks to Redis, but predict/infer (answered unlogged) and feedback (own
# test): (method, path, JSON body, admin?).
ROUTES: list[tuple[str, str, Any, bool]] = [
    ("GET", "/v1/stats", None, False),
    ("GET", "/v1/stats/history", None, False),
    ("GET", "/v1/versions", None, False),
    ("GET", "/v1/versions/current", None, False),
    ("GET", "/v1/versions/0", None, False),
    ("GET", "/v1/versions/0/weights", None, False),
    ("GET", "/v1/data/purge/{purge}", None, True),
    ("POST", "/v1/golden", {"items": [{"inputs": ROW, "label": "a"}]}, True),
    ("POST", "/v1/learning/pause", None, True),
    ("POST", "/v1/learning/resume", None, True),
    ("POST", "/v1/versions/0/activate", None, True),
    ("POST", "/v1/data/purge", {"all": True}, True),
    ("POST", "/v1/feedback", {"items": [{"inputs": ROW, "label": "a", "feedback_id": "x"}]},
     False),
]


def sick_settings(make_settings: Callable[..., Settings], url: str) -> Settings:
    return make_settings(redis_url=url, redis_timeout_seconds=TIMEOUT, api_token=API,
                         admin_token=ADMIN, labels=["a", "b", "c"])


async def call(api: httpx.AsyncClient, method: str, path: str, body: Any,
               admin: bool) -> httpx.Response:
    return await api.request(method, path, json=body, headers=AS_ADMIN if admin else None)


def assert_unavailable(response: httpx.Response, what: str) -> str:
    assert response.status_code == 503, (what, response.status_code, response.text)
    assert int(response.headers["retry-after"]) >= 1, what
    return str(response.json()["detail"])


async def predicts_unlogged(api: httpx.AsyncClient) -> None:
    answer = await api.post("/v1/predict", json={"inputs": [ROW]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["logged"] is False
    model = api.model  # type: ignore[attr-defined]
    infer = await api.post(f"/v2/models/{model}/infer", json={"inputs": [
        {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROW}]})
    assert infer.status_code == 200, infer.text
    assert infer.json()["parameters"]["logged"] is False


async def test_a_hung_redis_answers_503_on_every_route_and_retrying_is_safe(
    make_settings: Callable[..., Settings], tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    with RedisServer(tmp_path / "redis") as server:
        assert server.proc is not None
        settings = sick_settings(make_settings, server.url)
        async with running_app(settings, token=API) as api:
            api.model = settings.model_name  # type: ignore[attr-defined]
            golden = ROUTES[7][2]
            assert (await api.post("/v1/golden", json=golden, headers=AS_ADMIN)).json() == \
                {"added": 1, "size": 1}
            purge_id = "0123456789abcdef"  # under the fault, any id: the lookup fails
            caplog.clear()
            os.kill(server.proc.pid, signal.SIGSTOP)
            try:
                answers: dict[str, str] = {}
                for method, path, body, admin in ROUTES:
                    started = time.monotonic()
                    response = await call(api, method, path.format(purge=purge_id), body, admin)
                    assert time.monotonic() - started < GENEROUS, path
                    answers[f"{method} {path}"] = assert_unavailable(response, path)
                await predicts_unlogged(api)
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)
            # A write that timed out says so: it may have been applied.
            for route in ("POST /v1/learning/pause", "POST /v1/golden", "POST /v1/data/purge"):
                assert "outcome is unknown" in answers[route], answers[route]
            assert "unknown" not in answers["GET /v1/stats"]
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR], \
                [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]

            # Retrying every write is safe: the golden item is there once, pause/resume land.
            retried = await api.post("/v1/golden", json=golden, headers=AS_ADMIN)
            assert retried.json() == {"added": 0, "size": 1}, retried.text
            assert (await api.post("/v1/learning/pause", headers=AS_ADMIN)).json() == \
                {"learning": "paused"}
            assert server.client().hget(Keys(settings.model_name).control, "paused") == b"1"
            stats = await api.get("/v1/stats")
            assert stats.status_code == 200


async def test_a_full_redis_refuses_writes_without_changing_anything_and_recovers(
    make_settings: Callable[..., Settings], tmp_path: Path, procs: Procs,
) -> None:
    with RedisServer(tmp_path / "redis") as server:
        settings = sick_settings(make_settings, server.url)
        cluster = Cluster(procs, server.url, settings.model_name, input_dim=4,
                          redis_timeout_seconds=TIMEOUT)
        learner = cluster.learn().proc
        r = server.client()
        keys = Keys(settings.model_name)
        secret, public = rows(1000.0, 20), rows(5000.0, 20)
        async with running_app(settings, token=API) as api:
            api.model = settings.model_name  # type: ignore[attr-defined]
            await _seed(api, secret, public)
            await _until(lambda: _caught_up(api, 30), 60, "the learner to process the seed",
                         procs)
            assert all(present(stored_bytes(r, settings.model_name), secret[:10]))
            # Activating version 0 must be a real write: wait until it is no longer current.
            await _until(lambda: _published_past_zero(api), 60, "a first published version",
                         procs)

            used = int(r.info("memory")["used_memory"])
            r.config_set("maxmemory", str(used // 2))  # noeviction: every write refused
            try:
                before = _raw_inputs(r, keys)
                for method, path, body, admin in ROUTES:
                    if method == "GET":
                        continue  # reads still work on a full Redis
                    response = await call(api, method, path, body, admin)
                    detail = assert_unavailable(response, path)
                    assert ("full" in detail and "not applied" in detail) or \
                        "nothing was deleted" in detail, (path, detail)
                await predicts_unlogged(api)
                purge = await api.post("/v1/data/purge", json={"tag": "secret", "golden": True},
                                       headers=AS_ADMIN)
                assert_unavailable(purge, "purge")
                assert "nothing was deleted" in purge.json()["detail"]
                assert (await api.get("/v1/stats")).status_code == 200
                assert r.hget(keys.control, "paused") is None  # the refused pause: not applied
                # The learner meets the full Redis (its statistics write) and stays up.
                wait_for(lambda: "OutOfMemoryError" in learner.log_path.read_text(), 30,
                         "the learner to meet the full Redis", procs.logs)
                assert learner.popen.poll() is None, procs.logs()
                assert _raw_inputs(r, keys) == before, "a refused purge deleted something"
            finally:
                r.config_set("maxmemory", "0")

            # Writes work again: the purge completes everywhere, the learner learns on.
            purge = await api.post("/v1/data/purge", json={"tag": "secret", "golden": True},
                                   headers=AS_ADMIN)
            assert purge.status_code in (200, 202), purge.text
            purge_id = purge.json()["purge_id"]
            await _until(lambda: _purge_done(api, purge_id), 60, "the purge to finish", procs)
            after = stored_bytes(r, settings.model_name)
            assert not any(present(after, secret)), "a secret input survived the purge"
            assert any(present(after, public))
            more = [{"inputs": row, "label": "b", "tag": "public"} for row in rows(9000.0, 5)]
            assert (await api.post("/v1/feedback", json={"items": more})).status_code == 202
            await _until(lambda: _caught_up(api, 35), 60, "the learner to learn on", procs)
        assert learner.popen.poll() is None, procs.logs()
        lines = learner.log_path.read_text().splitlines()
        assert lines and all(json.loads(line)["level"] for line in lines), lines[:5]


async def _seed(api: httpx.AsyncClient, secret: list[list[float]],
                public: list[list[float]]) -> None:
    """Secret inputs in the prediction log, the stream/buffer/holdout and the golden set."""
    predicted = (await api.post("/v1/predict", json={"inputs": secret[:10], "tag": "secret"}))
    by_id = [{"prediction_id": p["id"], "label": "a"} for p in predicted.json()["predictions"]]
    direct = [{"inputs": row, "label": "b", "tag": "secret"} for row in secret[10:]]
    shared = [{"inputs": row, "label": "c", "tag": "public"} for row in public[:10]]
    for items in (by_id, direct, shared):
        assert (await api.post("/v1/feedback", json={"items": items})).status_code == 202
    golden = [{"inputs": row, "label": "a", "tag": "secret"} for row in secret[:3]]
    assert (await api.post("/v1/golden", json={"items": golden}, headers=AS_ADMIN)).status_code \
        == 201


def _raw_inputs(r: redis.Redis, keys: Keys) -> dict[str, int]:
    """How many entries each place that keeps raw inputs holds."""
    return {
        "predictions": sum(1 for _ in r.scan_iter(match=keys.prediction_batch("*"))),
        "stream": int(r.xlen(keys.stream)),
        "holdout": int(r.llen(keys.holdout)),
        "replay": int(r.hlen(keys.reservoir)),
        "golden": int(r.llen(keys.golden)),
        "drift": int(r.xlen(keys.drift_samples)),
    }


async def _caught_up(api: httpx.AsyncClient, n: int) -> bool:
    stats = (await api.get("/v1/stats")).json()
    return stats["samples_seen"] == n and stats["feedback_lag"] == 0


async def _published_past_zero(api: httpx.AsyncClient) -> bool:
    return int((await api.get("/v1/versions/current")).json()["version"]) >= 1


async def _purge_done(api: httpx.AsyncClient, purge_id: str) -> bool:
    status = await api.get(f"/v1/data/purge/{purge_id}", headers=AS_ADMIN)
    return status.json()["status"] == "done"


async def _until(check: Callable[[], Any], timeout: float, what: str, procs: Procs) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{procs.logs()}"
        await asyncio.sleep(0.1)
