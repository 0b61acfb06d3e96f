"""Invariants every strategy must keep (run over each one, River-style)."""

import pytest
import torch
import torch.nn.functional as F

from models.nets import MLPConfig, build_model
from models.strategies import STRATEGY_NAMES, Strategy, make_strategy


@pytest.fixture(params=STRATEGY_NAMES)
def strategy(request: pytest.FixtureRequest) -> Strategy:
    return make_strategy(request.param)


def batch(n: int = 12, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 5, generator=g), torch.randint(classes, (n,), generator=g)


def test_protocol_and_no_penalty_before_consolidation(strategy: Strategy) -> None:
    assert isinstance(strategy, Strategy)
    m = build_model(MLPConfig(5, (6,), 3), seed=0)
    assert strategy.penalty(m).item() == 0.0
    for p in m.parameters():
        p.grad = torch.full_like(p, 2.0)
    strategy.apply_to_grads(m)
    assert all(torch.equal(p.grad, torch.full_like(p, 2.0)) for p in m.parameters())


def test_state_round_trip_and_growth(strategy: Strategy) -> None:
    m = build_model(MLPConfig(5, (6,), 3), seed=0)
    x, y = batch()
    strategy.consolidate(m, x, y)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1)
    clone = make_strategy(strategy.name)
    clone.load_state_dict({k: v.clone() for k, v in strategy.state_dict().items()})
    assert torch.equal(clone.penalty(m), strategy.penalty(m))
    m.grow_head(5)
    strategy.grow(m)
    params = dict(m.named_parameters())
    for k, v in strategy.state_dict().items():
        assert v.shape == params[k.split(".", 1)[1]].shape
    # After growth the strategy still trains the grown model.
    loss = F.cross_entropy(m(x), y + 2)
    loss.backward()
    strategy.apply_to_grads(m)
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())
    assert torch.isfinite(strategy.penalty(m))


def test_state_does_not_alias_live_parameters(strategy: Strategy) -> None:
    m = build_model(MLPConfig(5, (6,), 3), seed=0)
    strategy.consolidate(m, *batch())
    before = {k: v.clone() for k, v in strategy.state_dict().items()}
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(3.0)
    assert all(torch.equal(v, before[k]) for k, v in strategy.state_dict().items())
