"""Replay buffers: the protocol the learner samples from, each policy's pure slot decision, and
the in-memory buffers built on those decisions.

Every decision takes a caller-supplied uniform u in [0, 1), so a store that makes the same
decision from the same u (service/store/lua/buffer_insert.lua) holds the same items in the same
slots, and the learner can mirror it with `put` and `retire` alone. Stored items always fill the
slot prefix [0, len): a free slot is taken before anything is evicted, and `retire` closes the
gaps by moving the survivors down in order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

BUFFER_NAMES = ("reservoir", "class-balanced", "recent")
# A recent buffer's default horizon, in multiples of its capacity: stored items are then about
# 5 capacities old on average (see RecentBuffer).
HORIZON_FACTOR = 4


@runtime_checkable
class ReplayBuffer(Protocol):
    seen: int  # items offered to insert (kept or not); put and retire leave it alone

    @property
    def capacity(self) -> int: ...

    def __len__(self) -> int: ...

    def insert(self, x: Tensor, y: int, u: float) -> int | None:
        """Count the item and store it where the policy decides from u; the slot or None."""
        ...

    def put(self, slot: int, x: Tensor, y: int) -> None:
        """Store at a slot decided elsewhere (the Redis script): the learner's mirror."""
        ...

    def items(self) -> tuple[Tensor, Tensor]:
        """Every stored item in slot order (views, not copies)."""
        ...

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """n items drawn with replacement: x float32 (n, d), y int64 (n,)."""
        ...

    def retire(self, mask: Tensor) -> int:
        """Remove the items where mask (bool, aligned with items()) is True; how many."""
        ...


# ---- pure decisions ------------------------------------------------------------------------
def _check_u(u: float) -> None:
    if not 0.0 <= u < 1.0:
        raise ValueError(f"u must lie in [0, 1), got {u}")


def _stored_before(seen_after_increment: int, capacity: int, size: int | None) -> int:
    """`size` checked against what can be stored, or what Algorithm R alone leaves."""
    if seen_after_increment < 1 or capacity < 1:
        raise ValueError(f"need seen >= 1 and capacity >= 1, got {seen_after_increment}, "
                         f"{capacity}")
    most = min(seen_after_increment - 1, capacity)
    if size is None:
        return most
    if not 0 <= size <= most:
        raise ValueError(f"size {size} impossible after {seen_after_increment - 1} items "
                         f"in capacity {capacity}")
    return size


def _algorithm_r(n: int, capacity: int, u: float, size: int) -> int | None:
    if size < capacity:
        return size
    j = math.floor(u * n)
    return j if j < capacity else None


def reservoir_slot(seen_after_increment: int, capacity: int, u: float,
                   size: int | None = None) -> int | None:
    """Algorithm R's decision for the item that made the count `seen_after_increment`.

    `size` is the number of items stored before this one; left out, it is what Algorithm R
    alone leaves (min(seen - 1, capacity)). A retire leaves fewer: the free slot `size` is then
    taken, so a buffer emptied on concept drift refills from the new concept.
    """
    size = _stored_before(seen_after_increment, capacity, size)
    _check_u(u)
    return _algorithm_r(seen_after_increment, capacity, u, size)


def recent_slot(seen_after_increment: int, capacity: int, horizon: int, u: float,
                size: int | None = None) -> int | None:
    """Algorithm R whose count stops at capacity + horizon.

    Up to there it is the plain reservoir; afterwards each new item is kept with the fixed
    probability p = capacity / (capacity + horizon) and evicts a uniform slot.
    """
    size = _stored_before(seen_after_increment, capacity, size)
    _check_u(u)
    if horizon < 0:
        raise ValueError(f"horizon must be >= 0, got {horizon}")
    return _algorithm_r(min(seen_after_increment, capacity + horizon), capacity, u, size)


