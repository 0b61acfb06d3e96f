"""MNEMO_STRATEGY=expand through the learner loop (real Redis): feedback the network cannot fit
keeps the loss high over consolidations, the network widens, the published version's weights
carry the widths and its metadata the growths, and a restarted learner resumes them."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from redis.asyncio import Redis

from models.checkpoint import model_from_bytes
from service.config import Settings, SettingsError, load_settings
from service.store.keys import Keys
from tests.worker.test_loop import append, init_deployment, started


async def test_growth_is_published_in_version_metadata_and_resumed(
    settings_for: Callable[..., Settings], aredis: Redis
) -> None:
    settings = settings_for(strategy="expand+replay", hidden=[12, 10], holdout_fraction=0.0,
                            consolidate_every_samples=100, publish_every_samples=400)
    registry = await init_deployment(settings, aredis)
    first = await started(settings, aredis)
    rng = np.random.default_rng(0)
    for _ in range(4):  # labels with no pattern, a consolidation after each hundred
        x = rng.normal(0.0, 1.0, (100, 4)).astype(np.float32)
        await append(aredis, settings, x, rng.integers(0, 3, 100))
        assert await first.step() == 100
    assert (await registry.current()).version == 1
    meta = await registry.meta(1)
    growth = meta["growth"]
    assert growth["events"] >= 2 and growth["max_events"] == 8
    widths = [12 + growth["units_added_per_layer"], 10 + growth["units_added_per_layer"]]
    assert growth["hidden"] == widths
    published, _ = model_from_bytes(await registry.weights(1))
    assert list(published.config.hidden) == widths

    await aredis.delete(Keys(settings.model_name).lease)  # the first learner stops
    second = await started(settings, aredis)
    assert list(second.learner.config.hidden) == widths
    assert second.learner.strategy.growth_record() == first.learner.strategy.growth_record()


def test_expand_with_per_tag_heads_is_refused_by_name() -> None:
    with pytest.raises(SettingsError, match="MNEMO_STRATEGY: expand widens the shared trunk"):
        load_settings({"MNEMO_STRATEGY": "expand", "MNEMO_HEADS": "per-tag"})
