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
from service.api.schemas import GoldenRequest, PurgeRequestBody
from service.api.validation import check_count, check_label, to_matrix
from service.store.codec import vector_to_bytes
from service.store.registry import VersionNotFound, VersionRejected

router = APIRouter(dependencies=[Depends(require_admin_token)], tags=["admin"])


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
    """Labelled items the gate trusts: a candidate that gets worse on them is rejected."""
    settings = ctx.settings
    check_count(len(body.items), settings, ("items",))
    labels = [check_label(it.label, settings, ("items", i, "label"))
              for i, it in enumerate(body.items)]
    x = to_matrix([it.inputs for it in body.items], settings.input_dim,
                  [("items", i, "inputs") for i in range(len(body.items))])
    size = await ctx.golden.add(
        [(vector_to_bytes(row), label, it.tag or "")
         for row, label, it in zip(x, labels, body.items, strict=True)]
    )
    return {"added": len(body.items), "size": size}


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


@router.post("/v1/data/purge", responses={202: {"description": "the learner has not finished yet"}})
async def purge(body: PurgeRequestBody, ctx: Ctx) -> JSONResponse:
    """Delete raw inputs by tag, or all of them, from every place they live (DESIGN §5): the
    prediction log here, the stream, replay buffer and holdout by the learner (their single
    writer), the golden set only when named. 200 once done; 202 with the id to poll if the
    learner has not finished within a few seconds (e.g. it is not running)."""
    if (body.tag is None) == (not body.all):
        raise invalid((), "give exactly one of tag or all: true")
    predictions = await ctx.predictions.purge(body.tag)
    golden = await ctx.golden.purge(body.tag) if body.golden else 0
    purge_id = await ctx.control.request_purge(body.tag)
    deadline = time.monotonic() + PURGE_WAIT_SECONDS
    status = await ctx.control.purge_status(purge_id)
    while status and status["status"] != "done" and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        status = await ctx.control.purge_status(purge_id)
    assert status is not None
    removed = {"predictions": predictions, "golden": golden, **(status["removed"] or {})}
    return JSONResponse({**status, "removed": removed},
                        status_code=200 if status["status"] == "done" else 202)


@router.get("/v1/data/purge/{purge_id}")
async def purge_status(purge_id: str, ctx: Ctx) -> dict[str, Any]:
    status = await ctx.control.purge_status(purge_id)
    if status is None:
        raise HTTPException(404, f"no purge {purge_id!r} (finished ones are kept 7 days)")
    return status
