"""KServe's Open Inference Protocol v2 (REST), with Triton's binary tensor data and model
repository extensions: what ``tritonclient.http`` and KServe clients call, unchanged.

A model is one of the registry's names (``workers/training/checkpoints.py``); its
versions are the registry's numbered versions. The unversioned paths serve the version
the registry's policy resolves (the ``default`` alias, else the latest); the versioned
paths take a version number or an alias. ``ready`` says whether that version is loaded
(in the model server's cache) and never loads or evicts one; the repository extension's
``load`` warms the policy's version into the cache and ``unload`` evicts a name's
versions (the files stay). Inference loads the version it needs, as ``/v1`` predictions
do. Tensors are parsed and shaped by :mod:`service.routes._oip`.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, Field, StrictBool

from service.deps import ModelServerDep, PoolDep
from service.errors import ErrorBody, speaks
from service.routes import _oip
from service.routes._lean import lean_router
from service.routes.models import check_rows
from workers.errors import InvalidParameter, ModelUnavailable
from workers.serving import ModelServer, Served
from workers.training.checkpoints import MODEL_ID_PATTERN, ModelRef, RegisteredModel

# The protocol has its own error body, `{"error": "..."}`, on every path under /v2 (the
# status still comes from the one table in service/errors.py; a malformed request is a 400).
router = speaks(APIRouter(prefix="/v2", tags=["v2"]), ErrorBody.OPEN_INFERENCE)
#: The inference routes, on the lean path (see service/routes/_lean.py).
predictions = speaks(lean_router(prefix="/v2", tag="v2"), ErrorBody.OPEN_INFERENCE)

#: The protocol extensions this server implements, as Triton names them.
EXTENSIONS = ["binary_tensor_data", "model_repository"]
#: What every model here takes: one FP32 tensor of rows of features.
INPUT_NAME, INPUT_DATATYPE = "input", "FP32"
_OUTPUTS = {
    "spiral": [("classes", "INT64", 1), ("probabilities", "FP32", 2)],
    "regression": [("mean", "FP32", 1), ("std", "FP32", 1)],
}

ModelName = Annotated[
    str, Path(pattern=f"^{MODEL_ID_PATTERN.pattern}$", description="The model's name.")
]
ModelVersion = Annotated[
    str,
    Path(
        pattern=f"^{MODEL_ID_PATTERN.pattern}$",
        description="A version number (`1`, `2`, ...) or an alias of the model (`production`).",
    ),
]


class InferError(BaseModel):
    error: str


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    # "4XX" too, so FastAPI documents no 422 of its own: the protocol answers 400.
    return {
        status: {"model": InferError, "description": "The protocol's error body"}
        for status in (*statuses, "4XX")
    }


def _body(*schemas: type[BaseModel], required: bool, binary: bool = False) -> dict[str, Any]:
    """``openapi_extra`` documenting a request body the route reads itself."""
    content: dict[str, Any] = {"application/json": {"schema": _inline(schemas[0])}}
    if binary:
        content[_oip.OCTET_STREAM] = {
            "schema": {
                "type": "string",
                "format": "binary",
                "description": "The JSON request (its length in the "
                f"`{_oip.HEADER_LENGTH}` header), then each input's little-endian bytes.",
            }
        }
    return {"requestBody": {"required": required, "content": content}}


def _inline(model: type[BaseModel]) -> dict[str, Any]:
    # The model's JSON schema with its $defs put in place (none of these is recursive).
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    return resolve(schema)


# Server ------------------------------------------------------------------------------


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


@router.get("", response_model=ServerMetadata, status_code=200, responses=_errors())
@router.get("/", response_model=ServerMetadata, include_in_schema=False)  # the spec's spelling
async def server_metadata(request: Request) -> ServerMetadata:
    """OIP `GET v2`: the server's name, version and the protocol extensions it implements."""
    return ServerMetadata(name="tensorlens", version=request.app.version, extensions=EXTENSIONS)


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


# Models ------------------------------------------------------------------------------


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str] = Field(description="Every version, oldest first.")
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ModelReady(BaseModel):
    name: str
    ready: bool


def _resolve(server: ModelServer, name: str, version: str | None) -> ModelRef:
    if version is None:
        return server.resolve(name)
    if version.isdecimal():
        return server.resolve(name, version=int(version))
    return server.resolve(name, alias=version)


