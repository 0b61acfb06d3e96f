"""bench_serve --phases: which phase sets are accepted, and the table of a partial run."""

from __future__ import annotations

import argparse
import re

import pytest

from load_tests.bench_serve import parse_phases
from load_tests.bench_table import markdown
from load_tests.open_loop import Report


def test_phases_parse_and_refuse_a_phase_without_what_it_needs() -> None:
    assert parse_phases("2,3") == {2, 3}
    assert parse_phases("1,2,3,4,5") == set(range(1, 6))
    assert parse_phases("4") == {4}
    assert parse_phases("6") == {6}  # records against vectors needs no other phase
    for text, message in (("3", "phase 3 needs phases [2]"), ("1,4,5,2", None),
                          ("5,4", "phase 5 needs phases [1, 4]"), ("0", "numbers 1-6"),
                          ("7", "numbers 1-6"), ("", "numbers 1-6")):
        if message is None:
            assert parse_phases(text) == {1, 2, 4, 5}
            continue
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(message)):
            parse_phases(text)


def test_a_learner_only_run_prints_its_rows_only() -> None:
    table = markdown({
        "model": "m", "feedback_items_per_s": 40000.0, "feedback_errors": 0,
        "learner": {"backlog": 1000, "processed": 1000, "seconds": 0.1, "items_per_s": 10000.0,
                    "caught_up": True, "cpu_seconds": 0.08, "items_per_cpu_s": 12500.0,
                    "drift_events": 0},
    }).splitlines()
    assert len(table) == 4
    assert table[2].startswith("| feedback ingestion") and "40000 items/s" in table[2]
    assert "**10000 items/s** (1000 in 0.1 s; 12500 per learner CPU-second)" in table[3]


def test_windows_pool_into_one_report() -> None:
    a = Report(100.0, 2.0, sent=3, ok=3, statuses={200: 3}, latencies=[0.001, 0.002, 0.003],
               elapsed=2.0)
    b = Report(100.0, 2.0, sent=2, ok=1, errors=1, statuses={200: 1, 503: 1},
               latencies=[0.010, 0.020], elapsed=2.5)
    pooled = Report.merged([a, b])
    assert (pooled.sent, pooled.ok, pooled.errors, pooled.seconds) == (5, 4, 1, 4.0)
    assert pooled.statuses == {200: 4, 503: 1}
    assert pooled.achieved_rate == 4 / 4.5
    assert pooled.summary()["max_ms"] == 20.0
    assert pooled.percentile(50) == 0.003  # over all five latencies, not a mean of medians


def test_the_half_load_rows_compare_pooled_windows() -> None:
    def summary(p99: float, errors: int = 0) -> dict[str, float]:
        return {"offered_rate": 2000.0, "achieved_rate": 2000.0, "ok": 1, "errors": errors,
                "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": p99, "p99.9_ms": 9.0, "max_ms": 12.0}

    table = markdown({
        "half_load": {"quiet": summary(4.0), "swapping": summary(5.0), "swaps": 16,
                      "admin_route": summary(6.0)},
        "quarter_load": {"quiet": summary(2.0), "swapping": summary(2.0, errors=1)},
    })
    assert "| p99 at half the median capacity (2000/s, open loop) | **4.0 ms**" in table
    assert "(16 swaps) | p99 **5.0 ms** = 1.25× quiet; errors **0**" in table
    assert "admin route instead | p99 6.0 ms = 1.50× quiet" in table
    assert "2.0 ms / 2.0 ms = **1.00×**; errors **1**" in table


def test_the_record_rows_give_each_ratio_as_records_over_vectors() -> None:
    def summary(p50: float, p99: float) -> dict[str, float]:
        return {"offered_rate": 1500.0, "achieved_rate": 1500.0, "ok": 1, "errors": 0,
                "p50_ms": p50, "p95_ms": p99, "p99_ms": p99, "p99.9_ms": p99, "max_ms": p99}

    table = markdown({"records": {
        "fields": 10, "width": 89,
        "capacity_rps": {"records_1": 2000.0, "vectors_1": 2400.0, "records_16": 1000.0,
                         "vectors_16": 1100.0},
        "server_cpu_us": {"records_1": 300.0, "vectors_1": 250.0, "records_16": 600.0,
                          "vectors_16": 500.0},
        "latency": {"records": summary(1.2, 6.0), "vectors": summary(1.0, 5.0)},
    }}).splitlines()
    assert len(table) == 5
    assert "10-field record against the same model on its 89-number vector, 1 row per" in table[2]
    assert "2000 / 2400 req/s: vectors **1.20×** the records' throughput" in table[2]
    assert "server CPU 300 / 250 µs/request = 1.20×" in table[2]
    assert "16 rows per request | 1000 / 1100 req/s: vectors **1.10×**" in table[3]
    assert "p50 1.20 / 1.00 ms = **1.20×**; p99 6.0 / 5.0 ms = **1.20×**" in table[4]
