"""API keys with roles, the rate limit and the warning for an exposed, keyless service.

Every route of the OpenAPI document (and the pages left out of it) is sent without a
key and with each role's key, so a route added later is covered without a new line here;
EXPECTED pins what the table in service/auth.py decides for one route of each group.
"""

import math
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import yaml
from pydantic import ValidationError

from service.auth import (
    RateLimiter,
    Role,
    hash_key,
    is_loopback,
    required_role,
    warn_if_exposed,
)
from service.cli import main as cli_main
from service.settings import Settings
from tensorlens import AsyncClient, Forbidden, RateLimited, Unauthorized
from tests._support import REPO_ROOT
from tests.service._api import assert_problem

pytestmark = pytest.mark.anyio

KEYS = {"infer": "tl_infer-key", "train": "tl_train-key", "admin": "tl_admin-key"}
ENTRIES = [f"{role}:{hash_key(key)}" for role, key in KEYS.items()]
ID = "0" * 32
OPEN = None

#: One route of each group, and the role it needs (None: open).
EXPECTED: list[tuple[str, str, Role | None]] = [
    ("GET", "/healthz", OPEN),
    ("GET", "/readyz", OPEN),
    ("GET", "/v2/health/live", OPEN),
    ("GET", "/v2/health/ready", OPEN),
    ("GET", "/metrics", OPEN),
    ("GET", "/docs", OPEN),
    ("GET", "/openapi.json", OPEN),
    ("GET", "/ui/", OPEN),
    ("GET", "/v1/samples", Role.INFER),
    ("GET", "/v1/images/ops", Role.INFER),
    ("POST", "/v1/images/canny", Role.INFER),
    ("POST", "/v1/images/pipeline", Role.INFER),
    ("GET", "/v1/trainings", Role.INFER),
    ("GET", f"/v1/trainings/{ID}", Role.INFER),
    ("GET", f"/v1/trainings/{ID}/events", Role.INFER),
    ("POST", "/v1/trainings", Role.TRAIN),
    ("DELETE", f"/v1/trainings/{ID}", Role.TRAIN),
    ("GET", "/v1/models", Role.INFER),
    ("GET", f"/v1/models/{ID}", Role.INFER),
    ("POST", f"/v1/models/{ID}/predict", Role.INFER),
    ("DELETE", f"/v1/models/{ID}", Role.ADMIN),
    ("GET", "/v2", Role.INFER),
    ("GET", f"/v2/models/{ID}", Role.INFER),
    ("POST", f"/v2/models/{ID}/infer", Role.INFER),
    ("POST", f"/v2/repository/models/{ID}/load", Role.ADMIN),
    ("POST", f"/v2/repository/models/{ID}/unload", Role.ADMIN),
]


def bearer(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[role]}"}


