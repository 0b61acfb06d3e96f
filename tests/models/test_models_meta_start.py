"""MNEMO_META_START=reptile (models/meta_start.py) against the invariants a strategy keeps
(the equivalent of the strategy contract for a component outside the strategy protocol): it
starts only what is new (old tags' outputs stay bit-identical), its updates never touch the
network, its cost is bounded, it is deterministic, and its state round-trips through the stream
step's state — with per-tag heads and with progressive columns."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from models.holdout import Holdout
from models.learner import IncrementalLearner
from models.meta_start import MetaStart, ReptileParams, make_meta_start
from models.nets import MLPConfig, MultiHeadMLP
from models.replay import ReservoirBuffer
from models.strategies import make_strategy
from models.stream import StreamParams, StreamStep

DIM, CLASSES = 6, 4
MODES = {"per-tag": ("online-ewc", None), "columns": ("progressive", (8, 8))}


def _task(tag: int, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Related tasks: the same 4 classes (a class is a direction in input space), each tag
    seeing them under its own small offset."""
    y = torch.randint(CLASSES, (n,), generator=gen)
    x = torch.randn(n, DIM, generator=gen) * 0.5
    x[torch.arange(n), y] += 3.0
    return x + 0.3 * tag, y


def _step(mode: str, meta: MetaStart | None, seed: int = 0) -> StreamStep:
    strategy, column = MODES[mode]
    config = MLPConfig(DIM, (16, 16), CLASSES, (), mode == "columns", column)
    learner = IncrementalLearner(config, make_strategy(strategy), seed=seed)
    return StreamStep(learner, ReservoirBuffer(200, DIM), None, Holdout(1, DIM),
                      StreamParams(consolidate_every=10**9, rehearsal=0.0), use_replay=True,
                      routes_by_tag=True, seed=seed, meta_start=meta)


def _feed(step: StreamStep, tag: str, x: torch.Tensor, y: torch.Tensor) -> None:
    for i in range(0, len(y), 16):
        xb, yb = x[i : i + 16], y[i : i + 16]
        for row, c in zip(xb.numpy(), yb.tolist(), strict=True):
            step.insert(row, c, 0.0, tag)
        step.learn(xb, yb, [tag] * len(yb), num_classes=CLASSES)


def _trained(mode: str, tags: int = 2) -> StreamStep:
    gen = torch.Generator().manual_seed(0)
    step = _step(mode, MetaStart(seed=3))
    for t in range(tags):
        _feed(step, f"t{t}", *_task(t, 96, gen))
    return step


@pytest.mark.parametrize("mode", MODES)
def test_update_learns_only_its_own_state_at_a_bounded_cost(mode: str) -> None:
    step = _trained(mode)
    model, meta = step.learner.model, step.meta_start
    assert isinstance(model, MultiHeadMLP) and meta is not None
    assert meta.updates >= 1 and meta.known is not None and bool(meta.known.all())
    before = copy.deepcopy(model.state_dict())
    x, y = step.buffer.items()  # type: ignore[union-attr]
    assert meta.update(model, x, y, step.buffer_tags) == ReptileParams().episodes
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the network never moves
    assert meta.update(model, x, y, [""] * len(y)) == 0  # untagged samples give no episode


@pytest.mark.parametrize("mode", MODES)
def test_a_new_tag_starts_from_the_meta_initialisation_and_old_tags_stay_exact(mode: str) -> None:
    step = _trained(mode)
    model, meta = step.learner.model, step.meta_start
    assert isinstance(model, MultiHeadMLP) and meta is not None
    probe = torch.randn(20, DIM)
    with torch.no_grad():
        old = {t: model.forward_tag(probe, t).clone() for t in model.tags}
    before = meta.snapshot_classes(model)
    step.learner.ensure_tags(["new"] * CLASSES, torch.arange(CLASSES), max_tags=10)
    assert meta.start(model, before) == ["new"]
    head, classes = model.tag_head("new"), model.tag_classes("new")
    assert meta.head_w is not None and meta.head_b is not None
    assert torch.equal(head.weight.detach(), meta.head_w[classes])
    assert torch.equal(head.bias.detach(), meta.head_b[classes])
    if mode == "columns":
        layers = [t for layer in model.columns[-1].layers for t in (layer.weight, layer.bias)]
        assert all(torch.equal(a.detach(), b) for a, b in zip(layers, meta.column, strict=True))
        assert all(not lat.weight.detach().any() for g in model.columns[-1].laterals for lat in g)
    with torch.no_grad():
        assert all(torch.equal(model.forward_tag(probe, t), old[t]) for t in old)
    assert meta.start(model, meta.snapshot_classes(model)) == []  # nothing new: nothing started


@pytest.mark.parametrize("mode", MODES)
def test_state_round_trips_through_the_stream_state_and_updates_are_deterministic(mode: str) -> None:
    step = _trained(mode)
    state = step.state_dict()
    assert any(k.startswith("stream.meta.") for k in state)
    restored = _step(mode, MetaStart(seed=3))
    restored.load_state_dict(state)
    a, b = step.meta_start.state_dict(), restored.meta_start.state_dict()  # type: ignore[union-attr]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # The same state and buffer give the same next update (its randomness is seeded by it).
    x, y = step.buffer.items()  # type: ignore[union-attr]
    for s in (step, restored):
        s.meta_start.update(step.learner.model, x, y, step.buffer_tags)  # type: ignore[union-attr]
    a, b = step.meta_start.state_dict(), restored.meta_start.state_dict()  # type: ignore[union-attr]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="not a meta-start state"):
        MetaStart().load_state_dict({"bogus": torch.zeros(1)})


