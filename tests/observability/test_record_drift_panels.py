"""The drift dashboard under records (MNEMO_FEATURES), against a real Prometheus: a learner
registry fed by RecordDriftMonitor after a shift of two fields is scraped, and the panels'
PromQL shows per-field PSI labelled by field name (the "PSI, top features" panel), PSI-max and
its level, and the psi alarm, each equal to the monitor's snapshot. The full service run with
vectors is tests/observability/test_dashboards.py; this one only needs the metrics side."""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, start_http_server

from service.monitor.learner_metrics import LearnerMetrics
from service.monitor.record_drift import RecordDriftMonitor
from tests.conftest import free_port
from tests.e2e.procs import wait_for
from tests.observability.promconfig import (
    Prom,
    prometheus_binary,
    prometheus_config,
    start_prometheus,
    stop_group,
    write_config,
)
from tests.observability.test_dashboards import MODEL, TOKEN, panel_targets, substitute
from tests.worker.test_record_drift import REFERENCE, WINDOW, draw, schema


def test_drift_panels_show_per_field_psi_of_records(tmp_path: Path) -> None:
    prometheus_binary()
    rng = np.random.default_rng(5)
    monitor = RecordDriftMonitor(schema(), REFERENCE, WINDOW, n_boot=50, seed=0)
    zeros = np.zeros(REFERENCE, dtype=np.int64)
    monitor.add_samples(draw(rng, REFERENCE), zeros)
    monitor.add_samples(draw(rng, WINDOW, amount_shift=1.5, new_country=0.5), zeros[:WINDOW])
    drift = monitor.snapshot()
    assert drift["alarms"] == ["psi"], drift
    metrics = LearnerMetrics(CollectorRegistry(), MODEL)
    metrics.observe_drift(drift, monitor.feature_psi)

    learner_port, prom_port = free_port(), free_port()
    server, thread = start_http_server(learner_port, "127.0.0.1", metrics.registry)
    config = write_config(tmp_path, prometheus_config(free_port(), learner_port), TOKEN)
    prom_proc = start_prometheus(config, prom_port, tmp_path)
    with contextlib.ExitStack() as stack:
        stack.callback(thread.join, 5)
        stack.callback(server.shutdown)
        stack.callback(stop_group, prom_proc)
        prom = Prom(stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{prom_port}",
                                                     timeout=10)))
        targets = panel_targets()
        top_panel = substitute(targets[("mnemo-drift", "PSI, top features", "A")])

        def diagnose() -> str:
            return (tmp_path / "prometheus.log").read_text(errors="replace")[-3000:]

        def ready() -> bool:  # it answers 503 while its storage opens
            assert prom_proc.poll() is None, "prometheus exited"
            with contextlib.suppress(httpx.TransportError):
                return prom.client.get("/-/ready").status_code == 200
            return False

        wait_for(ready, 30, "prometheus ready", diagnose, 0.2)

        def scraped() -> bool:
            assert prom_proc.poll() is None, "prometheus exited"
            return len(prom.query(top_panel)) == len(drift["fields"])

        wait_for(scraped, 30, "the learner registry scraped", diagnose, 0.2)
        # One series per field, labelled by its name, with the snapshot's value.
        top = prom.by_label(top_panel, "feature")
        assert set(top) == set(drift["fields"]), top
        for field, value in drift["fields"].items():
            assert top[field] == pytest.approx(value, rel=1e-9), (field, top)
        assert max(top, key=top.__getitem__) in {"amount", "country"}
        psi_max = substitute(targets[("mnemo-drift", "PSI, max over features", "A")])
        level = substitute(targets[("mnemo-drift", "PSI, max over features", "B")])
        assert prom.value(psi_max) == pytest.approx(drift["psi_max"], rel=1e-9)
        assert prom.value(level) == pytest.approx(drift["psi_threshold"], rel=1e-9)
        alarms = substitute(targets[("mnemo-drift", "Drift alarms", "A")])
        assert prom.by_label(alarms, "statistic")["psi"] == 1
