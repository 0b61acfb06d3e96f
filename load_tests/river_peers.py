"""River's online classifiers as the peer columns: test-then-train on the same stream in the
same order (predict_one, then learn_one, one label at a time), the same test sets read at
each phase end. River is a dev dependency, imported when a peer is built.

A scenario of records gives River the records the service gets, as dicts without their
missing values: the trees split on string values as nominal, and the LR peer one-hot-encodes
the categorical fields (the numeric and boolean ones scaled)."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from load_tests.learning_scores import Run
from load_tests.learning_streams import Labelled, Record, Scenario, Schema, kind


def logistic(seed: int, features: Schema | None = None) -> Any:
    """Scaled one-vs-rest logistic regression; under a schema, its categorical fields
    one-hot-encoded beside the scaled others."""
    from river import compose, linear_model, multiclass, preprocessing

    head = multiclass.OneVsRestClassifier(linear_model.LogisticRegression())
    if features is None:
        return preprocessing.StandardScaler() | head
    categorical = [f for f in features if kind(features, f) == "categorical"]
    others = [f for f in features if f not in categorical]  # numeric, and booleans as 0/1
    parts = [compose.FuncTransformer(partial(_present, names)) | encoder for names, encoder in
             ((others, preprocessing.StandardScaler()), (categorical, preprocessing.OneHotEncoder()))
             if names]
    union = parts[0] if len(parts) == 1 else compose.TransformerUnion(*parts)
    return union | head


def _present(names: list[str], x: dict[str, Any]) -> dict[str, Any]:
    """The named fields the row has (compose.Select wants every one: a missing value lacks)."""
    return {k: x[k] for k in names if k in x}


def hoeffding_adaptive_tree(seed: int, features: Schema | None = None) -> Any:
    from river import tree

    return tree.HoeffdingAdaptiveTreeClassifier(seed=seed)


def adaptive_random_forest(seed: int, features: Schema | None = None) -> Any:
    from river import forest

    return forest.ARFClassifier(seed=seed)  # 10 trees, ADWIN drift detection per tree


# Each built from the run's seed and the scenario's schema (None: vectors).
PEERS: dict[str, Callable[[int, Schema | None], Any]] = {
    "River LR": logistic,  # scaled one-vs-rest logistic regression (one-hot under a schema)
    "River HAT": hoeffding_adaptive_tree,
    "River ARF": adaptive_random_forest,
}


def _features(row: np.ndarray | Record) -> dict[Any, Any]:
    """A row as River takes it: a vector by column index, a record without its missing values."""
    if isinstance(row, dict):
        return {k: v for k, v in row.items() if v is not None}
    return dict(enumerate(row.tolist()))


def _accuracy(model: Any, test: Labelled) -> float:
    """Share of the test set predicted right (None, before any label, counts wrong)."""
    return float(np.mean([model.predict_one(_features(x)) == int(y)
                          for x, y in zip(test.x, test.y, strict=True)]))


def prequential_pass(model: Any, phase: Labelled) -> list[bool]:
    """Each row predicted, then learned; whether each prediction was right."""
    out = []
    for x, y in zip(phase.x, phase.y, strict=True):
        features, label = _features(x), int(y)
        out.append(model.predict_one(features) == label)
        model.learn_one(features, label)
    return out


def run_peer(make: Callable[[int, Schema | None], Any], scenario: Scenario, seed: int) -> Run:
    """One River model through the scenario, as the service gets it."""
    model, run, began = make(seed, scenario.features), Run(), time.monotonic()
    for phase in scenario.phases:
        run.correct += prequential_pass(model, phase)
        if scenario.tests:
            run.matrix.append([_accuracy(model, test) for test in scenario.tests])
    if scenario.overall is not None:
        run.overall = _accuracy(model, scenario.overall)
    run.seconds = time.monotonic() - began
    return run
