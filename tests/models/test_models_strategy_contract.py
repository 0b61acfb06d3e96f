"""Every strategy, alone and with replay, against every invariant in models.checks; and every
strategy in every head mode it runs with through every kind of growth (see the second half)."""

import copy
import math
from collections.abc import Callable
from functools import partial

import pytest
import torch
from torch import Tensor

from models.checkpoint import tensors_from_bytes, tensors_to_bytes
from models.checks import CHECKS, Subject, check_strategy
from models.holdout import Holdout
from models.learner import IncrementalLearner
from models.nets import MLPConfig
from models.replay import ReplayBuffer, make_buffer
from models.strategies import STRATEGY_NAMES, UNREGULARISED, make_strategy, parse_strategy
from models.strategies.base import SCALE_KEY, Strategy, trainable_parameters
from models.strategies.quadratic import QuadraticPenalty
from models.strategies.soft_sharing import SoftSharing
from models.stream import StreamParams, StreamStep

SPECS = [*STRATEGY_NAMES, *(f"{name}+replay" for name in STRATEGY_NAMES)]


def subject(spec: str) -> Subject:
    name, replay = parse_strategy(spec)
    return Subject(partial(make_strategy, name), regularises=name not in UNREGULARISED,
                   replay=replay)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("spec", SPECS)
def test_strategy_keeps_the_invariant(spec: str, check: Callable[[Subject], None]) -> None:
    check(subject(spec))


def test_check_strategy_runs_every_check_and_catches_a_broken_strategy() -> None:
    check_strategy(partial(make_strategy, "online-ewc"))

    def broken() -> object:  # its penalty's gradient points away from the anchor
        s = make_strategy("online-ewc")
        s.scale = -1.0
        return s

    with pytest.raises(AssertionError):
        check_strategy(broken)  # type: ignore[arg-type]


# --- Growth: every kind of network growth, then consolidation, a drift response and a restart.
#
# The service grows the network while it learns: new classes grow the heads, a new tag makes a
# head (MNEMO_HEADS=per-tag) or a column (progressive) and freezes older columns, and expand
# widens the hidden layers when it consolidates. Each strategy's per-parameter state must follow
# (parameters made since the last consolidation included, frozen ones dropped), through the
# drift response (models.adaptation + consolidate + relax) and a state round trip.

INPUT = 5
HIDDEN = (8, 6)  # two layers: progressive columns then have laterals
MAX_TAGS = 8
REPLAY_CAPACITY = 32
CONSOLIDATION_SAMPLE = 32
DRIFT_RELAX = 0.1  # what the stream step relaxes by (models/stream.py, MNEMO_DRIFT_RELAX)
OLD, NEW, NEWEST = "rot0", "rot90", "rot180"  # the bug report's tags, and one more


def _head_modes(name: str) -> tuple[str, ...]:
    """The head modes a strategy runs with. expand widens the shared trunk, which per-tag heads
    and columns read at a fixed width (the settings refuse the pair); progressive selects the
    column network. Any other strategy may meet columns too: a progressive deployment switched
    to it keeps its columns (service/worker/state.py restore)."""
    if name == "expand":
        return ("shared",)
    if name == "progressive":
        return ("columns",)
    return ("shared", "per-tag", "soft", "columns")


GROWTH_CASES = [(name, mode) for name in STRATEGY_NAMES for mode in _head_modes(name)]
# expand grows at every consolidation here (bounded by its max_events), so widening happens
# before and after the other kinds of growth and through the drift response.
STRATEGY_KWARGS = {"expand": {"always": True, "units": 3}}


def _strategy(name: str, soft: bool = False) -> Strategy:
    strategy = make_strategy(name, **STRATEGY_KWARGS.get(name, {}))
    return SoftSharing(strategy) if soft else strategy  # MNEMO_HEADS=soft wraps it


def _config(mode: str) -> MLPConfig:
    tag_heads = None if mode == "shared" else ()
    return MLPConfig(INPUT, HIDDEN, 2, tag_heads, progressive=mode == "columns",
                     soft_layers=(0, 1) if mode == "soft" else None)


def _rows(seed: int, classes: tuple[int, ...], tag: str, mode: str,
          n: int = 12) -> tuple[Tensor, Tensor, list[str] | None]:
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor(classes)[torch.randint(len(classes), (n,), generator=g)]
    x = torch.randn(n, INPUT, generator=g) + y[:, None].float()
    return x, y, None if mode == "shared" else [tag] * n


def _learn(learner: IncrementalLearner, buffer: ReplayBuffer, seed: int,
           classes: tuple[int, ...], tag: str, mode: str) -> None:
    """One chunk the way the worker takes it: grow for its classes and tags, learn with replay,
    then offer its rows to the buffer."""
    x, y, tags = _rows(seed, classes, tag, mode)
    learner.ensure_classes(max(classes) + 1)
    if tags is not None:
        learner.ensure_tags(tags, y, MAX_TAGS)
    _assert_state_follows(learner)
    stats = learner.learn_many(x, y, buffer, tags)
    assert math.isfinite(stats.loss) and math.isfinite(stats.penalty), stats
    u = torch.rand(len(y), generator=torch.Generator().manual_seed(seed))
    for xi, yi, ui in zip(x, y, u.tolist(), strict=True):
        buffer.insert(xi, int(yi), ui)


def _consolidate(learner: IncrementalLearner, buffer: ReplayBuffer, seed: int) -> None:
    """A consolidation on a replay sample (service/worker/loop.py), then a publish."""
    x, y = buffer.sample(min(CONSOLIDATION_SAMPLE, len(buffer)),
                         torch.Generator().manual_seed(seed))
    learner.consolidate(x, y)
    _assert_state_follows(learner)
    learner.on_publish()