async def _metadata(server: ModelServer, name: str, version: str | None) -> ModelMetadata:
    ref = _resolve(server, name, version)
    registered: RegisteredModel = await asyncio.to_thread(server.store.model, name)
    info = next((info for info in registered.versions if info.version == ref.version), None)
    if info is None:  # deleted since it resolved: the store's NotFound
        info = await asyncio.to_thread(server.store.get, ref)
    meta = info.metadata
    task = meta.get("task", "spiral")
    ensemble = meta.get("config", {}).get("model", {}).get("ensemble_size", 1) > 1
    outputs = [
        TensorMetadata(
            name=output,
            datatype=datatype,
            shape=[-1] if rank == 1 else [-1, meta.get("out_features", -1)],
        )
        for output, datatype, rank in _OUTPUTS[task]
        if output != "std" or ensemble
    ]
    return ModelMetadata(
        name=name,
        versions=[str(info.version) for info in registered.versions],
        platform="pytorch_safetensors",
        inputs=[
            TensorMetadata(
                name=INPUT_NAME, datatype=INPUT_DATATYPE, shape=[-1, meta.get("in_features", -1)]
            )
        ],
        outputs=outputs,
    )


@router.get("/models/{model_name}", response_model=ModelMetadata, responses=_errors(404))
async def model_metadata(model_name: ModelName, server: ModelServerDep) -> ModelMetadata:
    """OIP model metadata of the version the policy serves: its input and output tensors,
    and every version of the model."""
    return await _metadata(server, model_name, None)


@router.get(
    "/models/{model_name}/versions/{model_version}",
    response_model=ModelMetadata,
    responses=_errors(404),
)
async def model_version_metadata(
    model_name: ModelName, model_version: ModelVersion, server: ModelServerDep
) -> ModelMetadata:
    """OIP model metadata of one version (a number, or an alias)."""
    return await _metadata(server, model_name, model_version)


async def _ready(server: ModelServer, name: str, version: str | None, response: Response) -> Any:
    ref = _resolve(server, name, version)
    served = server.served(ref)
    if served is None or served.state is not Served.SERVING:
        info = await asyncio.to_thread(server.store.get, ref)
        if not info.valid:
            raise ModelUnavailable(f"{ref} cannot be served: {info.reason}")
        response.status_code = 503
        return ModelReady(name=name, ready=False)
    return ModelReady(name=name, ready=True)


_READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    503: {"model": ModelReady, "description": "Not loaded (inference, or a load, loads it)"},
    **_errors(404, 409),
}


@router.get("/models/{model_name}/ready", response_model=ModelReady, responses=_READY_RESPONSES)
async def model_ready(model_name: ModelName, server: ModelServerDep, response: Response) -> Any:
    """OIP model readiness: 200 when the version the policy serves is loaded, 503 when it
    is not (yet); never loads or evicts a model."""
    return await _ready(server, model_name, None, response)


@router.get(
    "/models/{model_name}/versions/{model_version}/ready",
    response_model=ModelReady,
    responses=_READY_RESPONSES,
)
async def model_version_ready(
    model_name: ModelName, model_version: ModelVersion, server: ModelServerDep, response: Response
) -> Any:
    """OIP readiness of one version: 200 when loaded, 503 when not; loads nothing."""
    return await _ready(server, model_name, model_version, response)


# Inference -----------------------------------------------------------------------------

_INFER: dict[str, Any] = {
    "response_model": _oip.InferResponse,
    "response_model_exclude_none": True,
    "status_code": 200,
    "responses": {
        200: {
            "content": {
                _oip.OCTET_STREAM: {
                    "schema": {
                        "type": "string",
                        "format": "binary",
                        "description": "With outputs as binary data: the JSON response (its "
                        f"length in the `{_oip.HEADER_LENGTH}` header), then their bytes.",
                    }
                }
            }
        },
        **_errors(404, 409, 413, 415),
    },
    "openapi_extra": _body(_oip.InferRequest, required=True, binary=True),
}


@predictions.post("/models/{model_name}/infer", **_INFER)
async def model_infer(request: Request, model_name: ModelName) -> Response:
    """OIP inference on the version the policy serves; the body is JSON whatever its
    Content-Type, or JSON then binary tensor data. Batched with concurrent requests."""
    return await _infer(request, model_name, None)


@predictions.post("/models/{model_name}/versions/{model_version}/infer", **_INFER)
async def model_version_infer(
    request: Request, model_name: ModelName, model_version: ModelVersion
) -> Response:
    """OIP inference on one version (a number, or an alias)."""
    return await _infer(request, model_name, model_version)


