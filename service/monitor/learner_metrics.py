"""The learner process's Prometheus metrics (DESIGN §7), built against an injected registry.

Every series carries `model`, bound once here. The drift PSI/JS gauges live elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

PUBLISH_OUTCOMES = ("published", "rejected", "failed")


class LearnerMetrics:
    def __init__(self, registry: CollectorRegistry, model: str) -> None:
        self.registry = registry
        self.model = model
        labels = ["model"]
        samples = Counter("mnemo_learner_samples", "Feedback items the learner processed "
                          "(trained on or kept as holdout)", labels, registry=registry)
        steps = Counter("mnemo_learner_steps", "Optimizer steps taken", labels, registry=registry)
        loss = Gauge("mnemo_learner_loss", "Mean training loss of the last batch", labels,
                     registry=registry)
        penalty = Gauge("mnemo_learner_penalty", "Regulariser penalty of the last batch", labels,
                        registry=registry)
        lag = Gauge("mnemo_feedback_lag_items", "Accepted feedback not processed yet", labels,
                    registry=registry)
        reservoir = Gauge("mnemo_reservoir_size", "Items in the replay reservoir", labels,
                          registry=registry)
        publish = Counter("mnemo_model_publish", "Candidate versions by outcome (failed: an "
                          "error, or an operator's activation kept it from becoming current)",
                          [*labels, "outcome"], registry=registry)
        prequential = Gauge("mnemo_prequential_accuracy", "Test-then-train accuracy of the "
                            "served version over the recent window", labels, registry=registry)
        balanced = Gauge("mnemo_balanced_accuracy", "Mean per-class recall over the same window",
                         labels, registry=registry)
        self.tag_accuracy = Gauge("mnemo_accuracy", "Smoothed holdout accuracy of the served "
                                  "version per tag", [*labels, "tag"], registry=registry)
        self.tag_forgetting = Gauge("mnemo_forgetting", "Best smoothed holdout accuracy seen "
                                    "on the tag minus the current one", [*labels, "tag"],
                                    registry=registry)
        drift = Counter("mnemo_concept_drift_events", "Concept drifts the detector signalled",
                        labels, registry=registry)
        # Bind the model label once: call sites stay short and can never forget it.
        self.samples = samples.labels(model=model)
        self.steps = steps.labels(model=model)
        self.loss = loss.labels(model=model)
        self.penalty = penalty.labels(model=model)
        self.lag = lag.labels(model=model)
        self.reservoir = reservoir.labels(model=model)
        self.publish = {o: publish.labels(model=model, outcome=o) for o in PUBLISH_OUTCOMES}
        self.prequential = prequential.labels(model=model)
        self.balanced = balanced.labels(model=model)
        self.drift_events = drift.labels(model=model)
        for gauge in (self.loss, self.penalty, self.prequential, self.balanced):
            gauge.set(math.nan)  # nothing measured yet: NaN, not a made-up 0

    def observe_stats(self, stats: Mapping[str, Any], lag: int, reservoir: int) -> None:
        """The gauges from the stats JSON the learner just wrote (null → NaN)."""
        self.lag.set(lag)
        self.reservoir.set(reservoir)
        for gauge, name in ((self.prequential, "prequential_accuracy"),
                            (self.balanced, "balanced_accuracy"), (self.loss, "loss"),
                            (self.penalty, "penalty")):
            value = stats.get(name)
            gauge.set(math.nan if value is None else value)

    def set_tags(self, tags: dict[str, tuple[float, float]]) -> None:
        """Per-tag (accuracy, forgetting); tags are already folded (bounded cardinality)."""
        for tag, (acc, forgetting) in tags.items():
            self.tag_accuracy.labels(model=self.model, tag=tag).set(acc)
            self.tag_forgetting.labels(model=self.model, tag=tag).set(forgetting)
