"""Generative replay (models/generative.py, MNEMO_BUFFER=generative): a label-conditioned VAE
stands in for stored samples — it keeps no input, resumes from its state, and on split digits
(class-incremental) replaying it gives several times naive fine-tuning's accuracy."""

from __future__ import annotations

import numpy as np
import torch

from models.generative import GenerativeReplay
from models.replay import make_buffer
from service.bench.datasets import split_digits
from service.bench.runner import RunSpec, run_stream


def _fed(seed: int = 0) -> GenerativeReplay:
    g = make_buffer("generative", 0, 6, max_classes=5)
    assert isinstance(g, GenerativeReplay)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(960):
        y = int(torch.randint(0, 3, (1,), generator=gen))
        g.insert(torch.randn(6, generator=gen) + 4 * y, y)
    return g


def test_it_keeps_no_input_and_samples_the_classes_it_learned() -> None:
    g = _fed()
    tensors = [t for t in g.state_dict().values() if t.dtype.is_floating_point]
    assert g.trained == 960 and not g._pending
    assert sum(t.numel() for t in tensors) > 0
    assert not any(t.dim() == 2 and t.shape[0] >= 64 and t.shape[1] == 6 for t in tensors)
    x, y = g.sample(300, torch.Generator().manual_seed(1))
    assert x.shape == (300, 6) and set(y.tolist()) == {0, 1, 2}
    # Conditioned on the class: class 2's samples sit around its inputs' mean (≈ 8).
    assert float(x[y == 2].mean()) > float(x[y == 0].mean()) + 3
    assert g.items()[0].shape == (0, 6) and g.retire(torch.zeros(0, dtype=torch.bool)) == 0


def test_its_state_round_trips_and_resumes_identically() -> None:
    g = _fed()
    clone = GenerativeReplay(6, 5, seed=9)
    clone.load_state_dict({k: v.clone() for k, v in g.state_dict().items()})
    gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for one in (g, clone):
        for i in range(16):
            one.insert(torch.full((6,), float(i)), i % 3)
    xa, ya = g.sample(20, gen_a)
    xb, yb = clone.sample(20, gen_b)
    assert torch.equal(ya, yb) and torch.equal(xa, xb)


def test_split_digits_class_incremental_at_least_three_times_naive() -> None:
    torch.set_num_threads(1)
    ratios = []
    for seed in (0, 1, 2):
        scenario = split_digits(seed)
        naive = run_stream(scenario, RunSpec("naive", "reservoir", 1000, seed))
        generative = run_stream(scenario, RunSpec("replay", "generative", 1000, seed))
        ratios.append(generative["settings"]["class"]["final_acc"]
                      / naive["settings"]["class"]["final_acc"])
    assert min(ratios) >= 3.0, ratios
    assert np.mean(ratios) > 3.1, ratios
