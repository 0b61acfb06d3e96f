"""Transfer on split digits (service/bench/transfer.py), on numbers over seeds: a checkpoint
trained offline on tasks 1-2 carries that knowledge into the stream, and starting tasks 3-5
from its trunk learns them no worse than starting from scratch (issue 5 asked for better: its
features describe the new digits worse than an untrained trunk's, which the probe shows)."""

from __future__ import annotations

import numpy as np
import torch

from models.nets import MLPConfig
from models.transfer import model_from_checkpoint
from service.bench import transfer
from service.bench.datasets import split_digits
from service.bench.runner import DEFAULTS, predict

SEEDS = (0, 1, 2)


def test_the_checkpoint_knows_the_first_tasks_and_its_trunk_starts_the_rest_as_well() -> None:
    torch.set_num_threads(1)
    early: dict[str, list[float]] = {"scratch": [], "checkpoint, fine-tune": []}
    probes = []
    for seed in SEEDS:
        scenario = split_digits(seed)
        checkpoint, vocab = transfer.pretrain(scenario, seed)
        # Declaring its four labels, version 0 already classifies tasks 1-2 (chance: 0.25).
        model = model_from_checkpoint(checkpoint, MLPConfig(64, tuple(DEFAULTS.hidden), 4),
                                      [str(c) for c in vocab]).eval()
        x = np.concatenate([seg.x_test for seg in scenario.segments[:2]])
        y = np.concatenate([[vocab[int(v)] for v in seg.y_test] for seg in scenario.segments[:2]])
        assert float(np.mean(predict(model, x) == y)) > 0.95
        probes.append(transfer.feature_probe(scenario, checkpoint, seed))
        for variant, runs in early.items():
            runs.append(transfer.run_variant(scenario, checkpoint, vocab, variant, seed)["early_acc"])
    # Measured (5 seeds, BENCHMARKS.md): a tie within ±0.02 per seed, so the claim tested is
    # "no worse", with a margin over the seeds' spread.
    assert np.mean(early["checkpoint, fine-tune"]) >= np.mean(early["scratch"]) - 0.02, early
    assert min(early["scratch"]) > 0.6, early  # both learn: the comparison is not at chance
    # Why no better: nearest-class-mean on the new classes (chance 1/6) is far worse on the
    # checkpoint's features than on an untrained trunk's (BENCHMARKS.md: 0.56 vs 0.86 at 32).
    for probe in probes:
        assert probe["untrained 32"] > 0.75, probe
        assert probe["checkpoint 32"] < probe["untrained 32"] - 0.1, probe
