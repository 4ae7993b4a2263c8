"""The lean route class of the prediction routes: documented and answering as FastAPI does."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path as FilePath
from typing import Annotated

import httpx
import pytest
from fastapi import (
    APIRouter,
    BackgroundTasks,
    Depends,
    FastAPI,
    Header,
    Path,
    Query,
    Request,
    Response,
)
from fastapi import Body as BodyParam
from packaging.requirements import Requirement
from pydantic import BaseModel, Field

from service.errors import install_error_handlers
from service.routes._lean import LeanRoute, add_lean_routes, json_response, lean_router


class Body(BaseModel):
    values: list[float] = Field(min_length=1)


class Total(BaseModel):
    name: str
    total: float


async def total(
    request: Request,
    name: Annotated[str, Path(pattern="^[a-z]+$")],
    body: Body,
    scale: Annotated[float, Query(gt=0)] = 1.0,
) -> Response:
    """Sum of the values, scaled."""
    assert request.method == "POST"
    return json_response(Total(name=name, total=sum(body.values) * scale))


def _app(lean: bool) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    if lean:
        router = lean_router(prefix="/v1", tag="things")
    else:
        router = APIRouter(prefix="/v1", tags=["things"])
    router.post("/things/{name}", response_model=Total)(total)
    if lean:
        add_lean_routes(app, router)
    else:
        app.include_router(router)
    return app


JSON = {"content-type": "application/json"}
TEXT = {"content-type": "text/plain"}
REQUESTS = [
    ("POST", "/v1/things/abc", {"json": {"values": [1, 2]}}),
    ("POST", "/v1/things/abc?scale=2", {"json": {"values": [1, 2]}}),
    ("POST", "/v1/things/ABC", {"json": {"values": [1, 2]}}),  # path pattern
    ("POST", "/v1/things/abc?scale=0", {"json": {"values": [1, 2]}}),  # query bound
    ("POST", "/v1/things/abc?scale=x", {"json": {"values": [1, 2]}}),  # query type
    ("POST", "/v1/things/abc", {"json": {"values": []}}),  # body constraint
    ("POST", "/v1/things/abc", {"json": {"values": ["x"]}}),  # body type
    ("POST", "/v1/things/abc", {"json": [1, 2]}),  # not an object
    ("POST", "/v1/things/abc", {}),  # no body
    (
        "POST",
        "/v1/things/abc",
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
    ),
    (
        "POST",
        "/v1/things/abc",
        {"content": b'{"values": [1]}', "headers": {"content-type": "text/plain"}},
    ),
    ("GET", "/v1/things/abc", {}),  # method
    ("POST", "/v1/things/ABC?scale=0", {"json": {"values": []}}),  # all three: reported together
    ("POST", "/v1/things/ABC", {"content": b"{not json", "headers": JSON}),  # no JSON goes first
]


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "path", "kwargs"), REQUESTS)
async def test_a_lean_route_answers_what_fastapi_answers(method, path, kwargs) -> None:
    answers = []
    for lean in (False, True):
        transport = httpx.ASGITransport(app=_app(lean))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.request(method, path, **kwargs)
        answers.append((response.status_code, response.headers.get("content-type"), response.text))
    assert answers[1] == answers[0]


def test_a_lean_route_is_documented_and_matched_first() -> None:
    plain, lean = _app(lean=False), _app(lean=True)
    assert isinstance(lean.router.routes[0], LeanRoute)
    operation = lean.openapi()["paths"]["/v1/things/{name}"]["post"]
    assert operation["operationId"] == "things-total"
    del operation["operationId"]
    expected = plain.openapi()["paths"]["/v1/things/{name}"]["post"]
    del expected["operationId"]
    assert operation == expected
    assert lean.openapi()["components"] == plain.openapi()["components"]


async def _settings() -> int:
    return 1


class NotAModel:
    pass


async def with_dependency(request: Request, n: Annotated[int, Depends(_settings)]) -> Response:
    return Response()


async def with_header(request: Request, x_key: Annotated[str, Header()]) -> Response:
    return Response()


async def with_two_bodies(request: Request, a: Body, b: Body) -> Response:
    return Response()


async def with_list_body(request: Request, values: list[float]) -> Response:
    return Response()


async def without_request(name: str) -> Response:
    return Response()


async def with_response(request: Request, response: Response) -> Response:
    return response


async def with_background_tasks(request: Request, tasks: BackgroundTasks) -> Response:
    return Response()


async def with_embedded_body(
    request: Request, body: Annotated[Body, BodyParam(embed=True)]
) -> Response:
    return Response()


@pytest.mark.parametrize(
    "endpoint",
    [
        with_dependency,
        with_header,
        with_two_bodies,
        with_list_body,
        without_request,
        with_response,
        with_background_tasks,
        with_embedded_body,
    ],
)
def test_what_a_lean_route_would_not_solve_is_refused(endpoint) -> None:
    router = lean_router(prefix="/v1", tag="things")
    with pytest.raises(TypeError, match="LeanRoute"):
        router.post("/things/{name}")(endpoint)


def test_only_lean_routes_go_in_front() -> None:
    router = APIRouter()
    router.post("/things/{name}")(total)
    with pytest.raises(TypeError, match="not a LeanRoute"):
        add_lean_routes(FastAPI(), router)


def test_fastapi_is_pinned_to_the_minor_lean_routes_are_tested_on() -> None:
    # LeanRoute calls FastAPI internals; the parity tests above are what a new minor
    # must pass before the pin in pyproject.toml and constraints.txt moves.
    root = FilePath(__file__).resolve().parents[2]
    dependencies = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = (root / "constraints.txt").read_text().splitlines()
    constraints = [line for line in lines if line and not line.startswith("#")]
    pins = [pin for pin in map(Requirement, dependencies + constraints) if pin.name == "fastapi"]
    assert len(pins) == 2 and pins[0].specifier == pins[1].specifier
    assert version("fastapi") in pins[0].specifier
    assert any(spec.operator in ("<", "==", "~=") for spec in pins[0].specifier)
