"""GET /v1/stats: the learner's state; fields nothing computes yet are null, never invented."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.api.deps import Ctx

router = APIRouter()

_LEARNER_FIELDS = ("prequential_accuracy", "balanced_accuracy", "classes", "tags")
_DRIFT_FIELDS = ("psi_max", "prediction_js", "label_js", "concept_drift_events")


@router.get("/v1/stats")
async def stats(ctx: Ctx) -> dict[str, Any]:
    learner, accepted, processed, reservoir = await ctx.stats.read()
    pointer = await ctx.registry.current()
    drift = learner.get("drift") or {}
    return {
        "model_version": pointer.version if pointer else None,
        "samples_seen": processed,
        "feedback_lag": max(0, accepted - processed),
        "reservoir_size": reservoir,
        **{name: learner.get(name) for name in _LEARNER_FIELDS},
        "drift": {name: drift.get(name) for name in _DRIFT_FIELDS},
        "learning": learner.get("learning"),
    }
