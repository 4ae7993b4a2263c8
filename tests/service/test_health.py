import ast
import json
import logging
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.anyio


async def test_live_and_ready(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready" and body["workers"] == body["workers_alive"] == 2


async def test_open_inference_protocol_health(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    assert (await client.get("/v2/health/ready")).json() == {"ready": True}


async def test_request_id_is_echoed_or_minted_and_logged(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="tensorlens.access"):
        echoed = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
        minted = await client.get("/healthz")
        hostile = await client.get("/healthz", headers={"X-Request-ID": "a\tb" * 100})
    assert echoed.headers["x-request-id"] == "abc-123"
    assert len(minted.headers["x-request-id"]) == 32
    assert hostile.headers["x-request-id"] != "a\tb" * 100
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "tensorlens.access"]
    mine = [line for line in lines if line["request_id"] == "abc-123"]
    assert len(mine) == 1
    assert mine[0] | {"duration_ms": 0} == {
        "event": "request",
        "request_id": "abc-123",
        "method": "GET",
        "path": "/healthz",
        "route": "/healthz",
        "status": 200,
        "duration_ms": 0,
        "client": "127.0.0.1",
    }


async def test_metrics_count_requests_by_route_and_status(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")
    await client.get("/no/such/route")
    text = (await client.get("/metrics")).text
    assert 'tensorlens_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert 'tensorlens_http_requests_total{method="GET",route="unmatched",status="404"}' in text
    for name in (
        "tensorlens_queue_depth",
        "tensorlens_in_flight",
        "tensorlens_workers_alive 2.0",
        "tensorlens_trainings_queued",
        "tensorlens_trainings_running",
    ):
        assert name in text


async def test_unknown_route_is_a_problem_document(client: httpx.AsyncClient) -> None:
    response = await client.get("/no/such/route", headers={"X-Request-ID": "r1"})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 404 and body["type"] == "/problems/not-found"
    assert body["instance"] == "/no/such/route" and body["request_id"] == "r1"


async def test_cors_is_off_by_default(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"Origin": "http://page.example"})
    assert "access-control-allow-origin" not in response.headers


async def test_cors_allows_configured_origins_only(make_client) -> None:
    async with make_client(cors_allow_origins=["http://page.example"], image_workers=1) as c:
        preflight = await c.options(
            "/v1/images/ops",
            headers={"Origin": "http://page.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://page.example"
        assert "x-request-id" in preflight.headers
        other = await c.get("/healthz", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        exposed = await c.get("/healthz", headers={"Origin": "http://page.example"})
        assert "X-Request-ID" in exposed.headers["access-control-expose-headers"]


async def test_an_app_can_be_started_twice(tmp_path) -> None:
    from service.main import create_app
    from service.settings import Settings

    app = create_app(Settings(data_dir=tmp_path, image_workers=1))
    for _ in range(2):
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                assert (await c.get("/metrics")).status_code == 200


# In a process of its own: OpenTelemetry's tracer provider is global and set once.
OPENTELEMETRY_SCRIPT = """
import sys

from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service.main import create_app
from service.settings import Settings

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
app = create_app(Settings(data_dir=sys.argv[1], opentelemetry=sys.argv[2] == "on"))
assert TestClient(app).get("/healthz").status_code == 200
print(sorted({span.name for span in exporter.get_finished_spans()}))
"""


@pytest.mark.parametrize("setting", ["on", "off"])
def test_opentelemetry_spans_follow_the_setting(tmp_path, setting: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", OPENTELEMETRY_SCRIPT, str(tmp_path), setting],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    spans = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    if setting == "on":
        assert "GET /healthz" in spans, spans
    else:
        assert spans == []
