"""One step of online learning on a labelled stream: the code the learner process and the
benchmark both run (pure PyTorch; the caller does all I/O).

A read of labelled items goes through two calls, with the caller's storage decision between:

    scored = step.score(served, x, y, tags)     # test-then-train, then the drift check
    ...the caller keeps each item: holdout (step.hold_out) or its replay buffer of record,
       mirrored into step.buffer...
    learned = step.learn(x, y, tags, drifted=scored.drifted, num_classes=n)

`learn` grows the network for new classes and tags, trains in chunks, answers a detected
concept drift (retires the buffered samples the new concept contradicts — `learned.retired`
names their slots so the caller retires them in its buffer of record too — consolidates,
relaxes the regulariser and restarts the publish cadence; `score` marked the holdout's change
point),
and consolidates every N trained samples. `rehearse` spends the time a learner waits for
labels on replay steps. Publishing (the gate, the version store) stays with the caller; the
pieces it needs are here: `publish_due`, `holdout.check_set`, `published`.
"""

from __future__ import annotations

import itertools
import zlib
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from models.adaptation import (
    BufferTurnover,
    ChangeFollowUp,
    near_recent,
    repeated_and_relabelled,
    respond_to_drift,
    rows_since_change,
)
from models.drift import DriftDetector
from models.gate import predict_classes
from models.holdout import Holdout
from models.learner import IncrementalLearner
from models.meta_start import MetaStart
from models.nets import MultiHeadMLP
from models.replay import ReplayBuffer

STATE_PREFIX = "stream."
MIN_SINCE_CHANGE = 8  # rows the drift response fits the new concept on, at least
_DETECTOR = "detector."
_COUNTERS = "counters"
_META = "meta."


# The old samples' turnover after a caught-up change (models/adaptation.py BufferTurnover)
# starts only where the rows since the change lie near at least this share of the buffer.
TURNOVER_NEAR_SHARE = 0.5
# After a caught-up change, this many windows of rows retire the buffered samples whose
# inputs they repeat with another label (the looks see the first window only).
RELABELLING_WINDOWS = 10


@dataclass(frozen=True)
class StreamParams:
    """How the step learns; every field is a setting (service/config.py names them)."""

    # One training chunk for every read, backlog or not. Chunks of 256 trained a backlog 2×
    # faster but Adam's second moments, estimated from 256-row gradients, then under-estimate
    # the noise of the live stream's 32-row ones: a model at 0.90 fell to 0.71-0.79.
    train_chunk: int = 32
    consolidate_every: int = 1000
    consolidation_sample: int = 512
    # Post-drift evidence the drift response fits the new concept on: about the detector's
    # delay, so the window is mostly post-change (300 mixed in too much of the old concept).
    recent_window: int = 48
    # After a drift, steps on the new concept's rows (and replay) at this multiple of the
    # learning rate, before the next publish (models/learner.py catch_up).
    catch_up_steps: int = 30
    catch_up_lr_scale: float = 10.0
    drift_relax: float = 0.1  # regulariser strength while the new concept settles
    holdout_fraction: float = 0.1
    max_tags: int = 50
    # Publish cadence: the first version after `publish_first` samples, then twice as many
    # each time up to `publish_every`; a detected drift starts it over.
    publish_first: int = 16
    publish_every: int = 500
    # Replay steps per trained sample that idle time may spend (0: none). A budget, not a
    # rate: a learner that is never idle never rehearses.
    rehearsal: float = 1.0
    rehearsal_cap: int = 512  # unspent steps kept at most (no burst after a long idle)


def is_holdout(stream_id: str, fraction: float) -> bool:
    """Decided by the item's id alone, so a re-read after a restart splits the same way."""
    return zlib.crc32(stream_id.encode()) % 10_000 < fraction * 10_000