def _scale(learner: IncrementalLearner) -> float:
    return float(learner.strategy.state_dict().get(SCALE_KEY, torch.tensor(1.0)))


def _assert_state_follows(learner: IncrementalLearner) -> None:
    """A quadratic penalty's state, once it has any, covers exactly the trainable parameters:
    a head made since the last consolidation included, a column frozen since dropped."""
    strategy = getattr(learner.strategy, "inner", learner.strategy)  # SoftSharing's inner
    if not isinstance(strategy, QuadraticPenalty) or not strategy.importance:
        return
    trainable = trainable_parameters(learner.model)
    for part in (strategy.importance, strategy.anchor, getattr(strategy, "omega", trainable)):
        assert part.keys() == trainable.keys(), sorted(part.keys() ^ trainable.keys())
        assert all(part[k].shape == p.shape for k, p in trainable.items())


def _restart(learner: IncrementalLearner, name: str) -> IncrementalLearner:
    """The learner a restart rebuilds (service/worker/state.py restore): the config of the
    served model, the state through its blob; equal to the live one tensor for tensor."""
    blob = tensors_to_bytes(learner.state_dict(), learner.meta())
    tensors, meta = tensors_from_bytes(blob)
    soft = isinstance(learner.strategy, SoftSharing)
    restored = IncrementalLearner.from_state(learner.snapshot().config, _strategy(name, soft),
                                             tensors, meta)
    _assert_same_state(restored, learner)
    return restored


def _assert_same_state(a: IncrementalLearner, b: IncrementalLearner) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys(), sorted(sa.keys() ^ sb.keys())
    unequal = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not unequal, unequal


@pytest.mark.parametrize(("name", "mode"), GROWTH_CASES, ids=[f"{n}-{m}" for n, m in GROWTH_CASES])
def test_state_follows_every_growth_through_drift_and_restart(name: str, mode: str) -> None:
    learner = IncrementalLearner(_config(mode), _strategy(name, mode == "soft"), seed=0,
                                 steps_per_batch=2,
                                 replay_size=8)
    buffer = make_buffer("reservoir", REPLAY_CAPACITY, INPUT)
    for i in range(2):  # the first tag, consolidated and published
        _learn(learner, buffer, i, (0, 1), OLD, mode)
    _consolidate(learner, buffer, 100)

    # Growth after the consolidation: new classes, and with them the second tag's head
    # (per-tag) or column (progressive, which freezes the first tag's column).
    for i in range(2):
        _learn(learner, buffer, 10 + i, (1, 2, 3), NEW, mode)
    _restart(learner, name)  # grown, not yet consolidated
    _consolidate(learner, buffer, 101)  # where online-EWC, EWC and MAS raised KeyError

    # The drift response as the stream step runs it (models/stream.py): learn the read, retire
    # what the new concept contradicts, consolidate, relax until the next consolidation.
    recent_x, recent_y, recent_tags = _rows(20, (1, 2, 3), NEW, mode, n=24)
    step = StreamStep(learner, buffer, None, Holdout(8, INPUT),
                      StreamParams(consolidation_sample=CONSOLIDATION_SAMPLE, max_tags=MAX_TAGS,
                                   drift_relax=DRIFT_RELAX),
                      use_replay=True, routes_by_tag=recent_tags is not None)
    assert step.learn(recent_x, recent_y, recent_tags, drifted=True).drifted
    _assert_state_follows(learner)
    learner.on_publish()
    relaxed = DRIFT_RELAX if SCALE_KEY in learner.strategy.state_dict() else 1.0
    assert _scale(_restart(learner, name)) == pytest.approx(relaxed)  # where SI's state broke

    # Learning goes on, growing again (the old tag's head takes a new class), then the
    # scheduled consolidation anchors it and restores full strength.
    _learn(learner, buffer, 30, (2, 3), NEW, mode)
    _learn(learner, buffer, 31, (0, 2), OLD, mode)
    _consolidate(learner, buffer, 103)
    learner.relax(1.0 / _scale(learner))
    assert _scale(learner) == pytest.approx(1.0)

    # A third tag and class after the last publish: LwF's teacher predates its head.
    _learn(learner, buffer, 40, (3, 4), NEWEST, mode)

    # Restarted, it goes on exactly as the live learner does and consolidates again.
    restored = _restart(learner, name)
    other = copy.deepcopy(buffer)
    for one, buf in ((learner, buffer), (restored, other)):
        _learn(one, buf, 41, (0, 1, 2, 3), NEW, mode)
        _learn(one, buf, 42, (4,), NEWEST, mode)
    _assert_same_state(restored, learner)
    for one, buf in ((learner, buffer), (restored, other)):
        _consolidate(one, buf, 104)
    _assert_same_state(restored, learner)
    # Every kind of growth the mode has did happen.
    grown = learner.config
    assert grown.num_classes == 5
    if name == "expand":
        assert all(h > h0 for h, h0 in zip(grown.hidden, HIDDEN, strict=True)), grown.hidden
    if mode != "shared":
        assert [t for t, _ in grown.tag_heads or ()] == [OLD, NEW, NEWEST]
        assert learner.model.trainable_tag(OLD) == (mode != "columns")  # columns freeze
        with torch.no_grad():
            x, _, _ = _rows(50, (0, 1), OLD, mode)
            for tag in (OLD, NEW, NEWEST):
                assert torch.equal(restored.model.forward_tag(x, tag),
                                   learner.model.forward_tag(x, tag))
