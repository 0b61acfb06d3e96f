"""The learner process's Prometheus metrics (docs/DESIGN.md §7), built against an injected
registry.

Every series carries `model`, bound once here (the process-wide collectors that
`process_metrics=True` adds carry none). Drift: `mnemo_drift_psi{feature}` for the
top-k features by PSI (feature = its column index, or under MNEMO_FEATURES the field's name)
and feature="other" for the largest PSI among the rest, so the series count stays at k + 1
whatever the input dimension. Each drift statistic also has its calibrated level,
`mnemo_drift_threshold{statistic}`, and
`mnemo_drift_alarm{statistic}` (1 above the level, 0 under it, NaN until both are measured),
so dashboards draw the level and alert rules need not repeat the comparison.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from service.monitor.families import Families
from service.monitor.process_metrics import register_process_metrics

PUBLISH_OUTCOMES = ("published", "rejected", "failed")
TOP_FEATURES = 5
# statistic label → (its value, its level) in the stats "drift" dict; the label is the name
# DriftMonitor.snapshot lists under "alarms".
DRIFT_STATISTICS = {"psi": ("psi_max", "psi_threshold"),
                    "prediction_js": ("prediction_js", "prediction_js_threshold"),
                    "label_js": ("label_js", "label_js_threshold")}


class LearnerMetrics:
    def __init__(self, registry: CollectorRegistry, model: str, *,
                 process_metrics: bool = False) -> None:
        """process_metrics: also the process-wide series (process_metrics.py), for the
        registry the process serves on /metrics."""
        self.registry = registry
        self.model = model
        new = Families(registry)
        if process_metrics:
            register_process_metrics(registry, model)
        labels = ["model"]
        samples = new.counter("mnemo_learner_samples", "Feedback items the learner processed "
                              "(trained on or kept as holdout)", labels)
        steps = new.counter("mnemo_learner_steps", "Optimizer steps taken", labels)
        loss = new.gauge("mnemo_learner_loss", "Mean training loss of the last batch", labels)
        penalty = new.gauge("mnemo_learner_penalty", "Regulariser penalty of the last batch",
                            labels)
        lag = new.gauge("mnemo_feedback_lag_items", "Accepted feedback not processed yet", labels)
        reservoir = new.gauge("mnemo_reservoir_size", "Items in the replay reservoir", labels)
        publish = new.counter("mnemo_model_publish", "Candidate versions by outcome (failed: an "
                              "error, or an operator's activation kept it from becoming current)",
                              [*labels, "outcome"])
        prequential = new.gauge("mnemo_prequential_accuracy", "Test-then-train accuracy of the "
                                "served version over the recent window", labels)
        balanced = new.gauge("mnemo_balanced_accuracy",
                             "Mean per-class recall over the same window", labels)
        self.tag_accuracy = new.gauge("mnemo_accuracy", "Smoothed holdout accuracy of the served "
                                      "version per tag", [*labels, "tag"])
        self.tag_forgetting = new.gauge("mnemo_forgetting", "Best smoothed holdout accuracy seen "
                                        "on the tag minus the current one", [*labels, "tag"])
        drift = new.counter("mnemo_concept_drift_events", "Concept drifts the detector signalled",
                            labels)
        self.drift_psi = new.gauge("mnemo_drift_psi", "PSI of the current input window against "
                                   "the reference, top features (the rest folded into 'other')",
                                   [*labels, "feature"])
        psi_max = new.gauge("mnemo_drift_psi_max", "Largest PSI over all features", labels)
        prediction_js = new.gauge("mnemo_drift_prediction_js", "Jensen-Shannon divergence (bits) "
                                  "of predicted-class shares, current vs reference window", labels)
        label_js = new.gauge("mnemo_drift_label_js", "Jensen-Shannon divergence (bits) of "
                             "feedback-label shares, current vs reference window", labels)
        threshold = new.gauge("mnemo_drift_threshold", "Calibrated alarm level of a drift "
                              "statistic (psi: of mnemo_drift_psi_max)", [*labels, "statistic"])
        alarm = new.gauge("mnemo_drift_alarm", "1 while a drift statistic is above its "
                          "calibrated level, else 0", [*labels, "statistic"])
        self.drift_threshold = {s: threshold.labels(model=model, statistic=s)
                                for s in DRIFT_STATISTICS}
        self.drift_alarm = {s: alarm.labels(model=model, statistic=s) for s in DRIFT_STATISTICS}
        self._psi_features: set[str] = set()
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
        self.psi_max = psi_max.labels(model=model)
        self.prediction_js = prediction_js.labels(model=model)
        self.label_js = label_js.labels(model=model)
        for gauge in (self.loss, self.penalty, self.prequential, self.balanced, self.psi_max,
                      self.prediction_js, self.label_js, *self.drift_threshold.values(),
                      *self.drift_alarm.values()):
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

    def observe_drift(self, drift: Mapping[str, Any],
                      feature_psi: np.ndarray | Mapping[str, float] | None) -> None:
        """The drift gauges from the stats "drift" dict (null → NaN) and the per-feature PSI:
        an array by column index, or a mapping by field name (records)."""
        for gauge, name in ((self.psi_max, "psi_max"), (self.prediction_js, "prediction_js"),
                            (self.label_js, "label_js")):
            value = drift.get(name)
            gauge.set(math.nan if value is None else value)
        alarms = set(drift.get("alarms") or ())
        for statistic, (value_name, level_name) in DRIFT_STATISTICS.items():
            level = drift.get(level_name)
            self.drift_threshold[statistic].set(math.nan if level is None else level)
            measured = level is not None and drift.get(value_name) is not None
            self.drift_alarm[statistic].set(float(statistic in alarms) if measured else math.nan)
        values: dict[str, float] = {}
        if feature_psi is not None and len(feature_psi):
            if isinstance(feature_psi, Mapping):
                names, psi = list(feature_psi), np.array(list(feature_psi.values()), dtype=float)
            else:
                psi = feature_psi
                names = [str(j) for j in range(len(psi))]
            order = np.argsort(-psi, kind="stable")
            values = {names[j]: float(psi[j]) for j in order[:TOP_FEATURES]}
            if len(order) > TOP_FEATURES:
                # max(): a field named "other" shares the folded series rather than vanish
                values["other"] = max(values.get("other", -math.inf),
                                      float(psi[order[TOP_FEATURES:]].max()))
        for feature in self._psi_features - values.keys():  # left the top-k: drop the series
            self.drift_psi.remove(self.model, feature)
        for feature, value in values.items():
            self.drift_psi.labels(model=self.model, feature=feature).set(value)
        self._psi_features = set(values)
