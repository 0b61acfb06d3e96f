"""The markdown `make bench-e2e` prints and splices into BENCHMARKS.md: one table per scenario,
a row per figure, Mnemo's served column beside each River peer and the best peer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from load_tests.learning_scores import LAST, best

START, END = "<!-- mnemo-bench-e2e:start -->", "<!-- mnemo-bench-e2e:end -->"
HEADING = "## Learning through the service (`make bench-e2e`)"

METHOD = """Each scenario runs against a fresh `python -m service run` (its own data directory, the
embedded server, free loopback ports) with every setting at its default except those the
scenario must declare (listed per table). The stream goes through HTTP as an application sends
it: `POST /v1/predict` with {rows} rows (and the task's tag where there are tasks), then
`POST /v1/feedback` with the true labels by `prediction_id`, paced to {rate:g} labels/s. Each
answer the service gave is scored against the true label: **served prequential accuracy**,
what users got (a predict answered 409 before any class exists is scored wrong). At each phase
end, once the learner has published or rejected a version that includes every label sent, each
task's test set is predicted through `/v1/predict` with its tag; forgetting = best accuracy on
a task's test set at the end of its own or a later phase (before the last) − final. River
(test-then-train, one label at a time, the same stream in the same order, the same test sets at
the same points): scaled one-vs-rest logistic regression (LR), Hoeffding adaptive tree (HAT),
adaptive random forest (ARF, 10 trees); best peer = the best River model per figure (lowest
forgetting). Versions: `GET /v1/versions` (published = active/archived, learned versions only);
drift events: `GET /v1/stats`. Seed {seed}; commit {commit}; {machine}."""

RECORDS_METHOD = """Scenarios of records declare their fields (`MNEMO_FEATURES`, no `MNEMO_INPUT_DIM`) and
send each row as a JSON record (categorical values as strings, a missing value as null); River
gets the same records as dicts (without the missing values): its trees split on the strings as
nominal values, its LR one-hot-encodes the categorical fields beside the scaled numeric and
boolean ones. Their target: served prequential accuracy of every phase ≥ the best River peer's
on that phase − the margin (the last column: Mnemo − best peer)."""


def _f(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _figure_rows(r: dict[str, Any]) -> list[tuple[str, str, list[str], bool]]:
    """(label, section of the summary, key path, higher is better) of each row."""
    rows: list[tuple[str, str, list[str], bool]] = []
    for phase in r["phases"]:
        rows.append((f"prequential: {phase}", "phases", [phase, "preq"], True))
        rows.append((f"prequential: {phase}, last {LAST}", "phases", [phase, f"last{LAST}"], True))
    if len(r["phases"]) > 1:
        rows.append(("prequential: all labels", "preq_all", [], True))
    if r.get("first"):
        rows.append((f"prequential: first {r['first']} labels", f"first{r['first']}", [], True))
    for task in r["tasks"]:
        rows.append((f"final accuracy: {task}", "final", [task], True))
    for task in r["tasks"][:-1]:
        rows.append((f"forgetting: {task}", "forgetting", [task], False))
    if len(r["tasks"]) > 1:
        rows.append(("final average accuracy", "final_avg", [], True))
    if r.get("overall"):
        rows.append((f"final accuracy: {r['overall']}", "overall", [], True))
    return rows


def _get(summary: dict[str, Any], section: str, path: list[str]) -> float | None:
    value: Any = summary.get(section)
    for key in path:
        value = (value or {}).get(key)
    return value


def _best_cell(peers: dict[str, dict[str, Any]], section: str, path: list[str], higher: bool) -> str:
    found = best({name: _get(s, section, path) for name, s in peers.items()}, higher)
    return "—" if found is None else f"{found[1]:.3f} ({found[0].removeprefix('River ')})"


def _targeted(section: str, path: list[str]) -> bool:
    """Whether a row is one the margin target reads: a phase's prequential accuracy."""
    return section == "phases" and path[1] == "preq"


def versus_best(r: dict[str, Any], section: str, path: list[str]) -> float | None:
    """Mnemo's figure minus the best peer's, to the 3 decimals the table shows (None where
    either is unknown): the target is judged on what the table shows."""
    mnemo = _get(r["mnemo"], section, path)
    found = best({name: _get(s, section, path) for name, s in r["peers"].items()})
    return None if mnemo is None or found is None else round(mnemo - found[1], 3)


def meets(r: dict[str, Any], gap: float) -> bool:
    return gap >= -r["margin"] - 1e-9


def _versus_cell(r: dict[str, Any], section: str, path: list[str]) -> str:
    gap = versus_best(r, section, path) if _targeted(section, path) else None
    if gap is None:
        return ""
    return f"{gap:+.3f} ({'met' if meets(r, gap) else 'short'})"


def scenario_table(r: dict[str, Any]) -> str:
    """One scenario's table with its lines of context; a scenario with a margin target gets a
    last column, Mnemo − best peer on each phase's prequential accuracy."""
    peers, margin = r["peers"], r.get("margin")
    head = ["figure", "Mnemo (served)", *peers, "best peer"]
    if margin is not None:
        head.append(f"Mnemo − best (target ≥ −{margin:g})")
    lines = [_row(head), _row(["---"] * len(head))]
    for label, section, path, higher in _figure_rows(r):
        cells = [_f(_get(r["mnemo"], section, path)),
                 *(_f(_get(s, section, path)) for s in peers.values()),
                 _best_cell(peers, section, path, higher)]
        if margin is not None:
            cells.append(_versus_cell(r, section, path))
        lines.append(_row([label, *cells]))
    footer = _footer(r) if margin is None else f"{_target(r)} {_footer(r)}"
    return "\n".join([f"### {r['scenario']}", "", _context(r), "", *lines, "", footer])


def _target(r: dict[str, Any]) -> str:
    gaps = {phase: versus_best(r, "phases", [phase, "preq"]) for phase in r["phases"]}
    known = {phase: gap for phase, gap in gaps.items() if gap is not None}
    met = sum(meets(r, gap) for gap in known.values())
    worst = min(known, key=lambda phase: known[phase]) if known else None
    tail = f" (lowest: {worst}, {known[worst]:+.3f})" if worst is not None else ""
    return (f"**Target (served prequential ≥ best River − {r['margin']:g} per phase): met in "
            f"{met} of {len(gaps)} phases**{tail}.")


def _context(r: dict[str, Any]) -> str:
    declared = " ".join(f"`{k}={v}`" for k, v in r["settings"].items())
    return (f"{r['about']}. Declared: {declared}; every other setting at its default "
            f"(`{r['defaults']}`).")


def _footer(r: dict[str, Any]) -> str:
    g, s = r["registry"], r["stream"]
    waits = "/".join(f"{w:g}" for w in s["settle_seconds"])
    waits = f"waits for the learner before the test reads {waits} s" if waits else "no test sets"
    peers = ", ".join(f"{name.removeprefix('River ')} {p['seconds']:g} s"
                      for name, p in r["peers"].items())
    return (f"Mnemo: **{g['published']} versions published, {g['rejected']} rejected** (current "
            f"v{g['current']}); **{g['concept_drift_events']} concept drift events**; "
            f"{s['labels']:,} labels at {s['rate']:.0f} labels/s ({s['unpredicted']} predicted "
            f"rows answered 409, no class yet); {waits}. Time: service "
            f"{r['seconds']['service']:g} s (start to stop), River {peers}.")


def markdown(results: dict[str, Any]) -> str:
    """The whole section: method, then a table per scenario."""
    parts = [METHOD.format(**results["run"]), ""]
    if any("MNEMO_FEATURES" in r["settings"] for r in results["scenarios"]):
        parts += [RECORDS_METHOD, ""]
    if results["run"].get("note"):
        parts += [results["run"]["note"], ""]
    for r in results["scenarios"]:
        parts += [scenario_table(r), ""]
    return "\n".join(parts).rstrip() + "\n"
