"""Transfer (service/bench/transfer.py), on numbers over seeds. Split digits: a checkpoint
trained offline on tasks 1-2 carries that knowledge into the stream, and starting tasks 3-5
from its trunk learns them no worse than starting from scratch (issue 5 asked for better: its
features describe the new digits worse than an untrained trunk's, which the probe shows).
Permuted digits (same 10 labels, new pixel permutations): the checkpoint starts tasks 3-5
worse than scratch, for the same reason. Shifted digits (same 10 labels, a one-pixel translation
per task): the checkpoint already reads the new shifts partly and starts them ahead of scratch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from models.nets import MLPConfig
from models.transfer import model_from_checkpoint
from service.bench import transfer
from service.bench.datasets import (
    SHIFTS,
    Segment,
    permuted_digits,
    shifted_digits,
    split_digits,
    translate,
)
from service.bench.runner import DEFAULTS, predict

SEEDS = (0, 1, 2)


def _accuracy_on(model: torch.nn.Module, segments: Sequence[Segment], vocab: dict[int, int]) -> float:
    x = np.concatenate([seg.x_test for seg in segments])
    y = np.concatenate([[vocab[int(v)] for v in seg.y_test] for seg in segments])
    return float(np.mean(predict(model.eval(), x) == y))


def test_the_checkpoint_knows_the_first_tasks_and_its_trunk_starts_the_rest_as_well() -> None:
    torch.set_num_threads(1)
    early: dict[str, list[float]] = {"scratch": [], "checkpoint, fine-tune": []}
    probes = []
    for seed in SEEDS:
        scenario = split_digits(seed)
        checkpoint, vocab = transfer.pretrain(scenario, seed)
        # Declaring its four labels, version 0 already classifies tasks 1-2 (chance: 0.25).
        model = model_from_checkpoint(checkpoint, MLPConfig(64, tuple(DEFAULTS.hidden), 4),
                                      [str(c) for c in vocab])
        assert _accuracy_on(model, scenario.segments[:2], vocab) > 0.95
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


def test_on_permuted_digits_the_checkpoint_knows_its_tasks_but_starts_new_permutations_worse() -> None:
    torch.set_num_threads(1)
    seed = 0
    scenario = permuted_digits(seed)
    checkpoint, vocab = transfer.pretrain(scenario, seed)
    assert sorted(vocab) == list(range(10))  # tasks 1-2 bring the whole label set
    model = model_from_checkpoint(checkpoint, MLPConfig(64, tuple(DEFAULTS.hidden), 10),
                                  [str(c) for c in vocab])
    # Version 0 classifies its own permutations, and is at chance (0.1) on the new ones.
    assert _accuracy_on(model, scenario.segments[:2], vocab) > 0.9
    assert _accuracy_on(model, scenario.segments[2:], vocab) < 0.2
    scratch, *_ = transfer.VARIANTS["permuted"]
    runs = {v: transfer.run_variant(scenario, checkpoint, vocab, v, seed)
            for v in (scratch, "checkpoint + its 10 labels, fine-tune")}
    early = {v: r["early_acc"] for v, r in runs.items()}
    assert all(len(r["early_by_task"]) == 3 for r in runs.values())
    assert early[scratch] > 0.3, early  # scratch learns within 200 samples (chance: 0.1)
    # No gain. Measured (5 seeds, BENCHMARKS.md): paired -0.020 ± 0.034, one seed of five
    # gains. Seed 0 was 0.028 below; on a fresh install of the same code it came out 0.007
    # above (cause not isolated), so the claim tested is "no better than scratch by the 0.02
    # that the shifted digits' gain must clear".
    assert early["checkpoint + its 10 labels, fine-tune"] < early[scratch] + 0.02, early
    # Both end up knowing tasks 3-5 (domain-incremental read, chance 0.1).
    assert min(r["final_acc"] for r in runs.values()) > 0.85, runs
    # Why: its features describe the new permutations worse than an untrained trunk's
    # (BENCHMARKS.md: 0.61 vs 0.82 at 32 examples a class, paired -0.21 ± 0.03).
    probe = transfer.feature_probe(scenario, checkpoint, seed)
    assert probe["untrained 32"] > 0.7, probe
    assert probe["checkpoint 32"] < probe["untrained 32"] - 0.1, probe


def test_shifted_digits_move_every_task_by_one_pixel_over_the_same_labels() -> None:
    scenario = shifted_digits(0)
    clean = scenario.segments[0]
    digit = np.zeros((1, 64), dtype=np.float32)
    digit[0, 8 * 3 + 4] = 1.0  # pixel (row 3, column 4)
    for (task, down, right), seg, start, end in zip(SHIFTS, scenario.segments, scenario.starts(),
                                                     scenario.ends, strict=True):
        assert seg.name == f"shift {task}" and seg.classes == tuple(range(10))
        assert np.array_equal(seg.y_test, clean.y_test)  # the same test digits, moved
        assert np.array_equal(seg.x_test, translate(clean.x_test, down, right))
        assert sorted(set(scenario.y[start:end].tolist())) == list(range(10))
        assert translate(digit, down, right).reshape(8, 8)[3 + down, 4 + right] == 1.0
    # Moving right brings background (0) into the first column and drops the last one.
    right = scenario.segments[1].x_test.reshape(-1, 8, 8)
    assert not right[:, :, 0].any()
    assert np.array_equal(right[:, :, 1:], clean.x_test.reshape(-1, 8, 8)[:, :, :-1])


def test_on_shifted_digits_the_checkpoint_starts_new_shifts_ahead_of_scratch() -> None:
    torch.set_num_threads(1)
    seed = 0
    scenario = shifted_digits(seed)
    checkpoint, vocab = transfer.pretrain(scenario, seed)
    model = model_from_checkpoint(checkpoint, MLPConfig(64, tuple(DEFAULTS.hidden), 10),
                                  [str(c) for c in vocab])
    # Version 0 knows its own shifts and reads the new ones partly (chance 0.1; measured
    # 0.36-0.48 per task over 5 seeds): unlike a permutation, a shift keeps the strokes.
    assert _accuracy_on(model, scenario.segments[:2], vocab) > 0.9
    assert 0.25 < _accuracy_on(model, scenario.segments[2:], vocab) < 0.8
    scratch, *_ = transfer.VARIANTS["shifted"]
    runs = {v: transfer.run_variant(scenario, checkpoint, vocab, v, seed)
            for v in (scratch, "checkpoint + its 10 labels, fine-tune")}
    early = {v: r["early_acc"] for v, r in runs.items()}
    # Measured (5 seeds, BENCHMARKS.md): paired +0.081 ± 0.036, every seed gains (least +0.042,
    # seed 0 +0.065); the margin is half the least gain.
    assert early["checkpoint + its 10 labels, fine-tune"] > early[scratch] + 0.02, early
    assert min(r["final_acc"] for r in runs.values()) > 0.88, runs  # served: 0.900 and 0.902
    # Not from better features: nearest-class-mean on the checkpoint's trunk is no better than
    # on an untrained one (measured -0.030 ± 0.019 at 32 a class).
    probe = transfer.feature_probe(scenario, checkpoint, seed)
    assert probe["checkpoint 32"] < probe["untrained 32"] + 0.05, probe


def test_each_streams_table_pairs_its_starts_with_its_own_first_row() -> None:
    stats = {"strategy": "naive", "final_acc": 0.9, "samples_per_s": 1.0, "state_mib": 0.5,
             "peak_rss_mib": 400.0}
    early = {("split", "scratch"): (0.7, 0.8), ("split", "checkpoint, fine-tune"): (0.75, 0.78),
             ("permuted", "scratch + the 10 labels"): (0.4, 0.5),
             ("permuted", "checkpoint + its 10 labels, fine-tune"): (0.3, 0.45)}
    results = [{"stream": stream, "variant": variant, "seed": seed, "early_acc": acc, **stats}
               for (stream, variant), accs in early.items() for seed, acc in enumerate(accs)]
    text = transfer.markdown(results, "cmd")
    split, permuted = text.split("**Permuted digits.**")
    # split: +0.05 and -0.02 (1 of 2 seeds gains); permuted: -0.10 and -0.05 (none gains)
    assert "| checkpoint, fine-tune | naive | 0.765 ± 0.021 | 0.015 ± 0.049 | 1/2 |" in split
    assert ("| checkpoint + its 10 labels, fine-tune | naive | 0.375 ± 0.106 | -0.075 ± 0.035 | 0/2 |"
            in permuted)
    assert "permuted" not in split.split("**Split digits.**")[1]
