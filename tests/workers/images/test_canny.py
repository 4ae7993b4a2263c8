"""The service's Canny against ``skimage.feature.canny``: the same booleans, every time."""

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from skimage import data, feature, util
from skimage._shared.filters import gaussian
from skimage._shared.utils import _supported_float_type
from skimage.feature import _canny as skimage_canny

from workers.images import _canny
from workers.images._canny import canny

RNG = np.random.default_rng(20261203)
CAMERA = data.camera()
COINS = data.coins()


def _noisy(shape: tuple[int, int], dtype: str) -> np.ndarray:
    """Random blobs in ``dtype``: edges everywhere, at every scale."""
    image = RNG.random(shape)
    if dtype == "bool":
        return image > 0.5
    if np.dtype(dtype).kind == "f":
        return image.astype(dtype)
    info = np.iinfo(dtype)
    return (info.min + image * (float(info.max) - info.min)).astype(dtype)


@pytest.mark.parametrize(
    "dtype", ["uint8", "uint16", "int8", "int16", "int32", "float16", "float32", "float64", "bool"]
)
@pytest.mark.parametrize("shape", [(1, 1), (2, 5), (9, 9), (37, 61), (300, 200)])
@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.3])
def test_random_images_of_every_dtype_and_shape(dtype, shape, sigma) -> None:
    image = _noisy(shape, dtype)
    kept = image.copy()
    edges = canny(image, sigma=sigma)
    assert edges.dtype == np.bool_
    assert_array_equal(edges, feature.canny(image, sigma=sigma))
    assert_array_equal(image, kept)  # the input is left alone


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"sigma": 2.0, "low_threshold": 20, "high_threshold": 50},
        {"low_threshold": 0.0, "high_threshold": 0.0},
        {"low_threshold": 0.5, "high_threshold": 0.9, "use_quantiles": True},
        {"low_threshold": 0.0, "high_threshold": 1.0, "use_quantiles": True},
        {"low_threshold": 250, "high_threshold": 255},  # nothing passes: no edge at all
    ],
)
@pytest.mark.parametrize(
    "image", [CAMERA, COINS, util.img_as_float32(COINS)], ids=["camera", "coins", "coins-float32"]
)
def test_thresholds_and_samples(image, params) -> None:
    edges = canny(image, **params)
    assert edges.dtype == np.bool_
    assert_array_equal(edges, feature.canny(image, **params))


def test_a_flat_image_has_no_edges_like_skimage_says() -> None:
    flat = np.full((40, 30), 7, np.uint8)
    assert not canny(flat).any()
    assert_array_equal(canny(flat), feature.canny(flat))


def test_kept_shapes_give_the_same_edges_again_whatever_came_between() -> None:
    # The blur of the mask is kept per shape, float type and sigma: a wrong key would
    # hand one image another's.
    images = [CAMERA, COINS, CAMERA.astype(np.float32), CAMERA.T.copy(), CAMERA[:-1]]
    for _ in range(2):
        for image in images:
            for sigma in (1.0, 2.0):
                assert_array_equal(canny(image, sigma=sigma), feature.canny(image, sigma=sigma))


@pytest.mark.parametrize("dtype", ["uint8", "float16", "float32", "float64"])
@pytest.mark.parametrize("sigma", [1.0, 2.5])
def test_the_kept_blur_of_the_mask_smooths_as_skimage_does_to_the_bit(dtype, sigma) -> None:
    # The smoothed image, before any threshold can hide a last-bit difference.
    image = _noisy((40, 50), dtype)
    expected, _ = skimage_canny._preprocess(image, None, sigma, "constant", 0.0)
    float_type = np.dtype(_supported_float_type(image.dtype))
    smoothed = gaussian(image, sigma=sigma, mode="constant", cval=0.0, preserve_range=False)
    smoothed /= _canny._bleed_over(image.shape, float_type, sigma)
    assert smoothed.dtype == expected.dtype
    assert smoothed.tobytes() == expected.tobytes()


def test_images_over_the_kept_size_are_computed_each_time(monkeypatch) -> None:
    monkeypatch.setattr(_canny, "CACHED_MAX_PIXELS", 100)
    _canny._cached_bleed_over.cache_clear()
    image = _noisy((30, 10), "uint8")  # 300 pixels, though 10 x 10 would fit
    assert_array_equal(canny(image), feature.canny(image))
    assert _canny._cached_bleed_over.cache_info().currsize == 0
    small = _noisy((10, 10), "uint8")
    assert_array_equal(canny(small), feature.canny(small))
    assert _canny._cached_bleed_over.cache_info().currsize == 1


@pytest.mark.parametrize(
    ("image", "params", "message"),
    [
        (CAMERA.astype(np.int64), {}, "64-bit integer"),
        (CAMERA.astype(np.uint64), {}, "64-bit integer"),
        (CAMERA, {"low_threshold": 50, "high_threshold": 10}, "lower then high"),
        (CAMERA, {"high_threshold": 1.5, "use_quantiles": True}, "between 0 and 1"),
        (CAMERA, {"low_threshold": -0.1, "use_quantiles": True}, "between 0 and 1"),
    ],
)
def test_the_same_errors_as_skimage(image, params, message) -> None:
    with pytest.raises(ValueError, match=message) as theirs:
        feature.canny(image, **params)
    with pytest.raises(ValueError) as ours:
        canny(image, **params)
    assert str(ours.value) == str(theirs.value)
