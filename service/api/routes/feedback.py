"""POST /v1/feedback: validate the whole batch, resolve prediction ids now (copying input,
served version and tag into the entry), then one script dedupes and appends it all."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException

from service.api.auth import require_api_token
from service.api.deps import Ctx
from service.api.errors import invalid, retry_later
from service.api.lean_route import LeanJSONResponse, LeanJsonRoute
from service.api.schemas import (
    FeedbackByPrediction,
    FeedbackRequest,
    FeedbackResponse,
    FeedbackWithInputs,
)
from service.api.unavailable import what_to_assume
from service.api.validation import check_count, check_label, to_inputs
from service.records import stored_form
from service.store.connection import UNAVAILABLE
from service.store.feedback import FeedbackRecord, LabelOverflow, NotDurable, Shed
from service.store.predictions import has_server_form, is_server_id

# The lean route runs only its own dependencies: the token check is declared here too.
router = APIRouter(route_class=LeanJsonRoute, dependencies=[Depends(require_api_token)])


@router.post(
    "/v1/feedback",
    status_code=202,
    response_model=FeedbackResponse,
    responses={
        422: {"description": "invalid item (the detail names its index and field)"},
        429: {"description": "the learner is behind (load shedding); retry after Retry-After"},
        503: {"description": "Redis unreachable; nothing was stored"},
    },
)
async def feedback(body: FeedbackRequest, ctx: Ctx) -> LeanJSONResponse:
    counters = ctx.metrics.feedback_by_outcome
    try:
        records = await _validated_records(body, ctx)
        result = await ctx.feedback.append(
            records, max_lag=ctx.settings.max_lag, max_classes=ctx.settings.max_classes
        )
    except Shed as exc:
        counters["shed"].inc(len(body.items))
        raise retry_later(429, f"load shed: {exc}", 1) from None
    except LabelOverflow as exc:
        counters["rejected"].inc(len(body.items))
        raise invalid(("items", exc.index, "label"), str(exc)) from None
    except HTTPException:
        counters["rejected"].inc(len(body.items))
        raise
    except NotDurable as exc:
        raise retry_later(503, f"feedback store unavailable: {exc}", 1) from None
    except UNAVAILABLE as exc:
        raise retry_later(503, f"feedback store: {what_to_assume(exc, write=True)}", 1) from None
    counters["accepted"].inc(result.accepted)
    counters["duplicate"].inc(result.duplicates)
    return LeanJSONResponse(
        {"accepted": result.accepted, "duplicates": result.duplicates}, status_code=202
    )


async def _validated_records(body: FeedbackRequest, ctx: Ctx) -> list[FeedbackRecord]:
    settings = ctx.settings
    items = body.items
    check_count(len(items), settings, ("items",))
    labels = [check_label(it.label, settings, ("items", i, "label")) for i, it in enumerate(items)]

    direct = [(i, it) for i, it in enumerate(items) if isinstance(it, FeedbackWithInputs)]
    stored = (
        stored_form(to_inputs([it.inputs for _, it in direct], settings,
                              [("items", i, "inputs") for i, _ in direct]))
        if direct else []
    )
    by_id = [(i, it) for i, it in enumerate(items) if isinstance(it, FeedbackByPrediction)]
    for i, it in by_id:  # one spelling per prediction: its label is deduplicated by id
        if has_server_form(it.prediction_id) and not is_server_id(it.prediction_id):
            raise invalid(("items", i, "prediction_id"),
                          f"{it.prediction_id!r} is not a prediction id as the server made it: "
                          "<16 lowercase hex digits>-<row>, the row without leading zeros")
    logged = await ctx.predictions.resolve([it.prediction_id for _, it in by_id]) if by_id else []

    records: list[FeedbackRecord | None] = [None] * len(items)
    for row, (i, it) in enumerate(direct):
        dedupe = f"f:{it.feedback_id}" if it.feedback_id else ""
        records[i] = FeedbackRecord(dedupe, labels[i], stored[row], it.tag or "", None)
    missing = [(i, it) for (i, it), entry in zip(by_id, logged, strict=True) if entry is None]
    seen = await ctx.feedback.already_accepted([f"p:{it.prediction_id}" for _, it in missing]) \
        if missing else []
    for (i, it), was_seen in zip(missing, seen, strict=True):
        if not was_seen:
            raise invalid(("items", i, "prediction_id"),
                          f"unknown or expired prediction id {it.prediction_id!r}")
        # Its log entry expired, but a label was accepted for it: a repeat, counted as one.
        records[i] = FeedbackRecord(f"p:{it.prediction_id}", labels[i], b"", "", None)
    for (i, it), entry in zip(by_id, logged, strict=True):
        if entry is None:
            continue
        # A tag given with the label wins over the one given at predict time.
        records[i] = FeedbackRecord(f"p:{it.prediction_id}", labels[i],
                                    entry.stored, it.tag or entry.tag, entry.version)
    return [r for r in records if r is not None]
