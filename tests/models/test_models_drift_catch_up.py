"""A detected concept drift is answered on the rows after the change (rows_since_change), and
the live network catches up with them at once (IncrementalLearner.catch_up) instead of turning
over hundreds of labels at the base learning rate while every served answer is wrong."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from models import stream
from models.adaptation import (
    BufferTurnover,
    near_recent,
    repeated_and_relabelled,
    respond_to_drift,
    rows_since_change,
)
from models.holdout import Holdout
from models.learner import IncrementalLearner
from models.nets import MLPConfig
from models.replay import make_buffer
from models.strategies import make_strategy
from models.stream import (
    MIN_SINCE_CHANGE,
    Learned,
    StreamParams,
    StreamStep,
)

FIELDS, VALUES = 3, 3  # STAGGER's shape: three categorical fields of three values, one-hot
WIDTH = FIELDS * VALUES
ALL_INPUTS = list(itertools.product(range(VALUES), repeat=FIELDS))


def old_concept(v: tuple[int, ...]) -> int:
    return int(v[0] == 0 and v[1] == 0)


def new_concept(v: tuple[int, ...]) -> int:
    return int(v[1] == 2 or v[2] == 2)


def one_hot(values: list[tuple[int, ...]]) -> torch.Tensor:
    x = torch.zeros(len(values), WIDTH)
    for row, v in enumerate(values):
        for field, value in enumerate(v):
            x[row, field * VALUES + value] = 1.0
    return x


def rows(rng: np.random.Generator, n: int, concept) -> tuple[torch.Tensor, torch.Tensor]:
    values = [ALL_INPUTS[i] for i in rng.integers(len(ALL_INPUTS), size=n)]
    return one_hot(values), torch.tensor([concept(v) for v in values])


def accuracy(learner: IncrementalLearner, concept, inputs: list[tuple[int, ...]] = ALL_INPUTS,
             ) -> float:
    with torch.no_grad():
        predicted = learner.snapshot()(one_hot(inputs)).argmax(1)
    return float((predicted == torch.tensor([concept(v) for v in inputs])).float().mean())


def settled_step(catch_up_steps: int) -> tuple[StreamStep, np.random.Generator]:
    """A stream step whose network has learned the old concept for 1,600 labels."""
    learner = IncrementalLearner(MLPConfig(WIDTH, (64, 64), 2, scaled_columns=()),
                                 make_strategy("online-ewc"), lr=1e-3, seed=0)
    step = StreamStep(learner, make_buffer("reservoir", 500, WIDTH), None, Holdout(50, WIDTH),
                      StreamParams(holdout_fraction=0.0, consolidate_every=250,
                                   catch_up_steps=catch_up_steps),
                      use_replay=True, routes_by_tag=False, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(100):
        read(step, *rows(rng, 16, old_concept))
    assert accuracy(learner, old_concept) == 1.0
    return step, rng


def read(step: StreamStep, x: torch.Tensor, y: torch.Tensor, drifted: bool = False) -> Learned:
    """One read as the learner process runs it: score, keep in the buffer, learn."""
    step.score(step.learner.snapshot(), x.numpy(), y.numpy())
    for row, label in zip(x.numpy(), y.tolist(), strict=True):
        step.insert(row, label, float(step.rng.random()))
    return step.learn(x, y, drifted=drifted, num_classes=max(2, int(y.max()) + 1))


def test_rows_since_change_finds_where_the_error_rate_rose() -> None:
    assert rows_since_change([0] * 32 + [1, 0] * 8, 8) == 16
    assert rows_since_change([0] * 40 + [1] * 8, 8) == 8
    # A noisy old concept (one error in eight) before a coin toss.
    assert rows_since_change(([1] + [0] * 7) * 4 + [1, 1, 0, 1] * 4, 8) == 16
    assert rows_since_change([1, 0] * 24, 8) is None  # no rise: the whole window
    assert rows_since_change([0] * 48, 8) is None
    assert rows_since_change([0] * 10 + [1] * 5, 8) is None  # too short to tell


def test_a_new_concept_is_answered_from_the_first_read_after_the_change() -> None:
    """On the inputs the first read shows at once (they repeat buffered inputs with new
    labels), on every input from the next read (its fit generalises to the rest)."""
    step, rng = settled_step(catch_up_steps=StreamParams().catch_up_steps)
    before = accuracy(step.learner, new_concept)
    x, y = rows(rng, 16, new_concept)
    read(step, x, y, drifted=True)
    shown = [v for v in ALL_INPUTS if one_hot([v])[0].tolist() in x.tolist()]
    first = accuracy(step.learner, new_concept, shown)
    read(step, *rows(rng, 16, new_concept))
    after = accuracy(step.learner, new_concept)
    assert before < 0.7 and first >= 0.9 and after >= 0.9, (before, first, after)


def test_new_classes_that_arrive_with_a_drift_are_learned_not_caught_up_with() -> None:
    step, rng = settled_step(catch_up_steps=StreamParams().catch_up_steps)
    x, y = rows(rng, 16, lambda v: 2 + old_concept(v))  # classes 2 and 3, never seen
    steps = step.learner.steps_done
    read(step, x, y, drifted=True)
    assert step.learner.steps_done - steps == step.learner.steps_per_batch  # the read's chunk
    # The same read of known classes under a new concept is caught up with.
    step, rng = settled_step(catch_up_steps=StreamParams().catch_up_steps)
    steps = step.learner.steps_done
    read(step, *rows(rng, 16, new_concept), drifted=True)
    assert (step.learner.steps_done - steps
            == step.learner.steps_per_batch + StreamParams().catch_up_steps)


def test_without_the_catch_up_the_settled_network_still_answers_the_old_concept() -> None:
    step, rng = settled_step(catch_up_steps=0)
    read(step, *rows(rng, 16, new_concept), drifted=True)
    assert accuracy(step.learner, new_concept) < 0.7
    assert accuracy(step.learner, old_concept) > 0.9


def test_the_drift_response_works_only_on_the_rows_after_the_change(
        monkeypatch: pytest.MonkeyPatch) -> None:
    step, rng = settled_step(catch_up_steps=0)
    seen: list[torch.Tensor] = []

    def recording(buffer_x, buffer_y, recent_x, recent_y):
        seen.append(recent_x)
        return repeated_and_relabelled(buffer_x, buffer_y, recent_x, recent_y)

    monkeypatch.setattr(stream, "repeated_and_relabelled", recording)
    x, y = rows(rng, 16, new_concept)
    read(step, x, y, drifted=True)
    # The window holds 48 rows, 32 of them the old concept's; the response sees the new ones.
    assert len(step.recent) == 48
    (recent,) = seen
    assert MIN_SINCE_CHANGE <= len(recent) <= 16
    assert torch.equal(recent, x[-len(recent):])


def test_inputs_the_new_rows_repeat_with_new_labels_are_retired_without_a_fit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    step, rng = settled_step(catch_up_steps=StreamParams().catch_up_steps)

    def no_fit(*_: object) -> None:
        raise AssertionError("the first look needs no fitted model here")

    looked: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def recording(buffer_x, buffer_y, recent_x, recent_y):
        looked.append((buffer_x.clone(), buffer_y.clone(), recent_x, recent_y))
        return repeated_and_relabelled(buffer_x, buffer_y, recent_x, recent_y)

    monkeypatch.setattr(stream, "respond_to_drift", no_fit)
    monkeypatch.setattr(stream, "repeated_and_relabelled", recording)
    steps = step.learner.steps_done
    learned = read(step, *rows(rng, 16, new_concept), drifted=True)
    ((held_x, held_y, recent_x, recent_y),) = looked
    answers = {tuple(r.tolist()): int(label) for r, label in zip(recent_x, recent_y, strict=True)}
    relabelled = [i for i, (r, label) in enumerate(zip(held_x, held_y, strict=True))
                  if answers.get(tuple(r.tolist()), int(label)) != int(label)]
    assert len(relabelled) > 20 and learned.retired == relabelled
    assert (step.learner.steps_done - steps
            == step.learner.steps_per_batch + StreamParams().catch_up_steps)  # caught up at once
    assert step.follow_up.fit_owed  # the next read fits


def test_without_repeated_inputs_the_first_look_fits_a_new_concept_model(
        monkeypatch: pytest.MonkeyPatch) -> None:
    step, rng = settled_step(catch_up_steps=StreamParams().catch_up_steps)
    fits: list[int] = []

    def recording(model, buffer_x, buffer_y, recent_x, recent_y):
        fits.append(len(recent_x))
        return respond_to_drift(model, buffer_x, buffer_y, recent_x, recent_y)

    monkeypatch.setattr(stream, "respond_to_drift", recording)
    x, y = rows(rng, 16, new_concept)
    learned = read(step, x + 0.01 * torch.rand(x.shape), y, drifted=True)  # near, never equal
    assert len(fits) == 1 and learned.retired


def test_repeated_and_relabelled_needs_the_same_input_and_agreeing_new_rows() -> None:
    held = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    held_y = torch.tensor([0, 1, 0, 0])
    recent = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.5, 0.5000001]])
    recent_y = torch.tensor([1, 1, 0, 1])
    # [1,0]: relabelled 0 -> 1 (the held 1 agrees); [0,1]: the new rows disagree; [0.5,0.5]:
    # near but not the same input.
    assert repeated_and_relabelled(held, held_y, recent, recent_y).tolist() == [
        True, False, False, False]
    assert not repeated_and_relabelled(held[:0], held_y[:0], recent, recent_y).any()


def test_the_skipped_fit_comes_on_the_next_read_and_a_second_look_once_the_window_fills(
        monkeypatch: pytest.MonkeyPatch) -> None:
    step, rng = settled_step(catch_up_steps=StreamParams().catch_up_steps)
    first = read(step, *rows(rng, 16, new_concept), drifted=True)
    assert first.retired  # the first look, on the rows since the change
    looks: list[int] = []

    def recording(model, buffer_x, buffer_y, recent_x, recent_y):
        looks.append(len(recent_x))
        return respond_to_drift(model, buffer_x, buffer_y, recent_x, recent_y)

    monkeypatch.setattr(stream, "respond_to_drift", recording)
    window = StreamParams().recent_window
    reads = [read(step, *rows(rng, 16, new_concept)) for _ in range(4)]
    # The fit the first look skipped (its inputs repeated buffered ones), on the next read's
    # rows since the change; once more when they fill the window. Retirements go to the caller.
    assert len(looks) == 2 and 16 < looks[0] < window and looks[1] == window, looks
    assert not any(r.drifted for r in reads)
    assert accuracy(step.learner, new_concept) == 1.0


def test_catch_up_scales_the_learning_rate_for_its_steps_only() -> None:
    learner = IncrementalLearner(MLPConfig(WIDTH, (16,), 2), make_strategy("naive"), lr=1e-3)
    x, y = one_hot(ALL_INPUTS), torch.tensor([new_concept(v) for v in ALL_INPUTS])
    start = [p.detach().clone() for p in learner.model.parameters()]
    assert learner.catch_up(x, y, None, 5, 10.0) == 5
    assert learner.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert learner.steps_done == 5
    moved = max(float((p.detach() - s).abs().max()) for p, s in zip(learner.model.parameters(), start,
                                                             strict=True))
    assert moved == pytest.approx(5 * 1e-2, rel=0.05)  # Adam: ~lr per step at the scaled rate
    assert learner.catch_up(x, y, None, 0, 10.0) == 0


def test_after_the_looks_an_input_they_never_saw_retires_its_old_samples_when_it_comes() -> None:
    step, rng = settled_step(catch_up_steps=StreamParams().catch_up_steps)
    unseen = (0, 0, 0)  # old concept 1, new concept 0
    assert step.buffer is not None

    def old_answers_of_unseen() -> int:
        held_x, held_y = step.buffer.items()
        same = (held_x == one_hot([unseen])[0]).all(dim=1)
        return int((same & (held_y == old_concept(unseen))).sum())

    def without_unseen(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        values = [v for v in (ALL_INPUTS[i] for i in rng.integers(len(ALL_INPUTS), size=2 * n))
                  if v != unseen][:n]
        return one_hot(values), torch.tensor([new_concept(v) for v in values])

    read(step, *without_unseen(16), drifted=True)
    for _ in range(4):  # the looks, none of them shown the unseen input
        read(step, *without_unseen(16))
    # What the looks' fits missed (here they generalised to it): old answers still buffered.
    for slot in range(5):
        step.keep(slot, one_hot([unseen])[0].numpy(), old_concept(unseen), new=False)
    assert step.follow_up.relabelling_rows > 0 and old_answers_of_unseen() == 5
    x, y = without_unseen(15)
    learned = read(step, torch.cat([x, one_hot([unseen])]),
                   torch.cat([y, torch.tensor([new_concept(unseen)])]))
    assert learned.retired and old_answers_of_unseen() == 0
    # Once the horizon has passed, reads retire nothing of the kind (the old samples' turnover,
    # tested on its own, aside).
    step.follow_up.relabelling_rows = 0
    step.turnover.stop()
    assert not read(step, *rows(rng, 16, old_concept)).retired


def test_after_a_caught_up_change_the_old_samples_make_way_for_the_new_rows() -> None:
    step, rng = settled_step(catch_up_steps=StreamParams().catch_up_steps)
    assert step.buffer is not None and len(step.buffer) == 500
    read(step, *rows(rng, 16, new_concept), drifted=True)
    change = step.turnover.change_row
    assert change is not None and change < step.rows_learned
    old = sum(at < change for at in step.stored_at)
    free = 500 - len(step.buffer)  # what the drift response retired: refilled first
    reads = 0
    while step.turnover.change_row is not None:
        # A reservoir 1,600 rows in keeps a new row with chance 500/1,600: here each takes a
        # slot an old sample freed, so the buffer stays full of the new concept.
        read(step, *rows(rng, 16, new_concept))
        reads += 1
        assert reads <= (old + free) // 16 + 2, "the turnover ends once the old samples are gone"
    assert all(at >= change for at in step.stored_at)
    assert len(step.buffer) >= 500 - 16  # kept full: old samples go only to make room
    x, y = step.buffer.items()
    values = [tuple(int(i) % VALUES for i in row.nonzero().flatten()) for row in x]
    assert [new_concept(v) for v in values] == y.tolist()
    assert reads >= old // 16 - 4  # no more than a read's rows at a time, besides the looks


def test_turnover_victims_are_old_samples_of_changed_segments_at_most_as_many_as_rows() -> None:
    turnover, rng = BufferTurnover(), np.random.default_rng(0)
    stored_at, tags = [0, 5, 10, 20, -1, 3], ["a", "a", "b", "a", "a", "b"]
    assert turnover.victims(stored_at, tags, 4, rng) is None  # none due
    turnover.start(10, {"a"})
    none = turnover.victims(stored_at, tags, 0, rng)  # room for the rows already
    assert none is not None and not none.any() and turnover.change_row == 10
    two = turnover.victims(stored_at, tags, 2, rng)
    assert two is not None and int(two.sum()) == 2
    assert set(two.nonzero().flatten().tolist()) <= {0, 1, 4}
    every = turnover.victims(stored_at, tags, 10, rng)
    assert every is not None and every.nonzero().flatten().tolist() == [0, 1, 4]
    assert turnover.victims([10, 20, 3], ["a", "a", "b"], 4, rng) is None
    assert turnover.change_row is None  # nothing old left in the changed segments: it ends


def test_near_recent_tells_the_same_region_from_a_new_domain() -> None:
    """The turnover's guard (StreamStep: TURNOVER_NEAR_SHARE): rows from the buffer's own
    region lie near most of it, rows of a new domain near almost none."""
    learner = IncrementalLearner(MLPConfig(4, (8,), 2), make_strategy("naive"), lr=1e-3, seed=0)
    gen = torch.Generator().manual_seed(0)
    held = torch.randn(500, 4, generator=gen)
    learner.model.standardizer.update(held)
    same = near_recent(learner.model, held, torch.randn(32, 4, generator=gen))
    elsewhere = near_recent(learner.model, held, torch.randn(32, 4, generator=gen) + 6.0)
    assert same.float().mean() >= stream.TURNOVER_NEAR_SHARE
    assert elsewhere.float().mean() < 0.1
    assert not near_recent(learner.model, held[:1], held).any()  # too few to tell
