"""The lean path of the prediction routes: routing, parameters, body and response.

Predictions are small requests that clients send by the thousand, so what the framework
does around each one is a large share of the server's CPU time, and with batching on it
is what bounds how many predictions per second one event loop can gather into forward
passes. Measured on the 2-core development machine (the notes' model, 64 concurrent
clients, raw keep-alive connections), FastAPI's dependency solving, exit stacks and
matching through included routers took a third of the event loop's time per prediction:
1,030 predictions/s with a plain route, 1,570 with this one.

- :class:`LeanRoute` is an :class:`~fastapi.routing.APIRoute`, documented in the OpenAPI
  document like any other, whose requests skip FastAPI's dependency solving: it
  validates the declared path and query parameters (the same 422 problem as FastAPI's
  for a bad one), reads the body with :func:`read_json_body` and calls
  ``endpoint(request, **parameters)``. An endpoint reads what it needs from
  ``request.app.state`` itself.
- A :func:`lean_router`'s routes go, with :func:`add_lean_routes`, at the front of the
  application's own route list: they are matched first and directly, not through
  FastAPI's included-router matching.
- :func:`read_json_body` parses and validates the body with pydantic in one pass from
  the bytes (FastAPI would ``json.loads`` then validate the Python objects) and
  :func:`json_response` serialises the answer once (FastAPI would validate the returned
  model again, then encode it).

:class:`LeanRoute` builds on FastAPI internals (``request_params_to_args``,
``APIRoute._embed_body_fields``), so FastAPI is pinned to the minor it is tested on
(``pyproject.toml``, ``constraints.txt``); ``tests/service/test_lean_routes.py`` compares
its answers with a plain route's and is what a new minor must pass.
"""

from __future__ import annotations

import contextlib
import email.message
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import request_params_to_args
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.routing import request_response

from service.errors import unparsable_body
from service.routes import operation_id
from workers.errors import InvalidParameter

BodyT = TypeVar("BodyT", bound=BaseModel)


