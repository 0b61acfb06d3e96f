"""MNEMO_META_START through the learner process (real Redis): the setting's validation, and the
meta-initialisation travelling in a published version's learner state and through a restart."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from redis.asyncio import Redis

from models.checkpoint import tensors_from_bytes
from service.bench.meta import STARTS, markdown
from service.config import Settings, SettingsError, load_settings
from service.store.keys import Keys
from tests.worker.test_loop import init_deployment, started
from tests.worker.test_tag_heads import _append_tagged


def test_meta_start_needs_per_tag_heads_or_columns() -> None:
    with pytest.raises(SettingsError, match="MNEMO_HEADS=per-tag or MNEMO_STRATEGY=progressive"):
        load_settings({"MNEMO_META_START": "reptile"})
    with pytest.raises(SettingsError, match="MNEMO_META_START"):
        load_settings({"MNEMO_META_START": "maml"})
    assert load_settings({"MNEMO_META_START": "reptile", "MNEMO_HEADS": "per-tag"}).meta_start \
        == "reptile"
    assert load_settings({"MNEMO_META_START": "reptile",
                          "MNEMO_STRATEGY": "progressive"}).meta_start == "reptile"
    assert load_settings({}).meta_start == "none"


async def test_the_meta_start_is_in_the_published_state_and_survives_a_restart(
    settings_for: Callable[..., Settings], aredis: Redis
) -> None:
    settings = settings_for(heads="per-tag", labels=[], publish_every_samples=160,
                            holdout_fraction=0.0, meta_start="reptile",
                            consolidate_every_samples=100, max_batch=160)
    registry = await init_deployment(settings, aredis)
    first = await started(settings, aredis)
    await _append_tagged(aredis, settings, 160, 1)
    await first.step()
    meta = first.stream.meta_start
    assert meta is not None and meta.updates >= 1  # learned at the consolidation
    version = (await registry.current()).version
    assert version >= 1
    state, _ = tensors_from_bytes(await registry.state(version))
    saved = {k.removeprefix("stream.meta."): v for k, v in state.items()
             if k.startswith("stream.meta.")}
    assert saved.keys() == meta.state_dict().keys() and "head_w" in saved
    assert all(torch.equal(v, meta.state_dict()[k]) for k, v in saved.items())

    await aredis.delete(Keys(settings.model_name).lease)  # first stops; its lease lapses
    second = await started(settings, aredis)
    restored = second.stream.meta_start
    assert restored is not None and restored.updates == meta.updates
    assert all(torch.equal(v, restored.state_dict()[k]) for k, v in saved.items())
    await _append_tagged(aredis, settings, 32, 2)
    assert await second.step() == 32  # learns on from it


def test_the_benchmark_table_pairs_each_start_with_the_meta_start() -> None:
    results = [{"mode": "per-tag", "start": start, "seed": seed,
                "first_learner": 0.4 + 0.1 * (start == "meta-start") + 0.01 * seed,
                "first_served": 0.3, "final_acc": 0.85, "seconds": 1.0, "state_mib": 1.0}
               for seed in range(3) for start in STARTS]
    table = markdown(results, "python -m service bench --scenarios meta")
    assert "| a head | plain | 0.410 ± 0.010 | 0.100 ± 0.000 | 3/3 |" in table, table
