"""CORS as a browser sees it: preflights from an allowed and a refused origin, and the
response headers a page may read (`Location`, `Retry-After`, `X-Request-ID`, `ETag`, and
an export's `Content-Disposition`, `X-Model-Version`, `X-ONNX-Opset`)."""

import httpx
import pytest

pytestmark = pytest.mark.anyio

PAGE = "http://page.example"
SMALL_SPIRAL = {"task": "spiral", "epochs": 1, "data": {"points_per_class": 8}}


def _preflight(client: httpx.AsyncClient, origin: str) -> httpx.Response:
    return client.options(
        "/v1/trainings",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, idempotency-key",
        },
    )


async def test_preflights_allow_the_configured_origin_and_refuse_others(make_client) -> None:
    async with make_client(cors_allow_origins=[PAGE], image_workers=1) as client:
        allowed = await _preflight(client, PAGE)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == PAGE
        assert "POST" in allowed.headers["access-control-allow-methods"]
        assert "idempotency-key" in allowed.headers["access-control-allow-headers"].lower()

        refused = await _preflight(client, "http://elsewhere.example")
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        assert "x-request-id" in refused.headers


async def test_a_page_may_read_location_retry_after_and_the_request_id(make_client) -> None:
    async with make_client(cors_allow_origins=[PAGE], image_workers=1) as client:
        created = await client.post("/v1/trainings", json=SMALL_SPIRAL, headers={"Origin": PAGE})
        assert created.status_code == 202
        assert created.headers["access-control-allow-origin"] == PAGE
        exposed = {
            name.strip().lower()
            for name in created.headers["access-control-expose-headers"].split(",")
        }
        assert {
            "location",
            "retry-after",
            "x-request-id",
            "etag",
            "content-disposition",
            "x-model-version",
            "x-onnx-opset",
        } <= exposed
        assert created.headers["location"] == f"/v1/trainings/{created.json()['id']}"
