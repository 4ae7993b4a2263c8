"""Bad input gets a clear 4xx problem document, quickly, and the service keeps serving."""

import asyncio
import io
import json
import os
import signal
import struct
import zlib
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest
from PIL import Image
from skimage import data

from tests._support import wait_until
from tests.service._api import assert_problem, assert_still_serving

pytestmark = pytest.mark.anyio


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header that declares a huge image, with almost no data behind it."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def upload(content: bytes, name: str = "x.png") -> dict:
    return {"image": (name, content, "application/octet-stream")}


CAMERA_PNG = png_bytes(data.camera())


@pytest.mark.parametrize(
    ("content", "status", "slug", "mentions"),
    [
        (b"", 422, "invalid-image", "empty"),
        (b"this is certainly not an image" * 10, 415, "unsupported-media-type", "not a recognized"),
        (CAMERA_PNG[: len(CAMERA_PNG) // 2], 422, "invalid-image", "truncated"),
        (CAMERA_PNG[:40], 422, "invalid-image", ""),
    ],
    ids=["empty", "not-an-image", "truncated", "header-only"],
)
async def test_broken_uploads(
    client: httpx.AsyncClient, content: bytes, status: int, slug: str, mentions: str
) -> None:
    response = await client.post("/v1/images/canny", files=upload(content))
    body = assert_problem(response, status, slug)
    assert mentions in body["detail"].lower()
    await assert_still_serving(client)


@pytest.mark.parametrize("fmt", ["ICO", "PPM", "PDF"])
async def test_unsupported_formats_are_415(client: httpx.AsyncClient, fmt: str) -> None:
    buffer = io.BytesIO()
    Image.fromarray(data.chelsea()[:64, :64]).save(buffer, format=fmt)
    response = await client.post("/v1/images/rgb2gray", files=upload(buffer.getvalue()))
    body = assert_problem(response, 415, "unsupported-media-type")
    assert fmt in body["detail"].upper() or "not a recognized" in body["detail"]


async def test_decompression_bomb_is_refused_before_decoding(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/images/canny", files=upload(bomb_png(30_000, 30_000)))
    # Its pixel data is 1 KiB of a 900 MB image: decoding it would fail as a truncated image.
    body = assert_problem(response, 422, "image-too-large")
    assert body["pixels"] == 900_000_000 and body["limit"] == 50_000_000


@pytest.mark.parametrize(
    ("url", "status", "parameter"),
    [
        ("/v1/images/canny?sample=camera&sigma=-1", 422, "sigma"),
        ("/v1/images/canny?sample=camera&sigma=abc", 422, "sigma"),
        ("/v1/images/equalize_adapthist?sample=camera&clip_limit=2", 422, "clip_limit"),
        ("/v1/images/histogram?sample=camera&bins=0", 422, "bins"),
        ("/v1/images/pixel?sample=camera&row=600&col=1", 422, "row"),
        ("/v1/images/pixel?sample=camera&col=1", 422, "row"),
        ("/v1/images/channel?sample=chelsea&index=3", 422, "index"),
        ("/v1/images/threshold?sample=camera&method=magic", 422, "method"),
        ("/v1/images/fill?sample=chelsea&value=1&value=2", 422, None),
    ],
)
async def test_out_of_range_parameters_name_the_parameter(
    client: httpx.AsyncClient, url: str, status: int, parameter: str | None
) -> None:
    body = assert_problem(await client.post(url), status)
    if parameter is not None:
        assert body["parameter"] == parameter
        assert f"`{parameter}`" in body["detail"]


@pytest.mark.parametrize(
    "url",
    [
        "/v1/images/channel?sample=camera&index=0",
        "/v1/images/rgb2bgr?sample=coins",
        "/v1/images/recolor?sample=camera",
        "/v1/images/canny?sample=astronaut",
    ],
)
async def test_wrong_op_for_the_image(client: httpx.AsyncClient, url: str) -> None:
    body = assert_problem(await client.post(url), 422, "incompatible-image")
    assert "channel" in body["detail"]


def tiff(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="TIFF")
    return buffer.getvalue()


async def test_an_all_nan_image_has_null_statistics(client: httpx.AsyncClient) -> None:
    nan = np.full((8, 8), np.nan, dtype=np.float32)
    response = await client.post("/v1/images/rgb2gray", files=upload(tiff(nan), "nan.tif"))
    assert response.status_code == 422  # rgb2gray needs color; the point is: no 500
    ok = await client.post("/v1/images/img_as_float", files=upload(tiff(nan), "nan.tif"))
    assert ok.status_code == 200, ok.text
    assert ok.json()["min"] is None and ok.json()["mean"] is None


async def test_integer_images_too_wide_for_a_histogram(client: httpx.AsyncClient) -> None:
    wide = np.array([[0, 2**31 - 1]], dtype=np.int32)
    for op in ("histogram", "equalize_hist", "cumulative_distribution"):
        response = await client.post(f"/v1/images/{op}", files=upload(tiff(wide), "w.tif"))
        body = assert_problem(response, 422, "incompatible-image")
        assert "img_as_float" in body["detail"]
    report = await client.post("/v1/images/contrast-report", files=upload(tiff(wide), "w.tif"))
    assert_problem(report, 422, "incompatible-image")


async def test_unknown_op_and_sample_are_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post("/v1/images/sharpen?sample=camera"), 404)
    body = assert_problem(await client.post("/v1/images/canny?sample=lena"), 404, "not-found")
    assert body["kind"] == "sample" and body["name"] == "lena"
    assert_problem(await client.get("/v1/samples/lena"), 404, "not-found")


async def test_image_source_must_be_exactly_one(client: httpx.AsyncClient) -> None:
    none = assert_problem(await client.post("/v1/images/canny"), 422, "invalid-input")
    assert "`sample`" in none["detail"]
    both = await client.post("/v1/images/canny?sample=camera", files=upload(CAMERA_PNG))
    assert_problem(both, 422, "invalid-input")


@pytest.mark.parametrize(
    ("steps", "parameter"),
    [
        ("not json", "steps"),
        (json.dumps({"op": "canny"}), "steps"),
        (json.dumps([{"op": "sharpen"}]), "steps[0].op"),
        (json.dumps([{"sigma": 1}]), "steps[0].op"),
        (json.dumps([{"op": "canny", "sigma": -2}]), "steps[0].sigma"),
        (json.dumps([{"op": "canny", "sigmaa": 2}]), "steps[0].sigmaa"),
    ],
)
async def test_malformed_pipelines(client: httpx.AsyncClient, steps: str, parameter: str) -> None:
    response = await client.post(
        "/v1/images/pipeline", params={"sample": "camera"}, data={"steps": steps}
    )
    body = assert_problem(response, 422, "invalid-parameter")
    assert body["parameter"] == parameter


async def test_a_failing_step_is_named(client: httpx.AsyncClient) -> None:
    steps = [{"op": "rgb2gray"}, {"op": "channel", "index": 0}]
    response = await client.post(
        "/v1/images/pipeline", params={"sample": "chelsea"}, data={"steps": json.dumps(steps)}
    )
    body = assert_problem(response, 422, "incompatible-image")
    assert "step 1" in body["detail"]


@pytest.fixture(scope="module")
async def limited(make_client) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(
        image_workers=1,
        max_upload_bytes=4096,
        max_image_pixels=10_000,
        max_pipeline_steps=2,
        max_queue_depth=1,
        max_json_bytes=4096,
    ) as c:
        yield c


async def test_upload_over_the_byte_limit_is_413(limited: httpx.AsyncClient) -> None:
    big = png_bytes(np.random.default_rng(0).integers(0, 255, (400, 400), dtype=np.uint8))
    assert len(big) > 4096 + 64 * 1024
    body = assert_problem(await limited.post("/v1/images/canny", files=upload(big)), 413)
    assert body["limit_bytes"] == 4096 + 64 * 1024  # refused by Content-Length, unread
    just_over = png_bytes(np.random.default_rng(1).integers(0, 255, (72, 72), dtype=np.uint8))
    assert (
        4096 < len(just_over) < 4096 + 64 * 1024
    )  # passes the framing allowance, not the file limit
    body = assert_problem(await limited.post("/v1/images/canny", files=upload(just_over)), 413)
    assert body["limit_bytes"] == 4096


async def test_streamed_body_over_the_limit_is_413(limited: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield (
            b"--zzz\r\n"
            b'Content-Disposition: form-data; name="image"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n"
        )
        for _ in range(40):
            yield b"x" * 4096

    response = await limited.post(
        "/v1/images/pipeline",
        content=chunks(),
        headers={"Content-Type": "multipart/form-data; boundary=zzz"},
    )
    assert_problem(response, 413)
    ok = await limited.post("/v1/images/rgb2gray?sample=chelsea&include_image=false")
    assert ok.status_code == 422  # chelsea is over this app's pixel limit: still answering


@pytest.mark.parametrize("prefix", ["/v1", "/v2"])
async def test_errors_before_routing_speak_the_body_of_the_paths_router(
    limited: httpx.AsyncClient, prefix: str
) -> None:
    unknown = await limited.get(f"{prefix}/no/such/route")
    as_json = {"Content-Type": "application/json"}
    too_large = await limited.post(f"{prefix}/models/m/infer", content=b"0" * 5000, headers=as_json)
    if prefix == "/v1":
        assert_problem(unknown, 404)
        assert assert_problem(too_large, 413, "payload-too-large")["limit_bytes"] == 4096
    else:  # the Open Inference Protocol's error body
        for response, status in ((unknown, 404), (too_large, 413)):
            assert response.status_code == status
            assert set(response.json()) == {"error"} and response.json()["error"]


async def test_pixels_over_the_limit_is_422(limited: httpx.AsyncClient) -> None:
    body = assert_problem(await limited.post("/v1/images/canny?sample=camera"), 422)
    assert body["type"] == "/problems/image-too-large" and body["limit"] == 10_000


async def test_too_many_steps(limited: httpx.AsyncClient) -> None:
    steps = json.dumps([{"op": "img_as_float"}] * 3)
    response = await limited.post(
        "/v1/images/pipeline", params={"sample": "camera"}, data={"steps": steps}
    )
    body = assert_problem(response, 422, "too-many-steps")
    assert body["steps"] == 3 and body["limit"] == 2


async def test_full_queue_answers_429_with_retry_after(make_client) -> None:
    # One worker on either backend: the Ray test cluster has 2 CPUs.
    async with make_client(
        image_workers=1, ray_image_cpus=2, max_queue_depth=1, retry_after_s=7
    ) as c:
        pool = c.app.state.pool  # type: ignore[attr-defined]
        slow = "/v1/images/equalize_adapthist?sample=astronaut&kernel_size=8&include_image=false"
        running = asyncio.ensure_future(c.post(slow))
        await wait_until(lambda: pool.stats().in_flight == 1)
        queued = asyncio.ensure_future(c.post(slow))
        await wait_until(lambda: pool.stats().queue_depth == 1)
        rejected = await asyncio.gather(*(c.post(slow) for _ in range(4)))
        assert not running.done()  # refused at once, not after waiting for a worker
        for response in rejected:
            assert_problem(response, 429, "queue-full")
            assert response.headers["retry-after"] == "7"  # the setting, not the default
        assert (await running).status_code == 200
        assert (await queued).status_code == 200
        assert (await c.post(slow)).status_code == 200


async def test_slow_work_times_out_with_504(make_client) -> None:
    async with make_client(image_workers=1, request_timeout_s=0.05) as c:
        response = await c.post("/v1/images/equalize_adapthist?sample=astronaut&kernel_size=8")
        body = assert_problem(response, 504, "timeout")
        assert body["timeout_s"] > 0
        pool = c.app.state.pool  # type: ignore[attr-defined]
        await wait_until(lambda: pool.ready)  # the runaway worker was replaced
        assert (await c.get("/readyz")).status_code == 200


@pytest.mark.local_backend  # the Ray backend's equivalent: tests/service/test_ray_backend.py
async def test_a_killed_worker_fails_its_request_with_503_and_is_replaced(make_client) -> None:
    async with make_client(image_workers=1) as c:
        pool = c.app.state.pool  # type: ignore[attr-defined]
        (pid,) = pool.worker_pids()
        slow = c.post("/v1/images/equalize_adapthist?sample=astronaut&kernel_size=4")
        task = asyncio.ensure_future(slow)
        await wait_until(lambda: pool.stats().in_flight == 1)
        os.kill(pid, signal.SIGKILL)
        body = assert_problem(await task, 503, "worker-died")
        assert "replaced" in body["detail"]
        await wait_until(lambda: pool.ready)
        assert (await c.get("/readyz")).status_code == 200
        assert pool.worker_pids() != [pid]
        await assert_still_serving(c)
