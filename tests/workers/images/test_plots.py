import inspect
import io
import sys
import time

import numpy as np
import pytest
from PIL import Image
from skimage import data, util

from workers.errors import InvalidParameter
from workers.images import contrast_report_png, histogram_png, plots

CAMERA = data.camera()


def rgb_pixels(payload: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(payload)) as image:
        assert image.format == "PNG"
        return np.array(image.convert("RGB"))


def dark_pixel_count(pixels: np.ndarray) -> int:
    return int((pixels.max(axis=2) < 60).sum())


def red_pixel_count(pixels: np.ndarray) -> int:
    red, green, blue = (pixels[:, :, i].astype(int) for i in range(3))
    return int(((red > 200) & (green < 80) & (blue < 80)).sum())


def test_histogram_png_draws_a_black_step_line():
    pixels = rgb_pixels(histogram_png(CAMERA))
    assert pixels.shape == (400, 640, 3)
    assert dark_pixel_count(pixels) > 500  # the histogram outline plus axes
    assert (pixels == 255).all(axis=2).mean() > 0.5  # mostly white background


def test_histogram_png_depends_on_the_data():
    bright = rgb_pixels(histogram_png(np.clip(CAMERA.astype(int) + 100, 0, 255).astype(np.uint8)))
    assert not np.array_equal(bright, rgb_pixels(histogram_png(CAMERA)))
    assert not np.array_equal(
        rgb_pixels(histogram_png(CAMERA, bins=8)), rgb_pixels(histogram_png(CAMERA))
    )


@pytest.mark.parametrize(
    "image",
    [
        data.horse(),
        data.chelsea(),
        np.where(CAMERA > 100, np.nan, util.img_as_float(CAMERA)),
        util.img_as_uint(CAMERA),
    ],
    ids=["bool", "rgb", "float-with-nan", "uint16"],
)
def test_histogram_png_handles_every_dtype(image):
    pixels = rgb_pixels(histogram_png(image, bins=32))
    assert pixels.shape == (400, 640, 3)
    assert dark_pixel_count(pixels) > 200


def test_contrast_report_reproduces_the_notes_figure():
    started = time.perf_counter()
    payload = contrast_report_png(CAMERA)
    elapsed = time.perf_counter() - started
    pixels = rgb_pixels(payload)
    assert pixels.shape == (640, 1280, 3)  # figsize 16x8 at 80 dpi
    assert red_pixel_count(pixels) > 300  # four cumulative distributions in red
    # The top row holds the four images: many mid-gray pixels, not just lines on white.
    top = pixels[:320]
    gray = (np.ptp(top, axis=2) < 5) & (top.mean(axis=2) > 40) & (top.mean(axis=2) < 215)
    assert gray.sum() > 20_000
    assert elapsed < 5  # generous for slow CI; typically well under a second


@pytest.mark.parametrize(
    "image",
    [data.logo()[::4, ::4], np.linspace(-2, 3, 64 * 80).reshape(64, 80)],
    ids=["rgba", "float-out-of-range"],
)
def test_contrast_report_converts_color_and_scales_floats(image):
    pixels = rgb_pixels(contrast_report_png(image, bins=64))
    assert pixels.shape == (640, 1280, 3)
    assert red_pixel_count(pixels) > 300


def test_contrast_report_needs_low_below_high():
    with pytest.raises(InvalidParameter) as caught:
        contrast_report_png(CAMERA, low=98, high=2)
    assert caught.value.parameter == "high"


def test_plots_never_import_pyplot(monkeypatch):
    # None in sys.modules makes any `import matplotlib.pyplot` raise ImportError.
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    assert rgb_pixels(histogram_png(CAMERA[:8, :8])).shape == (400, 640, 3)
    source = inspect.getsource(plots)
    assert "pyplot" not in source.replace("never ``pyplot``", "")
