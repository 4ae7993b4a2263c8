"""HTTP that survives proxies and retries (issue 10): idempotent submissions, ETags,
event-stream keep-alives and uvicorn's connection limits on a live server."""

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tensorlens import AsyncClient
from tests._support import LiveServer, live_service
from tests.service._api import LONG, SMALL, assert_problem, submit, wait_finished

HEADER_TIMEOUT_S = 1.0
MAX_CONNECTIONS = 100


# Idempotency-Key ----------------------------------------------------------------


@pytest.mark.anyio
async def test_a_repeated_key_and_body_return_the_first_job(client: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": "retry-me-1"}
    first = await client.post("/v1/trainings", json=SMALL, headers=key)
    assert first.status_code == 202, first.text
    # The same config written differently (key order, a default spelled out) is the same body.
    same = {**dict(reversed(SMALL.items())), "device": "auto"}
    again = await client.post("/v1/trainings", json=same, headers=key)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]

    other = await client.post("/v1/trainings", json={**SMALL, "epochs": 7}, headers=key)
    body = assert_problem(other, 422, "invalid-parameter")
    assert body["parameter"] == "Idempotency-Key" and first.json()["id"] in body["detail"]

    transport = httpx.ASGITransport(app=client.app)  # type: ignore[attr-defined]
    async with AsyncClient("http://tensorlens", transport=transport) as tensorlens:
        made = await tensorlens.create_training(SMALL, idempotency_key="retry-me-2")
        retried = await tensorlens.create_training(SMALL, idempotency_key="retry-me-2")
        assert retried.id == made.id

    unkeyed = await submit(client, SMALL)  # no key: a new job, however alike
    assert unkeyed["id"] not in (first.json()["id"], made.id)
    for job_id in (first.json()["id"], made.id, unkeyed["id"]):
        await client.delete(f"/v1/trainings/{job_id}")  # 409 for a finished one


@pytest.mark.anyio
async def test_idempotency_keys_survive_a_restart(make_client, tmp_path: Path) -> None:
    key = {"Idempotency-Key": "across-restarts"}
    async with make_client(image_workers=1, data_dir=tmp_path) as c:
        first = await c.post("/v1/trainings", json=SMALL, headers=key)
        assert first.status_code == 202
    # The restart finds the job interrupted (or done): a retry still gets that job.
    async with make_client(image_workers=1, data_dir=tmp_path) as c:
        again = await c.post("/v1/trainings", json=SMALL, headers=key)
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
        other = await c.post("/v1/trainings", json=LONG, headers=key)
        assert_problem(other, 422, "invalid-parameter")


# ETag and Cache-Control -----------------------------------------------------------


@pytest.mark.anyio
async def test_samples_carry_an_etag_and_answer_304(client: httpx.AsyncClient) -> None:
    first = await client.get("/v1/samples/camera")
    assert first.status_code == 200 and first.content.startswith(b"\x89PNG")
    etag = first.headers["etag"]
    assert etag.startswith('"') and "max-age" in first.headers["cache-control"]
    for tag in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        cached = await client.get("/v1/samples/camera", headers={"If-None-Match": tag})
        assert cached.status_code == 304 and cached.content == b""
        assert cached.headers["etag"] == etag
    stale = await client.get("/v1/samples/camera", headers={"If-None-Match": '"other"'})
    assert stale.status_code == 200 and stale.content == first.content
    assert (await client.get("/v1/samples/coins")).headers["etag"] != etag


@pytest.mark.anyio
async def test_model_plots_carry_an_etag_and_answer_304(client: httpx.AsyncClient) -> None:
    job = await wait_finished(client, (await submit(client, SMALL))["id"])
    plot = f"/v1/models/{job['id']}/plots/decision-boundary"
    first = await client.get(plot)
    assert first.status_code == 200 and first.headers["cache-control"] == "no-cache"
    etag = first.headers["etag"]
    cached = await client.get(plot, headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b""
    other_kind = await client.get(f"/v1/models/{job['id']}/plots/curves")
    assert other_kind.status_code == 200 and other_kind.headers["etag"] != etag
    stale = await client.get(plot, headers={"If-None-Match": other_kind.headers["etag"]})
    assert stale.status_code == 200 and stale.content.startswith(b"\x89PNG")


# A live server: keep-alive comments and connection limits ---------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = {
        "TENSORLENS_IMAGE_WORKERS": "1",
        "TENSORLENS_DEVICES": "cpu",
        "TENSORLENS_LANES_PER_DEVICE": "1",
        "TENSORLENS_SSE_KEEPALIVE_S": "0.2",
        "TENSORLENS_HTTP_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "TENSORLENS_HTTP_KEEP_ALIVE_S": "1",
        "TENSORLENS_HTTP_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    }
    with live_service(tmp_path_factory.mktemp("http"), settings) as live:
        yield live
    # Streams dropped by the client and connections closed by the server leave no errors.
    assert "Traceback" not in live.log_text(), live.log_text()


def connect(server: LiveServer) -> socket.socket:
    host, port = server.base_url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def closed_by_server(sock: socket.socket, within_s: float) -> bool:
    sock.settimeout(within_s)
    try:
        while chunk := sock.recv(65536):
            del chunk  # an answer (a 408 or the like) before the close is fine
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def test_idle_connections_are_closed_and_capped(server: LiveServer) -> None:
    sockets = [connect(server) for _ in range(200)]
    try:
        # 200 connections are over the cap: a request now is refused, not queued.
        refused = httpx.get(f"{server.base_url}/healthz", timeout=10)
        assert refused.status_code == 503
        started = time.monotonic()
        assert all(closed_by_server(sock, within_s=HEADER_TIMEOUT_S + 5) for sock in sockets)
        assert time.monotonic() - started < HEADER_TIMEOUT_S + 5
    finally:
        for sock in sockets:
            sock.close()
    assert httpx.get(f"{server.base_url}/healthz", timeout=10).status_code == 200


def test_slow_headers_and_idle_keep_alive_are_closed(server: LiveServer) -> None:
    with connect(server) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        assert closed_by_server(slow, within_s=HEADER_TIMEOUT_S + 5)
    with connect(server) as kept:
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        # The answer, then the close once the keep-alive timeout (1 s) passes.
        assert closed_by_server(kept, within_s=5)


def test_a_silent_event_stream_carries_keep_alive_comments(server: LiveServer) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        running = http.post("/v1/trainings", json=LONG).json()
        queued = http.post("/v1/trainings", json=SMALL).json()
        try:
            assert http.get(f"/v1/trainings/{queued['id']}").json()["status"] == "queued"
            lines: list[str] = []
            started = time.monotonic()
            with http.stream("GET", f"/v1/trainings/{queued['id']}/events") as stream:
                for line in stream.iter_lines():
                    lines.append(line)
                    if lines.count(": ping") >= 3 or time.monotonic() - started > 10:
                        break
            assert lines.count(": ping") >= 3, lines
            assert not [line for line in lines if line.startswith(("event:", "data:"))]
        finally:
            for job in (queued, running):
                http.delete(f"/v1/trainings/{job['id']}")
