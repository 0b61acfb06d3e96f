"""models/bench_learner.py: one row per device, size, chunk and precision (tiny run; the
figures are in BENCHMARKS.md)."""

from __future__ import annotations

import argparse

import pytest

from models.bench_learner import _precisions, markdown, run


def test_bench_measures_each_precision_and_tables_it() -> None:
    rows = run(["cpu"], ["small"], [32], 0.05, ["fp32", "bf16"])
    assert [(r.device, r.precision, r.size, r.chunk) for r in rows] == [
        ("cpu", "fp32", "small", 32), ("cpu", "bf16", "small", 32)]
    assert all(r.items_per_s > 0 and r.ms_per_learn_many > 0 for r in rows)
    table = markdown(rows).splitlines()
    assert table[0].startswith("| device | precision | model |")
    assert table[3].startswith("| cpu | bf16 | small 64→128→128→10 | 32 |")


def test_cpu_defaults_to_fp32_only() -> None:
    rows = run(["cpu"], ["small"], [32], 0.02)
    assert [r.precision for r in rows] == ["fp32"]


def test_precision_list_is_checked() -> None:
    assert _precisions("fp32, bf16") == ["fp32", "bf16"]
    with pytest.raises(argparse.ArgumentTypeError, match="fp16"):
        _precisions("fp32,fp16")
