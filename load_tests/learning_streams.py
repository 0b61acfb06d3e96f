"""The labelled streams `make bench-e2e` sends through the service (load_tests/bench_learning.py).

Each scenario is a sequence of phases (the stream, in order, each phase with an optional tag)
and the test sets measured at every phase end: test set i belongs to phase i (its task), so
forgetting reads it from the end of phase i onwards. Everything is deterministic from the
seed; test sets never depend on it (a fixed generator or the fixed digits split), the seed
only draws and orders the stream.

A scenario's rows are vectors (MNEMO_INPUT_DIM), or records under the schema it declares
(MNEMO_FEATURES; load_tests/record_streams.py): the service and the River peers get the same
records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

TEST_SEED = 1000  # fixed test sets: independent of the run's seed

Record = dict[str, float | str | bool | None]  # field -> value; None (or absent): missing
Rows = np.ndarray | tuple[Record, ...]  # (n, d) float32 vectors, or records
# MNEMO_FEATURES: field -> "numeric" | "categorical" | "boolean", or {"kind": ..., options}
Schema = dict[str, str | dict[str, Any]]


def kind(schema: Schema, field: str) -> str:
    """A field's kind, whether the schema gives it as a name or as an object."""
    spec = schema[field]
    return spec if isinstance(spec, str) else str(spec["kind"])


@dataclass(frozen=True)
class Labelled:
    """Rows and their int labels, with the tag a request sends for them (None: untagged).
    The rows are vectors, or records when the scenario declares a schema (`features`)."""

    name: str
    x: Rows  # (n, d) float32, or n records
    y: np.ndarray  # (n,) int64
    tag: str | None = None

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Scenario:
    name: str
    about: str  # one line for the report: what the stream is
    phases: tuple[Labelled, ...]
    tests: tuple[Labelled, ...] = ()  # tests[i]: the task phase i teaches
    first: int | None = None  # also report the first N labels (cold start)
    overall: Labelled | None = None  # a test set over every task, read at the end only
    features: Schema | None = None  # the rows are records under this schema; None: vectors
    margin: float | None = None  # the target: served prequential per phase >= best peer - margin

    @property
    def input_dim(self) -> int:
        x = self.phases[0].x
        if not isinstance(x, np.ndarray):
            raise ValueError(f"{self.name} streams records (MNEMO_FEATURES), not vectors")
        return int(x.shape[1])

    @property
    def labels(self) -> int:
        return sum(len(p) for p in self.phases)


# ---- synthetic tabular: Gaussian blobs -------------------------------------------------------

DIM, CLASSES, BLOBS_PER_CLASS = 8, 4, 2
IDENTITY, SWAP01 = np.arange(CLASSES), np.array([1, 0, 2, 3])
# Blob b belongs to class b % CLASSES: blobs 0-3 are common at first and 4-7 rare; the
# covariate shift makes the rare ones common (P(x) moves, P(y|x) stays).
COMMON = np.array([4.0] * CLASSES + [1.0] * CLASSES)
SHIFTED = COMMON[::-1].copy()


