"""Trained models by name: versions, aliases, inspection, deletion, plots and predictions.

A request names a model and, optionally, `?version=` or `?alias=`; without either, the
version policy decides (the `default` alias, else the latest version). Resolution is the
store's (:meth:`~workers.training.checkpoints.ModelStore.resolve`); these routes only
parse and shape.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response

from service.deps import ModelServerDep
from service.errors import problem_responses
from service.routes._caching import (
    MODEL_PLOT_CACHE_CONTROL,
    NOT_MODIFIED_RESPONSE,
    cached,
    model_plot_tag,
    not_modified,
)
from service.routes._imaging import PNG
from service.routes._lean import json_response, lean_router
from service.schemas.trainings import (
    AliasPublic,
    AliasUpdate,
    ModelPublic,
    ModelsPage,
    ModelVersionPublic,
    PredictionPublic,
    PredictRequest,
)
from service.settings import Settings
from workers.errors import InvalidParameter
from workers.training.checkpoints import MODEL_ID_PATTERN, ModelRef
from workers.training.plots import model_plot_png

router = APIRouter(prefix="/v1/models", tags=["models"])
#: The prediction route, on the lean path (see service/routes/_lean.py).
predictions = lean_router(prefix="/v1/models", tag="models")

ModelId = Annotated[
    str,
    Path(
        pattern=f"^{MODEL_ID_PATTERN.pattern}$",
        description="The model's name (an unnamed training's model: its job id).",
    ),
]
VersionNumber = Annotated[int, Path(ge=1, le=2**31 - 1, description="A version of the model.")]
AliasName = Annotated[
    str,
    Path(
        pattern=f"^{MODEL_ID_PATTERN.pattern}$",
        description="An alias (e.g. `production`); not a number like `3` or `v3`.",
    ),
]
VersionQuery = Annotated[int | None, Query(ge=1, le=2**31 - 1, description="Serve this version.")]
AliasQuery = Annotated[
    str | None,
    Query(
        pattern=f"^{MODEL_ID_PATTERN.pattern}$",
        description="Serve the version this alias points at. Without `version` or `alias`:"
        " the `default` alias's version, else the latest.",
    ),
]
PlotKind = Literal["dataset", "decision-boundary", "curves", "fit"]


def check_rows(rows: int, settings: Settings, parameter: str = "shape") -> None:
    if rows > settings.max_predict_rows:
        raise InvalidParameter(
            parameter, f"{rows} rows is over the limit of {settings.max_predict_rows}"
        )


@router.get("", response_model=ModelsPage, status_code=200, responses=problem_responses(422))
async def list_models(
    server: ModelServerDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
) -> ModelsPage:
    """Model names with their versions and aliases, the newest latest version first; a
    damaged version is listed with `valid: false`."""
    models = await asyncio.to_thread(server.store.list)
    return ModelsPage(
        items=[ModelPublic.of(model) for model in models[offset : offset + limit]],
        total=len(models),
        limit=limit,
        offset=offset,
    )


@router.get(
    "/{name}", response_model=ModelPublic, status_code=200, responses=problem_responses(404, 422)
)
async def get_model(name: ModelId, server: ModelServerDep) -> ModelPublic:
    """The name's versions (metrics, created time, job) and aliases; at the top level, the
    version it serves: config, dataset, metrics per report, architecture, checksum state."""
    return ModelPublic.of(await asyncio.to_thread(server.store.model, name))


@router.delete("/{name}", status_code=204, responses=problem_responses(404, 422))
async def delete_model(name: ModelId, server: ModelServerDep) -> Response:
    """Unload every version of the name and remove it, aliases included."""
    await server.unload(name)
    await asyncio.to_thread(server.store.delete, name)
    return Response(status_code=204)


@router.get(
    "/{name}/versions/{version}",
    response_model=ModelVersionPublic,
    status_code=200,
    responses=problem_responses(404, 422),
)
async def get_model_version(
    name: ModelId, version: VersionNumber, server: ModelServerDep
) -> ModelVersionPublic:
    """One version: its metadata, job, metrics and the aliases that point at it."""
    info = await asyncio.to_thread(server.store.get, ModelRef(name, version))
    return ModelVersionPublic.of(info, server.store.aliases(name))


@router.delete(
    "/{name}/versions/{version}", status_code=204, responses=problem_responses(404, 409, 422)
)
async def delete_model_version(
    name: ModelId, version: VersionNumber, server: ModelServerDep
) -> Response:
    """Unload the version and remove its files; 409 while an alias points at it. Deleting
    the last version deletes the name."""
    ref = server.resolve(name, version=version)
    # Refused before unloading: an alias's version stays served.
    pointing = [a for a, v in server.store.aliases(name).items() if v == version]
    if not pointing:
        await server.unload(ref)
    await asyncio.to_thread(server.store.delete_version, ref)
    return Response(status_code=204)


@router.put(
    "/{name}/aliases/{alias}",
    response_model=AliasPublic,
    status_code=200,
    responses=problem_responses(404, 422),
)
async def set_alias(
    name: ModelId, alias: AliasName, body: AliasUpdate, server: ModelServerDep
) -> AliasPublic:
    """Point the alias at a version, creating or moving it in one step: a prediction
    running meanwhile gets the old version or the new one. The `default` alias is the one
    a request naming no version or alias gets."""
    ref = await asyncio.to_thread(server.store.set_alias, name, alias, body.version)
    return AliasPublic.of(ref.name, alias, ref.version)


@router.delete("/{name}/aliases/{alias}", status_code=204, responses=problem_responses(404, 422))
async def delete_alias(name: ModelId, alias: AliasName, server: ModelServerDep) -> Response:
    """Remove the alias; its version stays."""
    await asyncio.to_thread(server.store.delete_alias, name, alias)
    return Response(status_code=204)


@router.get(
    "/{name}/plots/{kind}",
    response_class=Response,
    status_code=200,
    responses={
        200: {"content": {PNG: {"schema": {"type": "string", "format": "binary"}}}},
        **NOT_MODIFIED_RESPONSE,
        **problem_responses(404, 409, 422),
    },
)
async def plot_model(
    name: ModelId,
    kind: PlotKind,
    server: ModelServerDep,
    request: Request,
    version: VersionQuery = None,
    alias: AliasQuery = None,
) -> Response:
    """`dataset` (the notes' scatter), `decision-boundary` (plot_model), `curves` (loss and
    accuracy per report), `fit` (regression: data, mean and the ensemble's spread band).
    With an `ETag`: `If-None-Match` answers 304 while the weights are the same."""
    model = await server.model(server.resolve(name, version, alias))
    etag = model_plot_tag(name, kind, model.metadata)
    unchanged = not_modified(request, etag, MODEL_PLOT_CACHE_CONTROL)
    if unchanged is not None:
        return unchanged
    png = await asyncio.to_thread(model_plot_png, model, kind)
    return cached(Response(png, media_type=PNG), etag, MODEL_PLOT_CACHE_CONTROL)


@predictions.post(
    "/{name}/predict",
    response_model=PredictionPublic,
    response_model_exclude_none=True,
    status_code=200,
    responses=problem_responses(404, 409, 422),
)
async def predict(
    request: Request,
    name: ModelId,
    body: PredictRequest,
    version: VersionQuery = None,
    alias: AliasQuery = None,
) -> Response:
    """Classes and probabilities (spiral), or mean and ensemble std (regression), from the
    version asked for (`version` or `alias`, else the policy's); the answer names it."""
    state = request.app.state
    check_rows(len(body.inputs), state.settings, parameter="inputs")
    server = state.model_server
    ref = server.resolve(name, version, alias)
    model, prediction = await server.predict(ref, body.inputs)
    # Built from arrays the model just returned, so there is nothing to validate: the
    # response is serialised once, skipping FastAPI's re-validation of response_model.
    public = PredictionPublic.model_construct(
        model_id=name,
        model_version=ref.version,
        task=model.task,
        **{key: values.tolist() for key, values in prediction.items()},
    )
    return json_response(public)
