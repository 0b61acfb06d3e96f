"""MNEMO_HEADS=soft end to end: tagged feedback through the learner loop (real Redis), a published
version carrying a trunk copy and a head per tag, /v1/predict routing by tag, and the copies,
their optimizer moments and the sharing penalty's strength through a learner restart."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from redis.asyncio import Redis

from models.checkpoint import model_from_bytes
from models.gate import predict_classes
from models.nets import build_model
from models.soft_sharing import SoftSharedMLP
from models.strategies.soft_sharing import SoftSharing
from service.config import Settings, SettingsError, load_settings
from service.store.keys import Keys
from tests.conftest import running_app
from tests.worker.test_loop import init_deployment, started
from tests.worker.test_tag_heads import ROWS, _append_tagged


async def test_soft_sharing_publishes_a_copy_per_tag_that_predict_routes_to(
    settings_for: Callable[..., Settings], aredis: Redis
) -> None:
    settings = settings_for(heads="soft", labels=[], publish_every_samples=1200,
                            holdout_fraction=0.0, strategy="replay", soft_sharing_strength=1.0)
    registry = await init_deployment(settings, aredis)
    service = await started(settings, aredis)
    assert isinstance(service.learner.strategy, SoftSharing)
    assert service.learner.strategy.strength == 1.0
    for seed in range(6):
        await _append_tagged(aredis, settings, 200, seed)
        await service.step()
    assert (await registry.current()).version == 1
    published, _ = model_from_bytes(await registry.weights(1))
    assert isinstance(published, SoftSharedMLP) and published.tags == ["north", "south"]
    assert len(published.tag_offsets) == 2  # every copy travels in the version
    vocab = await registry.labels()

    rows = np.array(ROWS, dtype=np.float32)
    by_tag = predict_classes(published, rows, ["north", "south", "elsewhere"])
    assert [vocab[i] for i in by_tag[:2]] == ["n+", "s+"]
    assert by_tag[2] == predict_classes(published, rows[2:])[0]  # unknown: the shared trunk

    async with running_app(settings) as c:
        north = (await c.post("/v1/predict", json={"inputs": ROWS, "tag": "north"})).json()
        assert north["model_version"] == 1 and sorted(north["labels"]) == ["n+", "n-"]
        assert [p["label"] for p in north["predictions"]] == ["n+", "n-", "n+"]
        south = (await c.post("/v1/predict", json={"inputs": ROWS, "tag": "south"})).json()
        assert [p["label"] for p in south["predictions"]] == ["s-", "s+", "s+"]
        for body in ({"inputs": ROWS, "tag": "elsewhere"}, {"inputs": ROWS}):
            response = await c.post("/v1/predict", json=body)
            assert response.status_code == 200 and response.json()["labels"] == vocab


async def test_a_restarted_learner_keeps_every_copy(
    settings_for: Callable[..., Settings], aredis: Redis
) -> None:
    settings = settings_for(heads="soft", labels=[], publish_every_samples=400,
                            holdout_fraction=0.0)
    registry = await init_deployment(settings, aredis)
    first = await started(settings, aredis)
    await _append_tagged(aredis, settings, 400, 1)
    await first.step()
    assert (await registry.current()).version == 1
    await aredis.delete(Keys(settings.model_name).lease)  # first stops; its lease lapses
    second = await started(settings, aredis)
    assert second.learner.model.config == first.learner.model.config
    a, b = first.learner.state_dict(), second.learner.state_dict()
    offsets = [k for k in a if k.startswith(("model.tag_offsets.", "optim.tag_offsets."))]
    assert offsets and all(torch.equal(a[k], b[k]) for k in offsets)
    assert isinstance(second.learner.strategy, SoftSharing)
    await _append_tagged(aredis, settings, 100, 2)
    assert await second.step() == 100  # learns on, copies included


def test_the_settings_describe_soft_sharing_and_refuse_what_does_not_fit() -> None:
    settings = load_settings({"MNEMO_HEADS": "soft", "MNEMO_HIDDEN": "8,8"})
    assert settings.routes_by_tag and settings.soft_sharing_strength == 10.0
    config = settings.network(3)
    assert config.tag_heads == () and config.soft_layers == (0, 1)
    assert load_settings({"MNEMO_HEADS": "per-tag"}).network(3).soft_layers is None
    with pytest.raises(SettingsError, match="MNEMO_STRATEGY: expand"):
        load_settings({"MNEMO_HEADS": "soft", "MNEMO_STRATEGY": "expand"})
    with pytest.raises(SettingsError, match="MNEMO_HEADS=soft: progressive"):
        load_settings({"MNEMO_HEADS": "soft", "MNEMO_STRATEGY": "progressive"})
    with pytest.raises(SettingsError, match="MNEMO_SOFT_SHARING_STRENGTH"):
        load_settings({"MNEMO_HEADS": "soft", "MNEMO_SOFT_SHARING_STRENGTH": "-1"})


def test_soft_layers_chooses_which_hidden_layers_each_tag_copies() -> None:
    # MNEMO_SOFT_LAYERS: 0-based hidden layers, any order; empty (the default): all of them.
    last = load_settings({"MNEMO_HEADS": "soft", "MNEMO_HIDDEN": "8,8", "MNEMO_SOFT_LAYERS": "1"})
    assert last.soft_layers == [1] and last.network(3).soft_layers == (1,)
    both = load_settings({"MNEMO_HEADS": "soft", "MNEMO_HIDDEN": "8,8,8",
                          "MNEMO_SOFT_LAYERS": "2, 0"})
    assert both.network(3).soft_layers == (0, 2)
    model = build_model(last.network(3))
    assert isinstance(model, SoftSharedMLP)
    model.add_tag_classes("a", [0, 1])
    assert [tuple(w.shape) for w in model.tag_offset("a").weight] == [(8, 8)]  # the last only
    with pytest.raises(SettingsError, match="MNEMO_SOFT_LAYERS"):
        load_settings({"MNEMO_HEADS": "soft", "MNEMO_HIDDEN": "8,8", "MNEMO_SOFT_LAYERS": "2"})