def class_balanced_victim(y: int, counts: Mapping[int, int], seen_y: int, capacity: int,
                          u: float) -> tuple[int, int] | None:
    """Class-balanced reservoir sampling (after Chrysakis & Moens, ICML 2020) in a FULL buffer.

    counts: items stored per class, with an entry (0 allowed) for every class seen so far, y's
    included; seen_y: items of class y inserted so far, this one included. Returns (class, rank):
    overwrite that class's rank-th slot in ascending slot order; None: the item is not kept.
    """
    _check_u(u)
    if y not in counts or seen_y < 1:
        raise ValueError(f"class {y} must be counted and seen before its decision")
    if sum(counts.values()) != capacity:
        raise ValueError(f"only a full buffer evicts: {sum(counts.values())} of {capacity} stored")
    largest = min(counts, key=lambda c: (-counts[c], c))  # ties: the lowest index, as in Lua
    if counts[y] * len(counts) < capacity and counts[y] + 1 < counts[largest]:
        # Below its share capacity / classes (an exact integer test, as in Lua): take a slot of
        # the largest class. Only when that narrows the gap: a class one short of the largest
        # (the remainder of capacity / classes) swapping slots back and forth would churn the
        # sample towards its newest items.
        return largest, math.floor(u * counts[largest])
    # Otherwise Algorithm R within the class keeps the class's sample uniform over its own
    # history instead of freezing on its first items.
    j = math.floor(u * seen_y)
    return (y, j) if j < counts[y] else None


