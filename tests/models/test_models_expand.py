"""Expandable network (models/expand.py, MNEMO_STRATEGY=expand): widening keeps the function,
growth follows the loss and is bounded, new units take most of the change, state resumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.expand import Expand, widen
from models.learner import IncrementalLearner
from models.nets import MLPConfig, build_model
from models.strategies import make_strategy
from service.bench import expand as bench_expand

CONFIG = MLPConfig(6, (10, 8), 3)


def _batch(seed: int, n: int = 32, noise: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 6, generator=g) + (0 if noise else 3 * torch.nn.functional.one_hot(y, 6))
    return x, y


def test_widening_adds_units_without_changing_the_function() -> None:
    model = build_model(CONFIG, seed=0)
    x = torch.randn(16, 6)
    with torch.no_grad():
        before = model(x)
        widen(model, 5, torch.Generator().manual_seed(1))
        after = model(x)
    assert model.config.hidden == (15, 13) and model.head.in_features == 13
    assert model.body[2].weight.shape == (13, 15)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)


def test_growth_follows_a_loss_that_stays_high_and_is_bounded() -> None:
    learner = IncrementalLearner(CONFIG, Expand(units=4, max_events=2), seed=0)
    x, y = _batch(0, noise=True)  # random labels: the loss cannot come down
    for i in range(4):
        learner.learn_many(x, y)
        learner.consolidate(x, y)
        # high at the first consolidation is not "stays high"; then one growth per
        # consolidation until the bound
        assert learner.config.hidden[0] == 10 + 4 * min(i, 2)
    assert learner.strategy.growth_record() == {"events": 2, "units_added_per_layer": 8,
                                                "max_events": 2}
    # Every per-parameter state followed the widened parameters.
    for name, p in learner.model.named_parameters():
        for v in learner.optimizer.state[p].values():
            assert v.dim() == 0 or v.shape == p.shape, name
    learned = IncrementalLearner(CONFIG, Expand(), seed=0)
    xs, ys = _batch(1)
    for _ in range(300):
        learned.learn_many(xs, ys)
    for _ in range(3):
        learned.consolidate(xs, ys)  # a low loss never grows
    assert learned.config.hidden == (10, 8)


def test_after_a_growth_old_weights_train_at_a_fraction_and_are_held() -> None:
    learner = IncrementalLearner(CONFIG, Expand(units=4, always=True, old_rate=0.1), seed=0)
    x, y = _batch(2)
    learner.consolidate(x, y)  # grows at once (always)
    model, strategy = learner.model, learner.strategy
    assert strategy.focus_left > 0
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    strategy.apply_to_grads(model)  # at the anchor: no penalty, only the scaling
    w = model.body[0].weight.grad
    torch.testing.assert_close(w[:10], torch.full_like(w[:10], 0.1))
    assert torch.all(w[10:] == 1.0)
    with torch.no_grad():
        model.body[0].weight[0, 0] += 1.0
    assert float(strategy.penalty(model)) > 0  # an old weight moved: penalised


def test_a_restored_learner_resumes_widths_and_growth_state() -> None:
    learner = IncrementalLearner(CONFIG, make_strategy("expand", always=True, units=3), seed=0)
    x, y = _batch(3)
    learner.learn_many(x, y)
    learner.consolidate(x, y)
    learner.learn_many(x, y)
    resumed = IncrementalLearner.from_state(learner.config, make_strategy("expand", always=True,
                                                                          units=3),
                                            learner.state_dict(), learner.meta())
    assert resumed.config.hidden == (13, 11)
    assert resumed.strategy.growth_record() == learner.strategy.growth_record()
    assert resumed.strategy.focus_left == learner.strategy.focus_left
    for one in (learner, resumed):
        one.learn_many(x, y)
    with torch.no_grad():
        assert torch.equal(resumed.model(x), learner.model(x))


@pytest.mark.parametrize("seeds", [(0, 1, 2)])
def test_on_the_drifting_stream_it_grows_at_most_half_and_keeps_accuracy(seeds: tuple[int, ...]) -> None:
    torch.set_num_threads(1)
    results = bench_expand.run(list(seeds), log=lambda _: None)
    by = {v: [r for r in results if r["variant"] == v] for v in bench_expand.VARIANTS}
    criterion, always = by.values()
    units = [bench_expand.added_units(r) for r in criterion]
    units_always = [bench_expand.added_units(r) for r in always]
    assert units_always == [256] * len(seeds)  # 8 growths (the bound) of 16 units, 2 layers
    assert sum(units) <= 0.5 * sum(units_always), units
    gap = np.mean([r["preq_acc"] for r in always]) - np.mean([r["preq_acc"] for r in criterion])
    assert gap < 0.01, gap
