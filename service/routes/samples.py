"""The bundled `skimage.data` sample images."""

from __future__ import annotations

from functools import partial
from importlib import metadata
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.deps import PoolDep, SettingsDep
from service.errors import problem_responses
from service.routes._caching import (
    NOT_MODIFIED_RESPONSE,
    SAMPLE_CACHE_CONTROL,
    cached,
    entity_tag,
    not_modified,
)
from service.routes._imaging import PNG, check_sample
from service.schemas.images import SampleInfo
from workers.images import ImageSource, run_pipeline
from workers.images.samples import list_samples

router = APIRouter(prefix="/v1/samples", tags=["samples"])

#: What a sample's PNG is made from besides its name and the PNG settings.
_SAMPLE_SOURCES = (metadata.version("scikit-image"), metadata.version("tensorlens"))


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
        **NOT_MODIFIED_RESPONSE,
        **problem_responses(404, 429, 503, 504),
    },
)
async def get_sample_image(
    name: str, request: Request, pool: PoolDep, settings: SettingsDep
) -> Response:
    """The sample as PNG, with an `ETag` (`If-None-Match` answers 304: samples never change)."""
    check_sample(name)
    etag = entity_tag(name, str(settings.png_compress_level), *_SAMPLE_SOURCES)
    unchanged = not_modified(request, etag, SAMPLE_CACHE_CONTROL)
    if unchanged is not None:
        return unchanged
    work = partial(
        run_pipeline,
        max_pixels=settings.max_image_pixels,
        encode=True,
        compress_level=settings.png_compress_level,
        describe=False,
    )
    result = await pool.run(work, ImageSource(sample=name), [])
    return cached(Response(result.png, media_type=PNG), etag, SAMPLE_CACHE_CONTROL)