@pytest.fixture(scope="module")
async def keyed(make_client: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(api_keys=ENTRIES) as c:
        yield c


def every_route(app: Any) -> list[tuple[str, str]]:
    """(method, path) of every operation in the app's document, path parameters filled."""
    routes = []
    for template, operations in app.openapi()["paths"].items():
        path = re.sub(r"\{[^}]+\}", ID, template)
        routes += [(method.upper(), path) for method in operations]
    return [*routes, ("GET", "/"), ("GET", "/ui/"), ("GET", "/docs"), ("GET", "/redoc")]


@pytest.mark.parametrize(("method", "path", "role"), EXPECTED)
def test_the_table_gives_each_group_its_role(method: str, path: str, role: Role | None) -> None:
    assert required_role(method, path, metrics_require_key=False) == role


async def test_every_route_checks_the_key(keyed: httpx.AsyncClient) -> None:
    routes = every_route(keyed.app)  # type: ignore[attr-defined]
    assert len(routes) > 40
    for method, path in routes:
        needed = required_role(method, path, metrics_require_key=False)
        anonymous = await keyed.request(method, path)
        if needed is None:
            assert anonymous.status_code not in (401, 403), (method, path)
            continue
        assert anonymous.status_code == 401, (method, path, anonymous.text)
        for role in Role:
            response = await keyed.request(method, path, headers=bearer(role.name.lower()))
            if role >= needed:
                assert response.status_code not in (401, 403), (method, path, role)
            else:
                assert response.status_code == 403, (method, path, role, response.text)


def test_the_document_declares_the_key_each_operation_needs(keyed: httpx.AsyncClient) -> None:
    document = keyed.app.openapi()  # type: ignore[attr-defined]
    scheme = document["components"]["securitySchemes"]["apiKey"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    declared = 0
    for template, operations in document["paths"].items():
        path = re.sub(r"\{[^}]+\}", ID, template)
        for method, operation in operations.items():
            needed = required_role(method.upper(), path, metrics_require_key=False)
            where = (method, template)
            if needed is None:
                assert "security" not in operation and "401" not in operation["responses"], where
                continue
            declared += 1
            assert operation["security"] == [{"apiKey": []}, {}], where
            assert operation["x-required-role"] == needed.name.lower(), where
            assert {"401", "429"} <= set(operation["responses"]), where
            assert ("403" in operation["responses"]) == (needed > Role.INFER), where
    assert declared > 40


async def test_refusals_are_problem_documents(keyed: httpx.AsyncClient) -> None:
    missing = await keyed.get("/v1/models")
    body = assert_problem(missing, 401, "unauthorized")
    assert "Bearer" in body["detail"]
    assert missing.headers["www-authenticate"] == 'Bearer realm="tensorlens"'

    wrong = await keyed.get("/v1/models", headers={"Authorization": "Bearer not-a-key"})
    assert_problem(wrong, 401, "unauthorized")
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]

    basic = await keyed.get("/v1/models", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert_problem(basic, 401, "unauthorized")

    low = await keyed.delete(f"/v1/models/{ID}", headers=bearer("train"))
    body = assert_problem(low, 403, "forbidden")
    assert body["required_role"] == "admin" and body["role"] == "train"


async def test_refusals_under_v2_speak_the_protocol(keyed: httpx.AsyncClient) -> None:
    response = await keyed.post(f"/v2/models/{ID}/infer", json={})
    assert response.status_code == 401
    assert set(response.json()) == {"error"}
    assert response.headers["x-request-id"]


async def test_a_good_key_reaches_the_route(keyed: httpx.AsyncClient) -> None:
    response = await keyed.post(
        "/v1/images/rgb2gray?sample=chelsea&include_image=false", headers=bearer("infer")
    )
    assert response.status_code == 200
    submitted = await keyed.post("/v1/trainings", json={"task": "nope"}, headers=bearer("train"))
    assert_problem(submitted, 422, "invalid-parameter")  # past the key, refused by the route


async def test_the_client_sends_its_api_key(keyed: httpx.AsyncClient) -> None:
    transport = httpx.ASGITransport(app=keyed.app)  # type: ignore[attr-defined]
    async with AsyncClient("http://tensorlens", transport=transport, api_key=KEYS["infer"]) as c:
        assert (await c.list_samples())[0].name
        with pytest.raises(Forbidden) as refused:
            await c.delete_model(ID)
        assert refused.value.problem.request_id
    async with AsyncClient("http://tensorlens", transport=transport) as anonymous:
        with pytest.raises(Unauthorized):
            await anonymous.list_samples()


async def test_metrics_behind_a_key_and_the_rate_limit_per_key(make_client: Any) -> None:
    # A token every 100 s: no refill to speak of however slow the machine (the refill
    # itself is test_the_bucket_refills_at_the_rate_and_forgets_the_least_recent's).
    settings = {"api_keys": ENTRIES, "metrics_require_key": True, "rate_limit_per_s": 0.01}
    async with make_client(**settings, rate_limit_burst=3) as c:
        assert (await c.get("/metrics")).status_code == 401
        assert (await c.get("/metrics", headers=bearer("infer"))).status_code == 200
        # The metrics call took a token of the infer key's bucket: 2 left.
        for _ in range(2):
            assert (await c.get("/v1/images/ops", headers=bearer("infer"))).status_code == 200
        over = await c.get("/v1/images/ops", headers=bearer("infer"))
        body = assert_problem(over, 429, "rate-limited")
        retry_after = int(over.headers["retry-after"])
        assert retry_after == body["retry_after_s"]
        assert math.ceil(1 / 0.01) - 5 <= retry_after <= math.ceil(1 / 0.01)
        # Another key has a bucket of its own; probes are never limited.
        assert (await c.get("/v1/images/ops", headers=bearer("admin"))).status_code == 200
        for _ in range(5):
            assert (await c.get("/readyz")).status_code == 200
        transport = httpx.ASGITransport(app=c.app)  # type: ignore[attr-defined]
        async with AsyncClient("http://t", transport=transport, api_key=KEYS["infer"]) as client:
            with pytest.raises(RateLimited) as limited:
                await client.list_ops()
            assert limited.value.retry_after_s is not None
            assert 95 <= limited.value.retry_after_s <= 100


async def test_without_keys_the_rate_limit_is_per_address(make_client: Any) -> None:
    async with make_client(rate_limit_per_s=0.01, rate_limit_burst=2) as c:
        made_up = {"Authorization": "Bearer anything"}
        statuses = [(await c.get("/v1/samples", headers=made_up)).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        assert (await c.get("/v1/samples")).status_code == 429  # the same address


def test_key_entries_are_checked() -> None:
    with pytest.raises(ValidationError, match="api_keys"):
        Settings(api_keys="infer:not-a-digest")
    with pytest.raises(ValidationError, match="api_keys"):
        Settings(api_keys=f"root:{hash_key('x')}")
    assert Settings(api_keys=",".join(ENTRIES)).api_keys == ENTRIES


def test_hash_key_prints_an_entry(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["hash-key", "--role", "train", "tl_secret"]) == 0
    assert capsys.readouterr().out == f"train:{hash_key('tl_secret')}\n"
    assert cli_main(["hash-key"]) == 0
    key_line, entry = capsys.readouterr().out.splitlines()
    key = key_line.removeprefix("key: ")
    assert key.startswith("tl_") and len(key) > 40
    assert entry == f"infer:{hash_key(key)}"
    Settings(api_keys=entry)  # a valid setting


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("api.example", False)],
)  # fmt: skip
def test_binding_beyond_loopback_without_keys_warns(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    assert (warn_if_exposed(host, []) is None) is loopback
    assert warn_if_exposed(host, ENTRIES) is None


def test_the_bucket_refills_at_the_rate_and_forgets_the_least_recent() -> None:
    limiter = RateLimiter(per_s=2, burst=2, max_clients=2)
    assert [limiter.wait_s("a", now=0) for _ in range(3)] == [0, 0, 0.5]
    assert limiter.wait_s("a", now=0.5) == 0  # one token back after 1 / 2 s
    assert limiter.wait_s("a", now=0.5) == pytest.approx(0.5)
    limiter.wait_s("b", now=1)
    limiter.wait_s("c", now=1)  # a third client: `a`, seen least recently, is forgotten
    assert limiter.wait_s("a", now=1) == 0 and limiter.wait_s("a", now=1) == 0


def test_compose_passes_the_keys_from_the_environment() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    api = compose["services"]["api"]["environment"]
    assert api["TENSORLENS_HOST"] == "0.0.0.0"  # reachable: keys wanted
    assert api["TENSORLENS_API_KEYS"] == "${TENSORLENS_API_KEYS:-}"
