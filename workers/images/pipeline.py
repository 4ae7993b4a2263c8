"""Entry points that run in a worker process: whole pipelines and plots.

Both functions are top-level and take and return only picklable values, so a
spawned process pool (or Ray) can call them. Every step is validated before the
image is decoded, so a typo in the last step costs no decoding work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from workers.errors import ImageTooLarge, IncompatibleImage, InvalidParameter, NotFound
from workers.images.codec import ENCODERS, OutputFormat, decode_image, summarize
from workers.images.ops import get_op, validate_params
from workers.images.plots import (
    ContrastReportParams,
    HistogramPlotParams,
    contrast_report_png,
    histogram_png,
)
from workers.images.samples import load_sample

__all__ = ["PLOT_KINDS", "ImageSource", "PipelineResult", "PlotKind", "run_pipeline", "run_plot"]

PlotKind = Literal["histogram", "contrast_report"]

_PLOTS: dict[str, tuple[type[BaseModel], Callable[..., bytes]]] = {
    "histogram": (HistogramPlotParams, histogram_png),
    "contrast_report": (ContrastReportParams, contrast_report_png),
}
PLOT_KINDS: tuple[str, ...] = tuple(_PLOTS)


@dataclass(frozen=True)
class ImageSource:
    """Where a pipeline's image comes from: uploaded bytes or a bundled sample name."""

    data: bytes | None = None
    sample: str | None = None

    def __post_init__(self) -> None:
        if (self.data is None) == (self.sample is None):
            raise ValueError("ImageSource takes exactly one of `data` and `sample`")


@dataclass
class PipelineResult:
    """The outcome of :func:`run_pipeline`.

    Attributes
    ----------
    png : bytes or None
        The final image as PNG, when encoding as PNG was asked for.
    summary : dict
        :func:`workers.images.summarize` of the final image; empty when not asked for.
    steps : list of dict
        Per step: ``op`` (name), ``values`` (what the op measured) and ``ms``.
    timings_ms : dict
        ``decode`` (or sample load), ``ops``, ``encode`` (0 when not encoding) and
        ``total``, in milliseconds.
    encoded : bytes or None
        The final image in the asked ``output`` format (the PNG again for ``png``).
    media_type : str
        The media type of ``encoded``.
    """

    png: bytes | None
    summary: dict[str, Any]
    steps: list[dict[str, Any]]
    timings_ms: dict[str, float]
    encoded: bytes | bytearray | None = None
    media_type: str = "image/png"


def run_pipeline(
    source: ImageSource,
    steps: Sequence[tuple[str, dict[str, Any]]],
    *,
    max_pixels: int,
    encode: bool,
    compress_level: int,
    describe: bool = True,
    output: OutputFormat = "png",
) -> PipelineResult:
    """Decode an image, apply ops in order, summarize and optionally encode it.

    Parameters
    ----------
    source : ImageSource
        The uploaded bytes or the sample to start from.
    steps : sequence of (str, dict)
        Op name and raw JSON parameters of each step.
    max_pixels : int
        Largest accepted ``width * height`` (also applied to samples).
    encode : bool
        Whether to return the final image, as ``output``.
    compress_level : int
        zlib level of the PNG, 0..9.
    describe : bool, optional
        Whether to compute the summary; a caller that only sends the image back
        need not pay for it.
    output : {"png", "npy", "tiff"}, optional
        The format to encode in (:data:`workers.images.codec.ENCODERS`).

    Returns
    -------
    PipelineResult

    Raises
    ------
    NotFound
        A step names an unknown op, or the sample does not exist.
    InvalidParameter
        A step's parameter is invalid; ``parameter`` is the field's name and the
        detail names the step.
    IncompatibleImage
        An op does not apply to the image it receives (context: ``step``, ``op``).
    InvalidImage, UnsupportedMediaType, ImageTooLarge
        From decoding, see :func:`workers.images.decode_image`.
    """
    started = perf_counter()
    if output not in ENCODERS:
        raise InvalidParameter("output", f"must be one of {', '.join(ENCODERS)}")
    encoder = ENCODERS[output]
    validated = []
    for index, (op_name, raw) in enumerate(steps):
        with _step_errors(index, op_name):
            op = get_op(op_name)
            validated.append((op, validate_params(op.params, raw)))

    image = _load(source, max_pixels)
    loaded = perf_counter()

    step_reports = []
    for index, (op, params) in enumerate(validated):
        step_started = perf_counter()
        with _step_errors(index, op.name):
            result = op.apply(image, params)
        image = result.image
        step_reports.append(
            {"op": op.name, "values": result.values, "ms": _ms(perf_counter() - step_started)}
        )
    applied = perf_counter()

    summary = summarize(image) if describe else {}
    encoded = encoder.encode(image, compress_level) if encode else None
    finished = perf_counter()
    return PipelineResult(
        png=bytes(encoded) if output == "png" and encoded is not None else None,
        encoded=encoded,
        media_type=encoder.media_type,
        summary=summary,
        steps=step_reports,
        timings_ms={
            "decode": _ms(loaded - started),
            "ops": _ms(applied - loaded),
            "encode": _ms(finished - applied) if encode else 0.0,
            "total": _ms(finished - started),
        },
    )


def run_plot(
    source: ImageSource, kind: PlotKind, params: dict[str, Any], *, max_pixels: int
) -> bytes:
    """Render one of the plots of :mod:`workers.images.plots` as PNG.

    Parameters
    ----------
    source : ImageSource
        The uploaded bytes or the sample to plot.
    kind : {"histogram", "contrast_report"}
        Which plot.
    params : dict
        Raw JSON parameters, validated against ``HistogramPlotParams`` or
        ``ContrastReportParams``.
    max_pixels : int
        Largest accepted ``width * height``.

    Returns
    -------
    bytes
        The PNG.

    Raises
    ------
    NotFound
        Unknown `kind` (context ``kind="plot"``) or sample.
    InvalidParameter
        A parameter is invalid.
    """
    if kind not in _PLOTS:
        raise NotFound(
            f"unknown plot `{kind}`; expected one of {', '.join(PLOT_KINDS)}",
            kind="plot",
            name=kind,
        )
    model, render = _PLOTS[kind]
    options = validate_params(model, params)
    return render(_load(source, max_pixels), **options.model_dump())


def _load(source: ImageSource, max_pixels: int) -> np.ndarray:
    if source.data is not None:
        return decode_image(source.data, max_pixels=max_pixels)
    assert source.sample is not None  # guaranteed by ImageSource.__post_init__
    image = load_sample(source.sample)
    pixels = image.shape[0] * image.shape[1]
    if pixels > max_pixels:
        raise ImageTooLarge(
            f"sample `{source.sample}` has {pixels} pixels, more than the limit of {max_pixels}",
            pixels=pixels,
            limit=max_pixels,
        )
    return image


@contextmanager
def _step_errors(index: int, op_name: str) -> Iterator[None]:
    """Say which step failed: clients send whole pipelines and need to know."""
    try:
        yield
    except InvalidParameter as exc:
        # The parameter keeps its own name (a single-op route has no steps to index);
        # the reason says where it sits in a pipeline.
        raise InvalidParameter(exc.parameter, f"{exc.reason} (step {index}, `{op_name}`)") from exc
    except IncompatibleImage as exc:
        context = {**exc.context, "step": index, "op": op_name}
        raise IncompatibleImage(f"step {index} (`{op_name}`): {exc.detail}", **context) from exc
    except NotFound as exc:
        raise NotFound(f"step {index}: {exc.detail}", **exc.context, step=index) from exc


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)
