"""Per-tag heads (MNEMO_HEADS=per-tag, models/nets.MultiHeadMLP): a shared trunk, a default head
over every class and one head per tag over that tag's classes."""

from __future__ import annotations

import pytest
import torch

from models.checkpoint import model_from_bytes, model_to_bytes, tensors_from_bytes, tensors_to_bytes
from models.learner import IncrementalLearner
from models.nets import MLPConfig, MultiHeadMLP, build_model
from models.strategies import STRATEGY_NAMES, make_strategy

CONFIG = MLPConfig(4, (16,), 4, ())


def _tasks(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Two tasks on the same inputs: tag "sign-0" labels by the sign of x0 (classes 0/1),
    tag "sign-1" by the sign of x1 (classes 2/3). One head over everything cannot tell which
    question is asked; a head per tag can."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    first = torch.arange(n) % 2 == 0
    y = torch.where(first, (x[:, 0] > 0).long(), 2 + (x[:, 1] > 0).long())
    return x, y, ["sign-0" if f else "sign-1" for f in first.tolist()]


def _learner(strategy: str = "naive", seed: int = 0) -> IncrementalLearner:
    return IncrementalLearner(CONFIG, make_strategy(strategy), seed=seed)


def _train(learner: IncrementalLearner, seed: int, batches: int = 60) -> None:
    for b in range(batches):
        x, y, tags = _tasks(16, seed * 1000 + b)
        learner.ensure_tags(tags, y, max_tags=10)
        learner.learn_many(x, y, None, tags)


def test_each_tag_head_learns_its_own_task() -> None:
    learner = _learner()
    _train(learner, seed=1, batches=150)
    model = learner.model
    assert isinstance(model, MultiHeadMLP)
    assert {t: sorted(cs) for t, cs in model.config.tag_heads} == {"sign-0": [0, 1],
                                                                    "sign-1": [2, 3]}
    x, y, tags = _tasks(400, 99)
    first = torch.tensor([t == "sign-0" for t in tags])

    def accuracy(tag: str, rows: torch.Tensor) -> float:
        classes = torch.tensor(model.tag_classes(tag))
        return float((classes[model.forward_tag(x[rows], tag).argmax(1)] == y[rows]).float().mean())

    with torch.no_grad():
        acc0, acc1 = accuracy("sign-0", first), accuracy("sign-1", ~first)
        shared = (model(x).argmax(1) == y).float().mean()
    assert acc0 > 0.9 and acc1 > 0.9, (acc0, acc1)
    assert shared < 0.75, shared  # the default head cannot know which question was asked


def test_new_heads_and_rows_leave_every_other_output_bit_identical() -> None:
    model = build_model(CONFIG, seed=0)
    assert isinstance(model, MultiHeadMLP)
    model.add_tag_classes("a.b:c", [2, 0])
    x = torch.randn(8, 4)
    with torch.no_grad():
        default, tagged = model(x), model.forward_tag(x, "a.b:c")
        model.add_tag_classes("other", [1])
        model.add_tag_classes("a.b:c", [3])  # one more row in that head
        model.grow_head(6)
        model.add_tag_classes("other", [5])
        assert torch.equal(model(x)[:, :4], default)
        assert torch.equal(model.forward_tag(x, "a.b:c")[:, :2], tagged)
    assert model.tag_classes("a.b:c") == [2, 0, 3] and model.tag_classes("nope") is None
    with pytest.raises(ValueError, match="outside"):
        model.add_tag_classes("x", [6])


def test_the_tag_cap_sends_further_tags_to_the_default_head() -> None:
    learner = _learner()
    y = torch.tensor([0, 1, 2, 3])
    learner.ensure_tags(["t1", "t2", "t3", ""], y, max_tags=2)
    assert learner.model.tags == ["t1", "t2"]
    stats = learner.learn_many(torch.randn(4, 4), y, None, ["t1", "t2", "t3", ""])
    assert stats.samples == 4
    with pytest.raises(ValueError, match="ensure_tags first"):
        learner.learn_many(torch.randn(1, 4), torch.tensor([3]), None, ["t1"])


def test_configs_and_blobs_round_trip_and_shared_blobs_are_unchanged() -> None:
    learner = _learner()
    _train(learner, seed=2, batches=5)
    config = learner.config
    assert MLPConfig.from_dict(config.to_dict()) == config
    assert "tag_heads" not in MLPConfig(4, (16,), 4).to_dict()
    loaded, _ = model_from_bytes(model_to_bytes(learner.snapshot()))
    x = torch.randn(8, 4)
    with torch.no_grad():
        for tag in ("sign-0", "sign-1"):
            assert torch.equal(loaded.forward_tag(x, tag), learner.model.eval().forward_tag(x, tag))
    with pytest.raises(ValueError, match="invalid tag heads"):
        MLPConfig(4, (16,), 2, (("t", (0, 2)),))


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_every_strategy_trains_tag_heads_and_resumes_them(strategy: str) -> None:
    learner = _learner(strategy)
    _train(learner, seed=3, batches=10)
    x, y, _ = _tasks(32, 5)
    learner.consolidate(x, y)
    learner.on_publish()
    # A tag that arrives after the consolidation: a new head with no strategy state yet.
    learner.ensure_tags(["late"] * 4, torch.tensor([0, 3, 3, 0]), max_tags=10)
    learner.learn_many(x[:4], torch.tensor([0, 3, 3, 0]), None, ["late"] * 4)
    _train(learner, seed=4, batches=5)
    blob = tensors_to_bytes(learner.state_dict(), learner.meta())
    tensors, meta = tensors_from_bytes(blob)
    resumed = IncrementalLearner.from_state(learner.config, make_strategy(strategy), tensors, meta)
    for one in (learner, resumed):
        _train(one, seed=6, batches=3)
    with torch.no_grad():
        for tag in ("sign-0", "sign-1", "late"):
            assert torch.equal(resumed.model.forward_tag(x, tag), learner.model.forward_tag(x, tag))
        assert torch.equal(resumed.model(x), learner.model(x))
