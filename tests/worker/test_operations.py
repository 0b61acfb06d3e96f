"""Day-two operations against a live learner: pause/resume, and purge by tag or everything —
afterwards no purged input is found in any Redis key."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np
import redis

from service.config import Settings
from service.store.codec import vector_to_bytes
from service.store.connection import connect
from service.store.control import PurgeRequest, new_purge_id
from service.worker.loop import LearnerService
from tests.conftest import REDIS_URL, running_app, snapshot

ADMIN = {"Authorization": "Bearer admin-secret"}


@asynccontextmanager
async def learner_running(settings: Settings) -> AsyncIterator[LearnerService]:
    """A LearnerService stepping in the background of the test's event loop."""
    client = connect(REDIS_URL, 5)
    learner = LearnerService(settings, client)
    assert await learner.lease.try_acquire()
    await learner.prepare()
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            await learner.step(block_ms=20)

    task = asyncio.create_task(loop())
    try:
        yield learner
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        await client.aclose()


async def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def rows(start: float, n: int) -> list[list[float]]:
    # Distinctive values whose float32 bytes cannot appear by accident elsewhere.
    return [[start + i, -start - 0.25 * i, 4096.125 + i, 1.0 / (i + 3)] for i in range(n)]


def stored_bytes(redis_client: redis.Redis, model: str) -> bytes:
    """Every stored value of the model's keys, concatenated (for a byte search)."""
    out = bytearray()

    def add(value: Any) -> None:
        if isinstance(value, bytes):
            out.extend(value + b"\x00")
        elif isinstance(value, dict):
            for k, v in value.items():
                add(k)
                add(v)
        elif isinstance(value, list | tuple | set):
            for v in value:
                add(v)

    add(list(snapshot(redis_client, model).values()))
    return bytes(out)


def present(blob: bytes, inputs: list[list[float]]) -> list[bool]:
    return [vector_to_bytes(np.array(row, dtype=np.float32)) in blob for row in inputs]


