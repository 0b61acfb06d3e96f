"""GET /v1/stats: the learner's state; fields nothing computes yet are null, never invented."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.api.deps import Ctx

router = APIRouter()

_LEARNER_FIELDS = ("prequential_accuracy", "balanced_accuracy", "classes", "tags")
_DRIFT_FIELDS = (
    "psi_max", "prediction_js", "label_js", "concept_drift_events",
    "psi_threshold", "prediction_js_threshold", "label_js_threshold", "alarms",
)


@router.get("/v1/stats")
async def stats(ctx: Ctx) -> dict[str, Any]:
    snapshot = await ctx.stats.read()
    learner = snapshot.learner
    pointer = await ctx.registry.current()
    drift = learner.get("drift") or {}
    return {
        "model_version": pointer.version if pointer else None,
        "samples_seen": snapshot.processed,
        "feedback_lag": snapshot.lag,
        "reservoir_size": snapshot.reservoir,
        **{name: learner.get(name) for name in _LEARNER_FIELDS},
        "drift": {name: drift.get(name) for name in _DRIFT_FIELDS},
        # The operator's switch is the truth even before the learner has noticed it.
        "learning": "paused" if snapshot.paused else learner.get("learning"),
    }
