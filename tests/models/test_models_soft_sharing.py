"""Soft parameter sharing (MNEMO_HEADS=soft, models/soft_sharing.py): a trunk copy and a head per
tag, the copies pulled toward their mean by the SoftSharing penalty around the strategy."""

from __future__ import annotations

import pytest
import torch

from models.checkpoint import model_from_bytes, model_to_bytes, tensors_from_bytes, tensors_to_bytes
from models.checks import CHECKS, Subject
from models.learner import IncrementalLearner
from models.nets import MLPConfig, build_model
from models.soft_sharing import SoftSharedMLP, pull_toward_mean, sharing_penalty
from models.strategies import UNREGULARISED, make_strategy
from models.strategies.soft_sharing import SoftSharing

CONFIG = MLPConfig(4, (16, 16), 4, (), soft_layers=(0, 1))
TAGS = ("sign-0", "sign-1")


def _tasks(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Two related tasks on the same inputs: "sign-0" labels by the sign of x0 + 0.5·x1,
    "sign-1" by the sign of x0 − 0.5·x1 (classes 2/3): a trunk copy each fits them best."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    first = torch.arange(n) % 2 == 0
    y = torch.where(first, (x[:, 0] + 0.5 * x[:, 1] > 0).long(),
                    2 + (x[:, 0] - 0.5 * x[:, 1] > 0).long())
    return x, y, [TAGS[0] if f else TAGS[1] for f in first.tolist()]


def _learner(strength: float, strategy: str = "naive", seed: int = 0) -> IncrementalLearner:
    return IncrementalLearner(CONFIG, SoftSharing(make_strategy(strategy), strength), seed=seed)


def _train(learner: IncrementalLearner, seed: int, batches: int) -> None:
    for b in range(batches):
        x, y, tags = _tasks(16, seed * 1000 + b)
        learner.ensure_tags(tags, y, max_tags=10)
        learner.learn_many(x, y, None, tags)


def _spread(model: SoftSharedMLP) -> float:
    """The largest distance of a tag's copy from the mean of the copies (the trunk included)."""
    worst = 0.0
    for group in model.offset_groups():
        stacked = torch.stack([p.detach() for p in group])
        mean = stacked.sum(0) / (len(group) + 1)
        worst = max(worst, float((stacked - mean).flatten(1).norm(dim=1).max()),
                    float(mean.norm()))
    return worst


def test_copies_diverge_without_the_penalty_and_stay_close_with_it() -> None:
    free, held = _learner(0.0), _learner(100.0)
    for learner in (free, held):
        _train(learner, seed=1, batches=150)
    assert isinstance(free.model, SoftSharedMLP) and isinstance(held.model, SoftSharedMLP)
    spread_free, spread_held = _spread(free.model), _spread(held.model)
    assert spread_free > 0.5, spread_free  # each copy went its own way
    assert spread_held < 0.05 and spread_held < spread_free / 20, (spread_held, spread_free)
    # Both still answer each tag's question.
    x, y, tags = _tasks(400, 99)
    first = torch.tensor([t == TAGS[0] for t in tags])
    with torch.no_grad():
        for learner in (free, held):
            for tag, rows in ((TAGS[0], first), (TAGS[1], ~first)):
                got = learner.model.classify(x[rows], tag)
                assert (got == y[rows]).float().mean() > 0.85, tag


def test_the_penalty_gradient_is_strength_times_the_distance_to_the_mean() -> None:
    model = build_model(CONFIG, seed=0)
    assert isinstance(model, SoftSharedMLP)
    for tag in TAGS:
        model.add_tag_classes(tag, [0, 1])
    with torch.no_grad():
        for p in model.tag_offsets.parameters():
            p.normal_()
    offsets = [list(o.parameters()) for o in model.tag_offsets.values()]
    flat = [torch.cat([p.detach().flatten() for p in ps]) for ps in offsets]
    mean = (flat[0] + flat[1]) / 3  # the shared trunk is the third copy, offset 0
    expected = 0.5 * sum(float((f - mean).square().sum()) for f in flat) + 0.5 * float(
        mean.square().sum())
    assert float(sharing_penalty(model)) == pytest.approx(expected, rel=1e-5)
    pull_toward_mean(model, 3.0)
    for ps, f in zip(offsets, flat, strict=True):
        grad = torch.cat([p.grad.flatten() for p in ps])
        assert torch.allclose(grad, 3.0 * (f - mean), atol=1e-5)


def test_routes_by_tag_and_an_unknown_tag_gets_the_shared_trunk_and_default_head() -> None:
    learner = _learner(1.0)
    _train(learner, seed=2, batches=20)
    model = learner.snapshot()
    x = torch.randn(8, 4)
    with torch.no_grad():
        for tag in TAGS:
            assert torch.equal(model.forward_tag(x, tag),
                               model.tag_head(tag)(model.tag_features(x, tag)))
        assert torch.equal(model.classify(x, "elsewhere"), model(x).argmax(1))
        assert torch.equal(model.classify(x, None), model(x).argmax(1))


def test_a_version_carries_every_copy_and_loads_alone() -> None:
    learner = _learner(1.0)
    _train(learner, seed=3, batches=10)
    served = learner.snapshot()
    loaded, _ = model_from_bytes(model_to_bytes(served))
    assert isinstance(loaded, SoftSharedMLP) and loaded.config == served.config
    assert loaded.config.soft_layers == (0, 1) and loaded.tags == list(TAGS)
    assert MLPConfig.from_dict(served.config.to_dict()) == served.config
    x = torch.randn(8, 4)
    with torch.no_grad():
        for tag in TAGS:
            assert torch.equal(loaded.forward_tag(x, tag), served.forward_tag(x, tag))
    # Bound to the previous version's module, as an API replica swaps (models/rebind.py).
    _train(learner, seed=4, batches=2)
    rebound, _ = model_from_bytes(model_to_bytes(learner.snapshot()), loaded)
    with torch.no_grad():
        assert torch.equal(rebound.forward_tag(x, TAGS[1]),
                           learner.snapshot().forward_tag(x, TAGS[1]))


def test_the_learner_state_round_trips_and_goes_on_identically() -> None:
    learner = _learner(10.0, "online-ewc")
    _train(learner, seed=5, batches=10)
    x, y, _ = _tasks(32, 77)
    learner.consolidate(x, y)
    blob = tensors_to_bytes(learner.state_dict(), learner.meta())
    tensors, meta = tensors_from_bytes(blob)
    restored = IncrementalLearner.from_state(
        learner.snapshot().config, SoftSharing(make_strategy("online-ewc"), 10.0), tensors, meta)
    assert any(k.startswith("optim.tag_offsets.") for k in tensors)
    for one in (learner, restored):
        _train(one, seed=6, batches=3)
    a, b = learner.state_dict(), restored.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


@pytest.mark.parametrize("inner", ["naive", "online-ewc", "lwf"])
def test_the_wrapper_keeps_every_strategy_invariant(inner: str) -> None:
    # On a plain MLP (the checks' network) the wrapper must be exactly its inner strategy.
    subject = Subject(lambda: SoftSharing(make_strategy(inner), 1.0),
                      regularises=inner not in UNREGULARISED)
    for check in CHECKS:
        check(subject)


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="soft_layers"):
        MLPConfig(4, (16,), 2, None, soft_layers=(0,))  # needs tag heads
    with pytest.raises(ValueError, match="soft_layers"):
        MLPConfig(4, (16,), 2, (), soft_layers=(1,))  # no such layer
    with pytest.raises(ValueError, match="strength"):
        SoftSharing(make_strategy("naive"), -1.0)
