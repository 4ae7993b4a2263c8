import operator

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import ndimage as ndi
from skimage import color, data, exposure, feature, filters, util

from workers.errors import IncompatibleImage, InvalidParameter, NotFound
from workers.images import OPS, apply_op, describe_ops, get_op, parse_params

EXPECTED_OPS = [
    "rgb2gray",
    "channel",
    "rgb2bgr",
    "pixel",
    "fill",
    "set_where",
    "recolor",
    "img_as_float",
    "img_as_ubyte",
    "img_as_uint",
    "img_as_int",
    "histogram",
    "cumulative_distribution",
    "threshold",
    "canny",
    "fill_holes",
    "rescale_intensity",
    "equalize_hist",
    "equalize_adapthist",
]

SAMPLES = {name: getattr(data, name)() for name in ("camera", "chelsea", "coins", "astronaut")}
GRAY_SAMPLES = ["camera", "coins"]
COLOR_SAMPLES = ["chelsea", "astronaut"]
CAMERA = SAMPLES["camera"]
CAT = SAMPLES["chelsea"]
LOGO = data.logo()  # RGBA
HORSE = data.horse()  # bool

# The same picture in every dtype the ops must handle.
CAMERA_AS = {
    "uint8": CAMERA,
    "uint16": util.img_as_uint(CAMERA),
    "float64": util.img_as_float(CAMERA),
    "int16": util.img_as_int(CAMERA),
    "bool": CAMERA > 128,
}


def run(op_name, image, **params):
    return apply_op(image, op_name, params)


# --------------------------------------------------------------------------- registry


def test_registry_has_exactly_the_public_ops():
    assert list(OPS) == EXPECTED_OPS


def test_describe_ops_gives_a_schema_with_descriptions():
    described = describe_ops()
    assert [entry["name"] for entry in described] == EXPECTED_OPS
    for entry in described:
        schema = entry["params"]
        assert entry["summary"]
        assert schema["type"] == "object"
        assert schema["additionalProperties"] is False
        for name, field in schema.get("properties", {}).items():
            assert field.get("description"), f"{entry['name']}.{name} has no description"


def test_schema_carries_constraints():
    schema = get_op("equalize_adapthist").params.model_json_schema()["properties"]
    assert schema["clip_limit"]["exclusiveMinimum"] == 0
    assert schema["clip_limit"]["maximum"] == 1
    assert schema["clip_limit"]["default"] == 0.01


def test_unknown_op_is_not_found():
    with pytest.raises(NotFound) as caught:
        parse_params("sharpen", {})
    assert caught.value.detail == "unknown op `sharpen`"
    assert caught.value.context == {"kind": "op", "name": "sharpen"}


# Reasons ending in "..." are pydantic's (its wording may grow); the rest are ours, exact.
@pytest.mark.parametrize(
    ("op_name", "raw", "parameter", "reason"),
    [
        ("canny", {"sigmaa": 1}, "sigmaa",
         "is not a parameter; expected sigma, low_threshold, high_threshold, use_quantiles"),
        ("canny", {"sigma": "wide"}, "sigma", "input should be a valid number..."),
        ("canny", {"sigma": 0}, "sigma", "input should be greater than 0..."),
        ("canny", {"sigma": float("nan")}, "sigma", "input should be a finite number..."),
        ("equalize_adapthist", {"clip_limit": 1.5}, "clip_limit",
         "input should be less than or equal to 1..."),
        ("equalize_adapthist", {"kernel_size": [8, 0]}, "kernel_size[1]",
         "input should be greater than or equal to 1..."),
        ("equalize_adapthist", {"kernel_size": 0}, "kernel_size",
         "input should be greater than or equal to 1..."),
        ("histogram", {"source_range": "everything"}, "source_range", "input should be..."),
        ("pixel", {"row": 1}, "col", "is required"),
        ("pixel", {"row": -1, "col": 0}, "row", "input should be greater than or equal to 0..."),
        ("set_where", {"comparison": "lte"}, "comparison", "input should be..."),
        ("fill", {"value": [1, 2, 3, 4, 5]}, "value", "input should be..."),
        ("recolor", {"color": [1, "x", 3]}, "color[1]", "input should be a valid number..."),
        ("rgb2gray", {"anything": 1}, "anything", "is not a parameter; expected none"),
        ("canny", [1, 2], "params", "must be a JSON object"),
    ],
)  # fmt: skip
def test_invalid_parameters_name_the_field_and_say_why(op_name, raw, parameter, reason):
    with pytest.raises(InvalidParameter) as caught:
        parse_params(op_name, raw)
    assert caught.value.parameter == parameter
    assert caught.value.detail == f"invalid `{parameter}`: {caught.value.reason}"
    if reason.endswith("..."):
        assert caught.value.reason.startswith(reason.removesuffix("..."))
    else:
        assert caught.value.reason == reason


