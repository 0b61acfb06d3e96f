"""The API process's Prometheus metrics (docs/DESIGN.md §7), built against an injected
registry."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry

from service.monitor.families import Families
from service.monitor.process_metrics import register_process_metrics

# 100 µs resolution at the bottom, 1 s at the top.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
FRESHNESS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry, model: str, *,
                 process_metrics: bool = False) -> None:
        """process_metrics: also the process-wide series (process_metrics.py), for the
        registry the process serves on /metrics."""
        self.registry = registry
        new = Families(registry)
        if process_metrics:
            register_process_metrics(registry, model)
        labels = ["model"]
        self.predict_requests = new.counter("mnemo_predict_requests",
                                            "Predict requests by status class",
                                            [*labels, "status"])
        self.predict_latency = new.histogram("mnemo_predict_latency_seconds",
                                             "Predict request latency", labels, LATENCY_BUCKETS)
        self.predict_batch_size = new.histogram("mnemo_predict_batch_size",
                                                "Rows per forward pass", labels, BATCH_BUCKETS)
        self.feedback_items = new.counter("mnemo_feedback_items", "Feedback items by outcome",
                                          [*labels, "outcome"])
        self.model_version = new.gauge("mnemo_model_version", "Served model version", labels)
        self.model_swaps = new.counter("mnemo_model_swaps", "Model versions swapped in", labels)
        self.model_load_failures = new.counter("mnemo_model_load_failures",
                                               "Model versions that failed to load", labels)
        self.update_freshness = new.histogram(
            "mnemo_update_freshness_seconds",
            "At each swap: now minus acceptance time of the oldest item the version adds",
            labels, FRESHNESS_BUCKETS,
        )
        self.prediction_log_bytes = new.gauge(
            "mnemo_prediction_log_bytes",
            "Estimated Redis bytes the prediction log and drift samples hold (as this process "
            "last read them, plus its own writes since)", labels,
        )
        self.prediction_log_budget_bytes = new.gauge(
            "mnemo_prediction_log_budget_bytes",
            "MNEMO_PREDICTION_LOG_MAX_BYTES: predicts beyond it answer 429", labels,
        )
        self._model = model
        # Bind the model label once: call sites stay short and can never forget it.
        self.requests_by_status = {
            s: self.predict_requests.labels(model=model, status=s)
            for s in ("ok", "client_error", "server_error")
        }
        self.feedback_by_outcome = {
            o: self.feedback_items.labels(model=model, outcome=o)
            for o in ("accepted", "duplicate", "rejected", "shed")
        }
        self.latency = self.predict_latency.labels(model=model)
        self.batch_size = self.predict_batch_size.labels(model=model)
        self.version = self.model_version.labels(model=model)
        self.swaps = self.model_swaps.labels(model=model)
        self.load_failures = self.model_load_failures.labels(model=model)
        self.freshness = self.update_freshness.labels(model=model)

    def watch_prediction_log(self, used: Callable[[], float], budget: int | None) -> None:
        """The log's bytes are read at scrape time (no work per request); without a budget
        the budget gauge has no sample."""
        self.prediction_log_bytes.labels(model=self._model).set_function(used)
        if budget is not None:
            self.prediction_log_budget_bytes.labels(model=self._model).set(budget)
