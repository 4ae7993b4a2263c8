import io
import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from PIL import Image
from skimage import data, exposure, feature, filters

from workers.errors import ImageTooLarge, IncompatibleImage, InvalidParameter, NotFound
from workers.images import (
    ImageSource,
    PipelineResult,
    decode_image,
    encode_png,
    run_pipeline,
    run_plot,
    summarize,
)

MAX_PIXELS = 10_000_000
CAMERA = data.camera()
CAT = data.chelsea()


def pipeline(source, steps, *, encode=True, max_pixels=MAX_PIXELS):
    return run_pipeline(source, steps, max_pixels=max_pixels, encode=encode, compress_level=1)


def test_uploaded_image_through_contrast_and_threshold_matches_direct_calls():
    steps = [
        ("rescale_intensity", {}),
        ("equalize_adapthist", {"clip_limit": 0.03}),
        ("threshold", {}),
    ]
    result = pipeline(ImageSource(data=encode_png(CAMERA)), steps)

    p2, p98 = np.percentile(CAMERA, (2, 98))
    stretched = exposure.rescale_intensity(CAMERA, in_range=(p2, p98))
    equalized = exposure.equalize_adapthist(stretched, clip_limit=0.03)
    otsu = filters.threshold_otsu(equalized)
    expected = equalized > otsu

    assert isinstance(result, PipelineResult)
    assert [step["op"] for step in result.steps] == [name for name, _ in steps]
    assert result.steps[0]["values"] == {"in_range": [float(p2), float(p98)]}
    assert result.steps[1]["values"] == {}
    assert result.steps[2]["values"]["threshold"] == pytest.approx(float(otsu))
    assert result.summary == summarize(expected)
    assert_array_equal(decode_image(result.png, max_pixels=MAX_PIXELS), expected * np.uint8(255))


def test_sample_through_the_notes_color_steps():
    steps = [("recolor", {"channel": 0, "threshold": 160, "color": [255, 0, 0]}), ("rgb2bgr", {})]
    result = pipeline(ImageSource(sample="chelsea"), steps)
    red_cat = CAT.copy()
    red_cat[CAT[:, :, 0] > 160] = [255, 0, 0]
    assert_array_equal(decode_image(result.png, max_pixels=MAX_PIXELS), red_cat[:, :, ::-1])


def test_canny_then_fill_holes_like_the_notes():
    result = pipeline(ImageSource(sample="coins"), [("canny", {}), ("fill_holes", {})])
    from scipy import ndimage as ndi

    expected = ndi.binary_fill_holes(feature.canny(data.coins()))
    assert result.summary == summarize(expected)
    assert_array_equal(decode_image(result.png, max_pixels=MAX_PIXELS) > 0, expected)


def test_float_result_is_encoded_as_8_bit():
    result = pipeline(ImageSource(sample="camera"), [("equalize_hist", {})])
    expected = exposure.equalize_hist(CAMERA)
    assert result.summary["dtype"] == "float64"
    decoded = decode_image(result.png, max_pixels=MAX_PIXELS)
    assert_allclose(decoded, np.rint(expected * 255), atol=0)


def test_no_steps_returns_the_image():
    result = pipeline(ImageSource(sample="astronaut"), [])
    assert result.steps == []
    assert_array_equal(decode_image(result.png, max_pixels=MAX_PIXELS), data.astronaut())


def test_timings_are_reported():
    result = pipeline(ImageSource(data=encode_png(CAMERA)), [("canny", {}), ("histogram", {})])
    timings = result.timings_ms
    assert set(timings) == {"decode", "ops", "encode", "total"}
    assert all(value > 0 for value in timings.values())
    assert timings["total"] >= timings["decode"] + timings["ops"] + timings["encode"] - 0.01
    assert all(step["ms"] > 0 for step in result.steps)
    assert sum(step["ms"] for step in result.steps) <= timings["ops"] + 0.01


def test_without_encoding_there_is_no_png():
    result = pipeline(ImageSource(sample="camera"), [("img_as_float", {})], encode=False)
    assert result.png is None
    assert result.timings_ms["encode"] == 0.0
    assert result.summary == summarize(CAMERA / 255)


def test_png_only_callers_can_skip_the_summary():
    steps = [("canny", {})]
    described = pipeline(ImageSource(sample="camera"), steps)
    png_only = run_pipeline(
        ImageSource(sample="camera"),
        steps,
        max_pixels=MAX_PIXELS,
        encode=True,
        compress_level=1,
        describe=False,
    )
    assert png_only.summary == {}
    assert png_only.png == described.png
    assert png_only.steps[0]["values"] == described.steps[0]["values"]


def test_steps_are_validated_before_decoding():
    # Garbage bytes would fail to decode; the bad parameter must be reported first.
    steps = [("rgb2gray", {}), ("canny", {"sigma": -1})]
    with pytest.raises(InvalidParameter) as caught:
        pipeline(ImageSource(data=b"not an image at all"), steps)
    assert caught.value.parameter == "sigma"
    assert "(step 1, `canny`)" in caught.value.detail


