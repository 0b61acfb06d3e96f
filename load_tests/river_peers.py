"""River's online classifiers as the peer columns: test-then-train on the same stream in the
same order (predict_one, then learn_one, one label at a time), the same test sets read at
each phase end. River is a dev dependency, imported when a peer is built."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from load_tests.learning_scores import Run
from load_tests.learning_streams import Labelled, Scenario


def logistic(seed: int) -> Any:
    from river import linear_model, multiclass, preprocessing

    return preprocessing.StandardScaler() | multiclass.OneVsRestClassifier(
        linear_model.LogisticRegression())


def hoeffding_adaptive_tree(seed: int) -> Any:
    from river import tree

    return tree.HoeffdingAdaptiveTreeClassifier(seed=seed)


def adaptive_random_forest(seed: int) -> Any:
    from river import forest

    return forest.ARFClassifier(seed=seed)  # 10 trees, ADWIN drift detection per tree


PEERS: dict[str, Callable[[int], Any]] = {
    "River LR": logistic,  # scaled one-vs-rest logistic regression
    "River HAT": hoeffding_adaptive_tree,
    "River ARF": adaptive_random_forest,
}


def _features(row: np.ndarray) -> dict[int, float]:
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


def run_peer(make: Callable[[int], Any], scenario: Scenario, seed: int) -> Run:
    """One River model through the scenario, as the service gets it."""
    model, run, began = make(seed), Run(), time.monotonic()
    for phase in scenario.phases:
        run.correct += prequential_pass(model, phase)
        if scenario.tests:
            run.matrix.append([_accuracy(model, test) for test in scenario.tests])
    if scenario.overall is not None:
        run.overall = _accuracy(model, scenario.overall)
    run.seconds = time.monotonic() - began
    return run
