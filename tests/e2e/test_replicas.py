"""Two API processes (`serve`) and one learner (`learn`) on one private Redis: both replicas
follow every published and activated version, the learner continues from an activated one,
and a golden set stops a poisoned burst (the rejected version cannot be activated). Admin
routes: 401 with a wrong token on the real processes, 403 where no admin token is set."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.config import Settings
from service.embedded import EmbeddedRedis
from tests.conftest import free_port, running_app
from tests.data_digits import write_digits_csv
from tests.e2e.procs import Procs, base_env, read_csv, wait_for

ADMIN = "admin-secret-token"
POISON = 512  # one feedback request, one learner read (READ_COUNT), one candidate


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path / "redis-data") as server:
        yield server


def newest(api: httpx.Client) -> dict[str, Any]:
    return api.get("/v1/versions", params={"limit": 1}).raise_for_status().json()["versions"][0]


def current(api: httpx.Client) -> int:
    return int(api.get("/v1/versions/current").raise_for_status().json()["version"])


def served(api: httpx.Client, probe: list[list[float]]) -> int | None:
    """The version this replica serves, if /readyz and predict agree on it."""
    ready = api.get("/readyz").json()["model_version"]
    answer = api.post("/v1/predict", json={"inputs": probe})
    return ready if answer.status_code == 200 and answer.json()["model_version"] == ready else None


def send(api: httpx.Client, x: list[list[float]], y: list[str]) -> int:
    items = [{"inputs": row, "label": label} for row, label in zip(x, y, strict=True)]
    response = api.post("/v1/feedback", json={"items": items})
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": len(items), "duplicates": 0}
    return len(items)


def test_two_replicas_follow_one_learner(tmp_path: Path, private_redis: EmbeddedRedis,
                                         procs: Procs) -> None:
    # (private_redis before procs: the processes are stopped before their Redis is.)
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    write_digits_csv(train, split="train")
    write_digits_csv(test, split="test")
    x, y = read_csv(train)
    golden_x, golden_y = read_csv(test)
    common = {"redis_url": private_redis.url, "input_dim": 64, "admin_token": ADMIN,
              "publish_every_seconds": 0.5, "swap_poll_seconds": 0.5,
              # Honest updates pass even on a noisy holdout; the poisoned one fails by far more.
              "gate_tolerance": 0.05}
    ports = [free_port(), free_port()]
    for i, port in enumerate(ports):
        procs.start(f"serve{i}", ["serve"], base_env(port=port, **common))
    procs.start("learn", ["learn"], base_env(**common))
    apis = [httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) for port in ports]
    a, b = apis
    admin = {"Authorization": f"Bearer {ADMIN}"}
    probe = x[:2]

    def both_serve(version: int) -> bool:
        return all(served(api, probe) == version for api in apis)

    def committed(total: int) -> Callable[[], bool]:
        return lambda: newest(a)["samples_seen"] == total

    try:
        for api in apis:
            wait_for(lambda: api.get("/readyz").status_code == 200, 60,  # noqa: B023
                     "both replicas to be ready", procs.logs)
        # 1. A published version is served by both replicas.
        total = send(a, x[:500], y[:500])
        wait_for(committed(total), 30, "the first 500 items to be published", procs.logs)
        first = current(a)
        assert first > 0
        wait_for(lambda: both_serve(first), 15, f"both replicas to serve {first}", procs.logs)
        total += send(b, x[500:1000], y[500:1000])  # through the other replica
        wait_for(committed(total), 30, "the next 500 items to be published", procs.logs)
        second = current(b)
        assert second > first
        wait_for(lambda: both_serve(second), 15, f"both replicas to serve {second}", procs.logs)

        # 2. Admin routes: 401 without or with a wrong token, on the real processes.
        for api in apis:
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                for path, body in ((f"/v1/versions/{first}/activate", None),
                                   ("/v1/golden", {"items": [{"inputs": x[0], "label": y[0]}]})):
                    response = api.post(path, json=body, headers=headers)
                    assert response.status_code == 401, (path, headers, response.text)
                    assert response.headers["www-authenticate"] == "Bearer"
        assert current(a) == second

        # 3. Activating the older version: both replicas serve it; the learner continues from it.
        response = a.post(f"/v1/versions/{first}/activate", headers=admin)
        assert response.status_code == 200, response.text
        assert response.json()["current"] == first
        wait_for(lambda: both_serve(first), 15, f"both replicas to serve {first} again", procs.logs)
        statuses = {v["version"]: v["status"] for v in a.get("/v1/versions").json()["versions"]}
        assert (statuses[first], statuses[second]) == ("active", "archived")
        total += send(b, x[1000:1200], y[1000:1200])
        wait_for(committed(total), 30, "the items after the activation to be published", procs.logs)
        third = newest(a)
        assert third["version"] > second and third["parent"] == first, third
        assert third["status"] == "active", third
        wait_for(lambda: both_serve(third["version"]), 15, "both replicas to serve the next version",
                 procs.logs)

        # 4. A golden set the new data contradicts: the poisoned candidate is rejected.
        response = a.post("/v1/golden", json={"items": [
            {"inputs": row, "label": label} for row, label in zip(golden_x, golden_y, strict=True)]},
            headers=admin)
        assert response.status_code == 201, response.text
        assert response.json() == {"added": len(golden_y), "size": len(golden_y)}
        before = current(a)
        swapped = [str((int(label) + 1) % 10) for label in y[:POISON]]
        total += send(a, x[:POISON], swapped)
        wait_for(committed(total), 30, "the poisoned candidate to be evaluated", procs.logs)
        candidate = newest(a)
        print("poisoned candidate:", candidate["version"], candidate["status"], candidate["eval"])
        assert candidate["version"] > before and candidate["status"] == "rejected", candidate
        assert "golden" in candidate["eval"]["rejected_by"], candidate["eval"]
        assert current(a) == current(b) == before
        assert all(served(api, probe) == before for api in apis)  # predict keeps the old version
        # A rejected version cannot be activated; nothing changes.
        response = b.post(f"/v1/versions/{candidate['version']}/activate", headers=admin)
        assert response.status_code == 409, response.text
        assert current(a) == before
        stats = a.get("/v1/stats").json()
        assert (stats["samples_seen"], stats["feedback_lag"]) == (total, 0)
    finally:
        for api in apis:
            api.close()


async def test_admin_routes_answer_403_without_an_admin_token(
    make_settings: Callable[..., Settings]
) -> None:
    async with running_app(make_settings()) as client:
        for headers in ({}, {"Authorization": "Bearer anything"}):
            response = await client.post("/v1/versions/0/activate", headers=headers)
            assert response.status_code == 403, response.text
            response = await client.post("/v1/golden", headers=headers, json={
                "items": [{"inputs": [1.0, 2.0, 3.0, 4.0], "label": "setosa"}]})
            assert response.status_code == 403, response.text
        assert (await client.get("/v1/versions/current")).json()["status"] == "active"