async def test_pause_keeps_accepting_and_resume_catches_up(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(admin_token="admin-secret", publish_every_seconds=0.2)
    async with running_app(settings) as api, learner_running(settings) as learner:
        assert (await api.post("/v1/learning/pause")).status_code == 401
        assert (await api.post("/v1/learning/pause", headers=ADMIN)).json() == {"learning": "paused"}
        await wait_for(lambda: _learning(api, "paused"), 5, "stats to say paused")

        async def learner_paused() -> bool:
            return learner.learning == "paused"

        await wait_for(learner_paused, 5, "the learner to notice the pause")
        items = [{"inputs": row, "label": "setosa"} for row in rows(10.0, 20)]
        assert (await api.post("/v1/feedback", json={"items": items})).status_code == 202
        await asyncio.sleep(0.5)  # a running learner would have processed 20 items by now
        stats = (await api.get("/v1/stats")).json()
        assert (stats["samples_seen"], stats["feedback_lag"]) == (0, 20)
        assert learner.samples_seen == 0

        assert (await api.post("/v1/learning/resume", headers=ADMIN)).json() == {"learning": "running"}
        await wait_for(lambda: _caught_up(api, 20), 10, "the learner to catch up")
        await wait_for(lambda: _learning(api, "running"), 5, "stats to say running")


async def _learning(api: httpx.AsyncClient, state: str) -> bool:
    return (await api.get("/v1/stats")).json()["learning"] == state


async def _caught_up(api: httpx.AsyncClient, n: int) -> bool:
    stats = (await api.get("/v1/stats")).json()
    return stats["samples_seen"] == n and stats["feedback_lag"] == 0


async def test_purge_by_tag_then_everything_leaves_no_purged_input_anywhere(
    make_settings: Callable[..., Settings], redis_client: redis.Redis, model_name: str,
) -> None:
    settings = make_settings(admin_token="admin-secret", publish_every_seconds=0.2,
                             buffer_size=50, holdout_fraction=0.3, max_batch=100)
    secret, public = rows(1000.0, 40), rows(5000.0, 40)
    async with running_app(settings) as api, learner_running(settings):
        # Secret data in every place raw inputs live: prediction log (by id), stream, replay
        # buffer, holdout (30% of items), golden set.
        predicted = (await api.post("/v1/predict", json={"inputs": secret[:20], "tag": "secret"})).json()
        by_id = [{"prediction_id": p["id"], "label": "setosa"} for p in predicted["predictions"]]
        direct = [{"inputs": row, "label": "virginica", "tag": "secret"} for row in secret[20:]]
        shared = [{"inputs": row, "label": "versicolor", "tag": "public"} for row in public]
        for items in (by_id, direct, shared):
            assert (await api.post("/v1/feedback", json={"items": items})).status_code == 202
        golden = [{"inputs": row, "label": "setosa", "tag": "secret"} for row in secret[:5]]
        assert (await api.post("/v1/golden", json={"items": golden}, headers=ADMIN)).status_code == 201
        await wait_for(lambda: _caught_up(api, 80), 15, "the learner to process everything")
        # Hold back the next publish's stream trim so the stream still has secret entries too.
        before = stored_bytes(redis_client, model_name)
        assert all(present(before, secret[:5]))  # at least the golden copies

        refused = await api.post("/v1/data/purge", json={"tag": "secret", "all": True}, headers=ADMIN)
        assert refused.status_code == 422
        response = await api.post("/v1/data/purge", json={"tag": "secret"}, headers=ADMIN)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "done" and body["tag"] == "secret"
        assert body["removed"]["predictions"] == 1 and body["removed"]["golden"] == 0
        assert body["removed"]["replay"] + body["removed"]["holdout"] > 0

        after = stored_bytes(redis_client, model_name)
        # The golden set is purged only when named: its 5 secret rows remain, nothing else.
        assert present(after, secret) == [True] * 5 + [False] * 35
        assert any(present(after, public)), "a tag purge must not touch other tags' data"
        stats = (await api.get("/v1/stats")).json()
        assert stats["feedback_lag"] == 0

        everything = await api.post("/v1/data/purge", json={"all": True, "golden": True},
                                    headers=ADMIN)
        assert everything.status_code == 200 and everything.json()["removed"]["golden"] == 5
        final = stored_bytes(redis_client, model_name)
        assert not any(present(final, secret)) and not any(present(final, public))
        status = await api.get(f"/v1/data/purge/{body['purge_id']}", headers=ADMIN)
        assert status.json()["status"] == "done"
        # The model keeps serving: weights are not raw inputs.
        again = await api.post("/v1/predict", json={"inputs": public[:1]})
        assert again.status_code == 200


async def test_a_recorded_purge_whose_served_part_never_ran_is_finished_by_the_learner(
    make_settings: Callable[..., Settings], redis_client: redis.Redis, model_name: str,
) -> None:
    """The API records a purge before deleting anything; when Redis fails it after that
    (or the API dies), the learner deletes the prediction log's and golden set's part too."""
    settings = make_settings(admin_token="admin-secret", publish_every_seconds=0.2)
    secret = rows(3000.0, 6)
    async with running_app(settings) as api, learner_running(settings) as learner:
        predicted = (await api.post("/v1/predict", json={"inputs": secret[:3], "tag": "s"})).json()
        assert predicted["logged"] is True
        golden = [{"inputs": row, "label": "setosa", "tag": "s"} for row in secret[3:]]
        assert (await api.post("/v1/golden", json={"items": golden}, headers=ADMIN)).status_code == 201
        assert all(present(stored_bytes(redis_client, model_name), secret))

        request = PurgeRequest(new_purge_id(), "s", golden=True)
        await learner.control.request_purge(request)  # what the API did before Redis failed

        async def done() -> dict[str, Any] | None:
            status = await learner.control.purge_status(request.purge_id)
            return status if status and status["status"] == "done" else None

        status = await wait_for(done, 10, "the learner to finish the purge")
        assert status["removed"]["predictions"] == 1 and status["removed"]["golden"] == 3
        assert not any(present(stored_bytes(redis_client, model_name), secret))


async def test_a_purge_with_no_learner_running_is_pending_at_once_and_done_once_one_runs(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(admin_token="admin-secret", publish_every_seconds=0.2)
    async with running_app(settings) as api:
        feedback = [{"inputs": row, "label": "setosa", "tag": "gone"} for row in rows(7000.0, 4)]
        assert (await api.post("/v1/feedback", json={"items": feedback})).status_code == 202
        started = time.monotonic()
        pending = await api.post("/v1/data/purge", json={"tag": "gone"}, headers=ADMIN)
        # Nobody holds the lease: no waiting for a learner that is not there (it waits 10 s).
        assert pending.status_code == 202 and time.monotonic() - started < 5
        body = pending.json()
        assert body["status"] == "pending" and body["removed"]["predictions"] == 0
        async with learner_running(settings):
            async def done() -> bool:
                status = await api.get(f"/v1/data/purge/{body['purge_id']}", headers=ADMIN)
                return status.json()["status"] == "done"

            await wait_for(done, 10, "the learner to finish the purge")
