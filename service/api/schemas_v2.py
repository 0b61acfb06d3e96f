"""Bodies of the Open Inference Protocol (KServe V2, JSON encoding) as Mnemo speaks it: one FP32
input [N, MNEMO_INPUT_DIM]; outputs `label` (INT64 [N], the class index into the version's
labels), `probabilities` (FP32 [N, classes]) and `prediction_id` (BYTES [N], for feedback)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

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


class InferInput(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[float] | list[list[float]] = Field(
        description="row-major flat or nested [N][MNEMO_INPUT_DIM] numbers")


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
        }]},
    )
    id: str | None = None
    parameters: Parameters | None = None
    inputs: list[InferInput] = Field(min_length=1, max_length=1)
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
