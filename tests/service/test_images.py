"""Every image op over HTTP, compared with the direct scikit-image call on the same input."""

import base64
import io
import json
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from PIL import Image
from scipy import ndimage as ndi
from skimage import color, data, exposure, feature, filters, util

from workers.images import OPS

pytestmark = pytest.mark.anyio

PNG_HEADERS = {"Accept": "image/png"}


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def as_png_samples(image: np.ndarray) -> np.ndarray:
    """The documented encoding rules, written out independently of the service's encoder."""
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    if image.dtype == np.int16:
        return (image.astype(np.int32) + 32768).astype(np.uint16)
    if image.dtype.kind == "f":
        low = -1.0 if image.min() < 0 else 0.0
        return np.round((np.clip(image, low, 1.0) - low) / (1.0 - low) * 255).astype(np.uint8)
    return image


def stretched(img: np.ndarray) -> np.ndarray:
    p2, p98 = np.percentile(img, (2, 98))
    return exposure.rescale_intensity(img, in_range=(p2, p98))


def fill_rect(img: np.ndarray) -> np.ndarray:
    out = img.copy()
    out[30:100, 10:100] = 0
    return out


def first_rows_black(img: np.ndarray) -> np.ndarray:
    out = img.copy()
    out[:10] = 0
    return out


def white_where_dark(img: np.ndarray) -> np.ndarray:
    out = img.copy()
    out[out < 80] = 255
    return out


def red_cat(img: np.ndarray) -> np.ndarray:
    out = img.copy()
    out[img[:, :, 0] > 160] = [255, 0, 0]
    return out


def otsu(img: np.ndarray) -> np.ndarray:
    return img > filters.threshold_otsu(img)


# (op, sample, query params, the direct call on the same array)
CASES: list[tuple[str, str, dict[str, Any], Callable[[np.ndarray], np.ndarray]]] = [
    ("rgb2gray", "chelsea", {}, color.rgb2gray),
    ("rgb2gray", "astronaut", {}, color.rgb2gray),
    ("channel", "chelsea", {"index": 0}, lambda img: img[:, :, 0]),
    ("channel", "astronaut", {"index": 2}, lambda img: img[:, :, 2]),
    ("rgb2bgr", "chelsea", {}, lambda img: img[:, :, ::-1]),
    (
        "fill",
        "camera",
        {"row_start": 30, "row_stop": 100, "col_start": 10, "col_stop": 100, "value": 0},
        fill_rect,
    ),
    ("fill", "camera", {"row_stop": 10, "value": 0}, first_rows_black),
    ("set_where", "camera", {"comparison": "lt", "threshold": 80, "value": 255}, white_where_dark),
    ("recolor", "chelsea", {"channel": 0, "threshold": 160, "color": [255, 0, 0]}, red_cat),
    ("img_as_float", "chelsea", {}, util.img_as_float),
    ("img_as_float", "coins", {}, util.img_as_float),
    ("img_as_ubyte", "camera", {}, util.img_as_ubyte),
    ("img_as_uint", "camera", {}, util.img_as_uint),
    ("img_as_int", "coins", {}, util.img_as_int),
    ("threshold", "coins", {"method": "otsu"}, otsu),
    ("threshold", "camera", {"method": "value", "value": 100}, lambda img: img > 100),
    ("canny", "camera", {}, feature.canny),
    ("canny", "coins", {"sigma": 2.0}, lambda img: feature.canny(img, sigma=2.0)),
    (
        "canny",
        "camera",
        {"sigma": 1.5, "low_threshold": 10, "high_threshold": 40},
        lambda img: feature.canny(img, sigma=1.5, low_threshold=10, high_threshold=40),
    ),
    ("rescale_intensity", "camera", {}, stretched),
    ("rescale_intensity", "chelsea", {}, stretched),
    ("equalize_hist", "camera", {}, exposure.equalize_hist),
    ("equalize_hist", "coins", {"nbins": 64}, lambda img: exposure.equalize_hist(img, nbins=64)),
    (
        "equalize_adapthist",
        "camera",
        {"clip_limit": 0.03},
        lambda img: exposure.equalize_adapthist(img, clip_limit=0.03),
    ),
]


