import math
import random

import pytest
import torch

from models.replay import (
    ClassBalancedBuffer,
    RecentBuffer,
    ReplayBuffer,
    ReservoirBuffer,
    class_balanced_victim,
    make_buffer,
    recent_slot,
    reservoir_slot,
)


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


def test_reservoir_refills_free_slots_after_a_retire() -> None:
    # Algorithm R alone never leaves a free slot once full; a retire does, and it is taken.
    assert reservoir_slot(50, 10, 0.99, size=7) == 7
    assert reservoir_slot(50, 10, 0.99, size=10) is None
    assert reservoir_slot(50, 10, 0.1, size=10) == 5
    with pytest.raises(ValueError):
        reservoir_slot(5, 10, 0.5, size=5)  # 4 items seen cannot fill 5 slots
    buf = ReservoirBuffer(4, 1)
    for i in range(20):
        buf.insert(torch.tensor([float(i)]), 0, 0.999)
    assert buf.retire(torch.tensor([True, False, True, False])) == 2
    assert buf.items()[0][:, 0].tolist() == [1.0, 3.0]  # survivors moved down, in order
    assert buf.insert(torch.tensor([20.0]), 0, 0.999) == 2


def test_recent_slot_is_algorithm_r_until_the_horizon_then_a_fixed_rate() -> None:
    capacity, horizon = 4, 6
    rnd = random.Random(5)
    for seen in range(1, capacity + horizon + 1):
        u = rnd.random()
        assert recent_slot(seen, capacity, horizon, u) == reservoir_slot(seen, capacity, u)
    # From then on the count stands still: kept iff u < capacity / (capacity + horizon).
    for seen in (11, 100, 10**9):
        assert recent_slot(seen, capacity, horizon, 0.39) == 3
        assert recent_slot(seen, capacity, horizon, 0.4) is None
    assert recent_slot(10**6, capacity, 0, 0.999) == 3  # horizon 0: always kept
    with pytest.raises(ValueError):
        recent_slot(20, capacity, -1, 0.5)


def test_class_balanced_victim_edges() -> None:
    # 3 classes, capacity 9: class 2 holds 1 < 9/3, so it takes a slot of the largest class.
    assert class_balanced_victim(2, {0: 5, 1: 3, 2: 1}, 7, 9, 0.0) == (0, 0)
    assert class_balanced_victim(2, {0: 5, 1: 3, 2: 1}, 7, 9, 0.999) == (0, 4)
    # Ties go to the lowest class index, whatever the mapping's order.
    assert class_balanced_victim(0, {2: 4, 1: 4, 0: 1}, 3, 9, 0.5) == (1, 2)
    # A class at its share replaces its own items with Algorithm R's chance count / seen.
    assert class_balanced_victim(1, {0: 3, 1: 3, 2: 3}, 10, 9, 0.29) == (1, 2)
    assert class_balanced_victim(1, {0: 3, 1: 3, 2: 3}, 10, 9, 0.3) is None
    # Below its share (3 < 10 / 3) but one short of the largest: no swap back and forth over
    # the remainder, Algorithm R within the class instead.
    assert class_balanced_victim(1, {0: 4, 1: 3, 2: 3}, 10, 10, 0.3) is None
    assert class_balanced_victim(1, {0: 4, 1: 3, 2: 3}, 10, 10, 0.2) == (1, 2)
    assert class_balanced_victim(1, {0: 5, 1: 3, 2: 3}, 10, 11, 0.2) == (0, 1)
    # A new class (count 0) lowers every share.
    assert class_balanced_victim(3, {0: 3, 1: 3, 2: 3, 3: 0}, 1, 9, 0.7) == (0, 2)
    for args in [(5, {0: 9}, 1, 9, 0.5), (0, {0: 8}, 1, 9, 0.5), (0, {0: 9}, 1, 9, 1.0)]:
        with pytest.raises(ValueError):
            class_balanced_victim(*args)


def test_class_balanced_counts_end_within_one_of_the_share() -> None:
    """A long, heavily skewed stream (class 0 ten times class 3) with a class that only appears
    late: every class ends within ±1 of capacity / classes, and each class's sample stays
    spread over its own history (Algorithm R within the class)."""
    capacity, rnd = 50, random.Random(11)
    weights = [0.6, 0.25, 0.09, 0.06]
    early_share = []
    for _ in range(5):
        buf = ClassBalancedBuffer(capacity, 1)
        for i in range(12_000):
            y = rnd.choices(range(4), weights)[0] if i < 8_000 else rnd.choices(range(5), [*weights, 0.02])[0]
            buf.insert(torch.tensor([float(i)]), y, rnd.random())
        counts = buf.class_counts()
        assert sorted(counts) == [0, 1, 2, 3, 4]
        assert sum(counts.values()) == capacity
        assert all(abs(n - capacity / 5) <= 1 for n in counts.values()), counts
        x, y = buf.items()
        zeros = x[y == 0, 0]
        early_share.append(float((zeros < 6_000).float().mean()))
    # Class 0 arrives evenly over the 12,000 positions: about half its sample predates 6,000.
    assert 0.2 < sum(early_share) / len(early_share) < 0.8, early_share


def test_recent_buffer_follows_a_switch_the_reservoir_misses() -> None:
    """20,000 items of one distribution, then L = 500 of another: with n = capacity + horizon
    = 500 the recent buffer holds about 1 - (1 - 1/n)^L ≈ 63% new items, the reservoir about
    L / 20,500 ≈ 2.4%."""
    capacity, horizon, before, after = 100, 400, 20_000, 500
    rnd = random.Random(12)
    fractions: dict[str, list[float]] = {"recent": [], "reservoir": []}
    for _ in range(4):
        us = [rnd.random() for _ in range(before + after)]
        for name in fractions:
            buf = make_buffer(name, capacity, 1, **({"horizon": horizon} if name == "recent" else {}))
            for i, u in enumerate(us):
                buf.insert(torch.zeros(1), int(i >= before), u)
            fractions[name].append(float(buf.items()[1].float().mean()))
    recent = sum(fractions["recent"]) / 4
    reservoir = sum(fractions["reservoir"]) / 4
    expected = 1 - (1 - 1 / (capacity + horizon)) ** after
    assert abs(recent - expected) < 0.08, (recent, expected)
    assert reservoir < 0.08, reservoir
    assert recent > 5 * reservoir


def test_recent_buffer_ages_are_geometric_with_mean_capacity_plus_horizon() -> None:
    capacity, horizon, n_items = 50, 150, 6_000
    rnd = random.Random(13)
    ages: list[int] = []
    for _ in range(8):
        buf = RecentBuffer(capacity, 1, horizon)
        for i in range(n_items):
            buf.insert(torch.tensor([float(i)]), 0, rnd.random())
        ages += [n_items - 1 - int(v) for v in buf.items()[0][:, 0]]
    n = capacity + horizon
    mean = sum(ages) / len(ages)
    assert abs(mean - (n - 1)) < 0.15 * n, mean  # geometric: mean (1 - q) / q, q = 1 / n
    assert max(ages) < 12 * n  # nothing from the distant past survives
