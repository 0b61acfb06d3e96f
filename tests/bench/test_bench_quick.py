"""`bench --quick` end to end on split digits: files, table columns, and the classic result
that replay beats fine-tuning class-incrementally by a wide margin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.bench import main
from service.bench.report import COLUMNS, END, START, splice


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    assert main(["--quick", "--scenarios", "split", "--buffers", "200", "--out", str(out)]) == 0
    return out


def test_quick_run_writes_table_results_and_plots(quick_run: Path) -> None:
    table = (quick_run / "results.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| scenario"))
    assert [c.strip() for c in header.strip("|").split("|")] == list(COLUMNS)
    assert "van de Ven" in table
    for setting in ("split (class)", "split (task)"):
        assert f"| {setting} | naive | reservoir 200 |" in table
        assert f"| {setting} | replay | reservoir 200 |" in table
        assert f"| {setting} | joint (1 seeds) |" in table
    pngs = {p.name for p in quick_run.glob("*.png")}
    assert {"split_class_accuracy_over_time.png", "split_task_accuracy_over_time.png"} <= pngs


def test_replay_beats_naive_class_incrementally(quick_run: Path) -> None:
    runs = json.loads((quick_run / "results.json").read_text())["runs"]
    acc = {(r["strategy"], s): v["final_acc"] for r in runs for s, v in r["settings"].items()}
    assert acc[("naive", "class")] < 0.3  # catastrophic forgetting: ≈ only the last task
    assert acc[("replay", "class")] > acc[("naive", "class")] + 0.5
    assert acc[("replay", "task")] >= acc[("naive", "task")]
    assert acc[("joint", "class")] > 0.9
    naive = next(r for r in runs if r["strategy"] == "naive")
    assert naive["settings"]["class"]["forgetting"] > 0.8
    assert naive["samples_per_s"] > 0 and naive["state_mib"] > 0
    assert len(naive["settings"]["class"]["matrix"]) == 5


def test_rerender_rewrites_the_same_tables_from_results_json(quick_run: Path) -> None:
    table = (quick_run / "results.md").read_text()
    (quick_run / "results.md").unlink()
    assert main(["--rerender", "--no-plots", "--out", str(quick_run)]) == 0
    assert (quick_run / "results.md").read_text() == table


def test_splice_replaces_its_own_section_only(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nhand-written text\n")
    splice(path, "table one")
    splice(path, "table two")
    text = path.read_text()
    assert "hand-written text" in text and "table two" in text and "table one" not in text
    assert text.count(START) == text.count(END) == 1
