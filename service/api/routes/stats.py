"""GET /v1/stats: the learner's state; fields nothing computes yet are null, never invented.
GET /v1/stats/history: the same statistics over time (the live page's and report's data)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from service.api.deps import Ctx
from service.store.history import MAX_READ, read_history

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
        "drift": {name: drift.get(name) for name in _DRIFT_FIELDS}
        # Records (MNEMO_FEATURES): PSI per field; vector deployments' drift is unchanged.
        | ({"fields": drift.get("fields")} if "fields" in drift else {}),
        # The operator's switch is the truth even before the learner has noticed it.
        "learning": "paused" if snapshot.paused else learner.get("learning"),
        "prediction_log": _prediction_log(ctx),
    }


def _prediction_log(ctx: Ctx) -> dict[str, Any]:
    """This process's view of the log's budget (re-read about once a second): predicts are
    shed (429) while bytes >= budget_bytes."""
    view = ctx.predictions.budget.view()
    return {"bytes": view.bytes, "budget_bytes": view.budget_bytes, "shedding": view.shedding,
            "retry_after_seconds": view.retry_after_seconds if view.shedding else None}


@router.get("/v1/stats/history")
async def stats_history(
    ctx: Ctx, limit: Annotated[int, Query(ge=1, le=MAX_READ, description="newest entries")] = 500,
) -> dict[str, Any]:
    """The learner's history stream, oldest first: an entry per publish and per minute."""
    return {"entries": await read_history(ctx.redis, ctx.keys, limit)}
