"""What the image routes share: where the image comes from and how the result goes back."""

from __future__ import annotations

import base64
from functools import partial
from typing import Annotated

from fastapi import File, Query, Request, UploadFile
from fastapi.responses import Response

from service.deps import MetricsDep, PoolDep, SettingsDep
from service.schemas.images import ImageResult, StepReport
from workers.errors import InvalidImage, InvalidInput, NotFound, PayloadTooLarge
from workers.images import ImageSource, PipelineResult, run_pipeline
from workers.images.codec import ENCODERS, OutputFormat
from workers.images.samples import SAMPLE_NAMES

PNG = "image/png"
NPY = ENCODERS["npy"].media_type
TIFF = ENCODERS["tiff"].media_type

ImageUpload = Annotated[
    UploadFile | None,
    File(
        description="The image: PNG, JPEG, TIFF, BMP, WebP, GIF (first frame) or a NumPy "
        "`.npy` array ((H, W) or (H, W, C), bool, integer or float; no object arrays)."
    ),
]
SampleName = Annotated[
    str | None,
    Query(description="Use a bundled `skimage.data` image instead of an upload (see /v1/samples)."),
]
IncludeImage = Annotated[
    bool, Query(description="JSON responses: include the result PNG as base64.")
]

#: What each answer matches in `Accept`, with how specific the match is; on a tie in
#: quality and specificity the earlier answer wins (JSON first).
_ANSWERS: dict[OutputFormat | None, dict[str, int]] = {
    None: {"application/json": 3, "application/*": 2, "*/*": 1},
    "png": {PNG: 3, "image/*": 2},
    "npy": {NPY: 3},
    "tiff": {TIFF: 3},
}


def negotiate(request: Request) -> OutputFormat | None:
    """Content negotiation: the image format the client ranks above JSON, else None (JSON).

    `image/png` (or `image/*`), `application/x-npy` and `image/tiff` answer with the
    image alone; JSON is the default and wins ties.
    """
    accept = request.headers.get("accept")
    if not accept:
        return None
    best: dict[OutputFormat | None, tuple[float, int]] = dict.fromkeys(_ANSWERS, (0.0, 0))
    for item in accept.split(","):
        media, _, params = item.strip().partition(";")
        media = media.strip().lower()
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        for answer, types in _ANSWERS.items():
            if media in types:
                best[answer] = max(best[answer], (q, types[media]))
    # max keeps the first of equals, so JSON wins ties.
    choice = max(best, key=lambda answer: best[answer])
    return choice if best[choice][0] > 0 else None


def check_sample(name: str) -> None:
    if name not in SAMPLE_NAMES:
        raise NotFound(
            f"unknown sample `{name}`; GET /v1/samples lists them", kind="sample", name=name
        )


async def image_source(
    image: UploadFile | None, sample: str | None, settings: SettingsDep
) -> ImageSource:
    if image is not None and sample is not None:
        raise InvalidInput("give either an `image` upload or a `sample` name, not both")
    if sample is not None:
        check_sample(sample)  # 404 before any work is queued
        return ImageSource(sample=sample)
    if image is None:
        raise InvalidInput("no image: upload one as the multipart field `image` or pass `sample`")
    data = await image.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLarge(
            f"the upload is over the limit of {settings.max_upload_bytes} bytes",
            limit_bytes=settings.max_upload_bytes,
        )
    if not data:
        raise InvalidImage("the upload is empty")
    return ImageSource(data=data)


async def run_and_respond(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    source: ImageSource,
    steps: list[tuple[str, dict]],
    include_image: bool,
) -> Response | ImageResult:
    output = negotiate(request)
    work = partial(
        run_pipeline,
        max_pixels=settings.max_image_pixels,
        encode=output is not None or include_image,
        compress_level=settings.png_compress_level,
        describe=output is None,
        output=output or "png",
    )
    result: PipelineResult = await pool.run(work, source, steps)
    for step in result.steps:
        metrics.op_seconds.labels(step["op"]).observe(step["ms"] / 1000)
    if output is not None:
        assert result.encoded is not None
        # A view: Starlette sends it as it is, where a bytearray would be copied.
        return Response(memoryview(result.encoded), media_type=result.media_type)
    return ImageResult(
        **result.summary,
        values=result.steps[-1]["values"] if result.steps else {},
        steps=[StepReport(**step) for step in result.steps],
        timings_ms=result.timings_ms,
        png_base64=base64.b64encode(result.png).decode("ascii") if result.png else None,
    )
