"""service/errors.py on its own: the status table, the two body formats, the names given
to invalid fields and the framework's own errors, in a small app with only its handlers."""

from __future__ import annotations

import asyncio
import json
import logging
from http import HTTPStatus
from typing import Annotated, Any, Literal

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.datastructures import FormData

from service import errors
from service.errors import (
    PROBLEM_MEDIA_TYPE,
    DomainHTTPException,
    ErrorBody,
    HttpError,
    Problem,
    domain_error,
    error_body_for,
    problem_responses,
    render_error,
    speaks,
    status_for,
    unparsable_body,
)
from workers import errors as e

# --------------------------------------------------------------------------- the table


class _OddImage(e.InvalidImage):
    """A subclass the table does not name: it answers as its nearest named base."""


class _Unlisted(e.TensorlensError):
    pass


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (e.InvalidParameter("p", "r"), (422, "invalid-parameter")),
        (_OddImage("x"), (422, "invalid-image")),
        (e.RateLimited("x"), (429, "rate-limited")),
        (e.QueueFull("x"), (429, "queue-full")),
        (e.ModelUnavailable("x"), (409, "model-unavailable")),
        (e.WorkCancelled("x"), (503, "pool-unavailable")),
        (_Unlisted("x"), (500, "internal")),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else None,
)
def test_the_status_is_the_nearest_class_in_the_table(error, expected):
    assert status_for(error) == expected


def test_an_exception_outside_the_hierarchy_is_internal():
    assert status_for(ValueError("x")) == (500, "internal")  # type: ignore[arg-type]


def test_problem_responses_document_each_status_with_its_phrase():
    schema = {"schema": {"$ref": "#/components/schemas/Problem"}}
    assert problem_responses(404, 422) == {
        404: {
            "model": Problem,
            "description": "Not Found",
            "content": {PROBLEM_MEDIA_TYPE: schema},
        },
        422: {
            "model": Problem,
            "description": HTTPStatus(422).phrase,  # the phrase of this Python version
            "content": {PROBLEM_MEDIA_TYPE: schema},
        },
    }


# --------------------------------------------------------------------------- body formats


@pytest.fixture
def spoken(monkeypatch):
    """The routers' marks as the app set them, restored after the test."""
    monkeypatch.setattr(errors, "_SPOKEN", dict(errors._SPOKEN))


def test_only_a_router_with_a_prefix_speaks_its_own_body(spoken):
    with pytest.raises(ValueError) as caught:
        speaks(APIRouter(), ErrorBody.OPEN_INFERENCE)
    assert str(caught.value) == "only a router with a prefix can speak its own error body"
    router = APIRouter(prefix="/t-oip")
    assert speaks(router, ErrorBody.OPEN_INFERENCE) is router


def test_the_longest_marked_prefix_a_path_is_under_decides(spoken):
    speaks(APIRouter(prefix="/t-oip"), ErrorBody.OPEN_INFERENCE)
    speaks(APIRouter(prefix="/t-oip/problems"), ErrorBody.PROBLEM)
    assert error_body_for("/t-oip") is ErrorBody.OPEN_INFERENCE
    assert error_body_for("/t-oip/models/m") is ErrorBody.OPEN_INFERENCE
    assert error_body_for("/t-oip/problems") is ErrorBody.PROBLEM
    assert error_body_for("/t-oip/problems/x") is ErrorBody.PROBLEM
    assert error_body_for("/t-oipx/models") is ErrorBody.PROBLEM  # a prefix of the name only
    assert error_body_for("/v1/t-oip") is ErrorBody.PROBLEM


def body_of(response) -> Any:
    return json.loads(response.body)


def test_a_problem_document_has_every_member_rfc_9457_names_and_the_context():
    scope = {"path": "/v1/x", "state": {"request_id": "r-1"}}
    error = HttpError(409, "Conflict", "it clashes", "conflict", {"X-A": "1"}, {"name": "m"})
    response = render_error(scope, error)
    assert response.status_code == 409
    assert response.media_type == PROBLEM_MEDIA_TYPE
    assert response.headers["x-a"] == "1"
    assert body_of(response) == {
        "type": "/problems/conflict",
        "title": "Conflict",
        "status": 409,
        "detail": "it clashes",
        "instance": "/v1/x",
        "request_id": "r-1",
        "name": "m",
    }
    bare = render_error({"path": "/y"}, HttpError(418, "I'm a Teapot", "short and stout"))
    assert body_of(bare) == {
        "type": "about:blank",
        "title": "I'm a Teapot",
        "status": 418,
        "detail": "short and stout",
        "instance": "/y",
        "request_id": None,
    }
    assert "x-a" not in bare.headers