@pytest.mark.parametrize(
    ("op", "sample", "params", "direct"),
    CASES,
    ids=[f"{op}-{sample}-{i}" for i, (op, sample, _, _) in enumerate(CASES)],
)
async def test_op_equals_the_direct_call(
    client: httpx.AsyncClient, op: str, sample: str, params: dict[str, Any], direct: Callable
) -> None:
    expected = direct(getattr(data, sample)())
    response = await client.post(f"/v1/images/{op}", params={"sample": sample, **params})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["shape"] == list(expected.shape)
    assert body["dtype"] == str(expected.dtype)
    assert_allclose(
        [body["min"], body["max"], body["mean"]],
        [expected.min(), expected.max(), expected.mean()],
        rtol=1e-12,
    )
    assert [step["op"] for step in body["steps"]] == [op]
    assert set(body["timings_ms"]) >= {"decode", "ops", "encode", "total"}
    assert_array_equal(decode(base64.b64decode(body["png_base64"])), as_png_samples(expected))

    as_png = await client.post(
        f"/v1/images/{op}", params={"sample": sample, **params}, headers=PNG_HEADERS
    )
    assert as_png.headers["content-type"] == "image/png"
    assert_array_equal(decode(as_png.content), as_png_samples(expected))


async def test_sixteen_bit_results_stay_sixteen_bit(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/images/img_as_uint?sample=camera", headers=PNG_HEADERS)
    image = Image.open(io.BytesIO(response.content))
    assert image.mode.startswith("I")
    assert_array_equal(np.asarray(image), util.img_as_uint(data.camera()))


async def test_pixel_read_reports_the_value(client: httpx.AsyncClient) -> None:
    gray = await client.post("/v1/images/pixel", params={"sample": "camera", "row": 10, "col": 20})
    assert gray.json()["values"] == {"value": int(data.camera()[10, 20])}
    rgb = await client.post("/v1/images/pixel", params={"sample": "chelsea", "row": 5, "col": 7})
    assert rgb.json()["values"] == {"value": data.chelsea()[5, 7].tolist()}


async def test_histogram_and_cumulative_distribution_numbers(client: httpx.AsyncClient) -> None:
    camera = data.camera()
    hist = (await client.post("/v1/images/histogram?sample=camera&include_image=false")).json()
    counts, centers = exposure.histogram(camera, nbins=256)
    assert_array_equal(hist["values"]["counts"], counts)
    assert_array_equal(hist["values"]["bin_centers"], centers)
    assert hist["png_base64"] is None
    cdf = (await client.post("/v1/images/cumulative_distribution?sample=camera&bins=256")).json()
    expected_cdf, expected_centers = exposure.cumulative_distribution(camera, 256)
    assert_allclose(cdf["values"]["cdf"], expected_cdf)
    assert_array_equal(cdf["values"]["bin_centers"], expected_centers)


async def test_uploaded_jpeg_goes_through_the_same_path(client: httpx.AsyncClient) -> None:
    buffer = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buffer, format="JPEG", quality=90)
    upload = {"image": ("cat.jpg", buffer.getvalue(), "image/jpeg")}
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
    response = await client.post("/v1/images/equalize_adapthist", files=upload)
    assert response.status_code == 200, response.text
    expected = exposure.equalize_adapthist(decoded)
    assert response.json()["shape"] == list(expected.shape)
    assert_allclose(response.json()["mean"], expected.mean(), rtol=1e-12)


async def test_pipeline_applies_steps_in_order(client: httpx.AsyncClient) -> None:
    steps = [{"op": "rgb2gray"}, {"op": "canny", "sigma": 2}, {"op": "fill_holes"}]
    response = await client.post(
        "/v1/images/pipeline", params={"sample": "coffee"}, data={"steps": json.dumps(steps)}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    expected = ndi.binary_fill_holes(feature.canny(color.rgb2gray(data.coffee()), sigma=2))
    assert [s["op"] for s in body["steps"]] == ["rgb2gray", "canny", "fill_holes"]
    # Each step's time is its own, within the ops' total (each is rounded to a microsecond).
    step_ms = [step["ms"] for step in body["steps"]]
    timings = body["timings_ms"]
    assert all(ms > 0 for ms in step_ms)
    assert sum(step_ms) <= timings["ops"] + 0.005 and timings["ops"] < timings["total"]
    assert_array_equal(decode(base64.b64decode(body["png_base64"])), as_png_samples(expected))


async def test_pipeline_on_an_upload(client: httpx.AsyncClient) -> None:
    buffer = io.BytesIO()
    Image.fromarray(data.camera()).save(buffer, format="PNG")
    response = await client.post(
        "/v1/images/pipeline",
        files={"image": ("camera.png", buffer.getvalue(), "image/png")},
        data={"steps": json.dumps([{"op": "histogram", "bins": 16}, {"op": "equalize_hist"}])},
        headers=PNG_HEADERS,
    )
    assert response.status_code == 200
    assert_array_equal(
        decode(response.content), as_png_samples(exposure.equalize_hist(data.camera()))
    )


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (None, "application/json"),
        ("application/json", "application/json"),
        ("image/png", "image/png"),
        ("image/*", "image/png"),
        ("image/png;q=0.5, application/json", "application/json"),
        ("application/json;q=0.2, image/png", "image/png"),
        ("*/*", "application/json"),
        ("text/html", "application/json"),
    ],
)
async def test_content_negotiation(
    client: httpx.AsyncClient, accept: str | None, media_type: str
) -> None:
    headers = {"Accept": accept} if accept else {}
    response = await client.post("/v1/images/rgb2gray?sample=chelsea", headers=headers)
    assert response.headers["content-type"] == media_type


