"""Request and response bodies of the v1 contract (docs/DESIGN.md §3), strict: numbers are numbers,
labels are strings or integers (never booleans or floats), unknown fields are refused."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    StringConstraints,
    Tag,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
)

TagName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
# Visible ASCII only: an id has one spelling (no look-alike digits, spaces or control
# characters), since labels are deduplicated by id. Server-form ids are checked in the routes.
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[!-~]+$")]
Row = list[float]


def _row_or_record(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    # A record passes as it is: service/api/validation.py checks it against MNEMO_FEATURES (or
    # refuses it without one). A row is validated as list[float], so its errors keep their
    # plain location (["body", "inputs", 0, 2]) rather than a union member's name.
    return value if isinstance(value, dict) else handler(value)


# A row of numbers or, under a feature schema (MNEMO_FEATURES), a record: field name -> number,
# string, true/false or null (missing).
Input = Annotated[
    Row,
    WrapValidator(_row_or_record),
    WithJsonSchema({"oneOf": [
        {"type": "array", "items": {"type": "number"}},
        {"type": "object", "additionalProperties": {
            "type": ["number", "string", "boolean", "null"]}},
    ]}),
]


def _label(value: object) -> str | int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("label must be a string (1-64 characters) or an integer")
    if isinstance(value, str) and not 1 <= len(value) <= 64:
        raise ValueError("label must be 1-64 characters")
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise ValueError("integer label out of the 64-bit range")
    return value


Label = Annotated[
    str | int,
    PlainValidator(_label),
    WithJsonSchema(
        {"oneOf": [{"type": "string", "minLength": 1, "maxLength": 64}, {"type": "integer"}]}
    ),
]

_strict = ConfigDict(strict=True, extra="forbid")


class PredictRequest(BaseModel):
    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={"examples": [{"inputs": [[5.1, 3.5, 1.4, 0.2]], "tag": "store-7"}]},
    )
    inputs: list[Input] = Field(
        min_length=1, description="1..MNEMO_MAX_BATCH rows: each exactly MNEMO_INPUT_DIM "
        "numbers, or, under a feature schema (MNEMO_FEATURES), a record of its fields"
    )
    tag: TagName | None = None
    ids: list[Identifier] | None = Field(
        None, description="optional client-chosen prediction ids, one per row: 1-64 visible "
        "ASCII characters, unique, not of the server ids' form <16 hex digits>-<digits>"
    )


class Prediction(BaseModel):
    id: str
    label: str | int
    probabilities: list[float]


class PredictResponse(BaseModel):
    model_version: int
    labels: list[str | int]
    predictions: list[Prediction]
    logged: bool


class FeedbackByPrediction(BaseModel):
    model_config = _strict
    prediction_id: Identifier
    label: Label
    tag: TagName | None = None


class FeedbackWithInputs(BaseModel):
    model_config = _strict
    inputs: Input
    label: Label
    tag: TagName | None = None
    feedback_id: Identifier | None = None


def _item_shape(value: Any) -> str | None:
    if isinstance(value, dict):
        has_id, has_inputs = "prediction_id" in value, "inputs" in value
        if has_id != has_inputs:
            return "prediction" if has_id else "inputs"
    elif isinstance(value, FeedbackByPrediction | FeedbackWithInputs):
        return "prediction" if isinstance(value, FeedbackByPrediction) else "inputs"
    return None


FeedbackItem = Annotated[
    Annotated[FeedbackByPrediction, Tag("prediction")] | Annotated[FeedbackWithInputs, Tag("inputs")],
    Discriminator(
        _item_shape,
        custom_error_type="item_shape",
        custom_error_message="each item needs exactly one of prediction_id or inputs",
    ),
]


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {"prediction_id": "3f2a9c0d1e4b5a6f-0", "label": "setosa"},
                        {"inputs": [6.7, 3.0, 5.2, 2.3], "label": "virginica", "tag": "store-7"},
                    ]
                }
            ]
        },
    )
    items: list[FeedbackItem] = Field(min_length=1, description="1..MNEMO_MAX_BATCH items")


class FeedbackResponse(BaseModel):
    accepted: int
    duplicates: int


class GoldenRequest(BaseModel):
    model_config = _strict
    items: list[FeedbackWithInputs] = Field(min_length=1)


class VersionInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    version: int
    parent: int | None
    created_at: str
    samples_seen: int
    last_stream_id: str
    strategy: str
    labels: list[str | int]
    status: str
    eval: dict[str, Any]
    blobs: bool = Field(
        True,
        description="whether the weights and learner state are still stored; false once "
        "retention deleted them (MNEMO_KEEP_VERSIONS): the version is listed but can be "
        "neither exported nor activated",
    )


class VersionList(BaseModel):
    current: int | None
    epoch: int | None
    versions: list[VersionInfo]
    next: str | None


class PurgeRequestBody(BaseModel):
    model_config = ConfigDict(
        strict=True, extra="forbid",
        json_schema_extra={"examples": [{"tag": "customer-42"}, {"all": True, "golden": True}]},
    )
    tag: TagName | None = Field(None, description="purge this tag's data")
    all: bool = Field(False, description="purge every raw input (exclusive with tag)")
    golden: bool = Field(False, description="the golden set too (only when named)")
