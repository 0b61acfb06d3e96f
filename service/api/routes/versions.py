"""Version registry reads, weight export and activation (admin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response

from service.api.deps import Ctx
from service.api.schemas import VersionInfo, VersionList
from service.store.registry import VersionNotFound, VersionPruned

router = APIRouter()


@router.get("/v1/versions", response_model=VersionList)
async def list_versions(
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    before: Annotated[str | None, Query(pattern=r"^\d{1,18}$", description="cursor: `next`")] = None,
) -> dict[str, Any]:
    versions, nxt = await ctx.registry.list_versions(limit, int(before) if before else None)
    pointer = await ctx.registry.current()
    return {
        "current": pointer.version if pointer else None,
        "epoch": pointer.epoch if pointer else None,
        "versions": versions,
        "next": str(nxt) if nxt is not None else None,
    }


@router.get("/v1/versions/current", response_model=VersionInfo)
async def current_version(ctx: Ctx) -> dict[str, Any]:
    pointer = await ctx.registry.current()
    if pointer is None:
        raise HTTPException(404, "no version exists yet")
    return await _meta(ctx, pointer.version)


@router.get("/v1/versions/{version}", response_model=VersionInfo)
async def get_version(version: int, ctx: Ctx) -> dict[str, Any]:
    return await _meta(ctx, version)


@router.get(
    "/v1/versions/{version}/weights",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}},
                     "description": "the version's weights as safetensors"},
               404: {"description": "no such version, or retention deleted its weights"}},
)
async def get_weights(version: int, ctx: Ctx) -> Response:
    try:
        blob = await ctx.registry.weights(version)
    except VersionPruned:
        raise HTTPException(
            404,
            f"version {version}'s weights were deleted by retention: only the newest "
            f"{ctx.settings.keep_versions} versions (MNEMO_KEEP_VERSIONS), the current one and "
            "every activated one keep their blobs",
        ) from None
    except VersionNotFound:
        raise HTTPException(404, f"version {version} has no stored weights") from None
    return Response(
        blob,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{ctx.settings.model_name}-v{version}.safetensors"'},
    )


async def _meta(ctx: Ctx, version: int) -> dict[str, Any]:
    try:
        return await ctx.registry.meta(version)
    except VersionNotFound:
        raise HTTPException(404, f"version {version} does not exist") from None
