"""What the registry each process serves carries besides its own metrics (process and platform
collectors, mnemo_build_info), and the learner's drift thresholds and alarms as gauges
following the stats "drift" dict. The real processes' /metrics, scraped by a real Prometheus,
are checked in test_dashboards.py."""

from __future__ import annotations

import math
import platform
import sys

import pytest
import torch
from prometheus_client import CollectorRegistry

from service.monitor.api_metrics import ApiMetrics
from service.monitor.learner_metrics import LearnerMetrics
from service.version import package_version

MODEL = "m"


@pytest.mark.parametrize("metrics", [ApiMetrics, LearnerMetrics], ids=["api", "learner"])
def test_every_registry_carries_the_process_collectors_and_build_info(
        metrics: type[ApiMetrics | LearnerMetrics]) -> None:
    registry = CollectorRegistry(auto_describe=True)  # as the API builds it: names checked
    metrics(registry, MODEL, process_metrics=True)
    labels = {"model": MODEL, "version": package_version(), "python": platform.python_version(),
              "torch": str(torch.__version__)}
    assert registry.get_sample_value("mnemo_build_info", labels) == 1
    samples = {s.name for family in registry.collect() for s in family.samples}
    assert {"python_info", "python_gc_collections_total"} <= samples
    if sys.platform.startswith("linux"):  # ProcessCollector reads /proc
        assert {"process_resident_memory_bytes", "process_cpu_seconds_total",
                "process_open_fds", "process_max_fds", "process_start_time_seconds"} <= samples
        assert registry.get_sample_value("process_resident_memory_bytes") > 0
    # Without the flag (tests, a second registry in one process) only the model's own series,
    # each with its `model` label.
    registry = CollectorRegistry()
    metrics(registry, MODEL)
    assert all(s.labels.get("model") == MODEL for f in registry.collect() for s in f.samples)


def drift_gauges(registry: CollectorRegistry) -> dict[str, tuple[float, float]]:
    """statistic → (threshold, alarm)."""
    def read(name: str, statistic: str) -> float:
        value = registry.get_sample_value(name, {"model": MODEL, "statistic": statistic})
        assert value is not None, (name, statistic)
        return value
    return {s: (read("mnemo_drift_threshold", s), read("mnemo_drift_alarm", s))
            for s in ("psi", "prediction_js", "label_js")}


def test_drift_thresholds_and_alarms_follow_the_stats() -> None:
    registry = CollectorRegistry()
    metrics = LearnerMetrics(registry, MODEL)
    assert all(math.isnan(v) for pair in drift_gauges(registry).values() for v in pair)
    drift = {"psi_max": 0.4, "psi_threshold": 0.2, "prediction_js": 0.001,
             "prediction_js_threshold": 0.01, "label_js": None, "label_js_threshold": 0.03,
             "alarms": ["psi"]}
    metrics.observe_drift(drift, None)
    gauges = drift_gauges(registry)
    assert gauges["psi"] == (0.2, 1.0) and gauges["prediction_js"] == (0.01, 0.0)
    assert gauges["label_js"][0] == 0.03 and math.isnan(gauges["label_js"][1])  # unmeasured
    # A reference being rebuilt has no level yet: back to NaN, never a stale level.
    metrics.observe_drift({**drift, "psi_threshold": None, "alarms": []}, None)
    assert all(math.isnan(v) for v in drift_gauges(registry)["psi"])