def test_without_a_meta_start_nothing_changes() -> None:
    assert make_meta_start("none") is None
    with pytest.raises(ValueError, match="unknown meta start"):
        make_meta_start("maml")
    gen = torch.Generator().manual_seed(0)
    step = _step("per-tag", None)
    _feed(step, "t0", *_task(0, 32, gen))
    assert not any(k.startswith("stream.meta.") for k in step.state_dict())


def test_a_new_tag_learns_faster_from_the_meta_start() -> None:
    """Test-then-train over a new tag's first 48 labels after three related tags, at a fixed
    seed: the meta-start answers more of them right than the plain start (the direction the
    10-seed benchmark measured, BENCHMARKS.md "Meta-learned starts")."""
    right = {}
    for name, meta in (("plain", None), ("meta", MetaStart(seed=3))):
        gen = torch.Generator().manual_seed(1)
        step = _step("per-tag", meta)
        for t in range(3):
            _feed(step, f"t{t}", *_task(t, 96, gen))
        x, y = _task(3, 48, gen)
        hits = 0
        for i in range(0, 48, 16):
            model = step.learner.model
            with torch.no_grad():
                if model.tag_classes("t3"):
                    hits += int((model.classify(x[i : i + 16], "t3") == y[i : i + 16]).sum())
            _feed(step, "t3", x[i : i + 16], y[i : i + 16])
        right[name] = hits
    assert right["meta"] > right["plain"], right


def _trained_with_steps(mode: str) -> StreamStep:
    gen = torch.Generator().manual_seed(0)
    step = _step(mode, MetaStart(ReptileParams(step_sizes=True), seed=3))
    for t in range(2):
        _feed(step, f"t{t}", *_task(t, 96, gen))
    return step


@pytest.mark.parametrize("mode", MODES)
def test_meta_learned_step_sizes_scale_a_new_tags_first_updates_bounded_and_round_trip(
        mode: str) -> None:
    """ReptileParams.step_sizes: per-parameter log step sizes learned by hypergradient descent
    in the Reptile inner loop; bounded; a new tag's started tensors take their first
    `inner_steps` updates scaled by them (and only those); they travel in `stream.meta.*`."""
    step = _trained_with_steps(mode)
    meta, params = step.meta_start, ReptileParams()
    assert meta is not None and meta.step_w is not None and meta.step_b is not None
    bound = math.log(params.max_step) + 1e-6
    steps = [meta.step_w, meta.step_b, *meta.step_column]
    assert all(bool((s.abs() <= bound).all()) for s in steps)  # bounded
    assert any(bool(s.abs().gt(1e-3).any()) for s in steps)  # learned: not all 1
    assert len(meta.step_column) == (4 if mode == "columns" else 0)
    # The same new tag, once with the learned step sizes and once with them at 1.
    gen = torch.Generator().manual_seed(5)
    x, y = _task(2, 16, gen)
    ones = copy.deepcopy(step)
    assert ones.meta_start is not None and ones.meta_start.step_w is not None
    ones.meta_start.step_w.zero_()
    ones.meta_start.step_b.zero_()  # type: ignore[union-attr]
    for s in ones.meta_start.step_column:
        s.zero_()
    probe = torch.randn(20, DIM)
    out = {}
    for name, s in (("learned", step), ("ones", ones)):
        model = s.learner.model
        with torch.no_grad():
            old = {t: model.forward_tag(probe, t).clone() for t in model.tags}
        s.learn(x, y, ["new"] * len(y), num_classes=CLASSES)
        assert s.meta_start is not None and s.meta_start._boost == {"new": params.inner_steps - 2}
        out[name] = model.tag_head("new").weight.detach().clone()
        with torch.no_grad():  # an older tag's own tensors are not scaled (columns: frozen)
            if mode == "columns":
                assert torch.equal(model.forward_tag(probe, "t0"), old["t0"])
    assert not torch.equal(out["learned"], out["ones"])  # the step sizes change the update
    # After `inner_steps` learner steps the hooks are gone and the optimizer's fast path is back.
    for _ in range(params.inner_steps // 2):
        step.learn(x, y, ["new"] * len(y), num_classes=CLASSES)
    assert step.meta_start is not None and not step.meta_start._boost
    assert not step.learner.optimizer._optimizer_step_pre_hooks
    # State: round-trips through the stream step's state.
    state = step.state_dict()
    assert "stream.meta.step_w" in state and "stream.meta.step_b" in state
    restored = _step(mode, MetaStart(ReptileParams(step_sizes=True), seed=3))
    restored.load_state_dict(state)
    a, b = step.meta_start.state_dict(), restored.meta_start.state_dict()  # type: ignore[union-attr]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert make_meta_start("reptile", step_sizes=True).params.step_sizes  # type: ignore[union-attr]
    assert not make_meta_start("reptile").params.step_sizes  # type: ignore[union-attr]
