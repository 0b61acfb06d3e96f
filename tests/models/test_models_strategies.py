"""Each strategy against a hand computation, plus naming, parsing and relax."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.learner import IncrementalLearner
from models.nets import MLP, MLPConfig, build_model
from models.strategies import EWC, MAS, SI, LwF, StrategyBase, make_strategy, parse_strategy
from models.strategies.base import SCALE_KEY, trainable_parameters
from tests.models.test_models_ewc import data, loop_fisher, perturb, tiny_model


class Two(nn.Module):
    """Two parameters, float64, and a loss with a closed-form gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.w


SCALES = torch.tensor([3.0, 0.5], dtype=torch.float64)


def two_loss_grad(w: Tensor, target: Tensor) -> Tensor:
    return 2 * SCALES * (w - target)  # ∇ Σ s (w − target)²


def si_period(si: SI, m: Two, target: Tensor, steps: int, lr: float) -> None:
    """Plain SGD through the hooks in the learner's order."""
    for _ in range(steps):
        si.before_step(m)
        m.zero_grad()
        (SCALES * (m.w - target).square()).sum().backward()
        si.apply_to_grads(m)
        with torch.no_grad():
            m.w -= lr * m.w.grad
        si.after_step(m)


def test_si_omega_and_big_omega_match_a_manual_path_integral() -> None:
    c, xi, lr = 0.7, 1e-3, 0.05
    si, m = SI(c=c, xi=xi), Two()
    w = m.w.detach().clone()
    start, omega, big = w.clone(), torch.zeros(2, dtype=torch.float64), None
    targets = [torch.tensor([0.0, 1.0], dtype=torch.float64),
               torch.tensor([2.0, -1.0], dtype=torch.float64)]
    for period, target in enumerate(targets):
        si_period(si, m, target, steps=6, lr=lr)
        for _ in range(6):  # the same path by hand; the penalty moves θ but not g
            g = two_loss_grad(w, target)
            step = g + (0 if big is None else 2 * c * big * (w - start))
            new = w - lr * step
            omega -= g * (new - w)
            w = new
        torch.testing.assert_close(si.omega["w"], omega, rtol=1e-12, atol=1e-14)
        assert si.penalty(m).item() == pytest.approx(
            0.0 if big is None else (c * big * (w - start) ** 2).sum().item(), rel=1e-12)
        si.consolidate(m, torch.zeros(0), torch.zeros(0))
        gain = omega.clamp(min=0) / ((w - start) ** 2 + xi)
        big = gain if big is None else big + gain
        torch.testing.assert_close(si.importance["w"], big, rtol=1e-12, atol=1e-14)
        assert torch.equal(si.anchor["w"], m.w.detach()) and torch.count_nonzero(si.omega["w"]) == 0
        start, omega = w.clone(), torch.zeros(2, dtype=torch.float64)
        assert period > 0 or (big > 0).all()


def test_si_after_step_refuses_a_step_whose_gradient_it_did_not_see() -> None:
    si, m = SI(), Two()
    si.before_step(m)
    with pytest.raises(RuntimeError, match="before_step and apply_to_grads"):
        si.after_step(m)
    si_period(si, m, torch.zeros(2, dtype=torch.float64), steps=1, lr=0.1)
    m.w.grad = torch.ones(2, dtype=torch.float64)
    si.apply_to_grads(m)  # a second step that skipped before_step: θ before it is unknown
    with pytest.raises(RuntimeError, match="before_step and apply_to_grads"):
        si.after_step(m)


def loop_mas(model: MLP, x: Tensor) -> dict[str, Tensor]:
    params = trainable_parameters(model)
    total = {k: torch.zeros_like(p) for k, p in params.items()}
    for i in range(len(x)):
        model.zero_grad()
        model(x[i : i + 1]).square().sum().backward()
        for k, p in params.items():
            total[k] += p.grad.abs()
    model.zero_grad()
    return {k: t / len(x) for k, t in total.items()}