# ---- in-memory buffers ---------------------------------------------------------------------
class _SlotBuffer:
    """Preallocated tensors whose filled part is the prefix [0, len); subclasses only decide."""

    name = ""

    def __init__(self, capacity: int, input_dim: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self.input_dim = input_dim
        self.seen = 0
        self._size = 0
        self._x = torch.zeros(capacity, input_dim)
        # -1 marks an empty slot: a restore puts slots in whatever order Redis lists them.
        self._y = torch.full((capacity,), -1, dtype=torch.int64)

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        return self._size

    def _decide(self, y: int, u: float) -> int | None:
        raise NotImplementedError

    def insert(self, x: Tensor, y: int, u: float) -> int | None:
        _check_u(u)  # before counting, so a refused call leaves no trace
        self.seen += 1
        slot = self._decide(int(y), u)
        if slot is not None:
            self.put(slot, x, y)
        return slot

    def put(self, slot: int, x: Tensor, y: int) -> None:
        if not 0 <= slot < self._capacity:
            raise IndexError(f"slot {slot} outside [0, {self._capacity})")
        if int(y) < 0:
            raise ValueError(f"class index must be >= 0, got {y}")
        self._x[slot] = x.detach().reshape(self.input_dim)
        self._y[slot] = int(y)
        self._size = max(self._size, slot + 1)

    def items(self) -> tuple[Tensor, Tensor]:
        return self._x[: self._size], self._y[: self._size]

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        x, y, _ = self.sample_slots(n, generator)
        return x, y

    def sample_slots(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """`sample` with the slot each row came from (int64 (n,)): the caller's per-slot
        records (the stream step's tags) follow the rows. Same draws as `sample`."""
        if self._size == 0:
            raise ValueError("cannot sample from an empty buffer")
        idx = torch.randint(self._size, (n,), generator=generator)
        # index_select: the rows x[idx] gathers, without advanced indexing's Python overhead.
        return self._x.index_select(0, idx), self._y.index_select(0, idx), idx

    def retire(self, mask: Tensor) -> int:
        if mask.dtype != torch.bool or mask.shape != (self._size,):
            raise ValueError(f"mask must be bool of shape ({self._size},), "
                             f"got {mask.dtype} {tuple(mask.shape)}")
        keep = ~mask
        kept = int(keep.sum())
        # Survivors move down in order: the Redis retire script renumbers its slots the same way.
        self._x[:kept] = self._x[: self._size][keep]
        self._y[:kept] = self._y[: self._size][keep]
        self._x[kept : self._size] = 0.0  # retired inputs do not linger in memory
        self._y[kept : self._size] = -1
        removed, self._size = self._size - kept, kept
        return removed


class ReservoirBuffer(_SlotBuffer):
    """Uniform sample of everything inserted so far (Algorithm R)."""

    name = "reservoir"

    def _decide(self, y: int, u: float) -> int | None:
        return reservoir_slot(self.seen, self._capacity, u, self._size)


class RecentBuffer(_SlotBuffer):
    """Recency-biased reservoir for endless streams.

    With n = capacity + horizon, the first n items are sampled exactly as by Algorithm R; after
    that every item is kept with probability p = capacity / n and overwrites a uniform slot, so a
    stored item survives each later insert with probability 1 - 1/n. Ages (inserts since an
    item arrived) in a full buffer are therefore geometric: P(age = a) ∝ (1 - 1/n)^a, mean about
    n, and the last L inserts make up about 1 - (1 - 1/n)^L of the buffer whatever came before,
    where a plain reservoir holds only L / seen of them.
    """

    name = "recent"

    def __init__(self, capacity: int, input_dim: int, horizon: int | None = None) -> None:
        super().__init__(capacity, input_dim)
        self.horizon = HORIZON_FACTOR * capacity if horizon is None else horizon
        if self.horizon < 0:
            raise ValueError(f"horizon must be >= 0, got {self.horizon}")

    def _decide(self, y: int, u: float) -> int | None:
        return recent_slot(self.seen, self._capacity, self.horizon, u, self._size)


class ClassBalancedBuffer(_SlotBuffer):
    """Capacity split evenly over the classes seen so far (class_balanced_victim): once full,
    an item of a class under its share takes a slot of the largest class; any other item
    replaces one of its own class's slots with Algorithm R's chance. After a long stream every
    class that keeps arriving holds within one item of capacity / classes."""

    name = "class-balanced"

    def __init__(self, capacity: int, input_dim: int) -> None:
        super().__init__(capacity, input_dim)
        self.class_seen: dict[int, int] = {}  # class -> items inserted (kept or not)

    def class_counts(self) -> dict[int, int]:
        """Stored items per class, for every class seen or stored."""
        y = self._y[: self._size]
        stored = torch.bincount(y[y >= 0]).tolist() if self._size else []
        counts = dict.fromkeys(self.class_seen, 0)
        counts.update({c: n for c, n in enumerate(stored) if n})
        return counts

    def _decide(self, y: int, u: float) -> int | None:
        self.class_seen[y] = self.class_seen.get(y, 0) + 1
        if self._size < self._capacity:
            return self._size
        victim = class_balanced_victim(y, self.class_counts(), self.class_seen[y],
                                       self._capacity, u)
        if victim is None:
            return None
        cls, rank = victim
        return int(torch.nonzero(self._y[: self._size] == cls)[rank])


_FACTORIES: dict[str, Callable[[int, int], _SlotBuffer]] = {
    "reservoir": ReservoirBuffer,
    "class-balanced": ClassBalancedBuffer,
    "recent": RecentBuffer,
}


GENERATIVE = "generative"  # not a buffer of samples: models/generative.py


def make_buffer(name: str, capacity: int, input_dim: int, *,
                horizon: int | None = None, max_classes: int = 100) -> ReplayBuffer:
    """The buffer MNEMO_BUFFER names; `horizon` applies to "recent" only, `max_classes` to
    "generative" (the classes its generator can be conditioned on)."""
    if name == GENERATIVE:
        from models.generative import GenerativeReplay  # it needs the network module

        return GenerativeReplay(input_dim, max_classes)  # type: ignore[return-value]
    if name not in _FACTORIES:
        raise ValueError(f"unknown buffer {name!r}; choose one of {', '.join(BUFFER_NAMES)}")
    if name == "recent":
        return RecentBuffer(capacity, input_dim, horizon)
    if horizon is not None:
        raise ValueError(f"horizon applies to the recent buffer only, not {name!r}")
    return _FACTORIES[name](capacity, input_dim)
