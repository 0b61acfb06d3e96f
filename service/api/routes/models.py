"""GET /v1/models: the models this deployment serves (MNEMO_MODELS), each with its routes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from service.api.context import AppContext
from service.api.deps import context_of

router = APIRouter(tags=["models"])


class ModelInfo(BaseModel):
    name: str
    default: bool = Field(description="served by the unprefixed /v1 routes too")
    prefix: str = Field(description="its /v1 routes live under this prefix")
    input_dim: int
    label_type: str
    strategy: str
    heads: str
    version: int | None = Field(description="the version this process serves; null before "
                                            "the first is loaded")
    labels: list[str | int] = Field(description="the served version's classes")


class ModelList(BaseModel):
    default: str
    models: list[ModelInfo]


def _info(ctx: AppContext, default: bool) -> ModelInfo:
    settings, served = ctx.settings, ctx.holder.served
    return ModelInfo(
        name=settings.model_name, default=default,
        prefix=f"/v1/models/{settings.model_name}", input_dim=settings.input_dim,
        label_type=settings.label_type, strategy=settings.strategy, heads=settings.heads,
        version=served.version if served else None,
        labels=list(served.labels) if served else [],
    )


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    default = request.app.state.ctx.settings.model_name
    return ModelList(default=default, models=[
        _info(ctx, name == default) for name, ctx in request.app.state.models.items()])


@router.get("/v1/models/{name}", response_model=ModelInfo, responses={404: {}})
async def get_model(name: str, request: Request) -> ModelInfo:
    ctx = context_of(request, name)
    return _info(ctx, ctx is request.app.state.ctx)
