"""What one learner got on one scenario, as figures: prequential accuracy per phase (and over
its last labels), final accuracy and forgetting per task, best peer per figure. Pure
arithmetic, no processes: the HTTP driver and the River peers both fill a `Run`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

LAST = 300  # "last N labels of each phase"


@dataclass
class Run:
    """A learner's answers on one scenario: right/wrong per label in stream order, and test
    accuracy at each phase end (matrix[j][i]: test set i after phase j)."""

    correct: list[bool] = field(default_factory=list)
    matrix: list[list[float]] = field(default_factory=list)
    overall: float | None = None  # the scenario's all-tasks test set, at the end
    seconds: float = 0.0


def mean(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def phase_bounds(lengths: Sequence[int]) -> list[tuple[int, int]]:
    """[start, end) of each phase in the stream."""
    bounds, start = [], 0
    for n in lengths:
        bounds.append((start, start + n))
        start += n
    return bounds


def per_phase(correct: Sequence[bool], lengths: Sequence[int], last: int = LAST,
              ) -> list[dict[str, float | None]]:
    """Prequential accuracy of each phase, and over its last `last` labels."""
    if len(correct) != sum(lengths):
        raise ValueError(f"{len(correct)} answers for a stream of {sum(lengths)} labels")
    return [{"preq": mean(correct[a:b]), f"last{last}": mean(correct[max(a, b - last):b])}
            for a, b in phase_bounds(lengths)]


def forgetting(matrix: Sequence[Sequence[float]]) -> list[float | None]:
    """Per task i (taught by phase i): its best accuracy at the end of phases i .. T-2 minus its
    accuracy at the end (T phases); None for the last task, which nothing came after."""
    if not matrix:
        return []
    final, out = matrix[-1], []
    for i in range(len(final)):
        earlier = [matrix[j][i] for j in range(i, len(matrix) - 1)]
        out.append(max(earlier) - final[i] if earlier else None)
    return out


def summarize(run: Run, phase_names: Sequence[str], lengths: Sequence[int],
              task_names: Sequence[str], first: int | None = None) -> dict[str, Any]:
    """The figures of one run, JSON-ready."""
    final = list(run.matrix[-1]) if run.matrix else []
    out: dict[str, Any] = {
        "phases": dict(zip(phase_names, per_phase(run.correct, lengths), strict=True)),
        "preq_all": mean(run.correct),
        "final": dict(zip(task_names, final, strict=True)),
        "forgetting": dict(zip(task_names, forgetting(run.matrix), strict=True)),
        "final_avg": sum(final) / len(final) if final else None,
        "matrix": [list(row) for row in run.matrix],
        "seconds": round(run.seconds, 1),
    }
    if first is not None:
        out[f"first{first}"] = mean(run.correct[:first])
    if run.overall is not None:
        out["overall"] = run.overall
    return out


def best(values: dict[str, float | None], higher: bool = True) -> tuple[str, float] | None:
    """The best (name, value) among the known values; None when there is none."""
    known = {k: v for k, v in values.items() if v is not None}
    if not known:
        return None
    name = (max if higher else min)(known, key=lambda k: known[k])
    return name, known[name]
