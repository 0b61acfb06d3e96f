"""Records (a MNEMO_FEATURES deployment) through the v1 API: predict, and feedback with the
inputs. mnemo_client sends numeric rows only, so these send the same requests with records
as the API takes them ({"inputs": [{"field": value, ...}, ...]}) and answer as the client
does: `Predictions`, a feedback id on every item with inputs, the client's exceptions
(`ConflictError` on 409) for a refusal. No retries: the benchmark's service is on loopback."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import httpx

from load_tests.learning_streams import Record
from mnemo_client import Predictions
from mnemo_client.errors import error_from


def _answer(response: httpx.Response, status: int) -> Any:
    if response.status_code != status:
        raise error_from(response)
    return response.json()


def predict(http: httpx.Client, records: Sequence[Record], tag: str | None = None) -> Predictions:
    """POST /v1/predict with records (None values go as null: missing)."""
    body: dict[str, Any] = {"inputs": list(records)}
    if tag is not None:
        body["tag"] = tag
    return Predictions.from_json(_answer(http.post("/v1/predict", json=body), 200))


def feedback(http: httpx.Client, records: Sequence[Record], labels: Sequence[int],
             tag: str | None = None) -> None:
    """POST /v1/feedback with each record, its label and a fresh feedback id."""
    items = [{"inputs": record, "label": label, "feedback_id": str(uuid.uuid4()),
              **({"tag": tag} if tag is not None else {})}
             for record, label in zip(records, labels, strict=True)]
    _answer(http.post("/v1/feedback", json={"items": items}), 202)
