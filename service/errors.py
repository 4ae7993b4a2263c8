"""The one place that turns errors into HTTP responses: RFC 9457 problem details."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException

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
    e.QueueFull: (429, "queue-full"),
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


def problem_response(
    request: Request,
    status: int,
    slug: str | None,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"/problems/{slug}" if slug else "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "request_id": getattr(request.state, "request_id", None),
        **extra,
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _json_safe(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return str(value)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, e.TensorlensError)
    status, slug = status_for(exc)
    headers = None
    if isinstance(exc, e.QueueFull):
        headers = {"Retry-After": str(exc.context.get("retry_after_s", 1))}
    detail = exc.detail
    if status >= 500:
        log.error("domain error %s: %s", type(exc).__name__, exc.detail)
        if isinstance(exc, e.RemoteError):
            detail = "an internal error occurred in a worker; it has been logged"
    extra = {k: v for k, v in _json_safe(exc.context).items() if k not in _RESERVED_MEMBERS}
    return problem_response(request, status, slug, exc.title, detail, headers, **extra)


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
    except ValueError:
        return None


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc += (str(err.get("ctx", {}).get("discriminator", "")).strip("'"),)
        errors.append(
            {"parameter": _field_name(loc, exc.body), "message": err["msg"], "type": err["type"]}
        )
    first = errors[0] if errors else {"parameter": "request", "message": "invalid"}
    detail = f"invalid `{first['parameter']}`: {first['message']}"
    if len(errors) > 1:
        detail += f" (and {len(errors) - 1} more)"
    if request.url.path.startswith("/v2/"):
        # The Open Inference Protocol has an error body of its own.
        return JSONResponse({"error": detail}, status_code=422)
    return problem_response(
        request,
        422,
        "invalid-parameter",
        "Invalid parameter",
        detail,
        parameter=first["parameter"],
        errors=errors,
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    phrase = HTTPStatus(exc.status_code).phrase
    detail = exc.detail if isinstance(exc.detail, str) else phrase
    if request.url.path.startswith("/v2/"):
        return JSONResponse({"error": detail}, exc.status_code, dict(exc.headers or {}) or None)
    return problem_response(
        request, exc.status_code, None, phrase, detail, dict(exc.headers or {}) or None
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(e.TensorlensError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