class LeanRoute(APIRoute):
    """An API route called as ``endpoint(request, **parameters, body=...)``.

    Its path and query parameters are validated as FastAPI does; its body parameter, a
    pydantic model, is read with :func:`read_json_body`. With no dependencies to close, a
    request needs none of the exit stacks FastAPI opens for them: it is served as a
    Starlette route is.

    Raises
    ------
    TypeError
        When the endpoint declares what this route does not solve: dependencies,
        headers, cookies, or a body that is not one pydantic model.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.app = request_response(self.get_route_handler())

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        # Called by APIRoute.__init__ once the endpoint's parameters are known.
        dependant = self.dependant
        endpoint = self.endpoint
        path_fields = dependant.path_params
        query_fields = dependant.query_params
        body_fields = dependant.body_params
        body_model = body_fields[0].field_info.annotation if len(body_fields) == 1 else None
        unsolved = (
            dependant.dependencies,
            dependant.header_params,
            dependant.cookie_params,
            dependant.websocket_param_name,
            dependant.http_connection_param_name,
            dependant.response_param_name,
            dependant.background_tasks_param_name,
            dependant.security_scopes_param_name,
            self._embed_body_fields,
            self.max_body_size,
        )
        if (
            any(unsolved)
            or dependant.request_param_name != "request"
            or len(body_fields) > 1
            or (body_fields and not _is_model(body_model))
        ):
            raise TypeError(
                f"{self.name}: a LeanRoute endpoint takes `request: Request`, path and query "
                "parameters and at most one body parameter, a pydantic model (no dependencies, "
                "headers, cookies, Response or BackgroundTasks parameters, embedded bodies or "
                "max_body_size: read those from the request)"
            )
        body = (body_fields[0].name, body_model) if body_fields else None
        query_names = frozenset(field.alias for field in query_fields)
        refuse_unknown_query = self.path.startswith("/v1/")
        # Without a query string every query parameter takes its default, as FastAPI would
        # give it, so the common request skips parsing an empty query (only where every
        # default is optional and immutable: FastAPI hands out copies of the others).
        query_defaults = (
            {field.name: field.default for field in query_fields}
            if all(
                not field.field_info.is_required()
                and isinstance(field.default, (type(None), bool, int, float, str))
                for field in query_fields
            )
            else None
        )

        async def handler(request: Request) -> Response:
            if refuse_unknown_query and request.scope["query_string"]:
                check_query_names(request, query_names)
            # As FastAPI: a body that is no JSON fails alone and first; otherwise the
            # errors of the path, the query and the body are reported together.
            errors: list[Any] = []
            body_value: Any = None
            if body is not None:
                try:
                    body_value = await read_json_body(request, body[1])
                except RequestValidationError as exc:
                    if any(error.get("type") == "json_invalid" for error in exc.errors()):
                        raise
                    errors.extend(exc.errors())
                    body_value = exc.body
            values, path_errors = request_params_to_args(path_fields, request.path_params)
            if query_defaults is not None and not request.scope["query_string"]:
                values.update(query_defaults)
            elif query_fields:
                query, query_errors = request_params_to_args(query_fields, request.query_params)
                values.update(query)
                path_errors += query_errors
            if errors or path_errors:
                raise RequestValidationError(path_errors + errors, body=body_value)
            if body is not None:
                values[body[0]] = body_value
            response: Response = await endpoint(request, **values)
            return response

        return handler


def check_query_names(request: Request, declared: frozenset[str]) -> None:
    """Refuse a query parameter the route does not declare (most likely a mistyped one)."""
    unknown = set(request.query_params) - declared
    if unknown:
        takes = ", ".join(f"`{name}`" for name in sorted(declared)) or "none"
        raise InvalidParameter(min(unknown), f"unknown query parameter; this route takes {takes}")


async def refuse_unknown_query(request: Request) -> None:
    """A router dependency: :func:`check_query_names` against the matched route's own
    query parameters (its dependencies' included)."""
    route = request.scope.get("route")
    if request.scope["query_string"] and isinstance(route, APIRoute):
        check_query_names(request, _declared_query_names(route))


def _declared_query_names(route: APIRoute) -> frozenset[str]:
    # Kept on the route (routes compare by value, so they cannot be cache keys).
    names: frozenset[str] | None = getattr(route, "_tensorlens_query_names", None)
    if names is None:
        names = frozenset(_query_names(route.dependant))
        route._tensorlens_query_names = names  # type: ignore[attr-defined]
    return names


def _query_names(dependant: Dependant) -> Iterator[str]:
    yield from (field.alias for field in dependant.query_params)
    for dependency in dependant.dependencies:
        yield from _query_names(dependency)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def lean_router(prefix: str, tag: str) -> APIRouter:
    """A router of :class:`LeanRoute` s for :func:`add_lean_routes`."""
    return APIRouter(
        prefix=prefix, tags=[tag], route_class=LeanRoute, generate_unique_id_function=operation_id
    )


def add_lean_routes(app: FastAPI, router: APIRouter) -> None:
    """Put ``router``'s routes first in ``app``'s own routes (not an included router).

    Call it while building the app, before anything asks for ``app.openapi()``: FastAPI
    keeps the document it built until routes are added its own way.
    """
    for route in router.routes:
        if not isinstance(route, LeanRoute):
            raise TypeError(f"{getattr(route, 'path', route)!r} is not a LeanRoute")
    app.router.routes[:0] = router.routes


async def read_json_body(request: Request, schema: type[BodyT]) -> BodyT:
    """The request's JSON body as ``schema``, parsed and validated by pydantic in one pass.

    A body that fails is read again the way FastAPI reads a body parameter, so a client
    gets the same 422 problem naming the same field (or the same 400).
    """
    body = await request.body()
    is_json = _is_json(request.headers.get("content-type"))
    if is_json:
        with contextlib.suppress(ValidationError):
            return schema.model_validate_json(body)
    return _read_body_as_fastapi_does(body, is_json, schema)


def _is_json(content_type: str | None) -> bool:
    # FastAPI's test for a JSON body (a body without a content type is not JSON).
    if content_type is None:
        return False
    if content_type == "application/json":
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _read_body_as_fastapi_does(body: bytes, is_json: bool, schema: type[BodyT]) -> BodyT:
    if not body:
        missing = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
        raise RequestValidationError([missing], body=None)
    data: Any = body
    if is_json:
        try:
            data = json.loads(body)
        except json.JSONDecodeError as exc:
            error = {
                "type": "json_invalid",
                "loc": ("body", exc.pos),
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": exc.msg},
            }
            raise RequestValidationError([error], body=exc.doc) from exc
        except (ValueError, RecursionError) as exc:  # no Unicode text, or nested too deeply
            raise unparsable_body(exc) from exc
    try:
        return schema.model_validate(data, from_attributes=True)
    except ValidationError as exc:
        errors = [
            {**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)
        ]
        raise RequestValidationError(errors, body=data) from None


def json_response(body: BaseModel) -> Response:
    """``body`` as JSON, its ``None`` fields left out (as ``response_model_exclude_none``)."""
    return Response(body.model_dump_json(exclude_none=True), media_type="application/json")
