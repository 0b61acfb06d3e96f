"""The golden-set baseline a candidate is gated against: the best golden-set accuracy of the
served lineage, not just of the version it replaces. Gating against the replaced version only
lets a patient attacker poison step by step, each step within the tolerance; against the
lineage's best, the drop is bounded by the tolerance in total. Carried in every version's
eval (so restarts and activations pick it up), and reset when the golden set changes."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class GoldenBaseline:
    fingerprint: str  # of the golden set the accuracy was measured on
    accuracy: float

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> GoldenBaseline | None:
        evaluation = meta.get("eval") or {}
        if "golden_best" not in evaluation:
            return None
        return cls(str(evaluation["golden_fingerprint"]), float(evaluation["golden_best"]))

    def floor_for(self, fingerprint: str) -> float | None:
        """The accuracy to gate against, if measured on this same golden set."""
        return self.accuracy if fingerprint == self.fingerprint else None

    def record(self, evaluation: dict[str, Any]) -> None:
        evaluation["golden_best"] = round(self.accuracy, 4)
        evaluation["golden_fingerprint"] = self.fingerprint


def fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    """Identifies a golden set's content (inputs and class indices)."""
    return format(zlib.crc32(y.astype("<i8").tobytes(), zlib.crc32(x.astype("<f4").tobytes())),
                  "08x")


def advance(previous: GoldenBaseline | None, fp: str, evaluation: dict[str, Any],
            passed: bool) -> GoldenBaseline | None:
    """The baseline after a gate: the best of the previous one (same golden set), the served
    version's accuracy and, if it passed, the candidate's."""
    if "golden_accuracy" not in evaluation:  # golden set absent or too small to gate on
        return previous
    scores = [evaluation["golden_served_accuracy"]]
    if passed:
        scores.append(evaluation["golden_accuracy"])
    if previous is not None and previous.fingerprint == fp:
        scores.append(previous.accuracy)
    return GoldenBaseline(fp, max(scores))
