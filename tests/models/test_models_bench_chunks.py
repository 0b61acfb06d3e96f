"""models/bench_chunks.py runs and measures what it says (small sizes; the figures are in
BENCHMARKS.md)."""

from __future__ import annotations

from models.bench_chunks import run


def test_chunk_pattern_benchmark_learns_and_reports_every_hundred_steps() -> None:
    warm, trace = run(warm_chunk=32, pattern=[32, 4], warm_samples=3200, steps=200)
    assert len(trace) == 2
    assert warm > 0.3  # 100 steps of a learnable 10-class concept: far above chance (0.1)
    assert all(0.0 <= a <= 1.0 for a in trace)
