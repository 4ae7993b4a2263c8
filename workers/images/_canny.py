"""``skimage.feature.canny`` bit for bit, without recomputing what depends only on the shape.

skimage's Canny (``mode="constant"``, no mask, as the ``canny`` op calls it) divides the
smoothed image by the blur of an all-ones mask (its "bleed-over": how much of each
pixel's blur came from inside the image). That blur depends on the image's shape, float
type and ``sigma`` alone, yet costs two of the eight 1-D correlations of every call; a
service that gets the same shapes again and again computes it once. The rest is
skimage 0.26's ``canny`` (BSD-3-Clause, scikit-image developers) step for step, with
skimage's own helpers, so the edges are the very booleans ``feature.canny`` returns
(``tests/workers/images/test_canny.py`` compares them, and the smoothed image, across
dtypes, shapes, sigmas and thresholds).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage as ndi
from skimage._shared.filters import gaussian
from skimage._shared.utils import _supported_float_type
from skimage.feature._canny_cy import _nonmaximum_suppression_bilinear
from skimage.util.dtype import dtype_limits

#: Largest image (pixels) whose bleed-over is kept, and how many are: at most 8 MiB
#: each, 64 MiB in all per worker. Larger images compute theirs on every call.
CACHED_MAX_PIXELS = 1 << 20
CACHED_SHAPES = 8


def canny(
    image: np.ndarray,
    sigma: float = 1.0,
    low_threshold: float | None = None,
    high_threshold: float | None = None,
    use_quantiles: bool = False,
) -> np.ndarray:
    """``skimage.feature.canny(image, sigma, low_threshold, high_threshold, use_quantiles)``
    of a 2-D image (the caller checks that), raising the same ``ValueError`` as it."""
    if np.issubdtype(image.dtype, np.int64) or np.issubdtype(image.dtype, np.uint64):
        raise ValueError("64-bit integer images are not supported")
    dtype_max = dtype_limits(image, clip_negative=False)[1]
    low = _threshold(low_threshold, 0.1, dtype_max, use_quantiles)
    high = _threshold(high_threshold, 0.2, dtype_max, use_quantiles)
    if high < low:
        raise ValueError("low_threshold should be lower then high_threshold")

    float_type = np.dtype(_supported_float_type(image.dtype))
    smoothed = gaussian(image, sigma=sigma, mode="constant", cval=0.0, preserve_range=False)
    smoothed /= _bleed_over(image.shape, float_type, sigma)
    eroded_mask = np.ones(image.shape, dtype=bool)
    eroded_mask[:1, :] = 0
    eroded_mask[-1:, :] = 0
    eroded_mask[:, :1] = 0
    eroded_mask[:, -1:] = 0

    jsobel = ndi.sobel(smoothed, axis=1)
    isobel = ndi.sobel(smoothed, axis=0)
    magnitude = isobel * isobel
    magnitude += jsobel * jsobel
    np.sqrt(magnitude, out=magnitude)
    if use_quantiles:
        low, high = np.percentile(magnitude, [100.0 * low, 100.0 * high])

    low_masked = _nonmaximum_suppression_bilinear(isobel, jsobel, magnitude, eroded_mask, low)
    low_mask = low_masked > 0
    labels, count = ndi.label(low_mask, np.ones((3, 3), bool))
    if count == 0:
        return low_mask
    high_mask = low_mask & (low_masked >= high)
    good_label = np.zeros((count + 1,), bool)
    good_label[np.unique(labels[high_mask])] = True
    return good_label[labels]  # type: ignore[no-any-return]


def _threshold(value: float | None, default: float, dtype_max: float, quantile: bool) -> float:
    if value is None:
        return default
    if quantile:
        if not 0.0 <= value <= 1.0:
            raise ValueError("Quantile thresholds must be between 0 and 1.")
        return value
    return value / dtype_max


def _bleed_over(shape: tuple[int, ...], float_type: np.dtype, sigma: float) -> np.ndarray:
    if shape[0] * shape[1] <= CACHED_MAX_PIXELS:
        return _cached_bleed_over(shape, float_type, sigma)
    return _compute_bleed_over(shape, float_type, sigma)


def _compute_bleed_over(shape: tuple[int, ...], float_type: np.dtype, sigma: float) -> np.ndarray:
    ones = np.ones(shape, dtype=float_type)
    blurred = gaussian(ones, sigma=sigma, mode="constant", cval=0.0, preserve_range=False)
    return blurred + np.finfo(float_type).eps  # type: ignore[no-any-return]


@functools.lru_cache(maxsize=CACHED_SHAPES)
def _cached_bleed_over(shape: tuple[int, ...], float_type: np.dtype, sigma: float) -> np.ndarray:
    bleed_over = _compute_bleed_over(shape, float_type, sigma)
    bleed_over.setflags(write=False)  # shared by every later call
    return bleed_over
