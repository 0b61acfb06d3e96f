"""Typed request items and results of the v1 API (README "HTTP API", service/api/schemas.py)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Label = str | int


@dataclass(frozen=True)
class ByPrediction:
    """A label for a prediction the server logged (`Prediction.id`); deduplicated by that id."""

    prediction_id: str
    label: Label
    tag: str | None = None


@dataclass(frozen=True)
class WithInputs:
    """A label sent with its inputs (e.g. for a prediction answered `"logged": false`).
    Without a `feedback_id` the client gives it a fresh uuid4 one, so that a retry of the
    same request is deduplicated instead of stored twice."""

    inputs: Sequence[float] | Mapping[str, Any]  # a record under a feature schema
    label: Label
    tag: str | None = None
    feedback_id: str | None = None


FeedbackItem = ByPrediction | WithInputs | Mapping[str, Any]


@dataclass(frozen=True)
class Prediction:
    id: str
    label: Label
    probabilities: list[float]


@dataclass(frozen=True)
class Predictions:
    """One predict answer: a row's prediction per input row, in order."""

    model_version: int
    labels: list[Label]  # the classes `probabilities` are over
    predictions: list[Prediction]
    logged: bool  # False: Redis was unavailable, label these with their inputs, not by id

    def __len__(self) -> int:
        return len(self.predictions)

    def __iter__(self) -> Iterator[Prediction]:
        return iter(self.predictions)

    def __getitem__(self, index: int) -> Prediction:
        return self.predictions[index]

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.predictions]

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Predictions:
        return cls(
            model_version=int(body["model_version"]),
            labels=list(body["labels"]),
            predictions=[Prediction(str(p["id"]), p["label"], list(p.get("probabilities", ())))
                         for p in body["predictions"]],
            # A v1 server always says; absent only from hand-made fakes, which log everything.
            logged=bool(body.get("logged", True)),
        )


@dataclass(frozen=True)
class FeedbackResult:
    """`accepted` new items, `duplicates` already stored. `attempts` > 1 means the request
    was sent again after a lost answer or a 503: items the first try stored then count as
    duplicates of themselves (each is still stored once)."""

    accepted: int
    duplicates: int
    attempts: int = 1


@dataclass(frozen=True)
class Version:
    """A registry entry; `raw` keeps every field, including those not modelled here."""

    version: int
    parent: int | None
    created_at: str
    samples_seen: int
    status: str  # active, archived, rejected
    strategy: str
    labels: list[Label]
    eval: dict[str, Any]
    blobs: bool  # False once retention deleted its weights
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Version:
        return cls(
            version=int(body["version"]), parent=body.get("parent"),
            created_at=str(body.get("created_at", "")), samples_seen=int(body["samples_seen"]),
            status=str(body["status"]), strategy=str(body.get("strategy", "")),
            labels=list(body.get("labels", ())), eval=dict(body.get("eval") or {}),
            blobs=bool(body.get("blobs", True)), raw=dict(body),
        )


@dataclass(frozen=True)
class VersionPage:
    """One page of /v1/versions, newest first; pass `next` as `before` for the next page."""

    current: int | None
    epoch: int | None
    versions: list[Version]
    next: str | None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> VersionPage:
        return cls(current=body.get("current"), epoch=body.get("epoch"),
                   versions=[Version.from_json(v) for v in body["versions"]], next=body.get("next"))


@dataclass(frozen=True)
class Stats:
    """/v1/stats; fields the learner has not computed yet are None. `raw` has the rest
    (classes, tags, drift, prediction_log…)."""

    model_version: int | None
    samples_seen: int
    feedback_lag: int
    reservoir_size: int
    prequential_accuracy: float | None
    balanced_accuracy: float | None
    learning: str | None  # "running", "paused", or None before the learner reported
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Stats:
        return cls(
            model_version=body.get("model_version"), samples_seen=int(body.get("samples_seen") or 0),
            feedback_lag=int(body.get("feedback_lag") or 0),
            reservoir_size=int(body.get("reservoir_size") or 0),
            prequential_accuracy=body.get("prequential_accuracy"),
            balanced_accuracy=body.get("balanced_accuracy"), learning=body.get("learning"),
            raw=dict(body),
        )


@dataclass(frozen=True)
class GoldenResult:
    added: int  # items new to the golden set (a repeat adds nothing)
    size: int


@dataclass(frozen=True)
class Activation:
    current: int
    epoch: int


@dataclass(frozen=True)
class PurgeStatus:
    purge_id: str
    status: str  # "pending" or "done"
    tag: str | None
    golden: bool
    removed: dict[str, int] | None

    @property
    def done(self) -> bool:
        return self.status == "done"

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> PurgeStatus:
        return cls(purge_id=str(body["purge_id"]), status=str(body["status"]), tag=body.get("tag"),
                   golden=bool(body.get("golden", False)), removed=body.get("removed"))