def test_parse_params_returns_the_model_with_defaults():
    params = parse_params("rescale_intensity", {})
    assert (params.low, params.high) == (2, 98)
    assert parse_params("equalize_adapthist", {"kernel_size": [16, 32]}).kernel_size == [16, 32]


# --------------------------------------------------------------------------- color


@pytest.mark.parametrize("name", COLOR_SAMPLES)
def test_rgb2gray_matches_skimage(name):
    result = run("rgb2gray", SAMPLES[name])
    assert result.values == {}
    assert_allclose(result.image, color.rgb2gray(SAMPLES[name]))


def test_rgb2gray_composes_rgba_over_white():
    assert_allclose(run("rgb2gray", LOGO).image, color.rgb2gray(color.rgba2rgb(LOGO)))


@pytest.mark.parametrize("name", GRAY_SAMPLES)
@pytest.mark.parametrize("op_name", ["rgb2gray", "channel", "rgb2bgr", "recolor"])
def test_color_ops_refuse_grayscale(op_name, name):
    with pytest.raises(IncompatibleImage, match=op_name):
        run(op_name, SAMPLES[name])


@pytest.mark.parametrize("name", COLOR_SAMPLES)
@pytest.mark.parametrize("index", [0, 1, 2])
def test_channel_selects_one_channel(name, index):
    assert_array_equal(run("channel", SAMPLES[name], index=index).image, SAMPLES[name][:, :, index])


def test_channel_index_past_the_channels_is_invalid():
    with pytest.raises(InvalidParameter) as caught:
        run("channel", CAT, index=3)
    assert caught.value.parameter == "index"
    assert_array_equal(run("channel", LOGO, index=3).image, LOGO[:, :, 3])


@pytest.mark.parametrize("name", COLOR_SAMPLES)
def test_rgb2bgr_reverses_channels_like_the_notes(name):
    assert_array_equal(run("rgb2bgr", SAMPLES[name]).image, SAMPLES[name][:, :, ::-1])


def test_rgb2bgr_keeps_alpha_last():
    result = run("rgb2bgr", LOGO).image
    assert_array_equal(result[:, :, :3], LOGO[:, :, 2::-1])
    assert_array_equal(result[:, :, 3], LOGO[:, :, 3])


# --------------------------------------------------------------------------- pixels


def test_pixel_reads_like_the_notes():
    result = run("pixel", CAMERA, row=10, col=20)
    assert result.values == {"value": int(CAMERA[10, 20])}
    assert result.image is CAMERA


@pytest.mark.parametrize("name", COLOR_SAMPLES)
def test_pixel_of_a_color_image_is_a_list(name):
    image = SAMPLES[name]
    assert run("pixel", image, row=5, col=7).values == {"value": image[5, 7].tolist()}


@pytest.mark.parametrize("dtype", list(CAMERA_AS))
def test_pixel_value_is_json_native(dtype):
    value = run("pixel", CAMERA_AS[dtype], row=3, col=4).values["value"]
    assert type(value) in (int, float, bool)
    assert value == CAMERA_AS[dtype][3, 4]


@pytest.mark.parametrize(("row", "col", "parameter"), [(512, 0, "row"), (0, 512, "col")])
def test_pixel_out_of_bounds_is_invalid(row, col, parameter):
    with pytest.raises(InvalidParameter) as caught:
        run("pixel", CAMERA, row=row, col=col)
    assert caught.value.parameter == parameter


def test_fill_region_like_the_notes():
    expected = CAMERA.copy()
    expected[30:100, 10:100] = 0
    result = run("fill", CAMERA, row_start=30, row_stop=100, col_start=10, col_stop=100, value=0)
    assert_array_equal(result.image, expected)


def test_fill_first_ten_rows_like_the_notes():
    expected = CAMERA.copy()
    expected[:10] = 0
    assert_array_equal(run("fill", CAMERA, row_stop=10).image, expected)


@pytest.mark.parametrize("dtype", list(CAMERA_AS))
def test_fill_keeps_the_dtype(dtype):
    image = CAMERA_AS[dtype]
    expected = image.copy()
    expected[5:9, 3:] = 1
    result = run("fill", image, row_start=5, row_stop=9, col_start=3, value=1).image
    assert result.dtype == image.dtype
    assert_array_equal(result, expected)


@pytest.mark.parametrize("name", COLOR_SAMPLES)
def test_fill_color_with_one_value_per_channel(name):
    expected = SAMPLES[name].copy()
    expected[10:20, 30:40] = [255, 0, 0]
    result = run(
        "fill",
        SAMPLES[name],
        row_start=10,
        row_stop=20,
        col_start=30,
        col_stop=40,
        value=[255, 0, 0],
    )
    assert_array_equal(result.image, expected)


