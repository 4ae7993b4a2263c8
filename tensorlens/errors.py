"""One exception class per problem type the service sends, under one base.

Every error response becomes an :class:`ApiError` subclass chosen by the problem's
``type`` URI (``/problems/not-found`` -> :class:`NotFound`); a response that is not a
problem document (the ``/v2`` protocol's ``{"error": ...}``, a proxy's page) is
chosen by its status instead. Each carries the problem document, the status and the
request id the server logged it under.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any

import httpx

from tensorlens.types import Problem

__all__ = [
    "ApiError",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "ImageTooLarge",
    "IncompatibleImage",
    "InternalError",
    "InvalidImage",
    "InvalidInput",
    "InvalidParameter",
    "MethodNotAllowed",
    "ModelUnavailable",
    "NotFound",
    "PayloadTooLarge",
    "PoolUnavailable",
    "QueueFull",
    "RateLimited",
    "ServiceUnavailable",
    "StreamDropped",
    "TensorlensError",
    "TooManySteps",
    "Unauthorized",
    "UnsupportedMediaType",
    "WorkTimeout",
    "WorkerDied",
    "error_for",
    "parse_retry_after",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"


class TensorlensError(Exception):
    """Base of every error this client raises."""


class StreamDropped(TensorlensError):
    """A training's event stream dropped more times in a row than the client reconnects."""


class ApiError(TensorlensError):
    """The service answered with an error status (context: ``problem``, ``status``)."""

    def __init__(self, problem: Problem, response: httpx.Response | None = None) -> None:
        super().__init__(f"{problem.status} {problem.title}: {problem.detail}")
        self.problem = problem
        self.response = response

    @property
    def status(self) -> int:
        return self.problem.status

    @property
    def type(self) -> str:
        return self.problem.type

    @property
    def title(self) -> str:
        return self.problem.title

    @property
    def detail(self) -> str:
        return self.problem.detail

    @property
    def request_id(self) -> str | None:
        return self.problem.request_id

    @property
    def extra(self) -> dict[str, Any]:
        """The problem's members beyond RFC 9457's (``parameter``, ``limit``, ...)."""
        return dict(self.problem.model_extra or {})


class InvalidInput(ApiError):
    """422: the request is well-formed but its content cannot be processed."""


class InvalidParameter(InvalidInput):
    """422: a parameter is missing, of the wrong type or out of range."""

    @property
    def parameter(self) -> str | None:
        """The offending parameter as the client wrote it (``sigma``, ``model.hidden.0``)."""
        return self.extra.get("parameter")


class InvalidImage(InvalidInput):
    """422: the upload is empty, truncated or corrupt."""


class ImageTooLarge(InvalidInput):
    """422: the image has more pixels than the server's limit (``extra['limit']``)."""


class IncompatibleImage(InvalidInput):
    """422: the op does not apply to this image (e.g. ``canny`` on RGB)."""


class TooManySteps(InvalidInput):
    """422: the pipeline is longer than the server's limit."""


class UnsupportedMediaType(ApiError):
    """415: the upload is not an image in a supported format."""


class PayloadTooLarge(ApiError):
    """413: the body is over the server's byte limit (``extra['limit_bytes']``)."""


class NotFound(ApiError):
    """404: no such op, sample, job, model or route."""


class Conflict(ApiError):
    """409: the resource's state does not allow the request (e.g. cancel a finished job)."""


class ModelUnavailable(Conflict):
    """409: the model exists but cannot be served (e.g. its weights fail their checksum)."""


class QueueFull(ApiError):
    """429: a work or training queue is full; retry after :attr:`retry_after_s`."""

    @property
    def retry_after_s(self) -> float | None:
        if self.response is not None:
            return parse_retry_after(self.response.headers.get("retry-after"))
        return None


class RateLimited(QueueFull):
    """429: this client is over the server's rate limit; retry after :attr:`retry_after_s`."""


class BadRequest(ApiError):
    """400: the request is not well-formed (e.g. broken multipart framing)."""


class Unauthorized(ApiError):
    """401: the route needs an API key (``Client(api_key=...)``), or the key is not valid."""


class Forbidden(ApiError):
    """403: the API key's role may not do this (``extra['required_role']``)."""


class MethodNotAllowed(ApiError):
    """405: no route answers this method at this path (the ``Allow`` header lists those that do)."""


class ServiceUnavailable(ApiError):
    """503: the service cannot do the work now."""


class WorkerDied(ServiceUnavailable):
    """503: the worker holding the request died; it has been replaced."""


class PoolUnavailable(ServiceUnavailable):
    """503: the worker pool is starting or stopping, or not every worker is up."""


class WorkTimeout(ApiError):
    """504: the work ran past the server's per-request limit."""


class InternalError(ApiError):
    """500: a bug on the server's side; ``request_id`` finds it in the server's log."""


_BY_TYPE: dict[str, type[ApiError]] = {
    "/problems/invalid-parameter": InvalidParameter,
    "/problems/invalid-image": InvalidImage,
    "/problems/image-too-large": ImageTooLarge,
    "/problems/incompatible-image": IncompatibleImage,
    "/problems/too-many-steps": TooManySteps,
    "/problems/invalid-input": InvalidInput,
    "/problems/unsupported-media-type": UnsupportedMediaType,
    "/problems/payload-too-large": PayloadTooLarge,
    "/problems/not-found": NotFound,
    "/problems/conflict": Conflict,
    "/problems/model-unavailable": ModelUnavailable,
    "/problems/queue-full": QueueFull,
    "/problems/rate-limited": RateLimited,
    "/problems/bad-request": BadRequest,
    "/problems/unauthorized": Unauthorized,
    "/problems/forbidden": Forbidden,
    "/problems/method-not-allowed": MethodNotAllowed,
    "/problems/timeout": WorkTimeout,
    "/problems/worker-died": WorkerDied,
    "/problems/pool-unavailable": PoolUnavailable,
    "/problems/internal": InternalError,
}
#: For bodies that name no problem type.
_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: InvalidInput,
    429: QueueFull,
    500: InternalError,
    503: ServiceUnavailable,
    504: WorkTimeout,
}


def error_for(response: httpx.Response) -> ApiError:
    """The exception for an error response (its body must have been read)."""
    problem = _problem_of(response)
    cls = _BY_TYPE.get(problem.type) or _BY_STATUS.get(problem.status, ApiError)
    return cls(problem, response)


def _problem_of(response: httpx.Response) -> Problem:
    status = response.status_code
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("type"), str) and "title" in body:
        try:
            return Problem.model_validate({"status": status, "detail": "", **body})
        except ValueError:
            pass
    detail = body["error"] if isinstance(body, dict) and "error" in body else response.text
    return Problem(
        type="about:blank",
        title=_phrase(status),
        status=status,
        detail=str(detail),
        instance=_path_of(response),
        request_id=response.headers.get("x-request-id"),
    )


def _path_of(response: httpx.Response) -> str | None:
    try:
        return response.request.url.path
    except RuntimeError:  # a response built by hand has no request
        return None


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds: delay-seconds or an HTTP date; None when absent or bad."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
