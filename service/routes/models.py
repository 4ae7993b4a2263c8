"""Trained models: list, inspect, delete, plot and predict."""

from __future__ import annotations

import asyncio
import contextlib
import email.message
import json
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from service.deps import ModelServerDep, SettingsDep
from service.errors import problem_responses
from service.routes._imaging import PNG
from service.schemas.trainings import ModelPublic, ModelsPage, PredictionPublic, PredictRequest
from service.settings import Settings
from workers.errors import InvalidParameter
from workers.training.checkpoints import MODEL_ID_PATTERN
from workers.training.plots import model_plot_png

router = APIRouter(prefix="/v1/models", tags=["models"])

ModelId = Annotated[
    str, Path(pattern=f"^{MODEL_ID_PATTERN.pattern}$", description="The model id (its job's id).")
]
PlotKind = Literal["dataset", "decision-boundary", "curves", "fit"]


def check_rows(rows: int, settings: Settings, parameter: str = "shape") -> None:
    if rows > settings.max_predict_rows:
        raise InvalidParameter(
            parameter, f"{rows} rows is over the limit of {settings.max_predict_rows}"
        )


# The lean JSON path of the prediction routes ------------------------------------------
#
# Per request, FastAPI would parse the body with json.loads, validate the Python objects,
# then validate the returned model again and encode it; for the small requests that
# predictions mostly are, that is a fair share of the server's CPU time. Here pydantic
# parses and validates the bytes in one pass, and serialises the response once.

BodyT = TypeVar("BodyT", bound=BaseModel)


def json_request_body(schema: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a required JSON body of ``schema``, for a route that
    reads it with :func:`read_json_body` instead of a body parameter."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema.model_json_schema()}},
        }
    }


async def read_json_body(request: Request, schema: type[BodyT]) -> BodyT:
    """The request's JSON body as ``schema``, parsed and validated by pydantic in one pass.

    A body that fails is read again the way FastAPI reads a body parameter, so a client
    gets the same 422 problem naming the same field (or the same 400).
    """
    body = await request.body()
    is_json = _is_json(request.headers.get("content-type"))
    if is_json:
        with contextlib.suppress(ValidationError):
            return schema.model_validate_json(body)
    return _read_body_as_fastapi_does(body, is_json, schema)


def _is_json(content_type: str | None) -> bool:
    # FastAPI's test for a JSON body (a body without a content type is not JSON).
    if content_type is None:
        return False
    if content_type == "application/json":
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _read_body_as_fastapi_does(body: bytes, is_json: bool, schema: type[BodyT]) -> BodyT:
    if not body:
        missing = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
        raise RequestValidationError([missing], body=None)
    data: Any = body
    if is_json:
        try:
            data = json.loads(body)
        except json.JSONDecodeError as exc:
            error = {
                "type": "json_invalid",
                "loc": ("body", exc.pos),
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": exc.msg},
            }
            raise RequestValidationError([error], body=exc.doc) from exc
        except ValueError as exc:  # e.g. bytes that are no Unicode text
            raise HTTPException(400, "There was an error parsing the body") from exc
    try:
        return schema.model_validate(data, from_attributes=True)
    except ValidationError as exc:
        errors = [
            {**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)
        ]
        raise RequestValidationError(errors, body=data) from None


def json_response(body: BaseModel) -> Response:
    """``body`` as JSON, its ``None`` fields left out (as ``response_model_exclude_none``)."""
    return Response(body.model_dump_json(exclude_none=True), media_type="application/json")


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


@router.post(
    "/{model_id}/predict",
    response_model=PredictionPublic,
    response_model_exclude_none=True,
    status_code=200,
    responses=problem_responses(404, 409, 422),
    openapi_extra=json_request_body(PredictRequest),
)
async def predict(
    model_id: ModelId, request: Request, server: ModelServerDep, settings: SettingsDep
) -> Response:
    """Classes and probabilities (spiral), or mean and ensemble std (regression)."""
    body = await read_json_body(request, PredictRequest)
    check_rows(len(body.inputs), settings, parameter="inputs")
    model, prediction = await server.predict(model_id, body.inputs)
    # Built from arrays the model just returned, so there is nothing to validate: the
    # response is serialised once, skipping FastAPI's re-validation of response_model.
    public = PredictionPublic.model_construct(
        model_id=model_id,
        task=model.task,
        **{name: values.tolist() for name, values in prediction.items()},
    )
    return json_response(public)
