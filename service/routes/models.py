"""Trained models: list, inspect, delete, plot and predict."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response

from service.deps import ModelServerDep
from service.errors import problem_responses
from service.routes._imaging import PNG
from service.routes._lean import json_response, lean_router
from service.schemas.trainings import ModelPublic, ModelsPage, PredictionPublic, PredictRequest
from service.settings import Settings
from workers.errors import InvalidParameter
from workers.training.checkpoints import MODEL_ID_PATTERN
from workers.training.plots import model_plot_png

router = APIRouter(prefix="/v1/models", tags=["models"])
#: The prediction route, on the lean path (see service/routes/_lean.py).
predictions = lean_router(prefix="/v1/models", tag="models")

ModelId = Annotated[
    str, Path(pattern=f"^{MODEL_ID_PATTERN.pattern}$", description="The model id (its job's id).")
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
    """Stored models, newest first; a damaged one is listed with `valid: false`."""
    infos = await asyncio.to_thread(server.store.list)
    return ModelsPage(
        items=[ModelPublic.of(info) for info in infos[offset : offset + limit]],
        total=len(infos),
        limit=limit,
        offset=offset,
    )


@router.get(
    "/{model_id}", response_model=ModelPublic, status_code=200, responses=problem_responses(404)
)
async def get_model(model_id: ModelId, server: ModelServerDep) -> ModelPublic:
    """Metadata: config, dataset, metrics per report, architecture, checksum state."""
    return ModelPublic.of(await asyncio.to_thread(server.store.get, model_id))


@router.delete("/{model_id}", status_code=204, responses=problem_responses(404))
async def delete_model(model_id: ModelId, server: ModelServerDep) -> Response:
    """Unload the model and remove its files."""
    await server.unload(model_id)
    await asyncio.to_thread(server.store.delete, model_id)
    return Response(status_code=204)


@router.get(
    "/{model_id}/plots/{kind}",
    response_class=Response,
    status_code=200,
    responses={
        200: {"content": {PNG: {"schema": {"type": "string", "format": "binary"}}}},
        **problem_responses(404, 409, 422),
    },
)
async def plot_model(model_id: ModelId, kind: PlotKind, server: ModelServerDep) -> Response:
    """`dataset` (the notes' scatter), `decision-boundary` (plot_model), `curves` (loss and
    accuracy per report), `fit` (regression: data, mean and the ensemble's spread band)."""
    model = await server.model(model_id)
    return Response(await asyncio.to_thread(model_plot_png, model, kind), media_type=PNG)


@predictions.post(
    "/{model_id}/predict",
    response_model=PredictionPublic,
    response_model_exclude_none=True,
    status_code=200,
    responses=problem_responses(404, 409, 422),
)
async def predict(request: Request, model_id: ModelId, body: PredictRequest) -> Response:
    """Classes and probabilities (spiral), or mean and ensemble std (regression)."""
    state = request.app.state
    check_rows(len(body.inputs), state.settings, parameter="inputs")
    model, prediction = await state.model_server.predict(model_id, body.inputs)
    # Built from arrays the model just returned, so there is nothing to validate: the
    # response is serialised once, skipping FastAPI's re-validation of response_model.
    public = PredictionPublic.model_construct(
        model_id=model_id,
        task=model.task,
        **{name: values.tolist() for name, values in prediction.items()},
    )
    return json_response(public)
