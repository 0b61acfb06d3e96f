"""bench_serve --phases: which phase sets are accepted, and the table of a partial run."""

from __future__ import annotations

import argparse
import re

import pytest

from load_tests.bench_serve import markdown, parse_phases


def test_phases_parse_and_refuse_a_phase_without_what_it_needs() -> None:
    assert parse_phases("2,3") == {2, 3}
    assert parse_phases("1,2,3,4,5") == set(range(1, 6))
    assert parse_phases("4") == {4}
    for text, message in (("3", "phase 3 needs phases [2]"), ("1,4,5,2", None),
                          ("5,4", "phase 5 needs phases [1, 4]"), ("0", "numbers 1-5"),
                          ("", "numbers 1-5")):
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
