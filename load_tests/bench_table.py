"""The table `make bench-serve` prints and writes to BENCHMARKS.md: one row per figure of the
phases that ran (load_tests/bench_serve.py measures them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def save(table: str, results: dict[str, Any], markdown_path: str | None,
         json_path: str | None) -> None:
    """Write a load-test benchmark's table and raw results where its options say."""
    for path, text in ((markdown_path, table), (json_path, json.dumps(results, indent=2))):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text + "\n")


def markdown(r: dict[str, Any]) -> str:
    """The table, with the rows of the phases that ran."""
    rows = ["| measure | value | target |", "| --- | --- | --- |"]
    if "capacity_rps" in r:
        c, us = r["capacity_rps"], r["server_cpu_us"]
        rows += [
            f"| floor (bare FastAPI + pydantic, uvicorn defaults), 1 row | {c['floor']:.0f} "
            f"req/s; server CPU {us['floor']:.0f} µs/request | |",
            f"| floor on Mnemo's server settings (no OTel check, one send per response, frozen "
            f"start-up objects) | {c['floor_tuned']:.0f} req/s; {us['floor_tuned']:.0f} "
            "µs/request | |",
            f"| Mnemo predict, 1 row | {c['mnemo_1']:.0f} req/s = **{r['ratio_vs_floor']:.2f}× "
            f"the floor** ({r['ratio_vs_floor_tuned']:.2f}× the floor on Mnemo's settings); "
            f"server CPU {us['mnemo_1']:.0f} µs/request = **{r['cpu_ratio_vs_floor']:.2f}×** "
            "the floor's requests per CPU-second | ≥ 0.7× |",
            f"| Mnemo predict, 16 rows | {c['mnemo_16']:.0f} req/s = {16 * c['mnemo_16']:.0f} "
            f"rows/s = **{r['rows_ratio_16_vs_1']:.1f}×** the 1-row rows/s | ≥ 8× |",
        ]
    if "half_load" in r:
        q, s = r["half_load"]["quiet"], r["half_load"]["swapping"]
        a = r["half_load"]["admin_route"]
        qq, qs = r["quarter_load"]["quiet"], r["quarter_load"]["swapping"]
        rows += [
            f"| p99 at half the median capacity ({q['offered_rate']:.0f}/s, open loop) | "
            f"**{q['p99_ms']:.1f} ms** (p50 {q['p50_ms']:.1f}, p99.9 {q['p99.9_ms']:.1f}, "
            f"max {q['max_ms']:.1f}) | ≤ 10 ms |",
            f"| same load, a new version every second ({r['half_load']['swaps']:.0f} swaps) | "
            f"p99 **{s['p99_ms']:.1f} ms** = {s['p99_ms'] / q['p99_ms']:.2f}× quiet; "
            f"errors **{s['errors']:.0f}** | ≤ 1.5×, 0 errors |",
            f"| same load, activated through the admin route instead | p99 {a['p99_ms']:.1f} ms "
            f"= {a['p99_ms'] / q['p99_ms']:.2f}× quiet; errors {a['errors']:.0f} | |",
            f"| at a quarter of capacity ({qq['offered_rate']:.0f}/s): p99 quiet / with a "
            f"version a second | {qq['p99_ms']:.1f} ms / {qs['p99_ms']:.1f} ms = "
            f"**{qs['p99_ms'] / qq['p99_ms']:.2f}×**; errors **{qs['errors']:.0f}** | "
            "≤ 1.5×, 0 errors |",
        ]
    if "capacity_rounds" in r:
        per_round = ", ".join(f"{a / b:.2f}" for a, b in zip(r["capacity_rounds"]["mnemo_1"],
                                                              r["capacity_rounds"]["floor"],
                                                              strict=True))
        rows.append(f"| Mnemo / floor, per round (same round, side by side) | {per_round} | |")
    if "feedback_items_per_s" in r:
        rows.append(f"| feedback ingestion, batches of 100 | **{r['feedback_items_per_s']:.0f} "
                    f"items/s** ({r['feedback_errors']} errors) | ≥ 20,000 |")
    if "learner" in r:
        lr = r["learner"]
        rows.append(f"| learner end to end (backlog {lr['backlog']}) | **{lr['items_per_s']:.0f} "
                    f"items/s** ({lr['processed']} in {lr['seconds']} s"
                    f"{'' if lr['caught_up'] else ', not caught up'}; "
                    f"{lr['items_per_cpu_s'] or float('nan'):.0f} per learner CPU-second) | ≥ 10,000 |")
    if "records" in r:
        rows += _record_rows(r["records"])
    if "freshness" in r:
        rows.append(f"| freshness p95 (accepted → served) at 1,000 items/s | "
                    f"**≤ {r['freshness']['p95_bound_s']} s** (histogram bucket; "
                    f"{r['freshness']['swaps']} swaps) | ≤ 5 s |")
    return "\n".join(rows)


def _record_rows(rec: dict[str, Any]) -> list[str]:
    """Phase 6: the record server against the vector server, each ratio records' cost over
    vectors' (above 1: records cost more)."""
    c, us, lat = rec["capacity_rps"], rec["server_cpu_us"], rec["latency"]
    rows = []
    for n in (1, 16):
        rv, vv = c[f"records_{n}"], c[f"vectors_{n}"]
        ru, vu = us[f"records_{n}"], us[f"vectors_{n}"]
        rows.append(
            f"| predict, a {rec['fields']}-field record against the same model on its "
            f"{rec['width']}-number vector, {n} row{'s' if n > 1 else ''} per request | "
            f"{rv:.0f} / {vv:.0f} req/s: vectors **{vv / rv:.2f}×** the records' throughput; "
            f"server CPU {ru:.0f} / {vu:.0f} µs/request = {ru / vu:.2f}× | ≤ 1.3× |")
    q, v = lat["records"], lat["vectors"]
    rows.append(
        f"| same, latency at {v['offered_rate']:.0f}/s (open loop, half the vector's capacity), "
        f"records / vectors | p50 {q['p50_ms']:.2f} / {v['p50_ms']:.2f} ms = "
        f"**{q['p50_ms'] / v['p50_ms']:.2f}×**; p99 {q['p99_ms']:.1f} / {v['p99_ms']:.1f} ms "
        f"= **{q['p99_ms'] / v['p99_ms']:.2f}×**; errors {q['errors']:.0f} / {v['errors']:.0f} "
        "| ≤ 1.3× |")
    return rows
