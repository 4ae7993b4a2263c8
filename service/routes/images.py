"""Image operations: one documented route per op, pipelines, plots and the op catalogue."""

from __future__ import annotations

import inspect
from functools import partial
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, Json, create_model
from pydantic.fields import FieldInfo

from service.deps import MetricsDep, PoolDep, SettingsDep
from service.errors import problem_responses
from service.routes._imaging import (
    NPY,
    PNG,
    TIFF,
    ImageUpload,
    IncludeImage,
    SampleName,
    image_source,
    run_and_respond,
)
from service.schemas.images import ImageResult, OpInfo
from workers.errors import InvalidParameter, TooManySteps
from workers.images import OPS, Op, describe_ops, run_plot
from workers.images.ops import validate_params

router = APIRouter(prefix="/v1/images", tags=["images"])

IMAGE_ERRORS = problem_responses(404, 413, 415, 422, 429, 503, 504)
_BINARY = {"schema": {"type": "string", "format": "binary"}}
IMAGE_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON by default; the image alone with `Accept: image/png`, the "
        "exact result array with `Accept: application/x-npy` (NumPy's .npy: dtype and "
        "shape kept) or `Accept: image/tiff` (float samples kept).",
        "content": {PNG: _BINARY, NPY: _BINARY, TIFF: _BINARY},
    }
}
PNG_ONLY: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A PNG figure.",
        "content": {PNG: {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.get("/ops", response_model=list[OpInfo], status_code=200)
async def list_ops() -> list[dict[str, Any]]:
    """Every op with the JSON schema of its parameters, to build a pipeline editor from."""
    return describe_ops()


# Pipelines -------------------------------------------------------------------


def _step_model(op: Op) -> type[BaseModel]:
    return create_model(  # type: ignore[call-overload, no-any-return]
        f"{op.params.__name__.removesuffix('Params')}Step",
        __base__=op.params,
        op=(Literal[op.name], Field(description="The op to apply.")),  # type: ignore[valid-type]
    )


PipelineStep = Annotated[
    Union[tuple(_step_model(op) for op in OPS.values())],  # type: ignore[misc]  # noqa: UP007
    Field(discriminator="op"),
]


@router.post(
    "/pipeline",
    response_model=ImageResult,
    status_code=200,
    responses={**IMAGE_OK, **IMAGE_ERRORS},
)
async def pipeline(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    steps: Annotated[
        Json[list[PipelineStep]],
        Form(
            description="JSON list of steps applied in order, e.g. "
            '`[{"op": "rgb2gray"}, {"op": "canny", "sigma": 2}]`.'
        ),
    ],
    image: ImageUpload = None,
    sample: SampleName = None,
    include_image: IncludeImage = True,
) -> Response | ImageResult:
    """Apply a list of ops in order to one image, with each step's numbers and timing."""
    if len(steps) > settings.max_pipeline_steps:
        raise TooManySteps(
            f"{len(steps)} steps is over the limit of {settings.max_pipeline_steps}",
            steps=len(steps),
            limit=settings.max_pipeline_steps,
        )
    source = await image_source(image, sample, settings)
    plan = [(step.op, step.model_dump(exclude={"op"})) for step in steps]  # type: ignore[attr-defined]
    return await run_and_respond(request, pool, settings, metrics, source, plan, include_image)


# Plots -----------------------------------------------------------------------


@router.post(
    "/histogram-plot",
    response_class=Response,
    status_code=200,
    responses={**PNG_ONLY, **IMAGE_ERRORS},
)
async def histogram_plot(
    pool: PoolDep,
    settings: SettingsDep,
    image: ImageUpload = None,
    sample: SampleName = None,
    bins: Annotated[int, Query(ge=2, le=65536, description="Histogram bins.")] = 256,
) -> Response:
    """The image's histogram as a PNG figure (the notes' `plt.hist(img.ravel(), bins=256)`)."""
    source = await image_source(image, sample, settings)
    work = partial(run_plot, max_pixels=settings.max_image_pixels)
    return Response(await pool.run(work, source, "histogram", {"bins": bins}), media_type=PNG)


@router.post(
    "/contrast-report",
    response_class=Response,
    status_code=200,
    responses={**PNG_ONLY, **IMAGE_ERRORS},
)
async def contrast_report(
    pool: PoolDep,
    settings: SettingsDep,
    image: ImageUpload = None,
    sample: SampleName = None,
    low: Annotated[float, Query(ge=0, le=100, description="Lower stretch percentile.")] = 2,
    high: Annotated[float, Query(ge=0, le=100, description="Upper stretch percentile.")] = 98,
    clip_limit: Annotated[
        float, Query(gt=0, le=1, description="CLAHE clip limit (the notes use 0.03).")
    ] = 0.03,
    bins: Annotated[int, Query(ge=2, le=65536, description="Histogram bins.")] = 256,
) -> Response:
    """The notes' 2x4 figure: original, contrast stretching, histogram and adaptive
    equalization, each over its histogram and cumulative distribution."""
    if low >= high:
        raise InvalidParameter("low", f"must be below `high` ({high:g})")
    source = await image_source(image, sample, settings)
    work = partial(run_plot, max_pixels=settings.max_image_pixels)
    params = {"low": low, "high": high, "clip_limit": clip_limit, "bins": bins}
    return Response(await pool.run(work, source, "contrast_report", params), media_type=PNG)


# One route per op ------------------------------------------------------------


def _query_parameter(name: str, field: FieldInfo) -> inspect.Parameter:
    annotation = field.annotation
    if _scalar_or_list(annotation):
        # Declared as the list form; `_unwrap` turns one item back into the scalar.
        annotation = _list_member(annotation) | None
    default = ... if field.is_required() else field.get_default(call_default_factory=True)
    query = Query(default, description=field.description)
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=query,
        annotation=Annotated[annotation, *field.metadata] if field.metadata else annotation,
    )


def _union_members(annotation: Any) -> tuple[Any, ...]:
    members = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else ()
    return tuple(get_args(m)[0] if get_origin(m) is Annotated else m for m in members)


def _list_member(annotation: Any) -> Any:
    return next(m for m in _union_members(annotation) if get_origin(m) in (list, tuple))


def _scalar_or_list(annotation: Any) -> bool:
    members = [m for m in _union_members(annotation) if m is not type(None)]
    lists = [m for m in members if get_origin(m) in (list, tuple)]
    return bool(lists) and len(lists) < len(members)


def _unwrap(value: Any, scalar_or_list: bool) -> Any:
    if scalar_or_list and isinstance(value, list) and len(value) == 1:
        return value[0]
    return value


def _op_route(op: Op) -> None:
    param_names = list(op.params.model_fields)
    # A query string cannot tell `value=7` from a one-item list; fields that accept
    # either take a repeated parameter, and one item means the scalar.
    scalar_or_list = {
        name for name, f in op.params.model_fields.items() if _scalar_or_list(f.annotation)
    }

    async def endpoint(**kwargs: Any) -> Response | ImageResult:
        request: Request = kwargs["request"]
        settings = kwargs["settings"]
        source = await image_source(kwargs["image"], kwargs["sample"], settings)
        raw = {name: _unwrap(kwargs[name], name in scalar_or_list) for name in param_names}
        params = validate_params(op.params, raw).model_dump()
        return await run_and_respond(
            request,
            kwargs["pool"],
            settings,
            kwargs["metrics"],
            source,
            [(op.name, params)],
            kwargs["include_image"],
        )

    kw = inspect.Parameter.KEYWORD_ONLY
    fixed = [
        inspect.Parameter("request", kw, annotation=Request),
        inspect.Parameter("pool", kw, annotation=PoolDep),
        inspect.Parameter("settings", kw, annotation=SettingsDep),
        inspect.Parameter("metrics", kw, annotation=MetricsDep),
        inspect.Parameter("image", kw, default=None, annotation=ImageUpload),
        inspect.Parameter("sample", kw, default=None, annotation=SampleName),
        inspect.Parameter("include_image", kw, default=True, annotation=IncludeImage),
    ]
    params = [_query_parameter(name, f) for name, f in op.params.model_fields.items()]
    endpoint.__signature__ = inspect.Signature([*fixed, *params])  # type: ignore[attr-defined]
    endpoint.__name__ = op.name
    endpoint.__doc__ = op.summary
    router.add_api_route(
        f"/{op.name}",
        endpoint,
        methods=["POST"],
        name=op.name,
        summary=op.summary.split("\n")[0],
        response_model=ImageResult,
        status_code=200,
        responses={**IMAGE_OK, **IMAGE_ERRORS},
    )


for _op in OPS.values():
    _op_route(_op)