def test_under_an_open_inference_router_errors_are_an_error_member(spoken):
    speaks(APIRouter(prefix="/t-oip"), ErrorBody.OPEN_INFERENCE)
    scope = {"path": "/t-oip/models/m/infer"}
    invalid = render_error(scope, HttpError(422, "Invalid", "bad shape", "invalid", {"X-B": "2"}))
    assert (invalid.status_code, body_of(invalid)) == (400, {"error": "bad shape"})
    assert invalid.media_type == "application/json" and invalid.headers["x-b"] == "2"
    missing = render_error(scope, HttpError(404, "Not Found", "no model m", "not-found"))
    assert (missing.status_code, body_of(missing)) == (404, {"error": "no model m"})


# --------------------------------------------------------------------------- domain errors


def test_context_becomes_json_members_except_the_reserved_ones():
    class Thing:
        def __str__(self) -> str:
            return "a thing"

    error = e.Conflict(
        "clash",
        name="m",
        sizes=(1, 2.5),
        nested={1: [None, True, Thing()]},
        what=Thing(),
        type="x",
        title="x",
        status=1,
        instance="x",
        request_id="x",
        headers="x",
    )
    assert domain_error(error) == HttpError(
        409,
        "Conflict",
        "clash",
        "conflict",
        None,
        {
            "name": "m",
            "sizes": [1, 2.5],
            "nested": {"1": [None, True, "a thing"]},
            "what": "a thing",
        },
    )


@pytest.mark.parametrize(
    ("error", "retry_after"),
    [(e.QueueFull("busy", retry_after_s=7), "7"), (e.RateLimited("slow down"), "1")],
)
def test_a_full_queue_says_when_to_retry(error, retry_after):
    assert domain_error(error).headers == {"Retry-After": retry_after}


def test_unauthorized_names_the_scheme_and_whether_the_token_was_the_trouble():
    missing = domain_error(e.Unauthorized("no key"))
    assert missing.headers == {"WWW-Authenticate": 'Bearer realm="tensorlens"'}
    invalid = domain_error(e.Unauthorized("bad key", invalid=True))
    assert invalid.headers == {
        "WWW-Authenticate": 'Bearer realm="tensorlens", error="invalid_token"'
    }
    assert domain_error(e.Forbidden("no", required_role="admin")).headers is None


def test_server_errors_are_logged_and_a_workers_own_error_is_not_shown(caplog):
    with caplog.at_level(logging.INFO, logger="tensorlens"):
        remote = domain_error(e.RemoteError("KeyError: 'secret'", where="op"))
        died = domain_error(e.WorkerDied("the worker died"))
        internal = domain_error(_Unlisted("odd"))
        domain_error(e.NotFound("gone"))
        domain_error(e.ModelUnavailable("not yet"))
    assert remote.detail == "an internal error occurred in a worker; it has been logged"
    assert remote.members == {"where": "op"} and remote.status == 500
    assert died.detail == "the worker died" and internal.detail == "odd"
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, "domain error RemoteError: KeyError: 'secret'"),
        (logging.ERROR, "domain error WorkerDied: the worker died"),
        (logging.ERROR, "domain error _Unlisted: odd"),
    ]


def test_a_domain_http_exception_carries_the_status_and_the_error():
    error = e.NotFound("gone", kind="model", name="m")
    raised = DomainHTTPException(error)
    assert (raised.status_code, raised.detail, raised.error) == (404, "gone", error)


# --------------------------------------------------------------------------- invalid fields


@pytest.mark.parametrize(
    ("loc", "body", "name"),
    [
        (("body", "config", "epochs"), {"config": {"epochs": "x"}}, "config.epochs"),
        (("config", "epochs"), {"config": {}}, "config.epochs"),
        (("query", "limit"), None, "limit"),
        (("path", "model_id"), None, "model_id"),
        ((), None, "request"),
        (("body",), {"a": 1}, "request"),
        # A discriminated union's tag, which pydantic puts in the location, is left out.
        (("body", "steps", 0, "canny", "sigma"), {"steps": [{"op": "canny"}]}, "steps[0].sigma"),
        (("body", "steps", 0, "canny"), {"steps": [{"op": "canny"}]}, "steps[0].canny"),
        (("body", "steps", 3, "sigma"), {"steps": [{}]}, "steps[3].sigma"),
        (("body", "steps", 1, "sigma"), {"steps": [{}]}, "steps[1].sigma"),  # one past the end
        # A location without its source is the body's.
        (("steps", 0, "canny", "sigma"), {"steps": [{"op": "canny"}]}, "steps[0].sigma"),
        # Outside the body nothing is looked up in it: no part is taken for a tag.
        (
            ("query", "config", "spiral", "classes"),
            {"config": {"classes": 1}},
            "config.spiral.classes",
        ),
        (("body", "steps", -1), {"steps": [{}]}, "steps[-1]"),
        (("body", "a", "b", "c"), {"a": 5}, "a.b.c"),
        (("body", "a", "b"), [1], "a.b"),
    ],
)
def test_fields_are_named_as_the_client_wrote_them(loc, body, name):
    assert errors._field_name(loc, body) == name


