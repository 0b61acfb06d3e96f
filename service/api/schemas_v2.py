"""Bodies of the Open Inference Protocol (KServe V2, JSON encoding) as Mnemo speaks it: one FP32
input [N, MNEMO_INPUT_DIM], or under a feature schema (MNEMO_FEATURES) one input per field named
after it (FP32 numeric, BYTES categorical, BOOL boolean; [N] or [N, 1]); outputs `label` (INT64
[N], the class index into the version's labels), `probabilities` (FP32 [N, classes]) and
`prediction_id` (BYTES [N], for feedback)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from models.features import MAX_FIELDS

# A parameter value is a bool, a number or a string (the protocol's $parameters).
Parameters = dict[str, bool | int | float | str]
OUTPUT_NAMES = ("label", "probabilities", "prediction_id")


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class _Tensor(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None


class InferInput(_Tensor):
    """An FP32 tensor: the vectors, or a numeric field's values."""
    data: list[float] | list[list[float]] = Field(
        description="row-major flat or nested numbers: [N][MNEMO_INPUT_DIM], or a numeric "
                    "field's [N] / [N][1]")


class BytesInput(_Tensor):
    """A BYTES tensor (JSON strings): a categorical field's values."""
    data: list[str] | list[list[str]]


class BoolInput(_Tensor):
    """A BOOL tensor: a boolean field's values."""
    data: list[bool] | list[list[bool]]


class OtherInput(_Tensor):
    """Any other datatype: parsed only so that the handler refuses it naming the input."""
    data: list[Any]


TYPED_INPUTS = ("FP32", "BYTES", "BOOL")


def _datatype_of(tensor: Any) -> str:
    datatype = tensor.get("datatype") if isinstance(tensor, dict) else \
        getattr(tensor, "datatype", None)
    return datatype if datatype in TYPED_INPUTS else "other"


# An input tensor's data is checked against its declared datatype (and only that one).
AnyInput = Annotated[
    Annotated[InferInput, Tag("FP32")] | Annotated[BytesInput, Tag("BYTES")]
    | Annotated[BoolInput, Tag("BOOL")] | Annotated[OtherInput, Tag("other")],
    Discriminator(_datatype_of),
]


class RequestedOutput(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    name: str
    parameters: Parameters | None = None


class InferRequest(BaseModel):
    model_config = ConfigDict(
        strict=True, extra="forbid",
        json_schema_extra={"examples": [{
            "id": "42",
            "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                        "data": [5.1, 3.5, 1.4, 0.2]}],
            "outputs": [{"name": "label"}, {"name": "probabilities"}],
        }, {
            "inputs": [  # under MNEMO_FEATURES: one input per field
                {"name": "amount", "shape": [2], "datatype": "FP32", "data": [12.5, 80]},
                {"name": "country", "shape": [2], "datatype": "BYTES", "data": ["FR", "DE"]},
                {"name": "mobile", "shape": [2, 1], "datatype": "BOOL", "data": [[True], [False]]},
            ],
            "outputs": [{"name": "probabilities"}],
        }]},
    )
    id: str | None = None
    parameters: Parameters | None = None
    # One tensor; under MNEMO_FEATURES one per field given.
    inputs: list[AnyInput] = Field(min_length=1, max_length=MAX_FIELDS)
    outputs: list[RequestedOutput] | None = None


class InferOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[Any]


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[InferOutput]


class V2Error(BaseModel):
    error: str
