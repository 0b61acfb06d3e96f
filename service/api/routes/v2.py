"""The Open Inference Protocol (KServe V2, JSON encoding, not Triton's binary extension), served
from the same micro-batcher as /v1/predict. Errors are {"error": "..."} as the protocol wants
(service/api/errors.py shapes every error on /v2); the token rules are /v1's (health open,
the rest behind MNEMO_API_TOKEN)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request, Response

from models.features import BOOLEAN, CATEGORICAL, NUMERIC, FeatureSchema
from service.api.auth import require_api_token
from service.api.context import AppContext
from service.api.deps import context_of
from service.api.lean_route import StrictJsonRoute
from service.api.routes.predict import counted
from service.api.schemas_v2 import (
    OUTPUT_NAMES,
    AnyInput,
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    ModelMetadata,
    ServerMetadata,
    TensorMetadata,
    V2Error,
)
from service.api.validation import check_count, to_matrix, to_records
from service.config import Settings
from service.records import RecordRows
from service.serving.batcher import BatchAnswer
from service.version import package_version

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": V2Error} for code in (400, 401, 404, 409, 413, 429, 503)
}
# Under a feature schema each field is an input named after it, of its kind's datatype.
FIELD_DATATYPES = {NUMERIC: "FP32", CATEGORICAL: "BYTES", BOOLEAN: "BOOL"}


class V2Route(StrictJsonRoute):
    """Reads every POST body as strict JSON, whatever its content type. Its refusals are
    shaped by the app's handlers (service/api/errors.py): {"error": ...}, and 400 for a
    refused body, as in KServe."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            _read_body_as_json(request)
            return await handler(request)

        return answer


def _read_body_as_json(request: Request) -> None:
    """The protocol's body is JSON whatever the content type says (tritonclient sends none
    that FastAPI would read as JSON); the binary extension is refused in the handler."""
    if request.method != "POST":
        return
    request.scope["headers"] = [
        *((k, v) for k, v in request.scope["headers"] if k != b"content-type"),
        (b"content-type", b"application/json"),
    ]
    request.__dict__.pop("_headers", None)  # Starlette caches the parsed headers


open_router = APIRouter(route_class=V2Route, tags=["v2"])
router = APIRouter(route_class=V2Route, tags=["v2"], dependencies=[Depends(require_api_token)],
                   responses=ERRORS)