def test_form_fields_holding_json_are_walked_into():
    form = FormData([("steps", json.dumps([{"op": "canny", "sigma": -1}])), ("n", "3")])
    assert errors._field_name(("body", "steps", 0, "canny", "sigma"), form) == "steps[0].sigma"
    assert errors._field_name(("body", "n"), form) == "n"
    broken = FormData([("steps", "[{")])
    assert errors._field_name(("body", "steps", 0, "canny"), broken) == "steps[0].canny"
    # Outside the body a string is a value, never JSON to walk into.
    query = {"steps": json.dumps([{"op": "canny"}])}
    assert errors._field_name(("query", "steps", 0, "canny"), query) == "steps[0].canny"


def test_json_that_does_not_parse_is_none():
    assert errors._json_or_none('{"a": [1]}') == {"a": [1]}
    assert errors._json_or_none(None) is None
    assert errors._json_or_none("[1,") is None
    assert errors._json_or_none("[" * 100_000 + "]" * 100_000) is None  # too deep to parse


@pytest.mark.parametrize(
    ("cause", "reason"),
    [
        (RecursionError("maximum recursion depth exceeded"), "the JSON is nested too deeply"),
        (
            UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
            "the body is not UTF-8 text",
        ),
        (ValueError("Expecting value"), "Expecting value"),
        (ValueError(), "ValueError"),
    ],
    ids=["deep", "not-utf8", "message", "no-message"],
)
def test_an_unparsable_body_is_the_json_invalid_error(cause, reason):
    raised = unparsable_body(cause)
    assert isinstance(raised, RequestValidationError) and raised.body is None
    assert list(raised.errors()) == [
        {
            "type": "json_invalid",
            "loc": ("body",),
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": reason},
        }
    ]


# --------------------------------------------------------------------------- through an app


class Spiral(BaseModel):
    task: Literal["spiral"]
    classes: int = Field(ge=2)


class Regression(BaseModel):
    task: Literal["regression"]
    ensemble: int = Field(ge=1)


class Job(BaseModel):
    config: Annotated[Spiral | Regression, Field(discriminator="task")]
    epochs: int = Field(ge=1)


def refuse() -> None:
    raise DomainHTTPException(e.PayloadTooLarge("over 10 bytes", limit_bytes=10))


def small_app() -> FastAPI:
    app = FastAPI()
    errors.install_error_handlers(app)

    @app.post("/jobs")
    def create(job: Job) -> dict:
        return {}

    @app.post("/forms")
    def form(steps: Annotated[str, Form()], n: Annotated[int, Form()]) -> dict:
        return {}

    @app.get("/things/{thing_id}")
    def get_thing(thing_id: int) -> dict:
        if thing_id == 0:
            raise e.NotFound("no thing 0", kind="thing", name="0")
        if thing_id == 1:
            raise HTTPException(404, "thing 1 is hidden")
        if thing_id == 2:
            raise HTTPException(403)
        if thing_id == 3:
            raise HTTPException(409, {"not": "a string"}, headers={"X-Why": "because"})
        if thing_id == 5:
            raise HTTPException(400, "bad range")  # a 400 not caused by parsing the body
        if thing_id == 6:
            try:
                int("x")
            except ValueError as exc:
                raise HTTPException(409, "taken") from exc  # a cause, but not a 400
        return {}

    @app.delete("/things/{thing_id}")
    def delete_thing(thing_id: int) -> dict:
        return {}

    @app.get("/checked")
    def checked() -> dict:
        raise RequestValidationError([])  # a check of our own that found nothing to name

    @app.put("/uploads", dependencies=[Depends(refuse)])
    def upload() -> dict:
        return {}

    return app