def test_mas_importance_matches_a_per_sample_loop_and_ignores_labels() -> None:
    m, (x, y) = tiny_model(), data(0)
    mas = MAS(lam=2.0, decay=0.5, chunk_size=3)
    mas.consolidate(m, x, y)
    first = loop_mas(m, x)
    for k in first:
        torch.testing.assert_close(mas.importance[k], first[k], rtol=1e-5, atol=1e-8)
    relabelled = MAS(chunk_size=3)
    relabelled.consolidate(m, x, (y + 1) % 3)
    assert all(torch.equal(relabelled.importance[k], mas.importance[k]) for k in first)
    perturb(m, scale=0.3)
    x2 = data(1)[0]
    mas.consolidate(m, x2, torch.zeros(0))
    second = loop_mas(m, x2)
    for k in first:
        torch.testing.assert_close(mas.importance[k], 0.5 * first[k] + second[k], rtol=1e-5,
                                   atol=1e-8)
    anchor = {k: p.detach().clone() for k, p in m.named_parameters()}
    perturb(m)
    expected = sum((2.0 * mas.importance[k] * (p - anchor[k]) ** 2).sum()
                   for k, p in m.named_parameters())
    assert mas.penalty(m).item() == pytest.approx(expected.item(), rel=1e-5)


def ewc_after(consolidations: int, max_tasks: int = 10) -> tuple[EWC, MLP, list]:
    m, ewc, anchored = tiny_model(), EWC(lam=3.0, max_tasks=max_tasks), []
    for i in range(consolidations):
        perturb(m, scale=0.4, seed=i)
        x, y = data(i)
        ewc.consolidate(m, x, y)
        anchored.append((loop_fisher(m, x, y), {k: p.detach().clone()
                                                for k, p in m.named_parameters()}))
    perturb(m, scale=0.2, seed=99)
    return ewc, m, anchored


def test_ewc_with_two_consolidations_is_the_sum_of_two_anchored_penalties() -> None:
    ewc, m, anchored = ewc_after(2)
    params = dict(m.named_parameters())
    assert len(ewc.tasks) == 2
    expected = sum(1.5 * (f[k] * (params[k] - a[k]) ** 2).sum() for f, a in anchored for k in f)
    assert ewc.penalty(m).item() == pytest.approx(expected.item(), rel=1e-4)
    m.zero_grad()
    expected.backward()
    auto = {k: p.grad.clone() for k, p in params.items()}
    m.zero_grad()
    ewc.apply_to_grads(m)
    for k, p in params.items():
        torch.testing.assert_close(p.grad, auto[k], rtol=1e-4, atol=1e-7)
    clone = EWC(lam=3.0)
    clone.load_state_dict({k: v.clone() for k, v in ewc.state_dict().items()})
    assert torch.equal(clone.penalty(m), ewc.penalty(m)) and len(clone.tasks) == 2


def test_ewc_past_max_tasks_merges_the_oldest_keeping_the_gradient() -> None:
    ewc, m, anchored = ewc_after(3, max_tasks=2)
    assert len(ewc.tasks) == 2
    params = dict(m.named_parameters())
    m.zero_grad()
    ewc.apply_to_grads(m)
    for k, p in params.items():
        expected = sum(3.0 * f[k] * (p - a[k]) for f, a in anchored)
        torch.testing.assert_close(p.grad, expected, rtol=1e-4, atol=1e-7)


def test_ewc_loads_a_single_fisher_state_saved_before_tasks_existed() -> None:
    ewc, m, _ = ewc_after(1)
    old = {k.removeprefix("task0."): v for k, v in ewc.state_dict().items()}
    old.pop(SCALE_KEY)
    clone = EWC(lam=3.0)
    clone.load_state_dict(old)
    assert torch.equal(clone.penalty(m), ewc.penalty(m))
    with pytest.raises(ValueError, match="unexpected EWC state key"):
        clone.load_state_dict({"bogus.head.bias": torch.zeros(3)})


def lwf_learner() -> IncrementalLearner:
    return IncrementalLearner(MLPConfig(3, (8,), 3), LwF(alpha=1.5), seed=0)


