"""The one place that turns errors into HTTP responses: the status table and the renderer.

Errors are RFC 9457 problem details, except under a router that speaks another body
(the Open Inference Protocol's ``{"error": ...}`` under ``/v2``): see :func:`speaks`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

from workers import errors as e

log = logging.getLogger("tensorlens")

PROBLEM_MEDIA_TYPE = "application/problem+json"
_RESERVED_MEMBERS = {"type", "title", "status", "detail", "instance", "request_id", "headers"}

#: Domain error class -> (HTTP status, problem type slug). Looked up along the MRO.
STATUS_TABLE: dict[type[e.TensorlensError], tuple[int, str]] = {
    e.InvalidParameter: (422, "invalid-parameter"),
    e.InvalidImage: (422, "invalid-image"),
    e.ImageTooLarge: (422, "image-too-large"),
    e.IncompatibleImage: (422, "incompatible-image"),
    e.TooManySteps: (422, "too-many-steps"),
    e.InvalidInput: (422, "invalid-input"),
    e.UnsupportedMediaType: (415, "unsupported-media-type"),
    e.PayloadTooLarge: (413, "payload-too-large"),
    e.NotFound: (404, "not-found"),
    e.ModelUnavailable: (409, "model-unavailable"),
    e.Conflict: (409, "conflict"),
    e.RateLimited: (429, "rate-limited"),
    e.QueueFull: (429, "queue-full"),
    e.Unauthorized: (401, "unauthorized"),
    e.Forbidden: (403, "forbidden"),
    e.WorkTimeout: (504, "timeout"),
    e.WorkerDied: (503, "worker-died"),
    e.PoolUnavailable: (503, "pool-unavailable"),
    e.RemoteError: (500, "internal"),
    e.TensorlensError: (500, "internal"),
}


class Problem(BaseModel):
    """RFC 9457 problem details; extra members carry the error's context."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="URI reference identifying the problem type.")
    title: str
    status: int
    detail: str
    instance: str | None = Field(None, description="The request path.")
    request_id: str | None = None


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entry documenting problem bodies for the given statuses."""
    return {
        status: {
            "model": Problem,
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


def status_for(exc: e.TensorlensError) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in STATUS_TABLE:
            return STATUS_TABLE[cls]  # type: ignore[index]
    return 500, "internal"


# Error bodies ------------------------------------------------------------------------
#
# A router marks the body format its paths speak with `speaks`; every error, from an
# exception handler or from the middleware before any route is matched (an unknown path,
# a body over the limit), is answered by `render_error` in the format of the router whose
# prefix the path is under.


class ErrorBody(Enum):
    """The error body formats a router can speak."""

    PROBLEM = "problem"  #: RFC 9457 problem details (the default)
    OPEN_INFERENCE = "open-inference"  #: KServe's Open Inference Protocol: ``{"error": ...}``


_SPOKEN: dict[str, ErrorBody] = {}


def speaks(router: APIRouter, body: ErrorBody) -> APIRouter:
    """Mark ``router``: errors on any path under its prefix are answered as ``body``."""
    if not router.prefix:
        raise ValueError("only a router with a prefix can speak its own error body")
    _SPOKEN[router.prefix] = body
    return router


def error_body_for(path: str) -> ErrorBody:
    """The body format of the marked router with the longest prefix ``path`` is under."""
    under = [prefix for prefix in _SPOKEN if path == prefix or path.startswith(prefix + "/")]
    return _SPOKEN[max(under, key=len)] if under else ErrorBody.PROBLEM


@dataclass(frozen=True)
class HttpError:
    """An error as the client will see it, whichever body format its path speaks."""

    status: int
    title: str
    detail: str
    #: The problem type, ``/problems/<slug>``; None for ``about:blank``.
    slug: str | None = None
    headers: Mapping[str, str] | None = None
    #: Problem members beyond the standard ones (the error's context).
    members: Mapping[str, Any] = field(default_factory=dict)


def render_error(scope: Scope, error: HttpError) -> JSONResponse:
    """The one error renderer, for the exception handlers and the middleware alike."""
    headers = dict(error.headers) if error.headers else None
    if error_body_for(scope["path"]) is ErrorBody.OPEN_INFERENCE:
        # The protocol answers a malformed request 400, where the rest of the API says 422.
        status = 400 if error.status == 422 else error.status
        return JSONResponse({"error": error.detail}, status, headers)
    body: dict[str, Any] = {
        "type": f"/problems/{error.slug}" if error.slug else "about:blank",
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "instance": scope["path"],
        "request_id": scope.get("state", {}).get("request_id"),
        **error.members,
    }
    return JSONResponse(body, error.status, headers, media_type=PROBLEM_MEDIA_TYPE)


def _json_safe(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return str(value)


def domain_error(exc: e.TensorlensError) -> HttpError:
    """A domain error with its status from the table and its context as members."""
    status, slug = status_for(exc)
    headers = None
    if isinstance(exc, e.QueueFull):
        headers = {"Retry-After": str(exc.context.get("retry_after_s", 1))}
    elif isinstance(exc, e.Unauthorized):
        # RFC 6750: which scheme to use, and whether the token sent was the trouble.
        invalid = ', error="invalid_token"' if exc.context.get("invalid") else ""
        headers = {"WWW-Authenticate": f'Bearer realm="tensorlens"{invalid}'}
    detail = exc.detail
    if status >= 500:
        log.error("domain error %s: %s", type(exc).__name__, exc.detail)
        if isinstance(exc, e.RemoteError):
            detail = "an internal error occurred in a worker; it has been logged"
    members = {k: v for k, v in _json_safe(exc.context).items() if k not in _RESERVED_MEMBERS}
    return HttpError(status, exc.title, detail, slug, headers, members)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, e.TensorlensError)
    return render_error(request.scope, domain_error(exc))


def _field_name(loc: tuple[Any, ...], body: Any) -> str:
    """A dotted path to the field, as the client wrote it.

    Walks the request body beside pydantic's location so that the tags of
    discriminated unions (``spiral``, ``canny``), which pydantic inserts, are left out.
    """
    where, *rest = loc if loc and loc[0] in _SOURCES else ("body", *loc)
    node: Any = body if where == "body" else None
    parts: list[str | int] = []
    for i, part in enumerate(rest):
        if isinstance(node, FormData | Mapping) and isinstance(node.get(part), str):
            node = _json_or_none(node.get(part)) if where == "body" else None
            parts.append(part)
        elif _has(node, part):
            node = node[part]
            parts.append(part)
        elif isinstance(node, Mapping) and i < len(rest) - 1:
            continue  # a union tag: not in the body, and more location follows
        else:
            parts.append(part)
            node = None
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "request"


_SOURCES = ("body", "query", "path", "header", "cookie", "form")


def _has(node: Any, part: Any) -> bool:
    if isinstance(node, Mapping):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _json_or_none(text: str | None) -> Any:
    try:
        return json.loads(text) if text is not None else None
    except (ValueError, RecursionError):
        return None


def unparsable_body(cause: Exception) -> RequestValidationError:
    """The one answer to a body no JSON parser could read: not UTF-8, or nested deeper than
    the parser allows. The same 422 as malformed JSON (``json_invalid`` on ``body``)."""
    if isinstance(cause, RecursionError):
        reason = "the JSON is nested too deeply"
    elif isinstance(cause, UnicodeError):
        reason = "the body is not UTF-8 text"
    else:
        reason = str(cause) or type(cause).__name__
    error = {
        "type": "json_invalid",
        "loc": ("body",),
        "msg": "JSON decode error",
        "input": {},
        "ctx": {"error": reason},
    }
    return RequestValidationError([error], body=None)


class DomainHTTPException(StarletteHTTPException):
    """A domain error raised where only an HTTPException gets through (FastAPI's body
    parsing turns any other exception into a 400); answered as the domain error."""

    def __init__(self, error: e.TensorlensError) -> None:
        super().__init__(status_for(error)[0], error.detail)
        self.error = error


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc += (str(err.get("ctx", {}).get("discriminator", "")).strip("'"),)
        # A body that does not parse is named `body`, not by the offset FastAPI puts in loc
        # (a form field of JSON that does not parse keeps its name).
        whole_body = loc[:1] == ("body",) and all(isinstance(part, int) for part in loc[1:])
        unparsed = err["type"] == "json_invalid" and whole_body
        name = "body" if unparsed else _field_name(loc, exc.body)
        errors.append({"parameter": name, "message": err["msg"], "type": err["type"]})
    first = errors[0] if errors else {"parameter": "request", "message": "invalid"}
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    message = first["message"]
    if message == "JSON decode error":  # FastAPI's word for any unparsable body: say why
        message += f" ({exc.errors()[0].get('ctx', {}).get('error')})"
    error = domain_error(e.InvalidParameter(first["parameter"], message + more))
    return render_error(request.scope, replace(error, members={**error.members, "errors": errors}))


#: Problem types of the framework's own HTTP errors (no route, no such method, a body
#: that is not well-formed), so that they too are documented types, not ``about:blank``.
HTTP_SLUGS = {400: "bad-request", 404: "not-found", 405: "method-not-allowed"}


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc, DomainHTTPException):
        return render_error(request.scope, domain_error(exc.error))
    if exc.status_code == 400 and isinstance(exc.__cause__, ValueError | RecursionError):
        # FastAPI's "There was an error parsing the body": say what, as for bad JSON.
        return await _validation_error(request, unparsable_body(exc.__cause__))
    status = exc.status_code
    phrase = HTTPStatus(status).phrase
    detail = exc.detail if isinstance(exc.detail, str) else phrase
    headers = dict(exc.headers or {})
    if status == 404 and detail == phrase:
        detail = f"no route matches `{request.url.path}`"
    elif status == 405:
        allowed = allowed_methods(request)
        headers["Allow"] = ", ".join(allowed)
        detail = f"`{request.method}` is not allowed here; allowed: {', '.join(allowed)}"
    error = HttpError(status, phrase, detail, HTTP_SLUGS.get(status), headers or None)
    return render_error(request.scope, error)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers at the request's path.

    Starlette's 405 names only the methods of the first route matching the path, though
    several routes may share it (``GET`` and ``DELETE /v1/trainings/{id}``).
    """
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    ]


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(e.TensorlensError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
