"""`make bench-models` (load_tests/bench_models.py): its models file is one the service
accepts, its table, and a small run of the real thing (2 models, a few hundred labels, a
second of predict) so that the script cannot rot."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from load_tests import bench_models
from service.catalog import load_models
from service.config import load_settings


def test_the_models_file_is_one_the_service_loads(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(bench_models.models_yaml(bench_models.model_names(3)))
    models = load_models(load_settings({"MNEMO_MODELS": str(path)}))
    assert [m.model_name for m in models] == ["m000", "m001", "m002"]
    assert all(m.input_dim == 4 and m.labels == ["a", "b", "c"] for m in models)
    # Nothing else set: the service's defaults.
    defaults = load_settings({})
    assert all(m.strategy == defaults.strategy and m.buffer_size == defaults.buffer_size
               for m in models)


def test_each_model_gets_the_fill_or_its_share_of_the_backlog_in_whole_batches() -> None:
    assert bench_models.items_per_model(1, 1200, 30_000) == 30_000
    assert bench_models.items_per_model(10, 1200, 30_000) == 3_000
    assert bench_models.items_per_model(100, 1200, 30_000) == 1_200
    assert bench_models.items_per_model(7, 150, 1_000) == 200  # 143 → whole batches of 100


def test_counts_parse() -> None:
    assert bench_models._counts("1,10,100") == [1, 10, 100]
    for bad in ("", "0", "a,1"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench_models._counts(bad)


def test_a_process_that_exits_or_runs_out_of_connections_fails_the_start(tmp_path: Path) -> None:
    logs = {"serve": tmp_path / "serve.log", "learn": tmp_path / "learn.log"}
    for log in logs.values():
        log.write_text("starting\n")
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    exited = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    exited.wait()
    try:
        with httpx.Client(base_url="http://127.0.0.1:9") as http:
            models = bench_models.Models(http, ["m000"])
            with pytest.raises(bench_models.DeploymentFailed, match=r"`serve` exited \(3\)"):
                bench_models._wait_up({"serve": exited, "learn": alive}, logs,
                                      "http://127.0.0.1:9", models, 5)
            logs["learn"].write_text("... redis unavailable (Too many connections); retrying\n")
            with pytest.raises(bench_models.DeploymentFailed,
                               match="`learn`: its Redis connection pool ran out"):
                bench_models._wait_up({"learn": alive}, logs, "http://127.0.0.1:9", models, 5)
    finally:
        alive.kill()
        alive.wait()


def test_a_count_that_fails_at_the_defaults_is_said_and_measured_with_a_larger_pool(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pools: list[int | None] = []

    def measure(count: int, _args: argparse.Namespace, _workdir: Path,
                max_connections: int | None) -> dict[str, Any]:
        pools.append(max_connections)
        if max_connections is None:
            raise bench_models.DeploymentFailed("`serve`: its Redis connection pool ran out")
        return {"models": count, "max_connections": max_connections}

    monkeypatch.setattr(bench_models, "_measure", measure)
    retried = bench_models.measure(100, argparse.Namespace(retry_pool=True), tmp_path)
    assert pools == [None, bench_models.pool_size(100)]
    assert retried == {"models": 100, "max_connections": 500,
                       "defaults_failed": "`serve`: its Redis connection pool ran out"}
    assert bench_models.measure(100, argparse.Namespace(retry_pool=False), tmp_path) == {
        "models": 100, "defaults_failed": "`serve`: its Redis connection pool ran out"}


def _column(models: int, **extra: Any) -> dict[str, Any]:
    mib = 1024 * 1024
    return {
        "models": models, "max_connections": None, "api_rss_idle": 275 * mib,
        "api_rss_after": (275 + models) * mib, "learner_rss_idle": 330 * mib,
        "learner_rss_trained": (330 + 3 * models) * mib, "api_cpu_idle": 0.01,
        "learner_cpu_idle": 0.02, "redis_cpu_idle": 0.0, "redis_clients_idle": 6,
        "redis_clients_after": 20, "redis_start": 100 * 1024 * models,
        "redis_filled": 1000 * 1024 * models, "redis_keys_start": 76 * 1024,
        "rehearsal_seconds": 2.0, "pool_exhausted": {"serve": 0, "learn": 0},
        "feedback": {"items": 30_000, "per_model": 30_000 // models, "errors": 0,
                     "items_per_s": 50_000.0},
        "learner": {"backlog": 30_000, "processed": 30_000, "seconds": 3.0,
                    "items_per_s": 10_000.0, "caught_up": True, "cpu_seconds": 2.5,
                    "items_per_cpu_s": 12_000.0},
        "fill": {"reservoir_min": 1000, "reservoir_mean": 1000.0, "keys_bytes": 900 * 1024,
                 "version_blobs_bytes": 855 * 1024, "versions_with_blobs": 3.0,
                 "version_bytes": 285 * 1024},
        "predict": {"requests_per_s": 4000.0, "ok": 40_000, "errors": 0, "p50_ms": 3.0,
                    "api_cpu_us": 200.0, "cpu_shares": {"api": 0.8, "learner": 0.05,
                                                        "redis": 0.1, "generator": 0.3}},
        **extra,
    }


def test_the_table_has_a_column_per_count_and_says_how_each_was_started() -> None:
    table = bench_models.markdown({"counts": [
        _column(1),
        _column(100, max_connections=500, defaults_failed="`serve`: pool ran out"),
        {"models": 1000, "defaults_failed": "`serve` exited (1)"},
    ]}).splitlines()
    assert table[0] == "| measure | 1 model | 100 models | 1000 models |"
    body = table[2:2 + len(bench_models.ROWS)]
    assert [line.split(" | ")[0] for line in body] == [f"| {row}" for row in bench_models.ROWS]
    rows = dict(zip(bench_models.ROWS, body, strict=True))
    started = rows["started with"]
    assert "| defaults |" in started and "`?max_connections=500`" in started
    assert "did not come up: `serve` exited (1)" in started
    assert "4,000 (200 µs = 5,000 per API CPU-second; 0 errors)" in body[5]
    assert "10,000 (12,000; 30,000 items); then 2 s" in body[8]
    assert "76 / 900 (3.0 × 285 in versions' blobs)" in body[11]
    # Every row as wide as the header; the column not measured is dashes.
    assert all(line.count(" | ") == table[0].count(" | ") for line in body)
    assert all(line.endswith(" | — |") for line in body[1:])
    assert table[-1] == ("Each model added (1 → 100 models): API process +0.00 MiB idle, "
                         "+1.00 MiB after traffic; learner +0.00 MiB idle, +3.00 MiB trained.")


def test_a_small_run_measures_every_figure_and_splices_its_table(tmp_path: Path) -> None:
    benchmarks = tmp_path / "BENCHMARKS.md"
    benchmarks.write_text("# Benchmarks\n")
    out = tmp_path / "models.json"
    assert bench_models.main([
        "--counts", "2", "--seconds", "1", "--items", "400", "--fill", "200", "--settle", "0.2",
        "--idle-seconds", "0.5", "--learner-timeout", "120", "--start-timeout", "120",
        "--logs", str(tmp_path / "logs"), "--json", str(out), "--benchmarks", str(benchmarks),
    ]) == 0
    (r,) = json.loads(out.read_text())["counts"]
    assert r["models"] == 2 and r["max_connections"] is None  # the defaults
    assert r["feedback"] == {**r["feedback"], "items": 400, "per_model": 200, "errors": 0}
    learner = r["learner"]
    assert learner["caught_up"] and learner["processed"] == learner["backlog"] > 0
    assert learner["items_per_s"] > 0 and learner["items_per_cpu_s"] > 0
    assert r["fill"]["reservoir_min"] > 0 and r["fill"]["versions_with_blobs"] >= 1
    assert r["fill"]["keys_bytes"] > r["redis_keys_start"] > 0
    assert r["predict"]["ok"] > 0 and r["predict"]["errors"] == 0
    assert r["predict"]["api_cpu_us"] > 0
    assert r["api_rss_after"] > 50 * 1024 * 1024 and r["learner_rss_trained"] > 50 * 1024 * 1024
    assert r["pool_exhausted"] == {"serve": 0, "learn": 0}
    text = benchmarks.read_text()
    assert bench_models.HEADING in text and bench_models.START in text
    assert "| measure | 2 models |" in text
