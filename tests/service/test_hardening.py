"""Hostile and careless requests: each gets a documented 4xx problem, never a 5xx, and
every answer carries the security headers."""

import json
import socket
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from service.main import MULTIPART_OVERHEAD_BYTES
from tests._support import live_service
from tests.service._api import assert_problem, assert_still_serving

pytestmark = pytest.mark.anyio

ID = "0" * 32
DEEP = "[" * 5000 + "]" * 5000
BAD_BODIES = [
    pytest.param('{"inputs": ' + DEEP + "}", "nested too deeply", id="deep-field"),
    pytest.param(DEEP, "nested too deeply", id="deep-body"),
    pytest.param(b'{"inputs": [[1, 2]], "note": "\xff\xfe"}', "not UTF-8", id="latin-1"),
    pytest.param(b"\xc3\x28 {}", "not UTF-8", id="binary"),
    pytest.param('{"inputs": [[1, 2]', "JSON decode error", id="truncated"),
]


@pytest.mark.parametrize("path", [f"/v1/models/{ID}/predict", "/v1/trainings"])
@pytest.mark.parametrize(("body", "says"), BAD_BODIES)
async def test_bodies_that_do_not_parse_are_one_422(
    client: httpx.AsyncClient, path: str, body: str | bytes, says: str
) -> None:
    response = await client.post(path, content=body, headers={"Content-Type": "application/json"})
    problem = assert_problem(response, 422, "invalid-parameter")
    assert says in problem["detail"]
    assert problem["parameter"] == "body"


@pytest.mark.parametrize(("body", "says"), BAD_BODIES)
async def test_bad_bodies_under_v2_get_the_protocols_4xx(
    client: httpx.AsyncClient, body: str | bytes, says: str
) -> None:
    for path in (f"/v2/models/{ID}/infer", "/v2/repository/index"):
        response = await client.post(path, content=body)
        assert 400 <= response.status_code < 500, response.text
        assert set(response.json()) == {"error"}


async def test_deep_pipeline_steps_are_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/images/pipeline?sample=camera", data={"steps": DEEP})
    assert_problem(response, 422, "invalid-parameter")
    await assert_still_serving(client)


@pytest.mark.parametrize("multipart", [False, True], ids=["json", "multipart"])
async def test_a_streamed_body_over_the_limit_is_the_documented_413(
    client: httpx.AsyncClient, multipart: bool
) -> None:
    settings = client.app.state.settings  # type: ignore[attr-defined]
    if multipart:
        limit = settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES
        path, content_type = "/v1/images/canny", "multipart/form-data; boundary=b0undary"
        head = b'--b0undary\r\nContent-Disposition: form-data; name="image"; filename="x"\r\n\r\n'
    else:
        limit = settings.max_json_bytes
        path, content_type, head = "/v1/trainings", "application/json", b""

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: sent chunked
        yield head
        for _ in range(limit // 1_000_000 + 2):
            yield b" " * 1_000_000

    response = await client.post(path, content=chunks(), headers={"Content-Type": content_type})
    body = assert_problem(response, 413, "payload-too-large")
    assert body["limit_bytes"] == limit
    declared = await client.post(
        path, content=b" " * (limit + 1), headers={"Content-Type": content_type}
    )
    assert assert_problem(declared, 413, "payload-too-large")["limit_bytes"] == limit


async def test_unknown_paths_are_not_found_problems(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.post("/v1/images/bogus?sample=camera"), 404, "not-found")
    assert "/v1/images/bogus" in body["detail"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", f"/v1/trainings/{ID}", "GET, DELETE"),
        ("GET", "/v1/images/canny", "POST"),
        ("DELETE", "/v1/trainings", "GET, POST"),
        ("GET", f"/v1/models/{ID}/predict", "POST"),
    ],
)
async def test_405_lists_every_allowed_method(
    client: httpx.AsyncClient, method: str, path: str, allowed: str
) -> None:
    response = await client.request(method, path)
    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == allowed


@pytest.mark.parametrize(
    ("method", "path", "unknown"),
    [
        ("POST", "/v1/images/canny?sample=camera&sigmma=2", "sigmma"),
        ("POST", "/v1/images/pipeline?sample=camera&include_images=false", "include_images"),
        ("GET", "/v1/samples?limit=3", "limit"),
        ("GET", "/v1/trainings?limit=2&sort=asc", "sort"),
        ("GET", "/v1/models?offset=0&page=2", "page"),
        ("POST", f"/v1/models/{ID}/predict?verison=1", "verison"),
    ],
)
async def test_unknown_query_parameters_are_refused_on_v1(
    client: httpx.AsyncClient, method: str, path: str, unknown: str
) -> None:
    response = await client.request(method, path, json={"inputs": [[0, 0]]})
    body = assert_problem(response, 422, "invalid-parameter")
    assert body["parameter"] == unknown
    assert "unknown query parameter" in body["detail"]


async def test_unknown_predict_fields_are_refused(client: httpx.AsyncClient) -> None:
    response = await client.post(f"/v1/models/{ID}/predict", json={"inputs": [[0, 0]], "input": 1})
    assert assert_problem(response, 422, "invalid-parameter")["parameter"] == "input"


@pytest.mark.parametrize(
    ("method", "path", "own_policy"),
    [
        ("GET", "/v1/samples", False),
        ("GET", "/v1/samples/camera", False),
        ("GET", "/no/such/path", False),
        ("POST", "/v1/trainings", False),
        ("GET", "/metrics", False),
        ("GET", "/ui/", True),
        ("GET", "/docs", True),
    ],
)
async def test_every_answer_has_the_security_headers(
    client: httpx.AsyncClient, method: str, path: str, own_policy: bool
) -> None:
    response = await client.request(method, path)
    assert response.headers.get_list("x-content-type-options") == ["nosniff"]
    assert response.headers.get_list("referrer-policy") == ["no-referrer"]
    [policy] = response.headers.get_list("content-security-policy")
    if own_policy:  # the page's own: its scripts and styles from this origin
        assert "script-src 'self'" in policy
    else:
        assert policy == "default-src 'none'; frame-ancestors 'none'"


@pytest.fixture(scope="module")
def live_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with live_service(tmp_path_factory.mktemp("hardening"), {"TENSORLENS_IMAGE_WORKERS": "1"}) as s:
        yield s.base_url


def raw_request(base_url: str, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send bytes as they are (no client would send them), and read the whole answer."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, _, value in (x.partition(": ") for x in lines)}
    return status, headers, body


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET /v1/sam\x00ples HTTP/1.1",
        b"GET /" + b"a" * 100_000 + b" HTTP/1.1",
        b"BREW / HTCPCP/1.0",
    ],
    ids=["nul-in-path", "100k-url", "not-http"],
)
def test_requests_the_server_cannot_parse_get_a_problem_document(
    live_url: str, request_line: bytes
) -> None:
    status, headers, body = raw_request(live_url, request_line + b"\r\nHost: x\r\n\r\n")
    assert status == "HTTP/1.1 400 Bad Request"
    assert headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert problem["type"] == "/problems/bad-request" and problem["status"] == 400
    assert problem["request_id"] == headers["x-request-id"]
    assert headers["x-content-type-options"] == "nosniff"
    assert httpx.get(f"{live_url}/readyz").status_code == 200