def test_fill_stop_past_the_edge_means_the_edge():
    expected = CAMERA.copy()
    expected[500:] = 7
    assert_array_equal(run("fill", CAMERA, row_start=500, row_stop=10_000, value=7).image, expected)


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"row_start": 512}, "row_start"),
        ({"col_start": 600}, "col_start"),
        ({"row_start": 20, "row_stop": 20}, "row_stop"),
        ({"value": 256}, "value"),
        ({"value": -1}, "value"),
        ({"value": 1.5}, "value"),
    ],
)
def test_fill_parameters_out_of_range_for_the_image(params, parameter):
    with pytest.raises(InvalidParameter) as caught:
        run("fill", CAMERA, **params)
    assert caught.value.parameter == parameter


def test_fill_value_with_the_wrong_channel_count_is_incompatible():
    with pytest.raises(IncompatibleImage, match="3 channel"):
        run("fill", CAT, value=[1, 2])
    with pytest.raises(IncompatibleImage):
        run("fill", CAMERA, value=[1, 2, 3])


def test_fill_bool_accepts_only_0_and_1():
    assert run("fill", HORSE, value=1).image.all()
    with pytest.raises(InvalidParameter):
        run("fill", HORSE, value=255)


def test_set_where_like_the_notes():
    expected = CAMERA.copy()
    expected[CAMERA < 80] = 255
    assert_array_equal(
        run("set_where", CAMERA, comparison="lt", threshold=80, value=255).image, expected
    )


@pytest.mark.parametrize("comparison", ["lt", "le", "gt", "ge", "eq", "ne"])
@pytest.mark.parametrize("name", GRAY_SAMPLES)
def test_set_where_comparisons(comparison, name):
    image = SAMPLES[name]
    threshold = int(np.median(image))
    expected = image.copy()
    expected[getattr(operator, comparison)(image, threshold)] = 3
    result = run("set_where", image, comparison=comparison, threshold=threshold, value=3)
    assert_array_equal(result.image, expected)


def test_set_where_on_a_color_channel():
    expected = CAT.copy()
    expected[CAT[:, :, 1] >= 100] = [0, 0, 255]
    result = run("set_where", CAT, comparison="ge", threshold=100, value=[0, 0, 255], channel=1)
    assert_array_equal(result.image, expected)


def test_set_where_on_color_without_channel_needs_every_channel():
    expected = CAT.copy()
    expected[(CAT > 150).all(axis=2)] = 0
    result = run("set_where", CAT, comparison="gt", threshold=150, value=0)
    assert_array_equal(result.image, expected)


def test_set_where_channel_on_grayscale_is_invalid():
    with pytest.raises(InvalidParameter) as caught:
        run("set_where", CAMERA, channel=0)
    assert caught.value.parameter == "channel"


def test_recolor_reproduces_the_red_cat():
    red_cat = CAT.copy()
    reddish = CAT[:, :, 0] > 160
    red_cat[reddish] = [255, 0, 0]
    assert_array_equal(run("recolor", CAT).image, red_cat)


def test_recolor_rgba_with_three_values_keeps_alpha():
    expected = LOGO.copy()
    expected[LOGO[:, :, 1] > 100, :3] = [0, 255, 0]
    result = run("recolor", LOGO, channel=1, threshold=100, color=[0, 255, 0])
    assert_array_equal(result.image, expected)


def test_recolor_channel_past_the_channels_is_invalid():
    with pytest.raises(InvalidParameter) as caught:
        run("recolor", CAT, channel=3)
    assert caught.value.parameter == "channel"


# --------------------------------------------------------------------------- dtypes

CONVERSIONS = {
    "img_as_float": util.img_as_float,
    "img_as_ubyte": util.img_as_ubyte,
    "img_as_uint": util.img_as_uint,
    "img_as_int": util.img_as_int,
}


@pytest.mark.parametrize("dtype", list(CAMERA_AS))
@pytest.mark.parametrize("op_name", list(CONVERSIONS))
def test_dtype_conversions_match_skimage(op_name, dtype):
    image = CAMERA_AS[dtype]
    result = run(op_name, image)
    expected = CONVERSIONS[op_name](image)
    assert result.values == {}
    assert result.image.dtype == expected.dtype
    assert_array_equal(result.image, expected)


@pytest.mark.parametrize("op_name", list(CONVERSIONS))
def test_dtype_conversions_on_color(op_name):
    assert_array_equal(run(op_name, CAT).image, CONVERSIONS[op_name](CAT))


@pytest.mark.parametrize("op_name", ["img_as_ubyte", "img_as_uint", "img_as_int"])
def test_float_outside_unit_range_is_incompatible(op_name):
    with pytest.raises(IncompatibleImage) as caught:
        run(op_name, CAMERA_AS["float64"] * 3)
    assert caught.value.detail == f"`{op_name}`: Images of type float must be between -1 and 1."
    assert caught.value.context == {"op": op_name}


def test_wide_integers_convert_without_warning():
    small_int32 = CAMERA.astype(np.int32)  # skimage warns "Downcasting" for these
    with pytest.warns(UserWarning, match="Downcasting"):
        expected = util.img_as_ubyte(small_int32)
    assert_array_equal(run("img_as_ubyte", small_int32).image, expected)