def test_lwf_is_zero_on_the_first_experience_and_positive_after() -> None:
    learner = lwf_learner()
    for i in range(5):
        assert learner.learn_many(*data(i)).penalty == 0.0
    learner.on_publish()
    x, y = data(10)
    teacher_logits = learner.model(x).detach()
    stats = [learner.learn_many(x, (y + 1) % 3) for _ in range(5)]  # a second experience
    assert stats[0].penalty > 0 and stats[-1].penalty > stats[0].penalty
    logits = learner.model(x)
    p_teacher = F.softmax(teacher_logits.double() / 2, -1)  # T = 2, by hand in float64
    kl = (p_teacher * (p_teacher.log() - F.log_softmax(logits.double() / 2, -1))).sum(1).mean()
    expected = 1.5 * 2**2 * kl
    got = learner.strategy.loss_term(learner.model, x, logits)
    assert got.item() == pytest.approx(expected.item(), rel=1e-4) and got.requires_grad


def test_lwf_distils_only_the_teachers_classes_and_survives_a_restore() -> None:
    learner = lwf_learner()
    learner.learn_many(*data(0))
    learner.on_publish()
    learner.learn_many(*data(1))
    x = data(2)[0]
    before = learner.strategy.loss_term(learner.model, x, learner.model(x)).item()
    learner.ensure_classes(6)
    state = learner.state_dict()
    assert state["strategy.teacher.head.weight"].shape[0] == 3
    restored = IncrementalLearner.from_state(learner.config, LwF(alpha=1.5), state,
                                             meta=learner.meta())
    for lr in (learner, restored):
        assert lr.strategy.loss_term(lr.model, x, lr.model(x)).item() == before
    assert restored.state_dict().keys() == state.keys()


def test_relax_multiplies_the_strength_and_refuses_nonsense() -> None:
    si = make_strategy("si", c=2.0)
    si.relax(0.5)
    si.relax(0.5)
    assert si.state_dict()[SCALE_KEY].item() == 0.25 and si.c == 2.0
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="relax factor"):
            si.relax(bad)
    with pytest.raises(ValueError, match="relax factor"):
        make_strategy("naive").relax(-0.5)


@pytest.mark.parametrize(("spec", "expected"), [
    ("online-ewc+replay", ("online-ewc", True)), ("replay", ("naive", True)),
    ("replay+si", ("si", True)), ("lwf", ("lwf", False)), ("naive", ("naive", False)),
    (" MAS + Replay ", ("mas", True)),
])
def test_parse_strategy(spec: str, expected: tuple[str, bool]) -> None:
    assert parse_strategy(spec) == expected


@pytest.mark.parametrize(("spec", "message"), [
    ("ewc+si", "at most one strategy besides replay, got ewc and si"),
    ("replay+replay", "given more than once"), ("ewc+", "unknown strategy part"),
    ("foo+replay", r"unknown strategy part\(s\) \['foo'\]"),
])
def test_parse_strategy_refuses(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_strategy(spec)


def test_a_misspelled_hook_is_refused_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError, match="after_stp"):
        class Typo(StrategyBase):
            name = "typo"

            def after_stp(self, model: nn.Module) -> None: ...


def test_every_named_strategy_builds_with_its_defaults() -> None:
    model = build_model(MLPConfig(3, (4,), 2), seed=0)
    for name in ("naive", "ewc", "online-ewc", "si", "mas", "lwf"):
        s = make_strategy(name)
        assert s.name == name and s.penalty(model).item() == 0.0


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["naive", "ewc", "online-ewc", "si", "mas", "lwf"])
def test_every_strategy_trains_on_cuda_and_restores_on_cpu(name: str) -> None:
    config = MLPConfig(3, (8,), 3)
    gpu = IncrementalLearner(config, make_strategy(name), seed=0, device="cuda")
    for i in range(3):
        gpu.learn_many(*data(i))
    gpu.consolidate(*data(5))
    gpu.on_publish()
    gpu.ensure_classes(4)
    stats = gpu.learn_many(*data(6))
    assert math.isfinite(stats.loss) and math.isfinite(stats.penalty)
    cpu = IncrementalLearner.from_state(config, make_strategy(name), gpu.state_dict(),
                                        meta=gpu.meta())
    x = data(7)[0]
    torch.testing.assert_close(gpu.predict_proba(x), cpu.predict_proba(x), rtol=1e-4, atol=1e-5)
    for lr in (gpu, cpu):
        assert lr.strategy.penalty(lr.model).device == next(lr.model.parameters()).device
    torch.testing.assert_close(cpu.strategy.penalty(cpu.model),
                               gpu.strategy.penalty(gpu.model).cpu(), rtol=1e-4, atol=1e-7)
