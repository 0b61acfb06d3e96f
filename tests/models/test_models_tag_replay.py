"""Tag-aware replay (models/tag_replay.py): a replayed row of tag t trains t's head, and with
MNEMO_HEADS=soft t's trunk copy, as a new row of t does; an untagged, unknown or headless
replayed row trains only the trunk and the default head; progressive columns keep to that."""

from __future__ import annotations

import pytest
import torch

from models.learner import IncrementalLearner
from models.nets import MLPConfig, MultiHeadMLP, build_model
from models.replay import ReservoirBuffer, make_buffer
from models.soft_sharing import SoftSharedMLP
from models.strategies import make_strategy
from models.strategies.soft_sharing import SoftSharing
from models.tag_replay import replays_by_tag

PER_TAG = MLPConfig(4, (8, 8), 4, ())
SOFT = MLPConfig(4, (8, 8), 4, (), soft_layers=(0, 1))


def _learner(config: MLPConfig) -> IncrementalLearner:
    strategy = make_strategy("naive")
    if config.soft_layers is not None:
        strategy = SoftSharing(strategy, 1.0)
    learner = IncrementalLearner(config, strategy, replay_size=4, steps_per_batch=1, seed=0)
    learner.ensure_tags(["a", "a", "b", "b"], torch.tensor([0, 1, 2, 3]), max_tags=10)
    return learner


def _buffer(label: int = 0) -> ReservoirBuffer:
    buffer = ReservoirBuffer(8, 4)
    buffer.put(0, torch.randn(4, generator=torch.Generator().manual_seed(1)), label)
    return buffer


def _tag_params(model: MultiHeadMLP, tag: str) -> list[torch.Tensor]:
    params = list(model.tag_head(tag).parameters())
    if isinstance(model, SoftSharedMLP):
        params += list(model.tag_offset(tag).parameters())
    return [p.detach().clone() for p in params]


def _moved(before: list[torch.Tensor], model: MultiHeadMLP, tag: str) -> bool:
    return any(not torch.equal(b, a) for b, a in zip(before, _tag_params(model, tag), strict=True))


@pytest.mark.parametrize("config", [PER_TAG, SOFT], ids=["per-tag", "soft"])
@pytest.mark.parametrize("how", ["rehearse", "learn_many"])
def test_a_replayed_row_trains_its_own_tags_head_and_copy(config: MLPConfig, how: str) -> None:
    for slot_tag, moves_a in [("a", True), ("", False), ("folded", False), (None, False)]:
        learner = _learner(config)
        model = learner.model
        assert isinstance(model, MultiHeadMLP)
        a, b = _tag_params(model, "a"), _tag_params(model, "b")
        tags = None if slot_tag is None else [slot_tag]
        if how == "rehearse":
            learner.rehearse(_buffer(), 1, tags)
        else:  # an untagged new row: only the replayed row can reach a tag's head
            learner.learn_many(torch.randn(1, 4), torch.tensor([1]), _buffer(), [""],
                               buffer_tags=tags)
        assert _moved(a, model, "a") is moves_a, slot_tag
        assert not _moved(b, model, "b"), slot_tag  # another tag's head and copy stay put


def test_a_replayed_label_its_head_lacks_keeps_to_the_default_head() -> None:
    learner = _learner(PER_TAG)
    model = learner.model
    assert isinstance(model, MultiHeadMLP)
    a = _tag_params(model, "a")
    default = model.head.weight.detach().clone()
    learner.rehearse(_buffer(label=3), 1, ["a"])  # class 3 came with "b" only
    assert not _moved(a, model, "a")
    assert not torch.equal(default, model.head.weight)


def test_replay_by_tag_is_for_heads_and_soft_sharing_not_columns() -> None:
    assert replays_by_tag(build_model(PER_TAG)) and replays_by_tag(build_model(SOFT))
    assert not replays_by_tag(build_model(MLPConfig(4, (8, 8), 4)))
    assert not replays_by_tag(build_model(MLPConfig(4, (8, 8), 4, (), True)))


@pytest.mark.parametrize("name", ["reservoir", "class-balanced", "recent"])
def test_sample_slots_draws_what_sample_draws(name: str) -> None:
    buffer = make_buffer(name, 16, 3)
    for i in range(12):
        buffer.insert(torch.full((3,), float(i)), i % 3, 0.5)
    x, y = buffer.sample(20, torch.Generator().manual_seed(7))
    sx, sy, idx = buffer.sample_slots(20, torch.Generator().manual_seed(7))  # type: ignore[attr-defined]
    items_x, items_y = buffer.items()
    assert torch.equal(x, sx) and torch.equal(y, sy)
    assert torch.equal(items_x[idx], x) and torch.equal(items_y[idx], y)
