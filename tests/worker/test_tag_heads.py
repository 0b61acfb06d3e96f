"""MNEMO_HEADS=per-tag end to end: tagged feedback through the learner loop (real Redis), a
published version with a head per tag, and /v1/predict answering a known tag from its head
over its own labels, an unknown or absent tag from the default head over every label."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from redis.asyncio import Redis

from models.checkpoint import model_from_bytes
from models.gate import predict_classes
from models.nets import MultiHeadMLP
from service.config import Settings, SettingsError, load_settings
from service.store.codec import vector_to_bytes
from service.store.feedback import FeedbackRecord, FeedbackStore
from service.store.keys import Keys
from service.store.scripts import Scripts
from service.versioning import initial_version
from service.worker.state import restore
from tests.conftest import running_app
from tests.worker.test_loop import init_deployment, started

# Two tasks on the same inputs: tag "north" answers by the sign of x0, "south" by x1's.
TASKS = {"north": (0, ("n-", "n+")), "south": (1, ("s-", "s+"))}
ROWS = [[2.0, -2.0, 0.0, 0.0], [-2.0, 2.0, 0.0, 0.0], [2.0, 2.0, 0.0, 0.0]]


async def _append_tagged(aredis: Redis, settings: Settings, n: int, seed: int,
                         only: str | None = None) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (n, 4)).astype(np.float32)
    records = []
    for i, row in enumerate(x):
        tag = only or ("north" if i % 2 == 0 else "south")
        feature, names = TASKS[tag]
        records.append(FeedbackRecord("", names[int(row[feature] > 0)], vector_to_bytes(row),
                                      tag, None))
    store = FeedbackStore(aredis, Keys(settings.model_name), Scripts(aredis))
    assert (await store.append(records, max_lag=1_000_000, max_classes=100)).accepted == n


async def test_tagged_feedback_builds_a_head_per_tag_that_predict_routes_to(
    settings_for: Callable[..., Settings], aredis: Redis
) -> None:
    settings = settings_for(heads="per-tag", labels=[], publish_every_samples=1200,
                            holdout_fraction=0.0, strategy="replay")
    registry = await init_deployment(settings, aredis)
    service = await started(settings, aredis)
    for seed in range(6):
        await _append_tagged(aredis, settings, 200, seed)
        await service.step()
    assert (await registry.current()).version == 1
    published, _ = model_from_bytes(await registry.weights(1))
    assert isinstance(published, MultiHeadMLP) and published.tags == ["north", "south"]
    vocab = await registry.labels()

    # The learner scores (test-then-train, holdout per tag) the way predict answers: by tag.
    rows = np.array(ROWS, dtype=np.float32)
    by_tag = predict_classes(published, rows, ["north", "south", "elsewhere"])
    assert [vocab[i] for i in by_tag[:2]] == ["n+", "s+"]
    assert by_tag[2] == predict_classes(published, rows[2:])[0]  # unknown: the default head

    async with running_app(settings) as c:
        north = (await c.post("/v1/predict", json={"inputs": ROWS, "tag": "north"})).json()
        assert north["model_version"] == 1
        assert sorted(north["labels"]) == ["n+", "n-"]
        assert [p["label"] for p in north["predictions"]] == ["n+", "n-", "n+"]
        assert all(len(p["probabilities"]) == 2 for p in north["predictions"])
        south = (await c.post("/v1/predict", json={"inputs": ROWS, "tag": "south"})).json()
        assert sorted(south["labels"]) == ["s+", "s-"]
        assert [p["label"] for p in south["predictions"]] == ["s-", "s+", "s+"]
        for body in ({"inputs": ROWS, "tag": "elsewhere"}, {"inputs": ROWS}):
            response = await c.post("/v1/predict", json=body)
            assert response.status_code == 200  # never a 422 for an unknown tag
            assert response.json()["labels"] == vocab
            assert all(len(p["probabilities"]) == 4 for p in response.json()["predictions"])

    # The same data in shared mode: tags only label data, every answer is over every label.
    shared = settings.model_copy(update={"heads": "shared"})
    async with running_app(shared) as c:
        answer = (await c.post("/v1/predict", json={"inputs": ROWS, "tag": "north"})).json()
        assert answer["labels"] == vocab


async def test_a_restarted_learner_keeps_its_tag_heads(
    settings_for: Callable[..., Settings], aredis: Redis
) -> None:
    settings = settings_for(heads="per-tag", labels=[], publish_every_samples=400,
                            holdout_fraction=0.0)
    await init_deployment(settings, aredis)
    first = await started(settings, aredis)
    await _append_tagged(aredis, settings, 400, 1)
    await first.step()
    await aredis.delete(Keys(settings.model_name).lease)  # first stops; its lease lapses
    second = await started(settings, aredis)
    assert second.learner.model.config == first.learner.model.config
    assert second.learner.model.tags == ["north", "south"]
    await _append_tagged(aredis, settings, 100, 2)
    assert await second.step() == 100  # learns on, tag heads included


def test_a_shared_deployment_switched_to_per_tag_heads_continues_from_its_weights(
    settings_for: Callable[..., Settings],
) -> None:
    shared = settings_for()
    _, weights = initial_version(shared)
    learner, served, _ = restore(settings_for(heads="per-tag"), weights, None)
    assert served.config.tag_heads is None
    assert isinstance(learner.model, MultiHeadMLP) and learner.model.tags == []
    x = torch.randn(5, 4)
    with torch.no_grad():
        assert torch.equal(learner.model.eval()(x), served(x))


def test_narrow_later_columns_come_from_the_settings_and_stay_in_the_versions(
    settings_for: Callable[..., Settings],
) -> None:
    """MNEMO_COLUMN_HIDDEN: version 0's config carries it, and so does a shared deployment
    switched to progressive columns, whose columns after the first are that narrow."""
    narrow = settings_for(strategy="progressive", column_hidden=[8, 4])
    _, weights = initial_version(narrow)
    assert model_from_bytes(weights)[0].config.column_hidden == (8, 4)
    _, shared = initial_version(settings_for())
    learner, _, _ = restore(narrow, shared, None)
    assert learner.config.column_hidden == (8, 4)
    y = torch.tensor([0, 1])
    for tag in ("north", "south"):
        learner.ensure_tags([tag] * 2, y, 10)
    assert [c.hidden for c in learner.model.columns] == [tuple(narrow.hidden), (8, 4)]
    assert learner.model.tag_head("south").in_features == 4


def test_an_unknown_heads_mode_is_refused_by_name() -> None:
    with pytest.raises(SettingsError, match="MNEMO_HEADS: Input should be 'shared', 'per-tag' or 'soft'"):
        load_settings({"MNEMO_HEADS": "per-task"})
    assert load_settings({"MNEMO_HEADS": "per-tag"}).network(3).tag_heads == ()
    assert load_settings({}).network(3).tag_heads is None


async def test_progressive_columns_route_by_tag_and_keep_old_tags_exact(
    settings_for: Callable[..., Settings], aredis: Redis
) -> None:
    """MNEMO_STRATEGY=progressive: tags one after the other (a column freezes when the next tag
    arrives), then predict answers each tag from its column; the older column is unchanged."""
    settings = settings_for(strategy="progressive", labels=[], publish_every_samples=600,
                            holdout_fraction=0.0)
    registry = await init_deployment(settings, aredis)
    service = await started(settings, aredis)
    for seed in range(3):
        await _append_tagged(aredis, settings, 200, seed, only="north")
        await service.step()
    v1, _ = model_from_bytes(await registry.weights(1))
    for seed in range(3, 6):
        await _append_tagged(aredis, settings, 200, seed, only="south")
        await service.step()
    v2, _ = model_from_bytes(await registry.weights(2))
    assert v2.tags == ["north", "south"] and len(v2.columns) == 2
    x = torch.tensor(ROWS)
    with torch.no_grad():
        assert torch.equal(v2.forward_tag(x, "north"), v1.forward_tag(x, "north"))
    async with running_app(settings) as c:
        north = (await c.post("/v1/predict", json={"inputs": ROWS, "tag": "north"})).json()
        assert north["model_version"] == 2 and sorted(north["labels"]) == ["n+", "n-"]
        assert [p["label"] for p in north["predictions"]] == ["n+", "n-", "n+"]
        south = (await c.post("/v1/predict", json={"inputs": ROWS, "tag": "south"})).json()
        assert [p["label"] for p in south["predictions"]] == ["s-", "s+", "s+"]
        unknown = (await c.post("/v1/predict", json={"inputs": ROWS})).json()
        assert unknown["labels"] == await registry.labels()
