"""Arrays without loss: `.npy` and float TIFF answers, `.npy` uploads (issue 10)."""

import io
import json
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest
import tifffile
from numpy.testing import assert_array_equal
from skimage import data, exposure, feature, util

from tensorlens import AsyncClient
from tests.service._api import assert_problem

pytestmark = pytest.mark.anyio

NPY = {"Accept": "application/x-npy"}
TIFF = {"Accept": "image/tiff"}


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def upload(content: bytes) -> dict:
    return {"image": ("image.npy", content, "application/octet-stream")}


def load_npy(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-npy"
    return np.load(io.BytesIO(response.content), allow_pickle=False)


async def test_npy_answers_are_the_exact_result_array(client: httpx.AsyncClient) -> None:
    camera = data.camera()
    equalized = load_npy(await client.post("/v1/images/equalize_hist?sample=camera", headers=NPY))
    expected = exposure.equalize_hist(camera)
    assert equalized.dtype == np.float64 and equalized.shape == camera.shape
    assert_array_equal(equalized, expected)  # not quantized to 8 bits, as PNG would be

    edges = load_npy(await client.post("/v1/images/canny?sample=camera&sigma=2", headers=NPY))
    assert edges.dtype == bool
    assert_array_equal(edges, feature.canny(camera, sigma=2))


async def test_pipelines_answer_npy_too(client: httpx.AsyncClient) -> None:
    steps = [{"op": "img_as_float"}, {"op": "equalize_adapthist", "clip_limit": 0.03}]
    response = await client.post(
        "/v1/images/pipeline?sample=camera", data={"steps": json.dumps(steps)}, headers=NPY
    )
    result = load_npy(response)
    expected = exposure.equalize_adapthist(util.img_as_float(data.camera()), clip_limit=0.03)
    assert result.dtype == expected.dtype
    assert_array_equal(result, expected)


async def test_tiff_answers_keep_float_samples(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/images/equalize_hist?sample=camera", headers=TIFF)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/tiff"
    result = tifffile.imread(io.BytesIO(response.content))
    assert result.dtype == np.float64
    assert_array_equal(result, exposure.equalize_hist(data.camera()))

    response = await client.post("/v1/images/rgb2bgr?sample=astronaut", headers=TIFF)
    assert_array_equal(tifffile.imread(io.BytesIO(response.content)), data.astronaut()[..., ::-1])


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/x-npy;q=0.5, application/json", "application/json"),
        ("application/json;q=0.5, application/x-npy", "application/x-npy"),
        ("image/tiff, image/png;q=0.9", "image/tiff"),
        ("image/*", "image/png"),
        ("application/x-npy, */*;q=0.1", "application/x-npy"),
        ("application/x-npy;q=0", "application/json"),
    ],
)
async def test_accept_chooses_the_answer(
    client: httpx.AsyncClient, accept: str, expected: str
) -> None:
    response = await client.post(
        "/v1/images/img_as_float?sample=coins&include_image=false", headers={"Accept": accept}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == expected


@pytest.mark.parametrize(
    "array",
    [
        np.random.default_rng(0).random((40, 30)),  # float64 stays float64
        np.random.default_rng(1).random((40, 30, 3)).astype(np.float32),
        np.random.default_rng(2).integers(0, 2**16, (40, 30), dtype=np.uint16),
        np.random.default_rng(3).random((40, 30)) > 0.5,
        np.asfortranarray(np.random.default_rng(4).integers(-5, 5, (40, 30), dtype=np.int64)),
        np.random.default_rng(5).random((40, 30)).astype(">f8"),  # big-endian
    ],
    ids=["float64", "float32-rgb", "uint16", "bool", "fortran-int64", "big-endian"],
)
async def test_npy_uploads_round_trip_exactly(client: httpx.AsyncClient, array) -> None:
    # A pipeline of no steps answers with the decoded upload itself.
    response = await client.post(
        "/v1/images/pipeline", data={"steps": "[]"}, files=upload(npy_bytes(array)), headers=NPY
    )
    result = load_npy(response)
    assert result.dtype == array.dtype.newbyteorder("=") and result.shape == array.shape
    assert_array_equal(result, array)

    described = await client.post(
        "/v1/images/pipeline?include_image=false",
        data={"steps": "[]"},
        files=upload(npy_bytes(array)),
    )
    assert described.json()["dtype"] == str(result.dtype)
    assert described.json()["shape"] == list(array.shape)


@pytest.fixture(scope="module")
async def small(make_client) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(image_workers=1, max_image_pixels=10_000) as c:
        yield c


@pytest.mark.parametrize(
    ("content", "slug"),
    [
        (npy_bytes(np.array([[1, "x"], [None, 2.0]], dtype=object)), "invalid-image"),
        (npy_bytes(np.zeros((4, 4), dtype=complex)), "invalid-image"),
        (npy_bytes(np.zeros((4, 4), dtype=[("a", "u1"), ("b", "f4")])), "invalid-image"),
        (npy_bytes(np.zeros((2, 4, 4, 3))), "invalid-image"),  # 4-D
        (npy_bytes(np.zeros((4, 4, 5))), "invalid-image"),  # 5 channels
        (npy_bytes(np.zeros(16)), "invalid-image"),  # 1-D
        (npy_bytes(np.zeros((30, 30)))[:-8], "invalid-image"),  # truncated
        (npy_bytes(np.zeros((30, 30))) + b"extra", "invalid-image"),
        (b"\x93NUMPY\x01\x00\x10\x00{'descr': <built", "invalid-image"),  # corrupt header
        (npy_bytes(np.zeros((101, 100), dtype=bool)), "image-too-large"),
    ],
    ids=[
        "object",
        "complex",
        "structured",
        "4-d",
        "5-channels",
        "1-d",
        "truncated",
        "trailing",
        "header",
        "too-many-pixels",
    ],
)
async def test_bad_npy_uploads_are_422_problems(
    small: httpx.AsyncClient, content: bytes, slug: str
) -> None:
    response = await small.post("/v1/images/rgb2gray", files=upload(content), headers=NPY)
    assert_problem(response, 422, slug)


async def test_the_python_client_asks_for_npy_and_uploads_it(client: httpx.AsyncClient) -> None:
    transport = httpx.ASGITransport(app=client.app)  # type: ignore[attr-defined]
    async with AsyncClient("http://tensorlens", transport=transport) as tensorlens:
        equalized = np.load(
            io.BytesIO(await tensorlens.equalize_hist(sample="camera", accept="npy")),
            allow_pickle=False,
        )
        assert_array_equal(equalized, exposure.equalize_hist(data.camera()))
        edges = await tensorlens.canny(npy_bytes(equalized), sigma=2, accept="npy")
        expected = feature.canny(exposure.equalize_hist(data.camera()), sigma=2)
        assert_array_equal(np.load(io.BytesIO(edges)), expected)
        tiff = await tensorlens.pipeline([], sample="coins", accept="tiff")
        assert_array_equal(tifffile.imread(io.BytesIO(tiff)), data.coins())
