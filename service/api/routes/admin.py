"""Admin routes: need MNEMO_ADMIN_TOKEN (403 while it is unset, 401 with a wrong one)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException

from service.api.auth import require_admin_token
from service.api.deps import Ctx
from service.api.schemas import GoldenRequest
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
