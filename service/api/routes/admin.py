"""Admin routes: need MNEMO_ADMIN_TOKEN (403 while it is unset, 401 with a wrong one)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import JSONResponse

from service.api.auth import require_admin_token
from service.api.deps import Ctx
from service.api.errors import invalid
from service.api.lean_route import StrictJsonRoute
from service.api.schemas import GoldenRequest, PurgeRequestBody
from service.api.unavailable import RETRY_AFTER_SECONDS, what_to_assume
from service.api.validation import check_count, check_label, to_inputs
from service.records import stored_form
from service.store.connection import UNAVAILABLE
from service.store.control import PurgeRequest, new_purge_id
from service.store.purge import purge_served_inputs
from service.store.registry import VersionNotFound, VersionRejected

# Strict JSON bodies (lean_route.StrictJsonRoute): no NaN, no lone surrogates (a label that
# could not be written to Redis), json_invalid for any malformed body.
router = APIRouter(route_class=StrictJsonRoute, dependencies=[Depends(require_admin_token)],
                   tags=["admin"])


@router.post(
    "/v1/versions/{version}/activate",
    responses={409: {"description": "the version was rejected by the gate"}},
)
async def activate(version: int, ctx: Ctx) -> dict[str, int]:
    try:
        epoch = await ctx.registry.activate(version)
    except VersionNotFound:
        raise HTTPException(404, f"version {version} does not exist (or its blobs were deleted)") from None
    except VersionRejected:
        raise HTTPException(409, f"version {version} was rejected by the gate and cannot be activated") from None
    return {"current": version, "epoch": epoch}




@router.post("/v1/golden", status_code=201)
async def add_golden(body: GoldenRequest, ctx: Ctx) -> dict[str, int]:
    """Labelled items the gate trusts: a candidate that gets worse on them is rejected. An
    item already in the set is not added again (`added` counts the new ones), so retrying a
    request whose answer was lost is safe."""
    settings = ctx.settings
    check_count(len(body.items), settings, ("items",))
    labels = [check_label(it.label, settings, ("items", i, "label"))
              for i, it in enumerate(body.items)]
    inputs = to_inputs([it.inputs for it in body.items], settings,
                       [("items", i, "inputs") for i in range(len(body.items))])
    added, size = await ctx.golden.add(
        [(stored, label, it.tag or "")
         for stored, label, it in zip(stored_form(inputs), labels, body.items, strict=True)]
    )
    return {"added": added, "size": size}


@router.post("/v1/learning/pause")
async def pause_learning(ctx: Ctx) -> dict[str, str]:
    """Feedback keeps being accepted (up to MNEMO_MAX_LAG); nothing is trained or published."""
    await ctx.control.set_paused(True)
    return {"learning": "paused"}


@router.post("/v1/learning/resume")
async def resume_learning(ctx: Ctx) -> dict[str, str]:
    await ctx.control.set_paused(False)
    return {"learning": "running"}


PURGE_WAIT_SECONDS = 10.0


@router.post("/v1/data/purge", responses={
    202: {"description": "the learner has not finished yet"},
    503: {"description": "Redis unavailable: either nothing was recorded or deleted, or the "
                         "purge is recorded (its purge_id is given) and will be finished"},
})
async def purge(body: PurgeRequestBody, ctx: Ctx) -> JSONResponse:
    """Delete raw inputs by tag, or all of them, from every place they live (docs/DESIGN.md §5): the
    prediction log here, the stream, replay buffer and holdout by the learner (their single
    writer), the golden set only when named. The purge is recorded first, so one that Redis
    interrupts is finished by the learner, never left half done. 200 once done; 202 with the
    id to poll if the learner has not finished within a few seconds, or at once when no
    learner is running."""
    if (body.tag is None) == (not body.all):
        raise invalid((), "give exactly one of tag or all: true")
    request = PurgeRequest(new_purge_id(), body.tag, body.golden)
    try:
        await ctx.control.request_purge(request)
    except UNAVAILABLE as exc:
        return _purge_unavailable(request.purge_id, f"{what_to_assume(exc, write=True)}; nothing "
                                  "was deleted (a timed-out request may still have been "
                                  "recorded: see the purge id)")
    try:
        served = await purge_served_inputs(ctx.predictions, ctx.golden, request)
        await ctx.control.served_part_done(request.purge_id, served)
    except UNAVAILABLE as exc:
        return _purge_unavailable(request.purge_id, f"{what_to_assume(exc, write=True)}; the purge "
                                  "is recorded and the learner finishes it once Redis is back")
    # Wait for the learner's part only while a learner holds the lease: with none running,
    # nobody finishes it within the wait, so say 202 at once.
    learner_up = bool(await ctx.redis.exists(ctx.keys.lease))
    deadline = time.monotonic() + (PURGE_WAIT_SECONDS if learner_up else 0.0)
    status = await ctx.control.purge_status(request.purge_id)
    while status and status["status"] != "done" and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        status = await ctx.control.purge_status(request.purge_id)
    assert status is not None
    return JSONResponse(status, status_code=200 if status["status"] == "done" else 202)


def _purge_unavailable(purge_id: str, message: str) -> JSONResponse:
    return JSONResponse({"detail": message, "purge_id": purge_id}, status_code=503,
                        headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


@router.get("/v1/data/purge/{purge_id}")
async def purge_status(purge_id: str, ctx: Ctx) -> dict[str, Any]:
    status = await ctx.control.purge_status(purge_id)
    if status is None:
        raise HTTPException(404, f"no purge {purge_id!r} (finished ones are kept 7 days)")
    return status
