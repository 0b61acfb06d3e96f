import pytest
import torch
import torch.nn.functional as F

from models.nets import MLP, MLPConfig, build_model
from models.strategies import OnlineEWC, make_strategy
from models.strategies.base import trainable_parameters
from models.strategies.fisher import (
    _affine_layers,
    _cross_entropy,
    diagonal_fisher,
    per_sample_grad_mean,
)
from models.transfer import freeze_layers

LAM = 3.0


def tiny_model() -> MLP:
    m = build_model(MLPConfig(3, (4,), 3), seed=0)
    m.standardizer.update(torch.randn(50, 3) * 2 + 1)
    return m


def data(seed: int, n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g), torch.randint(3, (n,), generator=g)


def loop_fisher(model: MLP, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean of squared per-sample gradients, one backward pass per sample."""
    params = trainable_parameters(model)
    total = {k: torch.zeros_like(p) for k, p in params.items()}
    for i in range(len(x)):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        for k, p in params.items():
            total[k] += p.grad.square()
    model.zero_grad()
    return {k: t / len(x) for k, t in total.items()}


def perturb(model: MLP, scale: float = 0.1, seed: int = 5) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def test_fisher_matches_a_per_sample_loop() -> None:
    m = tiny_model()
    x, y = data(0)
    ewc = OnlineEWC(lam=LAM, chunk_size=3)  # 10 samples: chunks of 3, 3, 3, 1
    ewc.consolidate(m, x, y)
    expected = loop_fisher(m, x, y)
    assert set(ewc.fisher) == set(expected) == {"body.0.weight", "body.0.bias",
                                                 "head.weight", "head.bias"}
    for k in expected:
        torch.testing.assert_close(ewc.fisher[k], expected[k], rtol=1e-5, atol=1e-8)
        assert torch.equal(ewc.anchor[k], dict(m.named_parameters())[k])


def test_penalty_is_zero_before_consolidation_and_at_the_anchor() -> None:
    m = tiny_model()
    ewc = OnlineEWC(lam=LAM)
    assert ewc.penalty(m).item() == 0.0
    for p in m.parameters():
        p.grad = torch.ones_like(p)
    ewc.apply_to_grads(m)
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in m.parameters())
    ewc.consolidate(m, *data(0))
    assert ewc.penalty(m).item() == 0.0
    ewc.apply_to_grads(m)
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in m.parameters())


def test_penalty_and_gradient_equal_the_hand_computation() -> None:
    m = tiny_model()
    x, y = data(0)
    ewc = OnlineEWC(lam=LAM)
    ewc.consolidate(m, x, y)
    fisher = loop_fisher(m, x, y)
    anchor = {k: p.detach().clone() for k, p in m.named_parameters()}
    perturb(m)
    params = dict(m.named_parameters())
    expected = sum(LAM / 2 * (fisher[k] * (params[k] - anchor[k]) ** 2).sum() for k in params)
    assert expected.item() > 0
    assert ewc.penalty(m).item() == pytest.approx(expected.item(), rel=1e-5)
    # apply_to_grads adds λF(θ−θ*) on top of whatever gradient is already there...
    base = {k: torch.randn(p.shape) for k, p in params.items()}
    for k, p in params.items():
        p.grad = base[k].clone()
    ewc.apply_to_grads(m)
    for k, p in params.items():
        torch.testing.assert_close(p.grad, base[k] + LAM * fisher[k] * (p - anchor[k]),
                                   rtol=1e-5, atol=1e-7)
    # ...which is exactly what autograd gives for the penalty formula.
    m.zero_grad()
    expected.backward()
    auto = {k: p.grad.clone() for k, p in params.items()}
    m.zero_grad()
    ewc.apply_to_grads(m)
    for k, p in params.items():
        torch.testing.assert_close(p.grad, auto[k], rtol=1e-5, atol=1e-8)


def test_a_step_on_the_penalty_alone_moves_toward_the_anchor() -> None:
    m = tiny_model()
    ewc = OnlineEWC(lam=LAM)
    ewc.consolidate(m, *data(0))
    perturb(m)
    params = trainable_parameters(m)
    dist_before = {k: (p - ewc.anchor[k]).abs().detach().clone() for k, p in params.items()}
    pen_before = ewc.penalty(m).item()
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    opt.zero_grad()
    ewc.apply_to_grads(m)
    opt.step()
    assert ewc.penalty(m).item() < pen_before
    for k, p in params.items():
        dist_after = (p - ewc.anchor[k]).abs()
        important = ewc.fisher[k] > 1e-6
        assert important.any()
        assert torch.all(dist_after[important] < dist_before[k][important])
        assert torch.all(dist_after <= dist_before[k])


@pytest.mark.parametrize("gamma", [0.5, 1.0])
def test_online_decay_gives_gamma_f1_plus_f2(gamma: float) -> None:
    m = tiny_model()
    ewc = OnlineEWC(lam=LAM, gamma=gamma)
    x1, y1 = data(1)
    ewc.consolidate(m, x1, y1)
    f1 = {k: v.clone() for k, v in ewc.fisher.items()}
    perturb(m, scale=0.5)
    x2, y2 = data(2)
    ewc.consolidate(m, x2, y2)
    f2 = loop_fisher(m, x2, y2)
    for k in f1:
        assert not torch.allclose(f1[k], f2[k])
        torch.testing.assert_close(ewc.fisher[k], gamma * f1[k] + f2[k], rtol=1e-5, atol=1e-8)
        assert torch.equal(ewc.anchor[k], dict(m.named_parameters())[k])


def test_make_strategy_names() -> None:
    assert make_strategy("ewc").name == "ewc"
    assert make_strategy("ewc", max_tasks=3).max_tasks == 3
    assert make_strategy("online-ewc", lam=7.0).lam == 7.0
    assert make_strategy("naive").name == "naive"
    with pytest.raises(ValueError, match="unknown strategy"):
        make_strategy("nope")


@pytest.mark.parametrize("frozen", [(), ("body.0",), ("head",), ("body.0", "body.2")])
def test_mlp_fisher_equals_the_per_sample_path(frozen: tuple[str, ...]) -> None:
    """A plain MLP's Fisher comes from each layer's inputs and output gradients; it must equal
    the vmapped per-sample path, frozen layers and a grown head included."""
    m = build_model(MLPConfig(5, (6, 7), 2), seed=1)
    m.standardizer.update(torch.randn(40, 5) * 3 - 1)
    m.grow_head(4, torch.Generator().manual_seed(2))
    freeze_layers(m, frozen)
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(33, 5, generator=g), torch.randint(4, (33,), generator=g)
    params = trainable_parameters(m)
    assert _affine_layers(m, params) is not None
    fast = diagonal_fisher(m, params, x, y)
    slow = per_sample_grad_mean(m, params, _cross_entropy, (x, y), torch.square, chunk_size=8)
    assert list(fast) == list(slow) == list(params)
    assert not any(k.startswith(frozen) for k in fast)
    for k in slow:
        torch.testing.assert_close(fast[k], slow[k], rtol=1e-5, atol=1e-9)
    assert all(p.grad is None for p in m.parameters())  # no gradients left behind


def test_models_other_than_a_plain_mlp_take_the_per_sample_path() -> None:
    heads = build_model(MLPConfig(3, (4,), 3, tag_heads=(("a", (0, 1)),)), seed=0)
    assert _affine_layers(heads, trainable_parameters(heads)) is None
    plain = tiny_model()
    params = {**trainable_parameters(plain), "extra": torch.zeros(1)}
    assert _affine_layers(plain, params) is None
