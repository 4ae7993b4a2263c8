"""End to end: `python -m service` under uvicorn on a loopback port, talked to over TCP."""

import io
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from PIL import Image
from skimage import color, data, feature

from tests._support import LiveServer, live_service
from tests.service._api import assert_problem

PNG_HEADERS = {"Accept": "image/png"}


def child_pids(pid: int) -> list[int]:
    """The direct children of `pid` (the pool's workers), where /proc lists them."""
    pids = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        pids += [int(child) for child in children.read_text().split()]
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = {"TENSORLENS_IMAGE_WORKERS": "2", "TENSORLENS_LOG_LEVEL": "info"}
    with live_service(tmp_path_factory.mktemp("live"), settings) as live:
        workers = child_pids(live.process.pid)
        yield live
    code = live.process.returncode
    log_text = live.log_text()
    # uvicorn shuts down gracefully, then re-raises the signal it caught, so a clean
    # stop reads as -SIGTERM (0 on uvicorn versions before 0.29).
    assert code in (0, -signal.SIGTERM), f"exit code {code} (-9: killed):\n{log_text}"
    assert "Application shutdown complete." in log_text, log_text
    assert "Traceback" not in log_text, log_text
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in workers if alive(pid)], "worker processes outlived the server"


@pytest.fixture(scope="module")
def http(server: LiveServer) -> Iterator[httpx.Client]:
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    with httpx.Client(base_url=server.base_url, timeout=30, limits=limits) as client:
        yield client


def encode(image: np.ndarray, image_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=image_format)
    return buffer.getvalue()


def decode(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)))


def test_health_and_readiness(http: httpx.Client) -> None:
    live = http.get("/healthz")
    assert live.status_code == 200
    assert live.json() == {"status": "ok"}

    ready = http.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready"
    assert body["workers"] == body["workers_alive"] == 2


def test_uploaded_jpeg_through_a_pipeline_matches_skimage(http: httpx.Client) -> None:
    jpeg = encode(data.chelsea(), "JPEG")
    # What the server sees: the same JPEG decoded by the same Pillow.
    expected = feature.canny(color.rgb2gray(decode(jpeg)))
    steps = json.dumps([{"op": "rgb2gray"}, {"op": "canny"}])
    files = {"image": ("chelsea.jpg", jpeg, "image/jpeg")}

    as_json = http.post("/v1/images/pipeline", files=files, data={"steps": steps})
    assert as_json.status_code == 200, as_json.text
    body = as_json.json()
    assert [step["op"] for step in body["steps"]] == ["rgb2gray", "canny"]
    assert body["shape"] == list(expected.shape)
    assert body["dtype"] == "bool"
    assert_allclose(body["mean"], expected.mean())

    as_png = http.post(
        "/v1/images/pipeline", files=files, data={"steps": steps}, headers=PNG_HEADERS
    )
    assert as_png.status_code == 200, as_png.text
    assert as_png.headers["content-type"] == "image/png"
    assert_array_equal(decode(as_png.content), expected.astype(np.uint8) * 255)


def test_png_response_for_a_sample(http: httpx.Client) -> None:
    response = http.post("/v1/images/canny?sample=camera", headers=PNG_HEADERS)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG\r\n\x1a\n")
    expected = feature.canny(data.camera())
    assert_array_equal(decode(response.content), expected.astype(np.uint8) * 255)


def test_concurrent_requests_all_succeed(http: httpx.Client) -> None:
    camera_png = encode(data.camera(), "PNG")
    expected = feature.canny(data.camera()).astype(np.uint8) * 255

    def one(index: int) -> httpx.Response:
        # Alternate sample and upload so both input paths run side by side.
        if index % 2:
            return http.post("/v1/images/canny?sample=camera", headers=PNG_HEADERS)
        files = {"image": ("camera.png", camera_png, "image/png")}
        return http.post("/v1/images/canny", files=files, headers=PNG_HEADERS)

    with ThreadPoolExecutor(max_workers=16) as executor:
        responses = list(executor.map(one, range(16)))

    assert [r.status_code for r in responses] == [200] * 16
    for response in responses:
        assert_array_equal(decode(response.content), expected)
    assert len({r.headers["x-request-id"] for r in responses}) == 16


@pytest.mark.parametrize(
    ("content", "status"),
    [
        pytest.param(b"this is not an image", 415, id="not-an-image"),
        pytest.param(encode(data.camera(), "PNG")[:2000], 422, id="truncated-png"),
    ],
)
def test_bad_upload_is_a_problem_and_the_server_keeps_serving(
    http: httpx.Client, content: bytes, status: int
) -> None:
    files = {"image": ("bad.png", content, "image/png")}
    response = http.post("/v1/images/canny", files=files, headers=PNG_HEADERS)
    assert_problem(response, status)

    assert http.get("/healthz").status_code == 200
    after = http.post("/v1/images/equalize_hist?sample=camera&include_image=false")
    assert after.status_code == 200, after.text
    assert after.json()["shape"] == [512, 512]


def test_one_access_log_line_per_request_with_our_request_id(
    server: LiveServer, http: httpx.Client
) -> None:
    run = uuid.uuid4().hex[:12]
    sent = {
        f"live-{run}-health": ("GET", "/healthz", 200),
        f"live-{run}-op": ("POST", "/v1/images/canny", 200),
        f"live-{run}-missing": ("GET", "/no-such-route", 404),
    }
    round_trip_ms = {}
    for request_id, (method, path, status) in sent.items():
        params = {"sample": "camera", "include_image": "false"} if method == "POST" else None
        started = time.perf_counter()
        response = http.request(method, path, params=params, headers={"X-Request-ID": request_id})
        round_trip_ms[request_id] = (time.perf_counter() - started) * 1000
        assert response.status_code == status, response.text
        assert response.headers["x-request-id"] == request_id

    # The line is written after the response has gone out, so give it a moment.
    deadline = time.monotonic() + 5
    while True:
        lines = [
            json.loads(line)
            for line in server.log_text().splitlines()
            if line.startswith("{") and f"live-{run}-" in line
        ]
        if len(lines) >= len(sent) or time.monotonic() > deadline:
            break
        time.sleep(0.05)

    by_id: dict[str, list[dict]] = {}
    for line in lines:
        by_id.setdefault(line["request_id"], []).append(line)
    assert sorted(by_id) == sorted(sent)
    for request_id, (method, path, status) in sent.items():
        [line] = by_id[request_id]
        assert line["event"] == "request"
        assert (line["method"], line["path"], line["status"]) == (method, path, status)
        # The server's own time for the request: inside what the client waited.
        assert 0 < line["duration_ms"] <= round_trip_ms[request_id]
        assert line["client"] == "127.0.0.1"
