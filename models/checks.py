"""Invariants every strategy must keep, River-style: `check_strategy(factory)` runs them all.

Each check builds a fresh strategy, drives it through a real IncrementalLearner (so through every
hook, in the learner's order), consolidates and publishes, then probes the regulariser
r(θ) = penalty(θ) + loss_term(θ): what the strategy adds to the training objective.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from models.learner import IncrementalLearner
from models.nets import MLPConfig
from models.replay import ReservoirBuffer
from models.strategies.base import Strategy, detached_copy, trainable_parameters

StrategyFactory = Callable[[], Strategy]
CONFIG = MLPConfig(input_dim=5, hidden=(8,), num_classes=3)


@dataclass(frozen=True)
class Subject:
    factory: StrategyFactory
    regularises: bool = True  # False only for a strategy that adds nothing (naive)
    replay: bool = False  # train through a replay buffer too


@dataclass
class Trained:
    learner: IncrementalLearner
    buffer: ReservoirBuffer | None
    x: Tensor
    anchor: dict[str, Tensor]  # the parameters consolidated and published


def _data(seed: int, n: int = 24, classes: int = 3) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(classes, (n,), generator=g)
    return torch.randn(n, CONFIG.input_dim, generator=g) + y[:, None].float(), y


def _learner(subject: Subject) -> tuple[IncrementalLearner, ReservoirBuffer | None]:
    learner = IncrementalLearner(CONFIG, subject.factory(), seed=0, steps_per_batch=2,
                                 replay_size=8 if subject.replay else 0)
    buffer = None
    if subject.replay:
        buffer = ReservoirBuffer(32, CONFIG.input_dim)
        for slot, (xi, yi) in enumerate(zip(*_data(100, n=32), strict=True)):
            buffer.put(slot, xi, int(yi))
    return learner, buffer


def train_and_anchor(subject: Subject) -> Trained:
    """A few learn_many calls, then consolidate and publish: the model is at the anchor."""
    learner, buffer = _learner(subject)
    for i in range(4):
        learner.learn_many(*_data(i), buffer)
    x, y = _data(50)
    learner.consolidate(x, y)
    learner.on_publish()
    return Trained(learner, buffer, x, detached_copy(trainable_parameters(learner.model)))


def regulariser(learner: IncrementalLearner, x: Tensor) -> Tensor:
    model, strategy = learner.model, learner.strategy
    term = strategy.loss_term(model, x, model(x))
    penalty = strategy.penalty(model)
    return penalty if term is None else penalty + term.detach()


def regulariser_grads(learner: IncrementalLearner, x: Tensor) -> list[Tensor]:
    """The gradient of r alone, through the same two paths the learner uses."""
    model, strategy = learner.model, learner.strategy
    params = list(trainable_parameters(model).values())
    for p in params:
        p.grad = torch.zeros_like(p)
    term = strategy.loss_term(model, x, model(x))
    if term is not None:
        term.backward()
    strategy.apply_to_grads(model)
    return [p.grad.clone() for p in params]


def perturb(learner: IncrementalLearner, scale: float = 0.05, seed: int = 7) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in trainable_parameters(learner.model).values():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def _distance(learner: IncrementalLearner, anchor: dict[str, Tensor]) -> float:
    params = trainable_parameters(learner.model)
    with torch.no_grad():
        return sum(float((params[k] - a).square().sum()) for k, a in anchor.items()) ** 0.5


def _restored(learner: IncrementalLearner, subject: Subject) -> IncrementalLearner:
    state = {k: v.clone() for k, v in learner.state_dict().items()}
    return IncrementalLearner.from_state(learner.config, subject.factory(), state,
                                         meta=learner.meta())


def check_protocol_and_silence_before_training(subject: Subject) -> None:
    learner, _ = _learner(subject)
    assert isinstance(learner.strategy, Strategy)
    x = _data(1)[0]
    assert regulariser(learner, x).item() == 0.0
    before = [g.clone() for g in regulariser_grads(learner, x)]
    assert all(torch.count_nonzero(g) == 0 for g in before)


def check_zero_at_the_anchor(subject: Subject) -> None:
    t = train_and_anchor(subject)
    assert regulariser(t.learner, t.x).item() == 0.0
    # Exactly 0 for a quadratic; a distillation's gradient there is softmax − softmax ≈ 0.
    assert all(g.abs().max() <= 1e-7 for g in regulariser_grads(t.learner, t.x))


def check_positive_after_a_perturbation(subject: Subject) -> None:
    t = train_and_anchor(subject)
    perturb(t.learner)
    r = regulariser(t.learner, t.x).item()
    assert (r > 0) == subject.regularises, r


def check_a_penalty_step_moves_toward_the_anchor(subject: Subject) -> None:
    if not subject.regularises:
        return
    t = train_and_anchor(subject)
    perturb(t.learner)
    r_before, d_before = regulariser(t.learner, t.x).item(), _distance(t.learner, t.anchor)
    grads = regulariser_grads(t.learner, t.x)
    norm = sum(float(g.square().sum()) for g in grads) ** 0.5
    assert norm > 0
    with torch.no_grad():  # a step of 1% of the distance, whatever the penalty's strength
        for p, g in zip(trainable_parameters(t.learner.model).values(), grads, strict=True):
            p.sub_(g * (0.01 * d_before / norm))
    assert regulariser(t.learner, t.x).item() < r_before
    assert _distance(t.learner, t.anchor) < d_before


def check_state_round_trip(subject: Subject) -> None:
    t = train_and_anchor(subject)
    perturb(t.learner)
    restored = _restored(t.learner, subject)
    assert torch.equal(regulariser(restored, t.x), regulariser(t.learner, t.x))
    # Both go on identically (per-step hook state is rebuilt, not lost)...
    other = None if t.buffer is None else _learner(subject)[1]
    for i in range(2):
        assert t.learner.learn_many(*_data(10 + i), t.buffer) == \
            restored.learn_many(*_data(10 + i), other)
    a, b = t.learner.state_dict(), restored.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def check_state_does_not_alias_the_model(subject: Subject) -> None:
    t = train_and_anchor(subject)
    live = t.learner.strategy.state_dict()
    frozen = {k: v.clone() for k, v in live.items()}
    perturb(t.learner, scale=1.0)
    assert all(torch.equal(v, frozen[k]) for k, v in live.items())


def check_relax_scales_and_persists(subject: Subject) -> None:
    t = train_and_anchor(subject)
    perturb(t.learner)
    full = regulariser(t.learner, t.x).item()
    t.learner.relax(0.5)
    half = regulariser(t.learner, t.x).item()
    assert abs(half - 0.5 * full) <= 1e-6 * full, (half, full)
    assert regulariser(_restored(t.learner, subject), t.x).item() == half


def check_growth_keeps_old_state(subject: Subject) -> None:
    t = train_and_anchor(subject)
    perturb(t.learner)
    r_before = regulariser(t.learner, t.x).item()
    before = {k: v for k, v in t.learner.state_dict().items() if k.startswith("strategy.")}
    t.learner.ensure_classes(5)
    after = t.learner.state_dict()
    params = dict(t.learner.model.named_parameters())
    for k, old in before.items():
        new = after[k]
        assert torch.equal(new[tuple(slice(0, n) for n in old.shape)], old), k
        if new.shape != old.shape:  # only per-parameter state grows, and to the new shape
            assert any(k.endswith(f".{n}") and new.shape == p.shape for n, p in params.items()), k
    r_after = regulariser(t.learner, t.x).item()
    assert abs(r_after - r_before) <= 1e-5 * r_before, (r_after, r_before)
    stats = t.learner.learn_many(*_data(20, classes=5), t.buffer)
    assert torch.isfinite(torch.tensor([stats.loss, stats.penalty])).all()


CHECKS: tuple[Callable[[Subject], None], ...] = (
    check_protocol_and_silence_before_training,
    check_zero_at_the_anchor,
    check_positive_after_a_perturbation,
    check_a_penalty_step_moves_toward_the_anchor,
    check_state_round_trip,
    check_state_does_not_alias_the_model,
    check_relax_scales_and_persists,
    check_growth_keeps_old_state,
)


def check_strategy(factory: StrategyFactory, *, regularises: bool = True,
                   replay: bool = False) -> None:
    """Run every check in CHECKS against strategies built by `factory`."""
    subject = Subject(factory, regularises, replay)
    for check in CHECKS:
        check(subject)
