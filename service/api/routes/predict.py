"""POST /v1/predict: answer from the served version; log the batch for the later label."""

from __future__ import annotations

import logging
import time

import numpy as np
from fastapi import APIRouter, HTTPException

from service.api.deps import Ctx
from service.api.errors import invalid
from service.api.schemas import Prediction, PredictRequest, PredictResponse
from service.api.tag_heads import predict_for_tag
from service.api.validation import check_count, to_matrix
from service.store.connection import UNAVAILABLE

log = logging.getLogger(__name__)
router = APIRouter()


@router.post(
    "/v1/predict",
    response_model=PredictResponse,
    responses={409: {"description": "no class exists yet"}, 422: {"description": "invalid body"}},
)
async def predict(body: PredictRequest, ctx: Ctx) -> PredictResponse:
    started = time.perf_counter()
    try:
        response = await _predict(body, ctx)
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


async def _predict(body: PredictRequest, ctx: Ctx) -> PredictResponse:
    settings = ctx.settings
    rows = len(body.inputs)
    check_count(rows, settings, ("inputs",))
    if body.ids is not None:
        if len(body.ids) != rows:
            raise invalid(("ids",), f"expected one id per row ({rows}), got {len(body.ids)}")
        if len(set(body.ids)) != rows:
            raise invalid(("ids",), "ids must be unique within a request")
    x = to_matrix(body.inputs, settings.input_dim, [("inputs", i) for i in range(rows)])

    served = ctx.holder.served  # one reference read: the whole request uses this version
    if served is None:
        raise HTTPException(503, "no model version is loaded yet", headers={"Retry-After": "1"})
    if not served.labels:
        raise HTTPException(409, "no class exists yet: send feedback with labels first")
    # Per-tag heads / progressive columns (issue 5): the tag's head and its labels.
    probabilities, labels, classes = predict_for_tag(served, x, body.tag, settings.routes_by_tag)
    ctx.metrics.batch_size.observe(rows)

    batch, server_ids = ctx.predictions.new_ids(rows)
    ids = body.ids or server_ids
    best = np.argmax(probabilities, axis=1)
    try:  # the same round trip also appends a few rows to the drift sample stream
        await ctx.predictions.log(batch, x, served.version, body.tag or "", body.ids,
                                  classes[best])
        logged = True
    except UNAVAILABLE as exc:
        log.warning("prediction log unavailable, answering unlogged: %s", exc)
        logged = False

    return PredictResponse(
        model_version=served.version,
        labels=labels,
        predictions=[
            Prediction(id=pid, label=labels[int(k)], probabilities=p.tolist())
            for pid, k, p in zip(ids, best, probabilities, strict=True)
        ],
        logged=logged,
    )