# --------------------------------------------------------------------------- histograms


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float64", "int16"])
@pytest.mark.parametrize("source_range", ["image", "dtype"])
def test_histogram_matches_skimage(dtype, source_range):
    image = CAMERA_AS[dtype]
    result = run("histogram", image, bins=64, source_range=source_range)
    counts, centers = exposure.histogram(image, nbins=64, source_range=source_range)
    assert result.image is image
    assert_array_equal(result.values["counts"], counts)
    assert_allclose(result.values["bin_centers"], centers)
    assert sum(result.values["counts"]) == image.size


def test_histogram_of_bool_counts_zeros_and_ones():
    result = run("histogram", HORSE)
    assert result.values["counts"] == [int((~HORSE).sum()), int(HORSE.sum())]
    assert result.values["bin_centers"] == [0, 1]


@pytest.mark.parametrize("name", COLOR_SAMPLES)
def test_histogram_of_color_is_per_channel(name):
    image = SAMPLES[name]
    result = run("histogram", image)
    counts, centers = exposure.histogram(image, channel_axis=-1)
    assert np.shape(result.values["counts"]) == (3, len(centers))
    assert_array_equal(result.values["counts"], counts)
    assert_array_equal(result.values["bin_centers"], centers)


@pytest.mark.parametrize("name", GRAY_SAMPLES)
@pytest.mark.parametrize("bins", [16, 256])
def test_cumulative_distribution_matches_skimage(name, bins):
    image = util.img_as_float(SAMPLES[name])
    result = run("cumulative_distribution", image, bins=bins)
    cdf, centers = exposure.cumulative_distribution(image, bins)
    assert result.image is image
    assert_allclose(result.values["cdf"], cdf)
    assert_allclose(result.values["bin_centers"], centers)


def test_cumulative_distribution_of_color_pools_channels():
    result = run("cumulative_distribution", CAT)
    cdf, centers = exposure.cumulative_distribution(CAT.ravel())
    assert_allclose(result.values["cdf"], cdf)
    assert_array_equal(result.values["bin_centers"], centers)
    assert result.values["cdf"][-1] == 1.0


def test_histogram_ops_refuse_nan():
    image = CAMERA_AS["float64"].copy()
    image[0, 0] = np.nan
    for op_name in ("histogram", "cumulative_distribution", "equalize_hist", "rescale_intensity"):
        with pytest.raises(IncompatibleImage, match="NaN"):
            run(op_name, image)


# --------------------------------------------------------------------------- segmentation


@pytest.mark.parametrize("name", GRAY_SAMPLES)
@pytest.mark.parametrize("dtype", ["uint8", "float64"])
def test_otsu_threshold_matches_skimage(name, dtype):
    image = SAMPLES[name] if dtype == "uint8" else util.img_as_float(SAMPLES[name])
    result = run("threshold", image)
    expected = filters.threshold_otsu(image)
    assert result.values == {"threshold": pytest.approx(float(expected))}
    assert result.image.dtype == np.bool_
    assert_array_equal(result.image, image > expected)


def test_fixed_threshold_like_the_notes():
    gray = color.rgb2gray(CAT)
    result = run("threshold", gray, method="value", value=0.5)
    assert_array_equal(result.image, gray > 0.5)
    assert result.values == {"threshold": 0.5}


def test_fixed_threshold_on_color_thresholds_each_channel():
    assert_array_equal(run("threshold", CAT, method="value", value=100).image, CAT > 100)


def test_threshold_parameter_combinations():
    with pytest.raises(InvalidParameter) as caught:
        run("threshold", CAMERA, method="value")
    assert caught.value.parameter == "value"
    with pytest.raises(InvalidParameter):
        run("threshold", CAMERA, method="otsu", value=3)
    with pytest.raises(IncompatibleImage):
        run("threshold", CAT)


@pytest.mark.parametrize("name", GRAY_SAMPLES)
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"sigma": 2.5},
        {"sigma": 1.0, "low_threshold": 20, "high_threshold": 50},
        {"low_threshold": 0.5, "high_threshold": 0.9, "use_quantiles": True},
    ],
    ids=["defaults", "sigma", "thresholds", "quantiles"],
)
def test_canny_matches_skimage(name, params):
    image = SAMPLES[name]
    result = run("canny", image, **params)
    expected = feature.canny(image, **params)
    assert result.image.dtype == np.bool_
    assert result.image.any()
    assert_array_equal(result.image, expected)


@pytest.mark.parametrize("dtype", ["uint16", "float64", "bool"])
def test_canny_on_other_dtypes(dtype):
    assert_array_equal(
        run("canny", CAMERA_AS[dtype], sigma=2).image, feature.canny(CAMERA_AS[dtype], sigma=2)
    )