@open_router.get("/v2/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@open_router.get("/v2/health/ready", responses={503: {"model": V2Error}})
async def ready(request: Request) -> dict[str, bool]:
    waiting = [name for name, ctx in request.app.state.models.items()
               if ctx.holder.served is None]
    if waiting:
        raise HTTPException(503, f"no version of {', '.join(waiting)} is loaded yet")
    return {"ready": True}


@router.get("/v2", response_model=ServerMetadata)
async def server_metadata() -> ServerMetadata:
    return ServerMetadata(name="mnemo", version=package_version(), extensions=[])


async def _named(request: Request, name: str) -> AppContext:
    return context_of(request, name)


# The model the path names (404 naming it when the deployment has no such model).
NamedCtx = Annotated[AppContext, Depends(_named)]


def _model(ctx: AppContext, name: str, version: str | None = None) -> None:
    served = ctx.holder.served
    if version is not None and (served is None or version != str(served.version)):
        raise HTTPException(404, f"version {version!r} of {name!r} is not served here "
                                 f"(serving {served.version if served else 'none yet'})")


@router.get("/v2/models/{name}", response_model=ModelMetadata)
async def model_metadata(name: str, ctx: NamedCtx) -> ModelMetadata:
    _model(ctx, name)
    served = ctx.holder.served
    classes = len(served.labels) if served else -1
    schema = ctx.settings.feature_schema
    inputs = [TensorMetadata(name="input", datatype="FP32", shape=[-1, ctx.settings.input_dim])] \
        if schema is None else [TensorMetadata(name=f.name, datatype=FIELD_DATATYPES[f.kind],
                                               shape=[-1]) for f in schema.fields]
    return ModelMetadata(
        name=name,
        versions=[str(served.version)] if served else [],
        platform="pytorch",
        inputs=inputs,
        outputs=[TensorMetadata(name="label", datatype="INT64", shape=[-1]),
                 TensorMetadata(name="probabilities", datatype="FP32", shape=[-1, classes]),
                 TensorMetadata(name="prediction_id", datatype="BYTES", shape=[-1])],
    )


@router.get("/v2/models/{name}/ready")
async def model_ready(name: str, ctx: NamedCtx) -> dict[str, Any]:
    _model(ctx, name)
    if ctx.holder.served is None:
        raise HTTPException(503, "no model version is loaded yet")
    return {"name": name, "ready": True}


@router.post("/v2/models/{name}/infer", response_model=InferResponse,
             response_model_exclude_none=True)
async def infer(name: str, body: InferRequest, ctx: NamedCtx, request: Request) -> InferResponse:
    return await counted(ctx, _infer(name, body, ctx, request))


async def _infer(name: str, body: InferRequest, ctx: AppContext, request: Request) -> InferResponse:
    _model(ctx, name)
    if "inference-header-content-length" in request.headers:
        raise HTTPException(400, "binary tensor data is not supported: send the JSON encoding")
    wanted = _requested_outputs(body)
    schema = ctx.settings.feature_schema
    x = _input_matrix(body.inputs, ctx) if schema is None \
        else _input_records(body.inputs, schema, ctx.settings)
    answer = await ctx.batcher.predict(x, "", None)
    outputs = _outputs(answer)
    return InferResponse(
        model_name=name, model_version=str(answer.served.version), id=body.id,
        parameters={"logged": answer.logged},
        outputs=[outputs[n] for n in wanted],
    )


def _binary_asked(parameters: dict[str, Any] | None, key: str) -> bool:
    return bool((parameters or {}).get(key, False))


def _requested_outputs(body: InferRequest) -> list[str]:
    if _binary_asked(body.parameters, "binary_data_output") or any(
            _binary_asked(o.parameters, "binary_data") for o in body.outputs or ()):
        raise HTTPException(400, "binary tensor data is not supported: request outputs with "
                                 "binary_data false (JSON encoding)")
    if body.outputs is None:
        return list(OUTPUT_NAMES)
    names = [o.name for o in body.outputs]
    unknown = [n for n in names if n not in OUTPUT_NAMES]
    if unknown:
        raise HTTPException(400, f"unknown output {unknown[0]!r}: outputs are "
                                 f"{', '.join(OUTPUT_NAMES)}")
    return names


def _input_matrix(tensors: list[AnyInput], ctx: AppContext) -> np.ndarray:
    dim = ctx.settings.input_dim
    if len(tensors) != 1:
        raise HTTPException(400, f"expected one input (FP32 [N, {dim}]), got {len(tensors)}; "
                                 "named inputs per field need a schema (MNEMO_FEATURES)")
    tensor = tensors[0]
    if not isinstance(tensor, InferInput):
        raise HTTPException(400, f"input {tensor.name!r}: datatype must be FP32, "
                                 f"got {tensor.datatype}")
    _refuse_binary(tensor)
    if len(tensor.shape) != 2 or tensor.shape[1] != dim or tensor.shape[0] < 1:
        raise HTTPException(400, f"input {tensor.name!r}: shape must be [N, {dim}] with N >= 1, "
                                 f"got {tensor.shape}")
    rows_count = tensor.shape[0]
    check_count(rows_count, ctx.settings, ("inputs", 0, "shape"))
    data = tensor.data
    if data and isinstance(data[0], list):
        rows: list[list[float]] = data  # type: ignore[assignment]
    else:
        flat: list[float] = data  # type: ignore[assignment]
        if len(flat) != rows_count * dim:
            raise HTTPException(400, f"input {tensor.name!r}: shape {tensor.shape} needs "
                                     f"{rows_count * dim} numbers, got {len(flat)}")
        rows = [flat[i : i + dim] for i in range(0, len(flat), dim)]
    if len(rows) != rows_count:
        raise HTTPException(400, f"input {tensor.name!r}: shape {tensor.shape} needs "
                                 f"{rows_count} rows, got {len(rows)}")
    return to_matrix(rows, dim, [("inputs", 0, "data", i) for i in range(rows_count)])


def _refuse_binary(tensor: AnyInput) -> None:
    if "binary_data_size" in (tensor.parameters or {}):
        raise HTTPException(400, f"input {tensor.name!r}: binary tensor data is not supported")


def _input_records(tensors: list[AnyInput], schema: FeatureSchema,
                   settings: Settings) -> RecordRows:
    """One input per field, each [N] or [N, 1] of its kind's datatype, all of one batch size N:
    transposed into N records and checked as /v1's are (validation.to_records). A field whose
    input is absent is missing in every row; a per-row missing value has no encoding here."""
    columns: dict[str, list[Any]] = {}
    rows_count, first = 0, ""
    for k, tensor in enumerate(tensors):
        name = tensor.name
        if name not in schema:
            raise HTTPException(400, f"unknown input {name!r}: the inputs are the fields of "
                                     f"MNEMO_FEATURES ({', '.join(f.name for f in schema.fields)})")
        if name in columns:
            raise HTTPException(400, f"input {name!r} is given twice")
        spec = schema[name]
        datatype = FIELD_DATATYPES[spec.kind]
        if tensor.datatype != datatype:
            raise HTTPException(400, f"input {name!r}: field {name!r} is {spec.kind}, its "
                                     f"datatype must be {datatype}, got {tensor.datatype}")
        _refuse_binary(tensor)
        shape = tensor.shape
        if len(shape) not in (1, 2) or shape[0] < 1 or shape[1:] not in ([], [1]):
            raise HTTPException(400, f"input {name!r}: shape must be [N] or [N, 1] with N >= 1, "
                                     f"got {shape}")
        if not columns:
            check_count(shape[0], settings, ("inputs", k, "shape"))
            rows_count, first = shape[0], name
        elif shape[0] != rows_count:
            raise HTTPException(400, f"input {name!r}: batch size {shape[0]}, but input "
                                     f"{first!r} has {rows_count}: every input has one value "
                                     "per row")
        values: list[Any] = tensor.data
        if values and isinstance(values[0], list):
            if any(len(row) != 1 for row in values):
                raise HTTPException(400, f"input {name!r}: nested data needs one value per "
                                         "row ([N][1])")
            values = [row[0] for row in values]
        if len(values) != rows_count:
            raise HTTPException(400, f"input {name!r}: shape {shape} needs {rows_count} "
                                     f"values, got {len(values)}")
        columns[name] = values
    for spec in schema.fields:
        if spec.required and spec.name not in columns:
            raise HTTPException(400, f"input {spec.name!r} is missing: field {spec.name!r} is "
                                     "required (MNEMO_FEATURES)")
    records = [{name: values[i] for name, values in columns.items()} for i in range(rows_count)]
    return to_records(records, schema, [(f"row {i}",) for i in range(rows_count)])


def _outputs(answer: BatchAnswer) -> dict[str, InferOutput]:
    probabilities = answer.probabilities
    rows = len(probabilities)
    return {
        "label": InferOutput(name="label", datatype="INT64", shape=[rows],
                             data=answer.best.tolist()),
        "probabilities": InferOutput(name="probabilities", datatype="FP32",
                                     shape=list(probabilities.shape),
                                     data=probabilities.reshape(-1).tolist()),
        "prediction_id": InferOutput(name="prediction_id", datatype="BYTES", shape=[rows],
                                     data=list(answer.ids)),
    }


# The versioned forms (tritonclient's model_version=...): only the served version exists
# here; an infer answers from the version served when its pass runs (model_version says).
@router.get("/v2/models/{name}/versions/{version}", response_model=ModelMetadata)
async def versioned_metadata(name: str, version: str, ctx: NamedCtx) -> ModelMetadata:
    _model(ctx, name, version)
    return await model_metadata(name, ctx)


@router.get("/v2/models/{name}/versions/{version}/ready")
async def versioned_ready(name: str, version: str, ctx: NamedCtx) -> dict[str, Any]:
    _model(ctx, name, version)
    return await model_ready(name, ctx)


@router.post("/v2/models/{name}/versions/{version}/infer", response_model=InferResponse,
             response_model_exclude_none=True)
async def versioned_infer(name: str, version: str, body: InferRequest, ctx: NamedCtx,
                          request: Request) -> InferResponse:
    _model(ctx, name, version)
    return await infer(name, body, ctx, request)