class Blobs:
    """DIM-dimensional Gaussian blobs (unit noise), BLOBS_PER_CLASS per class; a concept is a
    map class -> label, so a concept swap changes the answers for the same inputs."""

    # Spread 2: the nearest-centre rule (about Bayes) scores 0.99 on either generator, so a
    # threshold of 0.85 on the served answers leaves room for a one-pass learner.
    def __init__(self, seed: int, spread: float = 2.0) -> None:
        rng = np.random.default_rng(seed)
        self.centres = spread * rng.normal(0.0, 1.0, (CLASSES * BLOBS_PER_CLASS, DIM))

    def sample(self, rng: np.random.Generator, n: int, weights: np.ndarray,
               concept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        blob = rng.choice(len(self.centres), size=n, p=weights / weights.sum())
        x = self.centres[blob] + rng.normal(0.0, 1.0, (n, DIM))
        return x.astype(np.float32), concept[blob % CLASSES].astype(np.int64)

    def part(self, name: str, rng: np.random.Generator, n: int, weights: np.ndarray,
             concept: np.ndarray) -> Labelled:
        return Labelled(name, *self.sample(rng, n, weights, concept))


PhasePlan = tuple[tuple[str, np.ndarray, np.ndarray, int], ...]  # name, weights, concept, labels
SWAP_PLAN: PhasePlan = (("stationary", COMMON, IDENTITY, 1500),
             ("swap", COMMON, SWAP01, 1500),  # the same inputs, labels 0 and 1 exchanged
             ("covariate shift", SHIFTED, SWAP01, 1000))  # the inputs move, the answers stay


def concept_swap(seed: int, test_size: int = 600, plan: PhasePlan = SWAP_PLAN) -> Scenario:
    """Stationary, then classes 0 and 1 exchange labels, then a covariate shift. Test set i
    is phase i's concept on phase i's inputs: the stationary one is the *old* concept, whose
    drop after the swap is adaptation, not forgetting."""
    blobs, rng, test_rng = Blobs(0), np.random.default_rng(seed), np.random.default_rng(TEST_SEED)
    phases = tuple(blobs.part(name, rng, n, w, c) for name, w, c, n in plan)
    tests = tuple(blobs.part(name, test_rng, test_size, w, c) for name, w, c, _ in plan)
    return Scenario("concept swap", f"Gaussian blobs, {DIM} dims, {CLASSES} classes; "
                    "labels 0/1 exchanged, then the rare blobs become common; untagged; test "
                    "set = each phase's concept on its inputs (stationary: the old concept, "
                    "whose drop after the swap is adaptation)",
                    phases, tests)


def cold_start(seed: int, labels: int = 1000, first: int = 500, test_size: int = 600) -> Scenario:
    """One stationary concept from a fresh deployment; the first `first` labels reported."""
    blobs = Blobs(1)
    phase = blobs.part("stationary", np.random.default_rng(seed), labels, COMMON, IDENTITY)
    test = blobs.part("stationary", np.random.default_rng(TEST_SEED), test_size, COMMON, IDENTITY)
    return Scenario("cold start", f"Gaussian blobs, {DIM} dims, {CLASSES} classes, one concept; "
                    "untagged", (phase,), (test,), first=first)


# ---- digits ------------------------------------------------------------------------------------

def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits under the fixed stratified 80/20 split service/bench uses."""
    from sklearn.datasets import load_digits  # dev-only dependency
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x, y = data.data.astype(np.float32), data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    return x_tr, y_tr, x_te, y_te


def rotate(x: np.ndarray, quarter_turns: int) -> np.ndarray:
    """(N, 64) digits turned by quarter_turns x 90 degrees counter-clockwise."""
    return np.rot90(x.reshape(-1, 8, 8), quarter_turns, axes=(1, 2)).reshape(len(x), 64).copy()


def domain_digits(seed: int) -> Scenario:
    """Domain-incremental: the whole training split once per rotation (0/90/180/270), each
    pass in its own seeded order; tag = the domain."""
    x_tr, y_tr, x_te, y_te = digits_split()
    rng = np.random.default_rng(seed)
    phases, tests = [], []
    for turns in range(4):
        tag = f"rot{90 * turns}"
        order = rng.permutation(len(y_tr))
        phases.append(Labelled(tag, rotate(x_tr[order], turns), y_tr[order], tag))
        tests.append(Labelled(tag, rotate(x_te, turns), y_te, tag))
    return Scenario("domain digits", "sklearn digits (train split, 1437) under 4 rotations, "
                    "one pass each; tag = rotation", tuple(phases), tuple(tests))


def split_digits(seed: int, tasks: int = 5) -> Scenario:
    """Class-incremental: digits 0/1, then 2/3, ... one pass, tag per task; the overall test
    set is the whole test split, predicted untagged."""
    x_tr, y_tr, x_te, y_te = digits_split()
    rng = np.random.default_rng(seed)
    phases, tests = [], []
    for t in range(tasks):
        pair = (2 * t, 2 * t + 1)
        tag = f"d{pair[0]}-{pair[1]}"
        idx = np.flatnonzero(np.isin(y_tr, pair))
        idx = idx[rng.permutation(len(idx))]
        phases.append(Labelled(tag, x_tr[idx], y_tr[idx], tag))
        test = np.isin(y_te, pair)
        tests.append(Labelled(tag, x_te[test], y_te[test], tag))
    return Scenario("split digits", "sklearn digits, 5 tasks of 2 classes, one pass; tag = "
                    "task; task test sets read with their tag (shared head: the tag changes "
                    "nothing), all 10 classes untagged", tuple(phases), tuple(tests),
                    overall=Labelled("all 10 classes", x_te, y_te))


# ---- a real data set shipped in a wheel ----------------------------------------------------

def phishing(seed: int) -> Scenario:
    """river.datasets.Phishing (1,250 web pages, 9 features, bundled in river's wheel) once, in
    its given order (the seed is not used); labels 1 = phishing, 0 = not."""
    from river.datasets import Phishing  # dev-only dependency

    rows = list(Phishing())
    names = list(rows[0][0])
    x = np.array([[float(r[k]) for k in names] for r, _ in rows], dtype=np.float32)
    y = np.array([int(label) for _, label in rows], dtype=np.int64)
    return Scenario("phishing", "river.datasets.Phishing (bundled), 1,250 rows, 9 features, "
                    "2 classes, given order; untagged", (Labelled("stream", x, y),))


SCENARIOS: dict[str, Callable[[int], Scenario]] = {
    "swap": concept_swap, "cold": cold_start, "domain": domain_digits,
    "split": split_digits, "phishing": phishing,
}