@pytest.mark.parametrize("name", COLOR_SAMPLES)
def test_canny_refuses_color(name):
    with pytest.raises(IncompatibleImage, match="rgb2gray"):
        run("canny", SAMPLES[name])


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"low_threshold": 50, "high_threshold": 10}, "low_threshold"),
        ({"high_threshold": 10}, "low_threshold"),  # below the default low of 25.5
        ({"high_threshold": 2, "use_quantiles": True}, "high_threshold"),
        ({"low_threshold": 1.5, "use_quantiles": True}, "low_threshold"),
    ],
)
def test_canny_threshold_errors_name_the_parameter(params, parameter):
    with pytest.raises(InvalidParameter) as caught:
        run("canny", CAMERA, **params)
    assert caught.value.parameter == parameter


@pytest.mark.parametrize("name", GRAY_SAMPLES)
def test_fill_holes_after_canny_like_the_notes(name):
    edges = feature.canny(SAMPLES[name])
    result = run("fill_holes", edges)
    expected = ndi.binary_fill_holes(edges)
    assert result.image.sum() > edges.sum()
    assert_array_equal(result.image, expected)


def test_fill_holes_treats_non_zero_as_foreground_and_refuses_color():
    assert_array_equal(run("fill_holes", CAMERA).image, ndi.binary_fill_holes(CAMERA))
    with pytest.raises(IncompatibleImage):
        run("fill_holes", CAT)


# --------------------------------------------------------------------------- contrast


@pytest.mark.parametrize("name", list(SAMPLES))
def test_rescale_intensity_like_the_notes(name):
    img = SAMPLES[name]
    p2, p98 = np.percentile(img, (2, 98))
    expected = exposure.rescale_intensity(img, in_range=(p2, p98))
    result = run("rescale_intensity", img)
    assert result.values == {"in_range": [float(p2), float(p98)]}
    assert result.image.dtype == expected.dtype
    assert_array_equal(result.image, expected)


@pytest.mark.parametrize("dtype", ["uint16", "float64", "int16"])
def test_rescale_intensity_custom_percentiles(dtype):
    image = CAMERA_AS[dtype]
    low, high = np.percentile(image, (10, 90))
    result = run("rescale_intensity", image, low=10, high=90)
    assert_allclose(result.image, exposure.rescale_intensity(image, in_range=(low, high)))


def test_rescale_intensity_needs_low_below_high():
    with pytest.raises(InvalidParameter) as caught:
        run("rescale_intensity", CAMERA, low=50, high=50)
    assert caught.value.parameter == "high"


def test_rescale_intensity_of_a_constant_image_does_not_warn():
    flat = np.full((8, 8), 7, np.uint8)
    assert_array_equal(
        run("rescale_intensity", flat).image, exposure.rescale_intensity(flat, in_range=(7, 7))
    )


@pytest.mark.parametrize("name", GRAY_SAMPLES)
@pytest.mark.parametrize("nbins", [32, 256])
def test_equalize_hist_matches_skimage(name, nbins):
    result = run("equalize_hist", SAMPLES[name], nbins=nbins)
    assert_allclose(result.image, exposure.equalize_hist(SAMPLES[name], nbins=nbins))


@pytest.mark.parametrize("dtype", ["uint16", "float64"])
def test_equalize_hist_on_other_dtypes(dtype):
    image = CAMERA_AS[dtype]
    assert_allclose(run("equalize_hist", image).image, exposure.equalize_hist(image))


@pytest.mark.parametrize(
    "dtype", ["uint8", "uint16", "uint32", "int8", "int16", "int32", "int64", "uint64"]
)
@pytest.mark.parametrize("offset", [0, 1000])
@pytest.mark.parametrize("nbins", [2, 256])  # skimage gives integers a bin per value anyway
def test_equalize_hist_on_integers_is_skimage_bit_for_bit(dtype, offset, nbins):
    # Integer images take a lookup table instead of skimage's per-pixel interpolation:
    # the same doubles are required, not close ones, over every integer dtype, values
    # that start at the dtype's minimum or above it, with gaps (unused values).
    info = np.iinfo(dtype)
    low = max(int(info.min), -3000) + (offset if info.max > 3000 else 0)
    rng = np.random.default_rng(offset)
    values = rng.integers(low, min(int(info.max), low + 6000), size=(97, 61), endpoint=True)
    image = values.astype(dtype)
    image[image % 7 == 3] = image.min()  # unused values: bins that stay empty
    result = run("equalize_hist", image, nbins=nbins).image
    expected = exposure.equalize_hist(image, nbins=nbins)
    assert result.dtype == expected.dtype == np.float64
    assert result.tobytes() == expected.tobytes()


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_equalize_hist_on_floats_is_skimage_bit_for_bit(dtype):
    # Floats take skimage's own path (bins over the value range, not one per value).
    image = util.img_as_float(CAMERA).astype(dtype)
    result = run("equalize_hist", image, nbins=100).image
    expected = exposure.equalize_hist(image, nbins=100)
    assert result.dtype == expected.dtype and result.tobytes() == expected.tobytes()


