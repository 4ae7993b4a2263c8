"""Matplotlib figures of an image's intensities, rendered to PNG.

Only the object-oriented API with the Agg canvas is used (never ``pyplot``): no
global figure state, no display, so it is safe in threads and worker processes.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict, Field
from skimage import color, exposure, util

from workers.errors import InvalidParameter
from workers.images.ops import histogram_input

__all__ = [
    "ContrastReportParams",
    "HistogramPlotParams",
    "contrast_report_png",
    "histogram_png",
]

_DPI = 80


class HistogramPlotParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    bins: int = Field(256, ge=1, le=4096, description="Number of histogram bins.")


class ContrastReportParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    low: float = Field(2, ge=0, le=100, description="Lower percentile for contrast stretching.")
    high: float = Field(98, ge=0, le=100, description="Upper percentile for contrast stretching.")
    clip_limit: float = Field(
        0.03, gt=0, le=1, description="Clipping limit of the adaptive equalization."
    )
    bins: int = Field(256, ge=1, le=4096, description="Number of histogram bins.")


def histogram_png(image: np.ndarray, *, bins: int = 256) -> bytes:
    """Plot the intensity histogram of all pixel values, as in the notes.

    Reproduces ``plt.hist(img.ravel(), bins=256, histtype='step', color='black')``:
    color images pool their channels, ``bool`` counts as 0/1 and non-finite float
    values are left out.

    Parameters
    ----------
    image : numpy.ndarray
        Any image.
    bins : int, optional
        Number of bins.

    Returns
    -------
    bytes
        A 640x400 PNG.
    """
    figure = Figure(figsize=(8, 5), dpi=_DPI)
    axes = figure.add_subplot()
    axes.hist(_finite_values(image), bins=bins, histtype="step", color="black")
    axes.set_xlabel("Pixel intensity")
    axes.set_ylabel("Number of pixels")
    figure.tight_layout()
    return _render(figure)


def contrast_report_png(
    image: np.ndarray,
    *,
    low: float = 2,
    high: float = 98,
    clip_limit: float = 0.03,
    bins: int = 256,
) -> bytes:
    """Compare contrast enhancements side by side, reproducing the notes' figure.

    Four columns (original, contrast stretching between the `low` and `high`
    percentiles, histogram equalization, adaptive equalization with
    `clip_limit`), each image above its histogram and, in red, its cumulative
    distribution.

    Color images are reported on their luminance (``rgb2gray``; RGBA composed over
    white first), since the enhancements are defined on one channel. Float images
    outside [0, 1] are min-max scaled to [0, 1] first and NaN counts as 0.

    Parameters
    ----------
    image : numpy.ndarray
        Any image.
    low, high : float, optional
        Percentiles for contrast stretching, ``0 <= low < high <= 100``.
    clip_limit : float, optional
        Clipping limit of ``equalize_adapthist``, in (0, 1].
    bins : int, optional
        Number of histogram bins.

    Returns
    -------
    bytes
        A 1280x640 PNG.

    Raises
    ------
    InvalidParameter
        `high` is not above `low`.
    """
    if high <= low:
        raise InvalidParameter("high", f"must be greater than `low` ({low})")
    gray = histogram_input(_report_gray(image))
    p_low, p_high = np.percentile(gray, (low, high))
    panels = {
        "Low contrast image": gray,
        "Contrast stretching": exposure.rescale_intensity(gray, in_range=(p_low, p_high)),
        "Histogram equalization": exposure.equalize_hist(gray),
        "Adaptive equalization": exposure.equalize_adapthist(gray, clip_limit=clip_limit),
    }

    figure = Figure(figsize=(16, 8), dpi=_DPI)
    first = figure.add_subplot(2, 4, 1)
    image_axes = [first] + [
        figure.add_subplot(2, 4, 1 + i, sharex=first, sharey=first) for i in range(1, 4)
    ]
    hist_axes = [figure.add_subplot(2, 4, 5 + i) for i in range(4)]

    for column, (title, panel) in enumerate(panels.items()):
        ax_img, ax_hist, ax_cdf = _plot_img_and_hist(
            panel, image_axes[column], hist_axes[column], bins
        )
        ax_img.set_title(title)
        if column == 0:
            _, y_max = ax_hist.get_ylim()
            ax_hist.set_ylabel("Number of pixels")
            ax_hist.set_yticks(np.linspace(0, y_max, 5))
    ax_cdf.set_ylabel("Fraction of total intensity")
    ax_cdf.set_yticks(np.linspace(0, 1, 5))

    figure.tight_layout()
    return _render(figure)


def _plot_img_and_hist(
    image: np.ndarray, ax_img: Axes, ax_hist: Axes, bins: int
) -> tuple[Axes, Axes, Axes]:
    """The notes' plot_img_and_hist: an image, its histogram and its cumulative histogram."""
    image = util.img_as_float(image)
    ax_cdf = ax_hist.twinx()

    ax_img.imshow(image, cmap="gray")
    ax_img.set_axis_off()
    ax_img.set_adjustable("box")

    ax_hist.hist(image.ravel(), bins=bins, histtype="step", color="black")
    ax_hist.ticklabel_format(axis="y", style="scientific", scilimits=(0, 0))
    ax_hist.set_xlabel("Pixel intensity")
    ax_hist.set_xlim(0, 1)
    ax_hist.set_yticks([])

    img_cdf, centers = exposure.cumulative_distribution(image, bins)
    ax_cdf.plot(centers, img_cdf, "r")
    ax_cdf.set_yticks([])
    return ax_img, ax_hist, ax_cdf


def _report_gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3:
        if image.shape[2] == 4:
            image = color.rgba2rgb(image)
        elif image.shape[2] != 3:
            image = image[:, :, 0]
        if image.ndim == 3:
            image = color.rgb2gray(image)
    if image.dtype == np.bool_:
        return image.astype(np.float64)
    if image.dtype.kind == "f":
        image = np.nan_to_num(image.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        if image.min() < 0 or image.max() > 1:
            image = exposure.rescale_intensity(image, out_range=(0.0, 1.0))
    return image


def _finite_values(image: np.ndarray) -> np.ndarray:
    values = image.reshape(-1)
    if values.dtype == np.bool_:
        return values.view(np.uint8)
    if values.dtype.kind == "f":
        return values[np.isfinite(values)]
    return values


def _render(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()
