"""Replay buffers: the protocol the learner samples from and the in-memory reference reservoir."""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class ReplayBuffer(Protocol):
    @property
    def capacity(self) -> int: ...

    def __len__(self) -> int: ...

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """n items drawn with replacement: x float32 (n, d), y int64 (n,)."""
        ...

    def put(self, slot: int, x: Tensor, y: int) -> None: ...


def reservoir_slot(seen_after_increment: int, capacity: int, u: float) -> int | None:
    """Algorithm R's decision for the item that made the count `seen_after_increment`.

    `u` is a uniform number in [0, 1) supplied by the caller, so any store (e.g. a Lua script
    fed the same u) reaches the identical decision.
    """
    if seen_after_increment < 1 or capacity < 1:
        raise ValueError(f"need seen >= 1 and capacity >= 1, got {seen_after_increment}, "
                         f"{capacity}")
    if not 0.0 <= u < 1.0:
        raise ValueError(f"u must lie in [0, 1), got {u}")
    if seen_after_increment <= capacity:
        return seen_after_increment - 1
    j = math.floor(u * seen_after_increment)
    return j if j < capacity else None


class ReservoirBuffer:
    """Uniform sample of everything inserted so far, held in preallocated tensors."""

    def __init__(self, capacity: int, input_dim: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self.input_dim = input_dim
        self.seen = 0
        self._size = 0
        self._x = torch.zeros(capacity, input_dim)
        self._y = torch.zeros(capacity, dtype=torch.int64)

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        return self._size

    def insert(self, x: Tensor, y: int, u: float) -> int | None:
        self.seen += 1
        slot = reservoir_slot(self.seen, self._capacity, u)
        if slot is not None:
            self.put(slot, x, y)
        return slot

    def put(self, slot: int, x: Tensor, y: int) -> None:
        if not 0 <= slot < self._capacity:
            raise IndexError(f"slot {slot} outside [0, {self._capacity})")
        self._x[slot] = x.detach().reshape(self.input_dim)
        self._y[slot] = int(y)
        # Algorithm R fills slots 0, 1, 2, ... in order, so the filled part is a prefix.
        self._size = max(self._size, slot + 1)

    def items(self) -> tuple[Tensor, Tensor]:
        """Every stored item (views, not copies)."""
        return self._x[: self._size], self._y[: self._size]

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        if self._size == 0:
            raise ValueError("cannot sample from an empty buffer")
        idx = torch.randint(self._size, (n,), generator=generator)
        return self._x[idx], self._y[idx]