def test_equalize_hist_on_a_constant_integer_image_is_skimage_bit_for_bit():
    image = np.full((5, 4), 200, np.uint8)
    assert run("equalize_hist", image).image.tobytes() == exposure.equalize_hist(image).tobytes()


def test_equalize_hist_on_color_matches_skimage_without_its_warning():
    with pytest.warns(UserWarning, match="color image"):
        expected = exposure.equalize_hist(CAT)
    assert_allclose(run("equalize_hist", CAT).image, expected)


def test_equalize_hist_on_bool_matches_skimage_without_its_warning():
    with pytest.warns(RuntimeWarning, match="bool"):
        expected = exposure.equalize_hist(HORSE)
    assert_allclose(run("equalize_hist", HORSE).image, expected)


@pytest.mark.parametrize("name", list(SAMPLES))
def test_equalize_adapthist_matches_skimage(name):
    image = SAMPLES[name]
    result = run("equalize_adapthist", image, clip_limit=0.03)
    assert_allclose(result.image, exposure.equalize_adapthist(image, clip_limit=0.03))


@pytest.mark.parametrize("kernel_size", [64, [32, 96]])
def test_equalize_adapthist_kernel_size_and_bins(kernel_size):
    result = run("equalize_adapthist", CAMERA, kernel_size=kernel_size, nbins=128)
    expected = exposure.equalize_adapthist(CAMERA, kernel_size=kernel_size, nbins=128)
    assert_allclose(result.image, expected)


def test_equalize_adapthist_refuses_out_of_range_floats_and_tiny_kernels():
    with pytest.raises(IncompatibleImage):
        run("equalize_adapthist", CAMERA_AS["float64"] * 4)
    with pytest.raises(InvalidParameter) as caught:
        run("equalize_adapthist", CAMERA, kernel_size=1, nbins=65536)
    assert caught.value.parameter == "kernel_size"


# --------------------------------------------------------------------------- purity

# One applicable (image, params) per op: every op must leave its input untouched.
APPLICABLE = {
    "rgb2gray": (CAT, {}),
    "channel": (CAT, {"index": 1}),
    "rgb2bgr": (LOGO, {}),
    "pixel": (CAT, {"row": 1, "col": 2}),
    "fill": (CAT, {"row_stop": 10, "value": [1, 2, 3]}),
    "set_where": (CAMERA, {}),
    "recolor": (CAT, {}),
    "img_as_float": (CAMERA, {}),
    "img_as_ubyte": (CAMERA_AS["float64"], {}),
    "img_as_uint": (CAMERA, {}),
    "img_as_int": (CAMERA, {}),
    "histogram": (CAT, {}),
    "cumulative_distribution": (CAMERA, {}),
    "threshold": (CAMERA, {}),
    "canny": (CAMERA, {}),
    "fill_holes": (HORSE, {}),
    "rescale_intensity": (CAT, {}),
    "equalize_hist": (CAMERA, {}),
    "equalize_adapthist": (CAMERA, {"kernel_size": 128}),
}


def test_every_op_has_a_purity_case():
    assert set(APPLICABLE) == set(EXPECTED_OPS)


@pytest.mark.parametrize("op_name", EXPECTED_OPS)
def test_ops_accept_read_only_input_and_leave_it_alone(op_name):
    image, params = APPLICABLE[op_name]
    frozen = image.copy()
    frozen.flags.writeable = False
    result = run(op_name, frozen, **params)
    assert_array_equal(frozen, image)
    assert isinstance(result.values, dict)


@pytest.mark.parametrize("op_name", ["fill", "set_where", "recolor"])
def test_writing_ops_return_a_new_array(op_name):
    image, params = APPLICABLE[op_name]
    result = run(op_name, image, **params)
    assert not np.shares_memory(result.image, image)
    assert result.image.flags.writeable


@pytest.mark.parametrize("op_name", ["channel", "rgb2bgr"])
def test_channel_views_do_not_copy(op_name):
    result = run(op_name, CAT, **APPLICABLE[op_name][1])
    assert np.shares_memory(result.image, CAT)


# --------------------------------------------------------------------------- refusals

SMALL_GRAY = np.zeros((4, 6), dtype=np.uint8)  # not square: rows and columns differ
TWO_CHANNELS = np.zeros((4, 6, 2), dtype=np.uint8)
RGB = np.zeros((4, 6, 3), dtype=np.uint8)
RGBA = np.zeros((4, 6, 4), dtype=np.uint8)
NAN_GRAY = np.full((4, 6), np.nan)
COLOR_NEEDED = "needs a color (H, W, C) image with {} channels, got shape {}"
GRAY_NEEDED = (
    "needs a single-channel (H, W) image, got shape (4, 6, 3); apply `rgb2gray` or `channel` first"
)
NOT_FINITE = "needs finite pixel values; the image has NaN or infinity"


