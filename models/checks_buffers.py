"""Invariants every replay buffer keeps, run over each policy (River's checks, for buffers).

`check_buffer(factory)` raises AssertionError naming the broken invariant. Items carry their
insert position in x[:, 0], so a stored item identifies itself.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch

from models.replay import ReplayBuffer

BufferFactory = Callable[[int, int], ReplayBuffer]  # (capacity, input_dim) -> empty buffer

DIM = 3


def _stream(n: int, seed: int, classes: int = 4) -> list[tuple[torch.Tensor, int, float]]:
    rnd = random.Random(seed)
    # Skewed classes, so a class-balanced buffer has something to balance.
    return [(torch.full((DIM,), float(i)), min(int(rnd.expovariate(1.0)), classes - 1), rnd.random())
            for i in range(n)]


def _positions(buf: ReplayBuffer) -> list[int]:
    return [int(v) for v in buf.items()[0][:, 0]]


def check_protocol_and_empty(factory: BufferFactory) -> None:
    buf = factory(5, DIM)
    assert isinstance(buf, ReplayBuffer), "does not implement ReplayBuffer"
    assert len(buf) == 0 and buf.seen == 0 and buf.capacity == 5
    try:
        buf.sample(1, torch.Generator())
    except ValueError:
        pass
    else:
        raise AssertionError("sampling an empty buffer must raise ValueError")
    for bad in (-0.1, 1.0):
        try:
            buf.insert(torch.zeros(DIM), 0, bad)
        except ValueError:
            pass
        else:
            raise AssertionError(f"u={bad} must be refused")
    assert buf.seen == 0, "a refused insert must not count"


def check_capacity_seen_and_placement(factory: BufferFactory) -> None:
    buf = factory(8, DIM)
    for i, (x, y, u) in enumerate(_stream(400, seed=1)):
        slot = buf.insert(x, y, u)
        assert buf.seen == i + 1, "seen must count every insert"
        assert len(buf) == min(i + 1, buf.capacity), "fills first, never exceeds capacity"
        assert len(buf.items()[0]) == len(buf.items()[1]) == len(buf)
        if slot is not None:
            assert 0 <= slot < buf.capacity
            x_s, y_s = buf.items()
            assert torch.equal(x_s[slot], x) and int(y_s[slot]) == y, "item not where reported"


def check_deterministic_given_u(factory: BufferFactory) -> None:
    stream = _stream(300, seed=2)
    a, b = factory(10, DIM), factory(10, DIM)
    slots_a = [a.insert(x, y, u) for x, y, u in stream]
    slots_b = [b.insert(x, y, u) for x, y, u in stream]
    assert slots_a == slots_b, "same u sequence, different decisions"
    assert _positions(a) == _positions(b)


def check_put_mirrors_insert(factory: BufferFactory) -> None:
    """A buffer told only the slots (the learner's mirror of Redis) ends identical."""
    source, mirror = factory(6, DIM), factory(6, DIM)
    for x, y, u in _stream(200, seed=3):
        slot = source.insert(x, y, u)
        if slot is not None:
            mirror.put(slot, x, y)
    assert torch.equal(source.items()[0], mirror.items()[0])
    assert torch.equal(source.items()[1], mirror.items()[1])


def check_sample_returns_stored_items(factory: BufferFactory) -> None:
    buf = factory(7, DIM)
    for x, y, u in _stream(100, seed=4):
        buf.insert(x, y, u)
    x, y = buf.sample(64, torch.Generator().manual_seed(0))
    assert x.shape == (64, DIM) and x.dtype == torch.float32
    assert y.shape == (64,) and y.dtype == torch.int64
    stored = dict(zip(_positions(buf), buf.items()[1].tolist(), strict=True))
    for xi, yi in zip(x[:, 0].tolist(), y.tolist(), strict=True):
        assert stored.get(int(xi)) == yi, "sampled an item that is not stored"


def check_retire(factory: BufferFactory) -> None:
    buf = factory(10, DIM)
    stream = _stream(300, seed=5)
    for x, y, u in stream[:150]:
        buf.insert(x, y, u)
    before, classes, seen = _positions(buf), buf.items()[1].clone(), buf.seen
    mask = torch.tensor([p % 3 == 0 for p in before])
    assert buf.retire(mask) == int(mask.sum()), "retire must return how many it removed"
    survivors = [p for p, m in zip(before, mask.tolist(), strict=True) if not m]
    assert _positions(buf) == survivors, "retire keeps exactly the unmasked items, in order"
    assert buf.items()[1].tolist() == classes[~mask].tolist()
    assert len(buf) == len(survivors) and buf.seen == seen, "retire changes no count but len"
    x, _ = buf.sample(50, torch.Generator().manual_seed(1))
    assert set(x[:, 0].long().tolist()) <= set(survivors), "sampled a retired item"
    # A retire leaves free slots: they are filled first, at the end of the compact prefix.
    x, y, u = stream[150]
    assert buf.insert(x, y, u) == len(survivors)
    for x, y, u in stream[151:]:
        buf.insert(x, y, u)
        assert len(buf) <= buf.capacity
    try:
        buf.retire(torch.zeros(len(buf) + 1, dtype=torch.bool))
    except ValueError:
        pass
    else:
        raise AssertionError("a mask of the wrong length must be refused")
    assert buf.retire(torch.ones(len(buf), dtype=torch.bool)) == buf.capacity
    assert len(buf) == 0


CHECKS = (
    check_protocol_and_empty,
    check_capacity_seen_and_placement,
    check_deterministic_given_u,
    check_put_mirrors_insert,
    check_sample_returns_stored_items,
    check_retire,
)


def check_buffer(factory: BufferFactory) -> None:
    for check in CHECKS:
        check(factory)
