"""Retention (docs/DESIGN.md §3): the newest MNEMO_KEEP_VERSIONS versions, the current one and every
version an operator activated keep their weights and learner-state blobs; older blobs are
deleted by a fenced script, while the versions stay listed (`blobs: false`)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from redis.exceptions import ResponseError

from service.config import Settings
from service.store import registry as registry_module
from service.store.keys import Keys
from service.store.registry import Registry, VersionNotFound, VersionPruned
from service.store.scripts import Scripts
from service.versioning import initial_version, version_meta
from tests.conftest import running_app, snapshot

LABELS = ["setosa", "versicolor", "virginica"]
ADMIN = {"Authorization": "Bearer adm"}


async def _publish(reg: Registry, token: int, settings: Settings, status: str = "active") -> int:
    version = await reg.allocate_version(token)
    meta = version_meta(settings, version=version, parent=None, samples_seen=version,
                        last_stream_id=f"{version}-0", labels=list(LABELS), evaluation={})
    _, weights = initial_version(settings)
    await reg.publish(token=token, version=version, meta=meta, weights=weights,
                      state=f"state-{version}".encode(), status=status,
                      last_stream_id=f"{version}-0", samples_seen=version)
    return version


def _with_blobs(client: redis.Redis, model: str, versions: range) -> set[int]:
    keys = Keys(model)
    return {v for v in versions if client.hexists(keys.version(v), "weights")}


async def test_keep_newest_plus_activated_over_thirty_publishes(
    make_settings: Callable[..., Settings], learner_registry: tuple[Registry, int],
    redis_client: redis.Redis, model_name: str,
) -> None:
    reg, token = learner_registry
    settings = make_settings(admin_token="adm", keep_versions=5)
    keys = Keys(model_name)
    async with running_app(settings) as c:  # creates version 0 (current, never activated)
        pruned_by_call: dict[int, list[int]] = {}
        for n in range(1, 31):
            assert await _publish(reg, token, settings) == n
            if n == 5:
                # A learner that lost the lease deletes nothing.
                before = snapshot(redis_client, model_name)
                with pytest.raises(ResponseError, match="FENCED"):
                    await reg.prune(5, token + 1)
                assert snapshot(redis_client, model_name) == before
            if n == 6:
                # An operator activates an older version while it still has its blobs.
                activated = await c.post("/v1/versions/3/activate", headers=ADMIN)
                assert activated.status_code == 200, activated.text
            pruned_by_call[n] = await reg.prune(5, token)

        # Each publish pushes exactly one version out of the window; the activated one
        # (3, out at n=8) keeps its blobs.
        expected = {n: ([n - 5] if n >= 5 and n - 5 != 3 else []) for n in range(1, 31)}
        assert pruned_by_call == expected
        assert _with_blobs(redis_client, model_name, range(31)) == {3, 26, 27, 28, 29, 30}
        # Both blobs go: the learner state of a pruned version as well as its weights.
        assert not redis_client.hexists(keys.version(10), "state")
        assert redis_client.hget(keys.version(3), "state") == b"state-3"
        assert redis_client.hget(keys.version(26), "state") == b"state-26"
        assert await reg.prune(5, token) == []  # nothing left to do

        # Every version is still listed, with its meta; the flag says which can be exported.
        listing = (await c.get("/v1/versions", params={"limit": 100})).json()
        assert [v["version"] for v in listing["versions"]] == list(range(30, -1, -1))
        assert {v["version"] for v in listing["versions"] if v["blobs"]} == {3, 26, 27, 28, 29, 30}
        one = (await c.get("/v1/versions/10")).json()
        assert (one["blobs"], one["samples_seen"], one["status"]) == (False, 10, "archived")
        assert (await c.get("/v1/versions/3")).json()["blobs"] is True

        # A pruned version: weights 404 naming retention; activation 404; nothing changes.
        gone = await c.get("/v1/versions/10/weights")
        assert gone.status_code == 404
        assert "version 10" in gone.json()["detail"]
        assert "retention" in gone.json()["detail"] and "MNEMO_KEEP_VERSIONS" in gone.json()["detail"]
        before = snapshot(redis_client, model_name)
        refused = await c.post("/v1/versions/10/activate", headers=ADMIN)
        assert refused.status_code == 404
        assert snapshot(redis_client, model_name) == before
        # A version that never existed still reads as such.
        missing = await c.get("/v1/versions/99/weights")
        assert missing.status_code == 404 and "retention" not in missing.json()["detail"]
        # The activated old version and a kept one still export and activate.
        assert (await c.get("/v1/versions/3/weights")).status_code == 200
        assert (await c.get("/v1/versions/27/weights")).status_code == 200
        assert (await c.post("/v1/versions/3/activate", headers=ADMIN)).status_code == 200

    with pytest.raises(VersionPruned):
        await reg.weights(10)
    with pytest.raises(VersionNotFound):
        await reg.weights(99)
    with pytest.raises(ValueError, match="keep"):
        await reg.prune(0, token)


async def test_current_is_kept_outside_the_window_until_replaced(
    make_settings: Callable[..., Settings], learner_registry: tuple[Registry, int],
    redis_client: redis.Redis, model_name: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    reg, token = learner_registry
    settings = make_settings()
    async with running_app(settings):
        calls: list[list[int]] = []
        assert await _publish(reg, token, settings) == 1  # current
        calls.append(await reg.prune(2, token))
        for _ in range(3):  # rejected candidates push the current version out of the window
            await _publish(reg, token, settings, status="rejected")
            calls.append(await reg.prune(2, token))
        assert _with_blobs(redis_client, model_name, range(5)) == {1, 3, 4}
        assert await _publish(reg, token, settings) == 5  # a new current: 1 may go now
        calls.append(await reg.prune(2, token))
        assert calls == [[], [0], [], [2], [1, 3]]
        assert _with_blobs(redis_client, model_name, range(6)) == {4, 5}

        # A learner that never pruned (or just restarted) catches up in one call, in chunks.
        monkeypatch.setattr(registry_module, "PRUNE_CHUNK", 3)
        for _ in range(8):
            await _publish(reg, token, settings)
        fresh = Registry(reg._redis, Keys(model_name), Scripts(reg._redis))
        assert await fresh.prune(2, token) == [4, 5, 6, 7, 8, 9, 10, 11]
        assert _with_blobs(redis_client, model_name, range(14)) == {12, 13}
        assert await fresh.prune(2, token) == []