def train_chunks(rows: int, chunk: int) -> list[slice]:
    """`rows` in ceil(rows / chunk) chunks of nearly equal size (100 → 4 × 25), never a
    small remainder: a 4-row step after 32-row ones is as large but far noisier."""
    if rows <= 0:
        return []
    count = -(-rows // chunk)
    bounds = [rows * i // count for i in range(count + 1)]
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


class PublishCadence:
    """Samples between publishes: starts at `first` and doubles after each publish up to
    `every`, so a fresh deployment serves a learned model within its first few dozen labels
    and the versions that follow a detected drift come as fast."""

    def __init__(self, first: int, every: int) -> None:
        self.first, self.every = max(1, min(first, every)), every
        self.threshold = self.first

    def due(self, unpublished: int) -> bool:
        return unpublished >= self.threshold

    def published(self) -> None:
        self.threshold = min(self.threshold * 2, self.every)

    def restart(self) -> None:
        self.threshold = self.first


@dataclass
class Scored:
    predicted: np.ndarray  # the served version's class per row (-1: it has no classes)
    drifted: bool  # the detector fired on this read's errors


@dataclass
class Learned:
    drifted: bool
    retired: list[int] = field(default_factory=list)  # buffer slots, in the caller's numbering
    consolidated: bool = False
    steps: int = 0
    loss: float | None = None
    penalty: float | None = None


class StreamStep:
    """The learner's state between reads that is not the network: the replay mirror it
    samples from, the drift detector, the recent window, the holdout, the consolidation and
    publish counters and the rehearsal budget."""

    def __init__(self, learner: IncrementalLearner, buffer: ReplayBuffer | None,
                 detector: DriftDetector | None, holdout: Holdout, params: StreamParams, *,
                 use_replay: bool, routes_by_tag: bool, seed: int | None = None,
                 meta_start: MetaStart | None = None) -> None:
        self.learner = learner
        self.buffer = buffer  # the replay mirror; the caller inserts (its store decides)
        self.detector = detector
        self.holdout = holdout
        self.params = params
        self.use_replay = use_replay
        self.routes_by_tag = routes_by_tag
        self.cadence = PublishCadence(params.publish_first, params.publish_every)
        self.recent: deque[tuple[Tensor, int, str]] = deque(maxlen=params.recent_window)
        # Whether the served version answered each of the last scored rows wrongly (holdout
        # rows too): where in the recent window the concept changed.
        self.recent_errors: deque[bool] = deque(maxlen=params.recent_window)
        # Rows learned so far by this step, and the count when each class first came: a class
        # that arrives with a drift is new, not a changed concept. (A restarted step starts
        # both afresh: a drift right after a restart is answered without the catch-up.)
        self.rows_learned = 0
        # What a caught-up change still owes: the skipped fit, the second look, relabelling.
        self.follow_up = ChangeFollowUp(self.params.recent_window,
                                        RELABELLING_WINDOWS * self.params.recent_window)
        self.class_arrival: dict[int, int] = {}
        # The tag of each buffered item, slot by slot: which segment (task, domain) it is from,
        # and rows_learned when it was stored (-1: kept before this step started).
        self.buffer_tags: list[str] = []
        self.stored_at: list[int] = []
        self.turnover = BufferTurnover()
        self.since_consolidation = 0
        self.consolidations: deque[float] = deque(maxlen=1000)  # seconds each took
        self.rehearsal_budget = 0.0
        self.rng = np.random.default_rng(seed)
        # Inputs put in the buffer since the last publish: retired if that candidate is refused.
        self._inserted: set[bytes] = set()
        # MNEMO_META_START: new tags' heads or columns start from a meta-learned initialisation
        # (models/meta_start.py), learned from the buffer's tagged samples.
        self.meta_start = meta_start

    # ---- one read ------------------------------------------------------------------------
    def score(self, served: nn.Module, x: np.ndarray, y: np.ndarray,
              tags: Sequence[str] | None = None) -> Scored:
        """Test-then-train: the served version answers each label before any training; the
        detector watches its errors."""
        predicted = predict_classes(served, x, tags if self.routes_by_tag else None)
        drifted = False
        errors = (predicted != y).tolist()
        self.recent_errors.extend(errors)
        if self.detector is not None:
            for wrong in errors:
                drifted = self.detector.update(float(wrong)) or drifted
        if drifted:  # this read's held-out items already count as the new concept's
            self.holdout.mark_change()
        return Scored(predicted, drifted)

    def hold_out(self, x: np.ndarray, y: int, tag: str) -> None:
        self.holdout.add(x, y, tag)

    def replace_buffer(self, buffer: ReplayBuffer | None) -> None:
        """A new (empty) mirror, filled by `keep` as the buffer of record is reloaded."""
        self.buffer, self.buffer_tags, self.stored_at = buffer, [], []

    def insert(self, x: np.ndarray, y: int, u: float, tag: str = "") -> int | None:
        """Store by the buffer's own policy from u, where it is its own store (the
        benchmark); the slot or None."""
        assert self.buffer is not None
        slot = self.buffer.insert(torch.from_numpy(x.copy()), y, u)
        if slot is not None:
            self._tag_slot(slot, tag, self.rows_learned)
            self._remember(x)
        return slot

    def keep(self, slot: int, x: np.ndarray, y: int, tag: str = "", *, new: bool = True) -> None:
        """Mirror an item the buffer of record stored at `slot`; `new`: learned since the
        last publish (not a reload), so a refused candidate takes it out again."""
        assert self.buffer is not None
        self.buffer.put(slot, torch.from_numpy(x.copy()), y)
        self._tag_slot(slot, tag, self.rows_learned if new else -1)
        if new:
            self._remember(x)

    def _remember(self, x: np.ndarray) -> None:
        self._inserted.add(np.ascontiguousarray(x, dtype=np.float32).tobytes())

    def _tag_slot(self, slot: int, tag: str, stored_at: int) -> None:
        if slot < len(self.buffer_tags):
            self.buffer_tags[slot], self.stored_at[slot] = tag, stored_at
        else:  # buffers fill their slot prefix in order
            gap = slot - len(self.buffer_tags)
            self.buffer_tags.extend([""] * gap + [tag])
            self.stored_at.extend([-1] * gap + [stored_at])

    def retire(self, mask: Tensor) -> list[int]:
        """Take the masked buffer items out of the mirror (compacting, as the buffer of
        record does); their slots."""
        assert self.buffer is not None
        slots = mask.nonzero().flatten().tolist()
        if slots:
            self.buffer.retire(mask)
            keep = (~mask).tolist()
            self.buffer_tags = [t for t, k in zip(self.buffer_tags, keep, strict=False) if k]
            self.stored_at = [r for r, k in zip(self.stored_at, keep, strict=False) if k]
        return slots

    def learn(self, x: Tensor, y: Tensor, tags: Sequence[str] | None = None, *,
              drifted: bool = False, num_classes: int | None = None) -> Learned:
        """Train on the read's non-holdout items (x, y, and their tags), then answer a drift
        and consolidate when due."""
        learner = self.learner
        if num_classes is not None:
            learner.ensure_classes(num_classes)
        tags = list(tags) if self.routes_by_tag and tags is not None else None
        if tags is not None:  # each tag's head or column learns its tag's labels
            before = self._meta_before(tags)
            learner.ensure_tags(tags, y, self.params.max_tags)
            if before is not None:
                started = self.meta_start.start(learner.model, before)  # type: ignore[union-attr, arg-type]
                self.meta_start.boost(learner.optimizer, learner.model, started)  # type: ignore[union-attr, arg-type]
        buffer = self.buffer if self.use_replay else None
        out = Learned(drifted)
        chunks = train_chunks(len(y), self.params.train_chunk)
        for n, chunk in enumerate(chunks, 1):
            # Only the read's last chunk is reported (loss, penalty): one evaluation per read.
            stats = learner.learn_many(x[chunk], y[chunk], buffer,
                                       None if tags is None else tags[chunk],
                                       report=n == len(chunks), buffer_tags=self._slot_tags())
            out.steps += stats.steps
            out.loss, out.penalty = stats.loss, stats.penalty
        for c in set(y.tolist()):
            self.class_arrival.setdefault(c, self.rows_learned)
        self.rows_learned += len(y)
        # Only the window's worth: iterating a tensor makes a view per row (~1 µs each).
        n = self.params.recent_window
        self.recent.extend(zip(x[-n:], y[-n:].tolist(), (tags or [""] * len(y))[-n:], strict=True))
        if drifted:
            self.follow_up.stop()
            self.turnover.stop()
            out.retired = self._respond_to_drift()
        else:
            out.retired = self._follow_up(x, y)
        self.since_consolidation += len(y)
        if self.since_consolidation >= self.params.consolidate_every:
            self.consolidate(x, y)
            out.consolidated = True
        self.rehearsal_budget = min(self.rehearsal_budget + self.params.rehearsal * len(y),
                                    float(self.params.rehearsal_cap))
        return out

    def _respond_to_drift(self) -> list[int]:
        """Same inputs, new answers (docs/DESIGN.md §6): retire the buffered samples the new concept
        contradicts where the rows since the change lie, anchor what the unchanged domains
        taught, relax the regulariser until the next scheduled consolidation re-anchors on the
        post-drift state, catch the live network up with the new rows where the old concept
        was refuted; the publish cadence starts over.

        Where items carry tags, a segment (domain, task) the buffer has never held is new, not
        changed: when the recent window is mostly such a segment, nothing it could contradict is
        buffered, and the drift is answered by publishing sooner alone — no retirement, no
        extra consolidation, no relaxing (rotated digits through the service: retiring what a
        48-sample new-concept model contradicted took ~20% of the buffer at each new rotation
        and the old rotations lost ~0.2; the extra consolidations then stiffened the network
        against the next rotation, 0.68 on the last). Otherwise only buffered items of the
        segments the recent window shows may be retired."""
        changed = self._changed_segments()  # empty while the window is
        slots: list[int] = []
        if changed:
            # The rows since the change: the detector fires on the first read of a new
            # concept, when most of the window is still the old one (fitted on the whole
            # window, the new-concept model retired a tenth of what it did a read later).
            post = self._since_change()
            recent = list(self.recent)[-post:]
            recent_x, recent_y = _stacked(recent)
            # Turn the network at once where the same inputs got new answers: some were
            # contradicted, and every class the new rows show was known before the change. A
            # class that arrived within a window of it is a new class, learned as such (split
            # digits' tasks are detected 30-60 rows after their classes arrive, and a tenfold
            # step on them erased the old tasks).
            known = self._classes_known_before(recent_y, post)
            # Inputs the rows repeat with new labels are contradicted without a fit: retire
            # those and turn the network now; the fit (~0.15 s, the old concept served
            # meanwhile) waits for the next read, after the publish in between.
            slots = self._retire(recent_x, recent_y, changed, fit=False) if known else []
            fitted = not slots
            if fitted:
                slots = self._retire(recent_x, recent_y, changed, fit=True)
            self.consolidate(recent_x, recent_y)
            self.learner.relax(self.params.drift_relax)
            if slots and known:
                self._catch_up(recent_x, recent_y, recent)
                self.follow_up.start(post, fitted)
                if self._where_the_buffer_lies(recent_x):
                    self.turnover.start(self.rows_learned - post, changed)
        self.cadence.restart()
        return slots

    def _where_the_buffer_lies(self, recent_x: Tensor) -> bool:
        """Whether the rows since a change lie where most buffered samples do: the same inputs
        got new answers, and the old samples are the old concept's. In an untagged stream a
        new domain is detected as a change too, and its old samples are the old domains' (the
        transfer benchmark's new digit permutations and shifts lie near 3-38% of the buffer,
        Agrawal's function 2 near all of it)."""
        if self.buffer is None or len(self.buffer) < 2:
            return False
        buffer_x, _ = self.buffer.items()
        near = near_recent(self.learner.model, buffer_x, recent_x)
        return float(near.float().mean()) >= TURNOVER_NEAR_SHARE

    def _follow_up(self, x: Tensor, y: Tensor) -> list[int]:
        """What a caught-up change still owes on this read (x, y): the old concept's samples
        that make way for the rows (the turnover), and those a look or the relabelling
        contradicts; retired at once, their slots. After a look, the network catches up again."""
        owed, rows = self.follow_up.after_read(len(y))
        if self.buffer is None or not len(self.buffer):
            return []
        # Room for the next read's rows (as many as this one's) beyond the free slots.
        room = len(y) - (self.buffer.capacity - len(self.buffer))
        turned = (self.turnover.victims(self.stored_at, self.buffer_tags, room, self.rng)
                  if len(self.stored_at) == len(self.buffer) else None)
        mask = torch.zeros(len(self.buffer), dtype=torch.bool) if turned is None else turned
        if owed == "look":
            # On the last `rows` rows: what a model fitted to them contradicts (the first look
            # saw a dozen rows, or only the inputs they repeated). On the read after a first
            # look that skipped the fit, and once the rows since the change fill the window.
            recent = list(self.recent)[-rows:]
            recent_x, recent_y = _stacked(recent)
            mask |= self._contradicted(recent_x, recent_y, self._changed_segments(), fit=True)
            slots = self.retire(mask)
            self._catch_up(recent_x, recent_y, recent)
            return slots
        if owed == "relabel":
            mask |= self._contradicted(x, y, self._changed_segments(), fit=False)
        return self.retire(mask)

    def _retire(self, recent_x: Tensor, recent_y: Tensor, changed: set[str], *,
                fit: bool) -> list[int]:
        """Retire what `_contradicted` masks; the slots."""
        if self.buffer is None or not len(self.buffer):
            return []
        return self.retire(self._contradicted(recent_x, recent_y, changed, fit=fit))

    def _contradicted(self, recent_x: Tensor, recent_y: Tensor, changed: set[str], *,
                      fit: bool) -> Tensor:
        """Mask of the buffered samples of the `changed` segments that the recent rows
        contradict (models/adaptation.py). `fit`: those a model fitted to the rows denies
        near them; otherwise those whose very input the rows repeat with another label."""
        assert self.buffer is not None
        buffer_x, buffer_y = self.buffer.items()
        mask = (respond_to_drift(self.learner.snapshot(), buffer_x.clone(), buffer_y.clone(),
                                 recent_x, recent_y).retire if fit
                else repeated_and_relabelled(buffer_x, buffer_y, recent_x, recent_y))
        if len(self.buffer_tags) == len(mask):
            mask = mask & torch.tensor([t in changed for t in self.buffer_tags], dtype=torch.bool)
        return mask

    def _catch_up(self, x: Tensor, y: Tensor, recent: list[tuple[Tensor, int, str]]) -> None:
        """Catch the network up with the rows `x`, `y` (`recent`, as the window holds them)."""
        self.learner.catch_up(x, y, self.buffer if self.use_replay else None,
                              self.params.catch_up_steps, self.params.catch_up_lr_scale,
                              [t for _, _, t in recent] if self.routes_by_tag else None,
                              self._slot_tags())

    def _since_change(self) -> int:
        """How many of the recent window's rows came after the change (rows_since_change on
        the served errors; those count holdout rows too, the window only trained ones: scaled
        by their share)."""
        scored = rows_since_change(list(self.recent_errors), MIN_SINCE_CHANGE)
        if scored is None:
            return len(self.recent)
        rows = round(scored * (1.0 - self.params.holdout_fraction))
        return max(MIN_SINCE_CHANGE, min(len(self.recent), rows))

    def _classes_known_before(self, y: Tensor, post: int) -> bool:
        """Every class in `y` arrived at least a recent window before the last `post` rows."""
        change = self.rows_learned - post - self.params.recent_window
        return all(self.class_arrival.get(c, change + 1) <= change for c in set(y.tolist()))

    def _changed_segments(self) -> set[str]:
        """The segments (tags) that make up at least a quarter of the recent window and that
        the buffer already holds: where a concept can have changed."""
        counts = Counter(tag for _, _, tag in self.recent)
        shown = {tag for tag, n in counts.items() if 4 * n >= len(self.recent)}
        held = set(self.buffer_tags) if self.buffer_tags else shown
        return shown & held

    def consolidate(self, recent_x: Tensor, recent_y: Tensor) -> float:
        """Anchor the strategy on a replay sample (the recent rows while the buffer is
        empty); a relaxed regulariser returns to full strength. Seconds it took."""
        x, y = recent_x, recent_y
        if self.buffer is not None and len(self.buffer):
            gen = torch.Generator().manual_seed(int(self.rng.integers(2**31)))
            x, y = self.buffer.sample(min(self.params.consolidation_sample, len(self.buffer)), gen)
        seconds = self.learner.consolidate(x, y) if len(y) else 0.0
        if len(y):
            self.consolidations.append(seconds)
        self.since_consolidation = 0
        self._meta_update()
        scale = self.learner.strategy.scale
        if scale < 1.0:  # anchored on the post-drift state now: protect it at full strength
            self.learner.relax(1.0 / scale)
        return seconds

    def _slot_tags(self) -> list[str] | None:
        """The buffer slots' tags for the learner's replay, where tags route (replayed rows
        then train their tags' heads) and the mirror's tags cover its slots."""
        if not self.routes_by_tag or self.buffer is None or len(self.buffer_tags) != len(self.buffer):
            return None
        return self.buffer_tags

    def _meta_before(self, tags: list[str]) -> dict[str, int] | None:
        """With a meta-start: each head's rows before ensure_tags (None: nothing to start).
        A new tag first brings the meta-initialisation up to date with every tag before it."""
        model = self.learner.model
        if self.meta_start is None or not isinstance(model, MultiHeadMLP):
            return None
        known = set(model.tags)
        if any(t and t not in known for t in tags) and len(known) < self.params.max_tags:
            self._meta_update()
        return self.meta_start.snapshot_classes(model)

    def _meta_update(self) -> None:
        """Reptile episodes from the buffered samples of each tag (bounded: models/meta_start)."""
        model, buffer = self.learner.model, self.buffer
        if (self.meta_start is None or not isinstance(model, MultiHeadMLP) or buffer is None
                or not len(buffer) or len(self.buffer_tags) != len(buffer)):
            return
        x, y = buffer.items()
        self.meta_start.update(model, x, y, self.buffer_tags)

    # ---- between reads -------------------------------------------------------------------
    def rehearse(self, max_steps: int) -> int:
        """Up to `max_steps` replay steps from the rehearsal budget; how many ran."""
        buffer = self.buffer if self.use_replay else None
        steps = min(max_steps, int(self.rehearsal_budget))
        if steps <= 0 or buffer is None or not len(buffer):
            return 0
        done = self.learner.rehearse(buffer, steps, self._slot_tags())
        self.rehearsal_budget -= done
        return done

    def publish_due(self, unpublished: int) -> bool:
        return self.cadence.due(unpublished)

    def published(self) -> None:
        """The candidate was published: the cadence moves on."""
        self.cadence.published()
        self._inserted.clear()

    def rejected(self) -> list[int]:
        """The candidate was refused (the caller goes back to the served version's learner):
        what it was trained on since the last publish leaves the mirror, so it does not steer
        the next candidate (a poisoning burst would otherwise keep failing, or slowly
        steering, every candidate after it). Returns the slots, for the buffer of record."""
        self.cadence.published()
        inserted, self._inserted = self._inserted, set()
        if self.buffer is None or not len(self.buffer) or not inserted:
            return []
        items, _ = self.buffer.items()
        return self.retire(torch.tensor([row.numpy().tobytes() in inserted for row in items],
                                        dtype=torch.bool))

    # ---- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        """What a restarted learner needs besides the learner's own state, under `stream.`."""
        since = self.holdout.since_change
        out = {f"{STATE_PREFIX}{_COUNTERS}": torch.tensor(
            [self.since_consolidation, self.cadence.threshold, -1 if since is None else since,
             self.rehearsal_budget], dtype=torch.float64)}
        if self.detector is not None:
            out.update({f"{STATE_PREFIX}{_DETECTOR}{k}": v.clone()
                        for k, v in self.detector.state_dict().items()})
        if self.meta_start is not None:
            out.update({f"{STATE_PREFIX}{_META}{k}": v
                        for k, v in self.meta_start.state_dict().items()})
        return out

    def load_state_dict(self, d: dict[str, Tensor]) -> None:
        """Restore from `state_dict()`'s entries (others ignored); a state saved before they
        existed, or by another detector, leaves the fresh values."""
        counters = d.get(f"{STATE_PREFIX}{_COUNTERS}")
        if counters is not None and counters.numel() == 4:
            since_consolidation, threshold, since, budget = counters.tolist()
            self.since_consolidation = int(since_consolidation)
            self.cadence.threshold = max(self.cadence.first, min(int(threshold), self.cadence.every))
            self.holdout.restore_change(None if since < 0 else int(since))
            self.rehearsal_budget = float(budget)
        meta = {k.removeprefix(f"{STATE_PREFIX}{_META}"): v for k, v in d.items()
                if k.startswith(f"{STATE_PREFIX}{_META}")}
        if meta and self.meta_start is not None:
            self.meta_start.load_state_dict(meta)
        prefix = f"{STATE_PREFIX}{_DETECTOR}"
        detector = {k.removeprefix(prefix): v for k, v in d.items() if k.startswith(prefix)}
        if detector and self.detector is not None:
            try:
                self.detector.load_state_dict(detector)
            except ValueError:  # another MNEMO_DRIFT_DETECTOR than the saved one: start fresh
                self.detector.reset()


def _stacked(rows: list[tuple[Tensor, int, str]]) -> tuple[Tensor, Tensor]:
    """Recent-window rows (input, class, tag) as an input matrix and a class vector."""
    return (torch.stack([torch.as_tensor(r) for r, _, _ in rows]),
            torch.tensor([c for _, c, _ in rows], dtype=torch.int64))


def split_state(d: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """A saved state blob's (learner part, stream part)."""
    stream = {k: v for k, v in d.items() if k.startswith(STATE_PREFIX)}
    return {k: v for k, v in d.items() if not k.startswith(STATE_PREFIX)}, stream
