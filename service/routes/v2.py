"""KServe Open Inference Protocol v2: server health, model metadata, readiness, inference."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, Field

from service.deps import ModelServerDep, PoolDep
from service.errors import ErrorBody, speaks
from service.routes._lean import json_response, lean_router
from service.routes.models import ModelId, check_rows
from workers.errors import InvalidParameter

# The protocol has its own error body, `{"error": "..."}`, on every path under /v2 (the
# status still comes from the one table in service/errors.py).
router = speaks(APIRouter(prefix="/v2", tags=["v2"]), ErrorBody.OPEN_INFERENCE)
#: The inference route, on the lean path (see service/routes/_lean.py).
predictions = speaks(lean_router(prefix="/v2", tag="v2"), ErrorBody.OPEN_INFERENCE)


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


@router.get("/health/live", response_model=ServerLive, status_code=200)
async def server_live() -> ServerLive:
    """OIP `GET v2/health/live`: the server can receive requests."""
    return ServerLive(live=True)


@router.get(
    "/health/ready",
    response_model=ServerReady,
    status_code=200,
    responses={503: {"model": ServerReady, "description": "Not ready"}},
)
async def server_ready(pool: PoolDep, response: Response) -> ServerReady:
    """OIP `GET v2/health/ready`: 200 when ready for inference, 503 otherwise."""
    if not pool.ready:
        response.status_code = 503
    return ServerReady(ready=pool.ready)


# Models ----------------------------------------------------------------------


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ModelReady(BaseModel):
    name: str
    ready: bool


class InferTensor(BaseModel):
    name: str
    shape: list[int] = Field(description="Shape; `[rows, features]` for this server's models.")
    datatype: str = Field(description="FP32 or FP64 (INT types are accepted and converted).")
    data: list[Any] = Field(description="Row-major data, flat or nested.")
    parameters: dict[str, Any] | None = None


class RequestedOutput(BaseModel):
    name: str


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[InferTensor] = Field(min_length=1, max_length=1)
    outputs: list[RequestedOutput] | None = None
    parameters: dict[str, Any] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[InferTensor]


class InferError(BaseModel):
    error: str


V2_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": InferError, "description": "Open Inference Protocol error body"}
    for status in (400, 404, 409, 422)
}

_OUTPUTS = {
    "spiral": [("classes", "INT64", 1), ("probabilities", "FP32", 2)],
    "regression": [("mean", "FP32", 1), ("std", "FP32", 1)],
}
_NUMERIC = {"FP32", "FP64", "FP16", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16"}


@router.get(
    "/models/{model_id}",
    response_model=ModelMetadata,
    status_code=200,
    responses=V2_ERRORS,
)
async def model_metadata(model_id: ModelId, server: ModelServerDep) -> Any:
    """OIP model metadata: input and output tensors."""
    info = await asyncio.to_thread(server.store.get, model_id)
    meta = info.metadata
    task = meta.get("task", "spiral")
    outputs = [
        TensorMetadata(
            name=name,
            datatype=datatype,
            shape=[-1] if rank == 1 else [-1, meta.get("out_features", -1)],
        )
        for name, datatype, rank in _OUTPUTS[task]
        if name != "std" or meta.get("config", {}).get("model", {}).get("ensemble_size", 1) > 1
    ]
    return ModelMetadata(
        name=model_id,
        versions=["1"],
        platform="pytorch_safetensors",
        inputs=[
            TensorMetadata(name="input", datatype="FP32", shape=[-1, meta.get("in_features", -1)])
        ],
        outputs=outputs,
    )


@router.get(
    "/models/{model_id}/ready",
    response_model=ModelReady,
    status_code=200,
    responses=V2_ERRORS,
)
async def model_ready(model_id: ModelId, server: ModelServerDep) -> Any:
    """OIP model readiness: 200 when the model can be served."""
    await server.model(model_id)
    return ModelReady(name=model_id, ready=True)


@predictions.post(
    "/models/{model_id}/infer",
    response_model=InferResponse,
    response_model_exclude_none=True,
    status_code=200,
    responses=V2_ERRORS,
)
async def model_infer(request: Request, model_id: ModelId, body: InferRequest) -> Response:
    """OIP inference with the protocol's tensor JSON; batched with concurrent requests."""
    state = request.app.state
    tensor = body.inputs[0]
    if tensor.datatype not in _NUMERIC:
        raise InvalidParameter("datatype", f"{tensor.datatype} is not a numeric type")
    if len(tensor.shape) not in (1, 2) or any(d < 0 for d in tensor.shape):
        raise InvalidParameter("shape", f"{tensor.shape} is not (rows, features)")
    check_rows(tensor.shape[0], state.settings)
    try:
        rows = np.asarray(tensor.data)
    except ValueError:
        raise InvalidParameter("data", "must be a flat or regular nested list") from None
    if rows.dtype.kind not in "iuf":
        raise InvalidParameter("data", f"must be numbers for datatype {tensor.datatype}")
    if rows.size != math.prod(tensor.shape):
        raise InvalidParameter(
            "shape", f"{tensor.shape} does not match the {rows.size} values in `data`"
        )
    rows = rows.astype(np.float64).reshape(tensor.shape)
    _, prediction = await state.model_server.predict(model_id, rows)
    wanted = {o.name for o in body.outputs} if body.outputs else set(prediction)
    unknown = wanted - set(prediction)
    if unknown:
        raise HTTPException(400, f"unknown outputs: {sorted(unknown)}")
    # As in /v1 predict: built from the model's arrays, serialised once, not re-validated.
    outputs = [
        InferTensor.model_construct(
            name=name,
            shape=list(values.shape),
            datatype="INT64" if values.dtype.kind == "i" else "FP32",
            data=values.ravel().tolist(),
        )
        for name, values in prediction.items()
        if name in wanted
    ]
    return json_response(
        InferResponse.model_construct(
            model_name=model_id, model_version="1", id=body.id, outputs=outputs
        )
    )
