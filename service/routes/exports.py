"""Trained models in standard formats: ONNX, or a Triton model repository (a zip)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Response

from service.deps import ModelServerDep, SettingsDep
from service.errors import problem_responses
from service.routes.models import AliasQuery, ModelId, VersionQuery
from service.settings import Settings
from workers.errors import InvalidInput
from workers.serving import LoadedModel
from workers.training.checkpoints import ModelStore
from workers.training.export import ONNX_OPSET, Export, ExportFormat
from workers.training.export import export_model as build_export

router = APIRouter(prefix="/v1/models", tags=["models"])

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_EXPORT_HEADERS = {
    "Content-Disposition": {
        "description": "`attachment` with the file's name: `<name>.onnx` or `<name>.zip`.",
        "schema": {"type": "string"},
    },
    "X-ONNX-Opset": {
        "description": f"The ONNX operator set of the model file ({ONNX_OPSET}).",
        "schema": {"type": "integer"},
    },
    "X-Model-Version": {
        "description": "The version exported (the one `version`, `alias` or the policy chose).",
        "schema": {"type": "integer"},
    },
}


def _export(
    store: ModelStore,
    name: str,
    version: int | None,
    alias: str | None,
    export_format: ExportFormat,
    settings: Settings,
) -> tuple[int, Export]:
    ref = store.resolve(name, version=version, alias=alias)
    info = store.get(ref)
    if info.weights_bytes is not None and info.weights_bytes > settings.max_export_bytes:
        raise InvalidInput(
            f"{ref} has {info.weights_bytes} bytes of weights, over the export limit of "
            f"{settings.max_export_bytes} (TENSORLENS_MAX_EXPORT_BYTES)"
        )
    model = LoadedModel.from_tensors(info.metadata, store.load_tensors(ref), "cpu")
    provenance = {
        "tensorlens.model_name": ref.name,
        "tensorlens.model_version": str(ref.version),
        "tensorlens.task": model.task,
        "tensorlens.weights_sha256": str(info.metadata.get("weights_sha256", "")),
    }
    exported = build_export(
        model.module,
        model.config,
        export_format,
        name=ref.name,
        version=ref.version,
        max_batch_size=settings.max_predict_rows,
        metadata=provenance,
    )
    return ref.version, exported


@router.get(
    "/{name}/export",
    response_class=Response,
    status_code=200,
    responses={
        200: {
            "description": "The ONNX file, or the zipped Triton model repository.",
            "content": {"application/octet-stream": _BINARY, "application/zip": _BINARY},
            "headers": _EXPORT_HEADERS,
        },
        **problem_responses(404, 409, 422),
    },
)
async def export_model(
    name: ModelId,
    server: ModelServerDep,
    settings: SettingsDep,
    export_format: Annotated[
        ExportFormat,
        Query(
            alias="format",
            description="`onnx`: the model file; `triton`: `<name>/config.pbtxt` and "
            "`<name>/<version>/model.onnx` in a zip, a Triton model repository.",
        ),
    ] = "onnx",
    version: VersionQuery = None,
    alias: AliasQuery = None,
) -> Response:
    """The model as ONNX (opset in `X-ONNX-Opset`, dynamic batch axis; input `input`,
    outputs `classes` and `probabilities`, or `mean` and, for an ensemble, `std`: the
    prediction's own fields), or as a Triton model repository serving that file."""
    exported_version, exported = await asyncio.to_thread(
        _export, server.store, name, version, alias, export_format, settings
    )
    return Response(
        exported.content,
        media_type=exported.media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{exported.filename}"',
            "X-ONNX-Opset": str(ONNX_OPSET),
            "X-Model-Version": str(exported_version),
        },
    )