@pytest.mark.parametrize(
    ("op_name", "image", "params", "detail", "context"),
    [
        ("channel", SMALL_GRAY, {}, "`channel` " + COLOR_NEEDED.format("2, 3 or 4", "(4, 6)"),
         {"op": "channel", "shape": [4, 6]}),
        ("rgb2gray", TWO_CHANNELS, {}, "`rgb2gray` " + COLOR_NEEDED.format("3 or 4", "(4, 6, 2)"),
         {"op": "rgb2gray", "shape": [4, 6, 2]}),
        ("rgb2bgr", TWO_CHANNELS, {}, "`rgb2bgr` " + COLOR_NEEDED.format("3 or 4", "(4, 6, 2)"),
         {"op": "rgb2bgr", "shape": [4, 6, 2]}),
        ("recolor", SMALL_GRAY, {}, "`recolor` " + COLOR_NEEDED.format("2, 3 or 4", "(4, 6)"),
         {"op": "recolor", "shape": [4, 6]}),
        ("threshold", RGB, {}, "`threshold` " + GRAY_NEEDED,
         {"op": "threshold", "shape": [4, 6, 3]}),
        ("fill_holes", RGB, {}, "`fill_holes` " + GRAY_NEEDED,
         {"op": "fill_holes", "shape": [4, 6, 3]}),
        ("histogram", NAN_GRAY, {}, "`histogram` " + NOT_FINITE, {"op": "histogram"}),
        ("cumulative_distribution", NAN_GRAY, {}, "`cumulative_distribution` " + NOT_FINITE,
         {"op": "cumulative_distribution"}),
        ("threshold", NAN_GRAY, {}, "`threshold` " + NOT_FINITE, {"op": "threshold"}),
        ("rescale_intensity", NAN_GRAY, {}, "`rescale_intensity` " + NOT_FINITE,
         {"op": "rescale_intensity"}),
        ("set_where", RGB, {"value": [1, 2]},
         "`value` has 2 entries but the image has 3 channel(s); give one number per channel "
         "or a single number", {"parameter": "value", "channels": 3}),
        ("recolor", RGB, {"color": [1, 2]},
         "`color` has 2 entries but the image has 3 channel(s); give one number per channel "
         "or a single number", {"parameter": "color", "channels": 3}),
        ("recolor", RGBA, {"color": [1, 2]},
         "`color` has 2 entries but the image has 4 channel(s); give one number per channel "
         "or a single number", {"parameter": "color", "channels": 4}),
        ("canny", RGB, {}, "`canny` " + GRAY_NEEDED, {"op": "canny", "shape": [4, 6, 3]}),
        ("canny", SMALL_GRAY.astype(np.int64), {},
         "`canny` does not support 64-bit integer images", {"op": "canny"}),
        ("equalize_hist", NAN_GRAY, {}, "`equalize_hist` " + NOT_FINITE, {"op": "equalize_hist"}),
        ("histogram", np.array([[-40_000, 30_000]], dtype=np.int32), {},
         "integer values span 70000, over the 65536 a histogram supports; convert with "
         "`img_as_float` first", {}),
    ],
)  # fmt: skip
def test_an_op_that_does_not_apply_says_which_and_why(op_name, image, params, detail, context):
    with pytest.raises(IncompatibleImage) as caught:
        run(op_name, image, **params)
    assert caught.value.detail == detail
    assert caught.value.context == context


@pytest.mark.parametrize(
    ("op_name", "image", "params", "parameter", "reason"),
    [
        ("channel", RGB, {"index": 3}, "index", "must be < 3 for an image with 3 channels"),
        ("set_where", SMALL_GRAY, {"channel": 0}, "channel",
         "must be null for a single-channel image"),
        ("set_where", RGB, {"channel": 3}, "channel", "must be < 3 for an image with 3 channels"),
        ("set_where", SMALL_GRAY, {"value": 256}, "value",
         "must be whole numbers in [0, 255] for a uint8 image"),
        ("recolor", RGB, {"color": [300, 0, 0]}, "color",
         "must be whole numbers in [0, 255] for a uint8 image"),
        ("recolor", RGBA, {"color": [300, 0, 0]}, "color",
         "must be whole numbers in [0, 255] for a uint8 image"),
        ("fill", SMALL_GRAY.astype(bool), {"value": 2}, "value", "must be 0 or 1 for a bool image"),
        ("pixel", SMALL_GRAY, {"row": 4, "col": 0}, "row", "must be < 4 (the image height)"),
        ("pixel", SMALL_GRAY, {"row": 0, "col": 6}, "col", "must be < 6 (the image width)"),
        ("fill", SMALL_GRAY, {"row_start": 4}, "row_start", "must be < 4, the image's row count"),
        ("fill", SMALL_GRAY, {"col_start": 6}, "col_start",
         "must be < 6, the image's col count"),
        ("fill", SMALL_GRAY, {"col_start": 5, "col_stop": 5}, "col_stop",
         "must be greater than `col_start` (5)"),
        ("threshold", SMALL_GRAY, {"method": "value"}, "value",
         "is required when `method` is 'value'"),
        ("threshold", SMALL_GRAY, {"method": "otsu", "value": 3}, "value",
         "only applies to `method` 'value'"),
        ("rescale_intensity", SMALL_GRAY, {"low": 50, "high": 50}, "high",
         "must be greater than `low` (50.0)"),
        ("canny", CAMERA, {"use_quantiles": True, "low_threshold": 1.5}, "low_threshold",
         "must be in [0, 1] when `use_quantiles` is true"),
        ("canny", CAMERA, {"low_threshold": 50, "high_threshold": 10}, "low_threshold",
         "must not exceed `high_threshold` (null ones default to 10% and 20% of the dtype's "
         "maximum)"),
    ],
)  # fmt: skip
def test_a_parameter_out_of_range_for_the_image_says_why(op_name, image, params, parameter, reason):
    with pytest.raises(InvalidParameter) as caught:
        run(op_name, image, **params)
    assert (caught.value.parameter, caught.value.reason) == (parameter, reason)


