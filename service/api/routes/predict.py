"""POST /v1/predict: answer from the served version within a micro-batch that is logged for the
later label."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import APIRouter, Depends, HTTPException

from service.api.auth import require_api_token
from service.api.deps import Ctx
from service.api.errors import invalid
from service.api.lean_route import LeanJSONResponse, LeanJsonRoute
from service.api.schemas import PredictRequest, PredictResponse
from service.api.validation import check_count, to_inputs
from service.store.predictions import has_server_form

log = logging.getLogger(__name__)
T = TypeVar("T")
# The lean route runs only its own dependencies: the token check is declared here too.
router = APIRouter(route_class=LeanJsonRoute, dependencies=[Depends(require_api_token)])


@router.post(
    "/v1/predict",
    response_model=PredictResponse,
    responses={
        409: {"description": "no class exists yet"},
        422: {"description": "invalid body"},
        429: {"description": "the prediction log is over its budget (load shedding); retry "
                             "after Retry-After"},
    },
)
async def predict(body: PredictRequest, ctx: Ctx) -> LeanJSONResponse:
    return await counted(ctx, _predict(body, ctx))


async def counted(ctx: Ctx, work: Awaitable[T]) -> T:
    """Await a prediction, counting it in mnemo_predict_requests by status class and its
    latency (successes only) in mnemo_predict_latency_seconds; /v1 and /v2 alike."""
    started = time.perf_counter()
    try:
        response = await work
    except HTTPException as exc:
        status = "client_error" if exc.status_code < 500 else "server_error"
        ctx.metrics.requests_by_status[status].inc()
        raise
    except Exception:
        ctx.metrics.requests_by_status["server_error"].inc()
        raise
    ctx.metrics.requests_by_status["ok"].inc()
    ctx.metrics.latency.observe(time.perf_counter() - started)
    return response


def _check_client_ids(ids: list[str]) -> None:
    """A client id may not take the server-id form (``<16 hex>-<digits>``): such an id could
    name another client's prediction, and feedback resolves that form only as a server id."""
    for i, client_id in enumerate(ids):
        if has_server_form(client_id):
            raise invalid(("ids", i), f"{client_id!r} has the form of a server-made prediction "
                          "id (<16 hex digits>-<row>), which client ids may not take")


async def _predict(body: PredictRequest, ctx: Ctx) -> LeanJSONResponse:
    settings = ctx.settings
    rows = len(body.inputs)
    check_count(rows, settings, ("inputs",))
    if body.ids is not None:
        if len(body.ids) != rows:
            raise invalid(("ids",), f"expected one id per row ({rows}), got {len(body.ids)}")
        if len(set(body.ids)) != rows:
            raise invalid(("ids",), "ids must be unique within a request")
        _check_client_ids(body.ids)
    x = to_inputs(body.inputs, settings, [("inputs", i) for i in range(rows)])

    answer = await ctx.batcher.predict(x, body.tag or "", body.ids)
    labels = answer.labels  # the tag's head's classes when the deployment routes by tag
    # The PredictResponse shape, built as plain JSON values (no per-row model objects).
    return LeanJSONResponse({
        "model_version": answer.served.version,
        "labels": labels,
        "predictions": [
            {"id": pid, "label": labels[k], "probabilities": p}
            for pid, k, p in zip(answer.ids, answer.best.tolist(),
                                 answer.probabilities.tolist(), strict=True)
        ],
        "logged": answer.logged,
    })
