"""The benchmark's streams: permuted digits, split digits, and a drifting synthetic stream;
shifted digits (translated per task) for the transfer bench only.

Every scenario is a stream of (x, raw label) pairs cut into segments (tasks or phases), plus a
fixed test set per segment. The test split never depends on the run's seed: the seed only
orders the stream. `tuning=True` builds the separate tuning stream used to choose
hyperparameters: test sets carved from the *training* split (the reported test split is never
seen), other pixel permutations, another pairing of classes, another generator draw.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

TUNING_SEED = 1000  # permutations, class pairs and generator of the tuning streams
N_TASKS = 5
PHASE_LENGTH = 1500  # drifting stream: samples per phase
PHASES = ("stationary", "label swap", "gradual", "covariate shift")


@dataclass(frozen=True)
class Segment:
    name: str
    x_test: np.ndarray
    y_test: np.ndarray  # raw labels
    classes: tuple[int, ...]  # raw labels of this task: the task-incremental mask


@dataclass(frozen=True)
class Scenario:
    name: str
    settings: tuple[str, ...]  # how accuracy is read: domain, class, task (masked), drift
    x: np.ndarray  # (N, d) float32, in stream order
    y: np.ndarray  # (N,) int64 raw labels
    ends: tuple[int, ...]  # exclusive end of each segment in the stream
    segments: tuple[Segment, ...]

    @property
    def input_dim(self) -> int:
        return int(self.x.shape[1])

    def starts(self) -> tuple[int, ...]:
        return (0, *self.ends[:-1])


def _digits(tuning: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # dev-only dependency, so imported lazily
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x, y = data.data.astype(np.float32), data.target.astype(np.int64)
    # The same fixed 80/20 split as models.bench_digits and the service's e2e test.
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    if tuning:  # validation carved from the training split; the test split stays unseen
        x_tr, x_te, y_tr, y_te = train_test_split(x_tr, y_tr, test_size=0.2, random_state=1,
                                                  stratify=y_tr)
    return x_tr, y_tr, x_te, y_te


def _concat(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    ends = tuple(int(v) for v in np.cumsum([len(y) for _, y in parts]))
    return (np.concatenate([x for x, _ in parts]).astype(np.float32),
            np.concatenate([y for _, y in parts]).astype(np.int64), ends)


def _domain_tasks(name: str, transforms: list[tuple[str, Callable[[np.ndarray], np.ndarray]]],
                  seed: int, tuning: bool) -> Scenario:
    """Domain-incremental: every task is all 10 classes of the digits under its own fixed input
    transform (applied to its test set too), shuffled by the seed."""
    x_tr, y_tr, x_te, y_te = _digits(tuning)
    order_rng = np.random.default_rng(seed)
    parts, segments = [], []
    for task, transform in transforms:
        order = order_rng.permutation(len(y_tr))
        parts.append((transform(x_tr[order]), y_tr[order]))
        segments.append(Segment(task, transform(x_te), y_te, tuple(range(10))))
    x, y, ends = _concat(parts)
    return Scenario(name, ("domain",), x, y, ends, tuple(segments))


def permuted_digits(seed: int, tuning: bool = False) -> Scenario:
    """Domain-incremental: 5 fixed pixel permutations (the first is the identity), 10 classes."""
    perm_rng = np.random.default_rng(TUNING_SEED if tuning else 0)
    perms = [np.arange(64)] + [perm_rng.permutation(64) for _ in range(N_TASKS - 1)]
    return _domain_tasks("permuted", [(f"perm {t}", _take(perm)) for t, perm in enumerate(perms)],
                         seed, tuning)


def _take(perm: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: x[:, perm]


# (name, rows down, columns right) of each shifted-digits task; the first is the clean input.
SHIFTS = (("clean", 0, 0), ("right", 0, 1), ("down", 1, 0), ("left", 0, -1), ("up", -1, 0))


def translate(x: np.ndarray, down: int, right: int) -> np.ndarray:
    """8x8 digits (N, 64) moved by whole pixels; what moves in is background (0), what moves
    out is lost."""
    img = x.reshape(-1, 8, 8)
    out = np.zeros_like(img)
    rows, cols = slice(max(0, down), 8 + min(0, down)), slice(max(0, right), 8 + min(0, right))
    src_rows = slice(max(0, -down), 8 + min(0, -down))
    src_cols = slice(max(0, -right), 8 + min(0, -right))
    out[:, rows, cols] = img[:, src_rows, src_cols]
    return out.reshape(len(x), 64)


def shifted_digits(seed: int, tuning: bool = False) -> Scenario:
    """Domain-incremental under misregistration: the same 10 digits, each task seen through its
    own fixed one-pixel translation (clean, then right, down, left, up) -- what a deployed digit
    reader meets when a new scanner or cropping step feeds it, the image content and the labels
    unchanged. Unlike a pixel permutation, tasks share the input structure: strokes keep their
    shapes and neighbours. (The tuning stream uses the same shifts on its own split.)"""
    return _domain_tasks("shifted", [(f"shift {task}", _translator(down, right))
                                     for task, down, right in SHIFTS], seed, tuning)


def _translator(down: int, right: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: translate(x, down, right)


def split_digits(seed: int, tuning: bool = False) -> Scenario:
    """5 tasks of 2 classes, read class-incrementally and task-incrementally (masked logits)."""
    x_tr, y_tr, x_te, y_te = _digits(tuning)
    classes = np.random.default_rng(TUNING_SEED).permutation(10) if tuning else np.arange(10)
    order_rng = np.random.default_rng(seed)
    parts, segments = [], []
    for t in range(N_TASKS):
        pair = tuple(int(c) for c in classes[2 * t : 2 * t + 2])
        idx = np.flatnonzero(np.isin(y_tr, pair))
        idx = idx[order_rng.permutation(len(idx))]
        parts.append((x_tr[idx], y_tr[idx]))
        test = np.isin(y_te, pair)
        segments.append(Segment(f"{pair[0]}/{pair[1]}", x_te[test], y_te[test], pair))
    x, y, ends = _concat(parts)
    return Scenario("split", ("class", "task"), x, y, ends, tuple(segments))


class _Blobs:
    """Gaussian blobs in 16 dimensions, 2 blobs per class; a concept maps class -> label."""

    DIM, BLOBS, CLASSES = 16, 8, 4

    def __init__(self, generator_seed: int) -> None:
        rng = np.random.default_rng(generator_seed)
        # Spread 1.5: centres ~8.5 noise-sigmas apart on average, some pairs much closer;
        # the nearest-centre rule (≈ Bayes) scores 99.7%, so a ceiling well above 0.90.
        self.centres = 1.5 * rng.normal(0.0, 1.0, (self.BLOBS, self.DIM)).astype(np.float32)
        self.blob_class = np.arange(self.BLOBS) % self.CLASSES

    def sample(self, rng: np.random.Generator, n: int, weights: np.ndarray,
               label_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        blob = rng.choice(self.BLOBS, size=n, p=weights / weights.sum())
        x = self.centres[blob] + rng.normal(0.0, 1.0, (n, self.DIM)).astype(np.float32)
        return x.astype(np.float32), label_map[self.blob_class[blob]].astype(np.int64)


def _phase_plan() -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]]:
    """(name, blob weights, labels before, labels after) per phase; `after` is mixed in
    gradually (probability rising linearly over the first half of the phase)."""
    common = np.array([4, 4, 4, 4, 1, 1, 1, 1], dtype=float)  # blobs 4-7 rare at first
    shifted = common[::-1].copy()  # covariate shift: the rare blobs become the common ones
    identity, swap01, swap23 = np.arange(4), np.array([1, 0, 2, 3]), np.array([1, 0, 3, 2])
    return [(PHASES[0], common, identity, None),  # one concept, nothing moves
            (PHASES[1], common, swap01, None),  # abrupt: same inputs, labels 0 and 1 swap
            (PHASES[2], common, swap01, swap23),  # gradual: 2 and 3 swap, more and more often
            (PHASES[3], shifted, swap23, None)]  # P(x) moves, P(y|x) stays


def drifting_stream(seed: int, tuning: bool = False, phase_length: int = PHASE_LENGTH,
                    test_size: int = 600) -> Scenario:
    blobs = _Blobs(TUNING_SEED if tuning else 0)
    rng = np.random.default_rng(seed)
    test_rng = np.random.default_rng(TUNING_SEED + 1 if tuning else 1)  # fixed test sets
    parts, segments = [], []
    for name, weights, before, after in _phase_plan():
        x, y = blobs.sample(rng, phase_length, weights, before)
        if after is not None:
            ramp = np.minimum(1.0, np.arange(phase_length) / (phase_length / 2))
            new = rng.random(phase_length) < ramp
            y[new] = _relabel(y[new], before, after)
        parts.append((x, y))
        final = after if after is not None else before
        x_te, y_te = blobs.sample(test_rng, test_size, weights, final)
        segments.append(Segment(name, x_te, y_te, tuple(range(blobs.CLASSES))))
    x, y, ends = _concat(parts)
    return Scenario("drift", ("drift",), x, y, ends, tuple(segments))


def _relabel(y: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Labels given under concept `before`, re-expressed under `after` (same blob classes)."""
    inverse = np.argsort(before)  # label -> class
    return after[inverse[y]]


SCENARIOS = {"permuted": permuted_digits, "split": split_digits, "drift": drifting_stream}