def test_fill_of_a_bool_image_takes_0_as_well_as_1():
    ones = np.ones((4, 6), dtype=bool)
    filled = run("fill", ones, row_stop=2, value=0).image
    assert filled.dtype == bool and not filled[:2].any() and filled[2:].all()


def test_fill_takes_a_one_entry_list_on_grayscale_and_one_value_per_channel():
    filled = run("fill", SMALL_GRAY, row_stop=1, value=[5]).image
    assert (filled[0] == 5).all() and (filled[1:] == 0).all()
    gray_alpha = run("fill", TWO_CHANNELS, value=[10, 20]).image
    assert (gray_alpha[..., 0] == 10).all() and (gray_alpha[..., 1] == 20).all()


def test_histograms_take_integer_spans_up_to_the_limit_and_any_float_range():
    widest = np.array([[0, 65_536]], dtype=np.int32)
    counts, centers = exposure.histogram(widest)
    values = run("histogram", widest).values
    assert_array_equal(values["counts"], counts)
    assert_array_equal(values["bin_centers"], centers)
    wide_floats = np.array([[0.0, 1e6]])
    assert_array_equal(
        run("histogram", wide_floats).values["counts"], exposure.histogram(wide_floats)[0]
    )


def test_canny_quantiles_may_be_1():
    expected = feature.canny(CAMERA, low_threshold=0.5, high_threshold=1, use_quantiles=True)
    edges = run("canny", CAMERA, low_threshold=0.5, high_threshold=1, use_quantiles=True).image
    assert_array_equal(edges, expected)


@pytest.mark.parametrize("nbins", [16, 256])
def test_equalize_hist_uses_its_bins(nbins):
    image = util.img_as_float(CAMERA)
    expected = exposure.equalize_hist(image, nbins=nbins)
    assert_allclose(run("equalize_hist", image, nbins=nbins).image, expected)


def test_equalize_adapthist_takes_gray_rgb_and_rgba_and_nothing_else():
    assert_allclose(run("equalize_adapthist", LOGO).image, exposure.equalize_adapthist(LOGO))
    with pytest.raises(IncompatibleImage) as caught:
        run("equalize_adapthist", TWO_CHANNELS)
    assert caught.value.detail == "`equalize_adapthist` needs a single-channel, RGB or RGBA image"
    assert caught.value.context == {"op": "equalize_adapthist", "shape": [4, 6, 2]}
    outside = util.img_as_float(CAMERA) * 3
    with pytest.raises(ValueError) as skimage_says:
        exposure.equalize_adapthist(outside)
    with pytest.raises(IncompatibleImage) as caught:
        run("equalize_adapthist", outside)
    assert caught.value.detail == f"`equalize_adapthist`: {skimage_says.value}"
    assert caught.value.context == {"op": "equalize_adapthist"}


def test_clahe_counts_its_tiles_per_axis_and_allows_exactly_the_limit():
    # 64 x 5 tiles of 65536 bins: over the 2**24 counters (with the axes mixed up, under it).
    tall = np.zeros((64, 10), dtype=np.uint8)
    with pytest.raises(InvalidParameter) as caught:
        run("equalize_adapthist", tall, kernel_size=[1, 2], nbins=65536)
    assert caught.value.parameter == "kernel_size"
    assert caught.value.reason == (
        "is too small for a 10x64 image with 65536 bins (320 tiles); use larger tiles or fewer bins"
    )
    at_limit = np.zeros((128, 128), dtype=np.uint8)  # 16384 tiles of 1024 bins: 2**24
    out = run("equalize_adapthist", at_limit, kernel_size=1, nbins=1024).image
    assert out.shape == at_limit.shape
