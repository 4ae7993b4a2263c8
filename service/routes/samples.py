"""The bundled `skimage.data` sample images."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from service.deps import PoolDep, SettingsDep
from service.errors import problem_responses
from service.routes._imaging import PNG, check_sample
from service.schemas.images import SampleInfo
from workers.images import ImageSource, run_pipeline
from workers.images.samples import list_samples

router = APIRouter(prefix="/v1/samples", tags=["samples"])


@router.get("", response_model=list[SampleInfo], status_code=200)
async def list_sample_images() -> list[Any]:
    """Sample images usable as `sample=<name>` on every image route."""
    return [SampleInfo(**vars(info)) for info in list_samples()]


@router.get(
    "/{name}",
    response_class=Response,
    status_code=200,
    responses={
        200: {"content": {PNG: {"schema": {"type": "string", "format": "binary"}}}},
        **problem_responses(404, 429, 503, 504),
    },
)
async def get_sample_image(name: str, pool: PoolDep, settings: SettingsDep) -> Response:
    """The sample as PNG."""
    check_sample(name)
    work = partial(
        run_pipeline,
        max_pixels=settings.max_image_pixels,
        encode=True,
        compress_level=settings.png_compress_level,
        describe=False,
    )
    result = await pool.run(work, ImageSource(sample=name), [])
    return Response(result.png, media_type=PNG)