async def test_samples_are_listed_and_served(client: httpx.AsyncClient) -> None:
    listing = (await client.get("/v1/samples")).json()
    by_name = {s["name"]: s for s in listing}
    assert {"camera", "chelsea", "coins", "astronaut"} <= set(by_name)
    assert by_name["camera"]["shape"] == [512, 512] and by_name["camera"]["dtype"] == "uint8"
    assert by_name["astronaut"]["shape"] == [512, 512, 3]
    png = await client.get("/v1/samples/coins")
    assert png.headers["content-type"] == "image/png"
    assert_array_equal(decode(png.content), data.coins())


async def test_ops_catalogue_lists_every_route_with_its_schema(client: httpx.AsyncClient) -> None:
    ops = (await client.get("/v1/images/ops")).json()
    names = [op["name"] for op in ops]
    assert len(names) == len(set(names)) == 19
    paths = (await client.get("/openapi.json")).json()["paths"]
    for op in ops:
        assert f"/v1/images/{op['name']}" in paths
        assert op["params"]["type"] == "object"
    canny = next(op for op in ops if op["name"] == "canny")
    assert canny["params"]["properties"]["sigma"]["default"] == 1.0
    query = {p["name"] for p in paths["/v1/images/canny"]["post"]["parameters"]}
    assert {"sigma", "low_threshold", "high_threshold", "use_quantiles", "sample"} <= query


async def test_plots_are_pngs(client: httpx.AsyncClient) -> None:
    report = await client.post("/v1/images/contrast-report?sample=camera")
    assert report.status_code == 200 and report.headers["content-type"] == "image/png"
    figure = Image.open(io.BytesIO(report.content))
    assert figure.width > 2 * figure.height * 0.9  # the 2 x 4 grid is twice as wide as tall
    assert np.asarray(figure.convert("L")).std() > 10  # not blank
    histogram = await client.post("/v1/images/histogram-plot?sample=coins&bins=64")
    assert histogram.status_code == 200
    assert Image.open(io.BytesIO(histogram.content)).format == "PNG"


async def test_op_durations_reach_the_metrics(client: httpx.AsyncClient) -> None:
    await client.post("/v1/images/equalize_hist?sample=camera&include_image=false")
    text = (await client.get("/metrics")).text
    assert 'tensorlens_op_duration_seconds_count{op="equalize_hist"}' in text
    assert (
        'tensorlens_http_requests_total{method="POST",route="/v1/images/equalize_hist",'
        'status="200"}' in text
    )


def jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


COLOR_JPEG, GRAY_JPEG = jpeg(data.chelsea()), jpeg(data.camera())
COLOR_ONLY = {"channel", "rgb2bgr", "recolor", "rgb2gray"}
REQUIRED = {"pixel": {"row": 3, "col": 4}}


@pytest.mark.parametrize("op", list(OPS))
async def test_every_op_works_on_an_uploaded_jpeg(client: httpx.AsyncClient, op: str) -> None:
    upload = COLOR_JPEG if op in COLOR_ONLY else GRAY_JPEG
    response = await client.post(
        f"/v1/images/{op}",
        params=REQUIRED.get(op, {}),
        files={"image": ("photo.jpg", upload, "image/jpeg")},
        headers=PNG_HEADERS,
    )
    assert response.status_code == 200, response.text
    expected = (300, 451) if op in COLOR_ONLY else (512, 512)
    assert decode(response.content).shape[:2] == expected