def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=small_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    return response.json()


def test_an_invalid_field_is_named_with_every_error_listed():
    body = {"config": {"task": "spiral", "classes": 1}, "epochs": 0}
    answer = problem(call("POST", "/jobs", json=body), 422)
    assert answer["type"] == "/problems/invalid-parameter"
    assert answer["detail"] == (
        "invalid `config.classes`: Input should be greater than or equal to 2 (and 1 more)"
    )
    assert answer["parameter"] == "config.classes"
    assert answer["errors"] == [
        {
            "parameter": "config.classes",
            "message": "Input should be greater than or equal to 2",
            "type": "greater_than_equal",
        },
        {
            "parameter": "epochs",
            "message": "Input should be greater than or equal to 1",
            "type": "greater_than_equal",
        },
    ]


@pytest.mark.parametrize(
    ("config", "kind"),
    [({"task": "circle"}, "union_tag_invalid"), ({"classes": 3}, "union_tag_not_found")],
)
def test_a_bad_union_tag_is_named_after_the_tag_field(config, kind):
    answer = problem(call("POST", "/jobs", json={"config": config, "epochs": 1}), 422)
    assert [(err["parameter"], err["type"]) for err in answer["errors"]] == [("config.task", kind)]
    assert answer["detail"].startswith("invalid `config.task`: ")
    assert "(and" not in answer["detail"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b'{"config": ', "Expecting value"), (b'{"a": "\xff"}', "the body is not UTF-8 text")],
    ids=["malformed", "not-utf8"],
)
def test_a_body_that_does_not_parse_is_named_body_with_the_reason(content, reason):
    response = call("POST", "/jobs", content=content, headers={"content-type": "application/json"})
    answer = problem(response, 422)
    assert answer["detail"] == f"invalid `body`: JSON decode error ({reason})"
    assert answer["errors"] == [
        {"parameter": "body", "message": "JSON decode error", "type": "json_invalid"}
    ]


def test_a_form_field_is_named_by_its_name():
    answer = problem(call("POST", "/forms", data={"steps": "[]", "n": "many"}), 422)
    assert answer["parameter"] == "n" and answer["errors"][0]["type"] == "int_parsing"


def test_domain_errors_raised_in_routes_and_dependencies_are_problems():
    answer = problem(call("GET", "/things/0"), 404)
    assert answer == {
        "type": "/problems/not-found",
        "title": "Not found",
        "status": 404,
        "detail": "no thing 0",
        "instance": "/things/0",
        "request_id": None,
        "kind": "thing",
        "name": "0",
    }
    answer = problem(call("PUT", "/uploads"), 413)
    assert answer["type"] == "/problems/payload-too-large"
    assert answer["detail"] == "over 10 bytes" and answer["limit_bytes"] == 10


def test_the_frameworks_own_errors_are_problems_too():
    unknown = problem(call("GET", "/nowhere"), 404)
    assert unknown["type"] == "/problems/not-found"
    assert (unknown["title"], unknown["detail"]) == ("Not Found", "no route matches `/nowhere`")
    hidden = problem(call("GET", "/things/1"), 404)
    assert hidden["detail"] == "thing 1 is hidden"
    forbidden = problem(call("GET", "/things/2"), 403)
    assert (forbidden["type"], forbidden["title"], forbidden["detail"]) == (
        "about:blank",
        "Forbidden",
        "Forbidden",
    )
    response = call("GET", "/things/3")
    conflict = problem(response, 409)
    assert conflict["detail"] == "Conflict" and response.headers["x-why"] == "because"


def test_method_not_allowed_lists_every_method_of_the_path():
    response = call("POST", "/things/4")
    answer = problem(response, 405)
    assert response.headers["allow"] == "GET, DELETE"
    assert answer["type"] == "/problems/method-not-allowed"
    assert answer["detail"] == "`POST` is not allowed here; allowed: GET, DELETE"


def test_a_validation_error_without_errors_names_the_request():
    answer = problem(call("GET", "/checked"), 422)
    assert answer["detail"] == "invalid `request`: invalid"
    assert answer["parameter"] == "request" and answer["errors"] == []


def test_only_a_400_from_parsing_the_body_becomes_the_json_invalid_error():
    bad_range = problem(call("GET", "/things/5"), 400)
    assert (bad_range["type"], bad_range["detail"]) == ("/problems/bad-request", "bad range")
    taken = problem(call("GET", "/things/6"), 409)
    assert (taken["title"], taken["detail"]) == ("Conflict", "taken")
