"""Every API call as data: the request to send and how to read its answer. The sync and async
clients only send these (one transport each), so both build and parse alike."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from mnemo_client.models import (
    Activation,
    FeedbackItem,
    FeedbackResult,
    GoldenResult,
    Label,
    PurgeStatus,
    Stats,
    Version,
    VersionPage,
    WithInputs,
)
from mnemo_client.models import Predictions as _Predictions

T = TypeVar("T")
OK = frozenset({200})


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response, int], T]  # (answer, attempts made) -> result
    body: bytes | None = None  # encoded once: a retry resends the very same bytes (and ids)
    params: Mapping[str, str | int] | None = None
    admin: bool = False  # sent with the admin token instead of the API token
    answers: frozenset[int] = OK  # statuses that are results, not errors


def _encode(body: Any) -> bytes:
    # allow_nan=False: NaN/Infinity are not JSON; fail here rather than as the server's 422.
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def _row(values: Any) -> list[float] | dict[str, Any]:
    """A vector as a list of floats; a record (a mapping, for a deployment with a feature
    schema, MNEMO_FEATURES) as a plain dict, its values as given."""
    if isinstance(values, Mapping):
        return dict(values)
    return values.tolist() if hasattr(values, "tolist") else [float(v) for v in values]


def _label(label: Any) -> Label:
    return label.item() if hasattr(label, "item") else label  # a numpy scalar


def _item(item: FeedbackItem) -> dict[str, Any]:
    if is_dataclass(item) and not isinstance(item, type):
        out = {f.name: getattr(item, f.name) for f in fields(item)}
    elif isinstance(item, Mapping):
        out = dict(item)
    else:
        raise TypeError(f"a feedback item is ByPrediction, WithInputs or a mapping, not {type(item).__name__}")
    out = {k: v for k, v in out.items() if v is not None}  # absent, not null, for the strict schema
    if "inputs" in out:
        out["inputs"] = _row(out["inputs"])
    if "label" in out:
        out["label"] = _label(out["label"])
    return out


def with_feedback_ids(items: Iterable[FeedbackItem]) -> list[dict[str, Any]]:
    """The items as JSON objects, each item with `inputs` given a uuid4 `feedback_id` unless
    it has one. Send the returned list again to retry it yourself: the server then counts
    each item once. (Items by prediction id are deduplicated by that id.)"""
    out = [_item(item) for item in items]
    for item in out:
        if "inputs" in item and not item.get("feedback_id"):
            item["feedback_id"] = str(uuid.uuid4())
    return out


# -- the calls -----------------------------------------------------------------------------


def predict(inputs: Sequence[Sequence[float]] | Any, tag: str | None,
            ids: Sequence[str] | None) -> Call[_Predictions]:
    rows = inputs.tolist() if hasattr(inputs, "tolist") else [_row(r) for r in inputs]
    body: dict[str, Any] = {"inputs": rows}
    if tag is not None:
        body["tag"] = tag
    if ids is not None:
        body["ids"] = list(ids)
    return Call("POST", "/v1/predict", lambda r, _: _Predictions.from_json(r.json()), _encode(body))


def feedback(items: Iterable[FeedbackItem]) -> Call[FeedbackResult]:
    body = {"items": with_feedback_ids(items)}

    def parse(response: httpx.Response, attempts: int) -> FeedbackResult:
        answer = response.json()
        return FeedbackResult(int(answer["accepted"]), int(answer["duplicates"]), attempts)

    return Call("POST", "/v1/feedback", parse, _encode(body), answers=frozenset({202}))


def versions(limit: int, before: str | int | None) -> Call[VersionPage]:
    params: dict[str, str | int] = {"limit": limit}
    if before is not None:
        params["before"] = str(before)
    return Call("GET", "/v1/versions", lambda r, _: VersionPage.from_json(r.json()), params=params)


def version(number: int | None) -> Call[Version]:
    path = "/v1/versions/current" if number is None else f"/v1/versions/{int(number)}"
    return Call("GET", path, lambda r, _: Version.from_json(r.json()))


def weights(number: int, path: str | Path | None) -> Call[bytes]:
    def parse(response: httpx.Response, _attempts: int) -> bytes:
        if path is not None:
            Path(path).write_bytes(response.content)
        return response.content

    return Call("GET", f"/v1/versions/{int(number)}/weights", parse)


def activate(number: int) -> Call[Activation]:
    def parse(response: httpx.Response, _attempts: int) -> Activation:
        answer = response.json()
        return Activation(int(answer["current"]), int(answer["epoch"]))

    return Call("POST", f"/v1/versions/{int(number)}/activate", parse, admin=True)


def add_golden(items: Iterable[WithInputs | Mapping[str, Any]]) -> Call[GoldenResult]:
    body = {"items": [_item(item) for item in items]}

    def parse(response: httpx.Response, _attempts: int) -> GoldenResult:
        answer = response.json()
        return GoldenResult(int(answer["added"]), int(answer["size"]))

    return Call("POST", "/v1/golden", parse, _encode(body), admin=True, answers=frozenset({201}))


def learning(state: str) -> Call[str]:
    """pause or resume; the answer is the state it is now ("paused", "running")."""
    return Call("POST", f"/v1/learning/{state}", lambda r, _: str(r.json()["learning"]), admin=True)


def purge(tag: str | None, everything: bool, golden: bool) -> Call[PurgeStatus]:
    if (tag is None) == (not everything):
        raise ValueError("give exactly one of tag or all=True")
    body: dict[str, Any] = {"tag": tag} if tag is not None else {"all": True}
    if golden:
        body["golden"] = True
    return Call("POST", "/v1/data/purge", lambda r, _: PurgeStatus.from_json(r.json()), _encode(body),
                admin=True, answers=frozenset({200, 202}))


def purge_status(purge_id: str) -> Call[PurgeStatus]:
    return Call("GET", f"/v1/data/purge/{quote(purge_id, safe='')}",
                lambda r, _: PurgeStatus.from_json(r.json()), admin=True)


def stats() -> Call[Stats]:
    return Call("GET", "/v1/stats", lambda r, _: Stats.from_json(r.json()))


def stats_history(limit: int) -> Call[list[dict[str, Any]]]:
    return Call("GET", "/v1/stats/history", lambda r, _: list(r.json()["entries"]),
                params={"limit": limit})


def ready() -> Call[bool]:
    # 503 is an answer here (no version loaded yet), not a reason to retry.
    return Call("GET", "/readyz", lambda r, _: r.status_code == 200, answers=frozenset({200, 503}))

