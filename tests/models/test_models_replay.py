import math
import random

import pytest
import torch

from models.replay import ReplayBuffer, ReservoirBuffer, reservoir_slot


def algorithm_r(n_items: int, capacity: int, us: list[float]) -> list[int]:
    """Textbook Algorithm R over items 0..n-1, with the same uniform numbers."""
    res: list[int] = []
    for i in range(n_items):
        if i < capacity:
            res.append(i)
        else:
            j = math.floor(us[i] * (i + 1))
            if j < capacity:
                res[j] = i
    return res


def test_reservoir_slot_matches_algorithm_r() -> None:
    rnd = random.Random(0)
    capacity, n = 7, 300
    us = [rnd.random() for _ in range(n)]
    buf = ReservoirBuffer(capacity, 1)
    for i in range(n):
        buf.insert(torch.tensor([float(i)]), i, us[i])
    x, y = buf.items()
    assert y.tolist() == algorithm_r(n, capacity, us)
    assert x[:, 0].long().tolist() == y.tolist()
    assert buf.seen == n


def test_reservoir_slot_edges() -> None:
    assert reservoir_slot(1, 3, 0.99) == 0
    assert reservoir_slot(3, 3, 0.99) == 2
    assert reservoir_slot(4, 3, 0.0) == 0
    assert reservoir_slot(4, 3, 0.74) == 2
    assert reservoir_slot(4, 3, 0.75) is None
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError):
            reservoir_slot(4, 3, bad)


def test_capacity_never_exceeded_and_sampling() -> None:
    buf = ReservoirBuffer(10, 3)
    assert isinstance(buf, ReplayBuffer)
    with pytest.raises(ValueError):
        buf.sample(1, torch.Generator())
    rnd = random.Random(1)
    for i in range(1000):
        buf.insert(torch.full((3,), float(i)), i % 5, rnd.random())
        assert len(buf) == min(i + 1, 10) <= buf.capacity
    x, y = buf.sample(64, torch.Generator().manual_seed(0))
    assert x.shape == (64, 3) and x.dtype == torch.float32
    assert y.shape == (64,) and y.dtype == torch.int64
    stored = {int(v) for v in buf.items()[0][:, 0]}
    assert {int(v) for v in x[:, 0]} <= stored


def test_uniformity_of_the_reservoir() -> None:
    # Each of n items must end up stored with probability capacity / n.
    rnd = random.Random(2)
    n, capacity, trials = 20, 5, 4000
    hits = [0] * n
    for _ in range(trials):
        buf = ReservoirBuffer(capacity, 1)
        for i in range(n):
            buf.insert(torch.zeros(1), i, rnd.random())
        for i in buf.items()[1].tolist():
            hits[i] += 1
    expected = trials * capacity / n
    assert all(abs(h - expected) < 5 * math.sqrt(expected) for h in hits)


def test_put_mirrors_an_external_decision() -> None:
    buf = ReservoirBuffer(3, 2)
    buf.put(0, torch.tensor([1.0, 2.0]), 4)
    assert len(buf) == 1
    assert buf.items()[1].tolist() == [4]
    with pytest.raises(IndexError):
        buf.put(3, torch.zeros(2), 0)