async def _infer(request: Request, name: str, version: str | None) -> Response:
    state = request.app.state
    server: ModelServer = state.model_server
    headers = request.headers
    content = await request.body()
    if "content-encoding" in headers:  # tritonclient's request_compression_algorithm
        content = _oip.inflate(content, headers["content-encoding"], state.settings.max_json_bytes)
    body = _oip.split_body(content, headers.get(_oip.HEADER_LENGTH))
    ref = _resolve(server, name, version)
    if body.raw:
        model = await server.model(ref)
        infer_request = _oip.raw_request(body, model.in_features)
    else:
        infer_request = _oip.parse(_oip.InferRequest, body.json, "body")
    if len(infer_request.inputs) != 1:
        raise InvalidParameter(
            "inputs", f"the model takes one input, `{INPUT_NAME}`: got {len(infer_request.inputs)}"
        )
    (tensor,) = infer_request.inputs
    if tensor.shape:
        check_rows(tensor.shape[0], state.settings, parameter="inputs[0].shape")
    (values,) = _oip.decode_inputs(infer_request, body.binary)
    rows = _oip.to_fp32(values, tensor.datatype, "inputs[0].data")
    _, prediction = await server.predict(ref, rows)
    chosen = _oip.output_parameters(infer_request, list(prediction))
    # Built from the model's arrays, serialised once, not re-validated (as /v1 predict).
    response = _oip.InferResponse.model_construct(
        model_name=name, model_version=str(ref.version), id=infer_request.id, outputs=[]
    )
    content, header_length = _oip.encode_response(
        response, {output: prediction[output] for output, _ in chosen}, dict(chosen)
    )
    if header_length is None:
        return Response(content, media_type="application/json")
    return Response(
        content,
        media_type=_oip.OCTET_STREAM,
        headers={_oip.HEADER_LENGTH: str(header_length)},
    )


# Model repository extension ----------------------------------------------------------


class RepositoryIndexRequest(BaseModel):
    ready: StrictBool = Field(False, description="Only the versions that are loaded.")


class RepositoryModel(BaseModel):
    name: str
    version: str
    state: Literal["READY", "LOADING", "UNAVAILABLE"]
    reason: str = Field(description="Why it is not ready; empty when it is.")


class RepositoryRequest(BaseModel):
    parameters: _oip.Parameters | None = None


async def _body_as(request: Request, schema: type[BaseModel]) -> Any:
    # The extension's bodies are optional, and tritonclient sends them without a type.
    body = await request.body()
    return _oip.parse(schema, body, "body") if body.strip() else schema()


@router.post(
    "/repository/index",
    response_model=list[RepositoryModel],
    status_code=200,
    responses=_errors(),
    openapi_extra=_body(RepositoryIndexRequest, required=False),
)
async def repository_index(request: Request, server: ModelServerDep) -> list[RepositoryModel]:
    """Every version of every model and whether it is loaded (`READY`)."""
    only_ready = (await _body_as(request, RepositoryIndexRequest)).ready
    index = []
    for registered in await asyncio.to_thread(server.store.list):
        for info in registered.versions:
            served = server.served(info.ref)
            if served is not None and served.state is Served.SERVING:
                state, reason = "READY", ""
            elif served is not None and served.state is Served.LOADING:
                state, reason = "LOADING", "loading"
            else:
                state, reason = "UNAVAILABLE", info.reason or "unloaded"
            if state == "READY" or not only_ready:
                entry = RepositoryModel(
                    name=info.name, version=str(info.version), state=state, reason=reason
                )
                index.append(entry)
    return index


def _no_files(parameters: dict[str, Any] | None) -> None:
    for name in parameters or ():
        if name == "config" or name.startswith("file:"):
            raise InvalidParameter(
                f"parameters.{name}",
                "models come from trainings here; a load cannot bring a config or files",
            )


@router.post(
    "/repository/models/{model_name}/load",
    response_class=Response,
    status_code=200,
    responses={200: {"description": "Loaded"}, **_errors(404, 409)},
    openapi_extra=_body(RepositoryRequest, required=False),
)
async def repository_load(
    request: Request, model_name: ModelName, server: ModelServerDep
) -> Response:
    """Load the version the policy serves into the cache (evicting the least recently
    used beyond its capacity); loaded already, it stays."""
    _no_files((await _body_as(request, RepositoryRequest)).parameters)
    await server.model(server.resolve(model_name))
    return Response(status_code=200)


@router.post(
    "/repository/models/{model_name}/unload",
    response_class=Response,
    status_code=200,
    responses={200: {"description": "Unloaded"}, **_errors(404)},
    openapi_extra=_body(RepositoryRequest, required=False),
)
async def repository_unload(
    request: Request, model_name: ModelName, server: ModelServerDep
) -> Response:
    """Take every version of the model out of the cache once its requests finish; its
    files stay, and the next inference loads it again. `unload_dependents` changes
    nothing (no model here depends on another)."""
    await _body_as(request, RepositoryRequest)
    server.resolve(model_name)  # an unknown model is a 404
    await server.unload(model_name)
    return Response(status_code=200)