def test_unknown_op_names_the_step():
    with pytest.raises(NotFound) as caught:
        pipeline(ImageSource(sample="camera"), [("canny", {}), ("blur", {})])
    assert caught.value.context == {"kind": "op", "name": "blur", "step": 1}


def test_incompatible_step_names_the_step_and_op():
    with pytest.raises(IncompatibleImage) as caught:
        pipeline(ImageSource(sample="chelsea"), [("img_as_float", {}), ("canny", {})])
    assert caught.value.context["step"] == 1
    assert caught.value.context["op"] == "canny"
    assert caught.value.detail.startswith("step 1 (`canny`): ")


def test_parameter_out_of_range_for_the_image_names_the_step():
    with pytest.raises(InvalidParameter) as caught:
        pipeline(ImageSource(sample="camera"), [("pixel", {"row": 512, "col": 0})])
    assert caught.value.parameter == "row"
    assert (
        caught.value.detail == "invalid `row`: must be < 512 (the image height) (step 0, `pixel`)"
    )


def test_pixel_limit_applies_to_uploads_and_samples():
    with pytest.raises(ImageTooLarge) as caught:
        pipeline(ImageSource(sample="camera"), [], max_pixels=1000)
    assert caught.value.context == {"pixels": 512 * 512, "limit": 1000}
    with pytest.raises(ImageTooLarge):
        pipeline(ImageSource(data=encode_png(CAMERA)), [], max_pixels=1000)


def test_unknown_sample_is_not_found():
    with pytest.raises(NotFound) as caught:
        pipeline(ImageSource(sample="lena"), [])
    assert caught.value.context == {"kind": "sample", "name": "lena"}


@pytest.mark.parametrize("fields", [{}, {"data": b"x", "sample": "camera"}])
def test_image_source_takes_exactly_one_origin(fields):
    with pytest.raises(ValueError, match="exactly one"):
        ImageSource(**fields)


def test_results_and_errors_pickle():
    result = pipeline(ImageSource(sample="coins"), [("histogram", {"bins": 8})])
    restored = pickle.loads(pickle.dumps(result))
    assert restored == result
    error = InvalidParameter("row", "must be < 512")
    assert pickle.loads(pickle.dumps(error)).detail == error.detail


def test_runs_in_a_spawned_worker_process():
    context = multiprocessing.get_context("spawn")
    source = ImageSource(data=encode_png(CAMERA))
    steps = [("equalize_hist", {}), ("img_as_ubyte", {})]
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        remote = pool.submit(
            run_pipeline, source, steps, max_pixels=MAX_PIXELS, encode=True, compress_level=1
        ).result(timeout=60)
        failing = pool.submit(
            run_pipeline,
            source,
            [("canny", {"sigma": 0})],
            max_pixels=MAX_PIXELS,
            encode=True,
            compress_level=1,
        )
        with pytest.raises(InvalidParameter) as caught:
            failing.result(timeout=60)
    local = pipeline(source, steps)
    assert remote.png == local.png
    assert remote.summary == local.summary
    assert caught.value.parameter == "sigma"


# --------------------------------------------------------------------------- plots


def png_size(payload: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(payload)) as image:
        assert image.format == "PNG"
        return image.size


def test_run_plot_histogram_of_a_sample():
    assert png_size(
        run_plot(ImageSource(sample="camera"), "histogram", {"bins": 64}, max_pixels=MAX_PIXELS)
    ) == (640, 400)


def test_run_plot_contrast_report_of_an_upload():
    payload = run_plot(
        ImageSource(data=encode_png(CAMERA[::2, ::2])),
        "contrast_report",
        {"clip_limit": 0.05},
        max_pixels=MAX_PIXELS,
    )
    assert png_size(payload) == (1280, 640)


def test_run_plot_validates_kind_and_params():
    with pytest.raises(NotFound) as caught:
        run_plot(ImageSource(sample="camera"), "scatter", {}, max_pixels=MAX_PIXELS)
    assert caught.value.context == {"kind": "plot", "name": "scatter"}
    with pytest.raises(InvalidParameter) as invalid:
        run_plot(ImageSource(sample="camera"), "histogram", {"bins": 0}, max_pixels=MAX_PIXELS)
    assert invalid.value.parameter == "bins"
    with pytest.raises(InvalidParameter) as order:
        run_plot(
            ImageSource(sample="camera"),
            "contrast_report",
            {"low": 60, "high": 40},
            max_pixels=MAX_PIXELS,
        )
    assert order.value.parameter == "high"
    with pytest.raises(ImageTooLarge):
        run_plot(ImageSource(sample="camera"), "histogram", {}, max_pixels=100)
