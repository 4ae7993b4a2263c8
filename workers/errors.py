"""The one exception hierarchy of tensorlens.

Every error a client can cause or observe is a :class:`TensorlensError`. The HTTP
layer maps each class to a status code in one table (``service/errors.py``);
nothing in ``workers`` knows about HTTP.
"""

from __future__ import annotations

from typing import Any


class TensorlensError(Exception):
    """Base of every domain error: a human-readable detail plus machine context."""

    title = "Tensorlens error"

    def __init__(self, detail: str, **context: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.context = context

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross process boundaries (worker pool, Ray); keep detail and context.
        return (_rebuild, (type(self), self.detail, self.context))


def _rebuild(cls: type[TensorlensError], detail: str, context: dict[str, Any]) -> TensorlensError:
    return cls(detail, **context)


class InvalidInput(TensorlensError):
    """The request is well-formed but its content cannot be processed."""

    title = "Invalid input"


class InvalidParameter(InvalidInput):
    """A named parameter is missing, of the wrong type or out of range (context: `parameter`)."""

    title = "Invalid parameter"

    def __init__(self, parameter: str, reason: str) -> None:
        super().__init__(f"invalid `{parameter}`: {reason}", parameter=parameter)
        self.parameter = parameter
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.parameter, self.reason))


class InvalidImage(InvalidInput):
    """The upload is empty, truncated or corrupt."""

    title = "Invalid image"


class ImageTooLarge(InvalidInput):
    """The image has more pixels than the configured limit (context: `pixels`, `limit`)."""

    title = "Image too large"


class IncompatibleImage(InvalidInput):
    """The operation does not apply to this image (e.g. a channel op on grayscale)."""

    title = "Operation does not apply to this image"


class TooManySteps(InvalidInput):
    """A pipeline has more steps than the configured limit (context: `steps`, `limit`)."""

    title = "Too many pipeline steps"


class UnsupportedMediaType(TensorlensError):
    """The upload is not an image in a supported format (context: `format` when known)."""

    title = "Unsupported media type"


class PayloadTooLarge(TensorlensError):
    """The request body is over the byte limit (context: `limit_bytes`)."""

    title = "Payload too large"


class NotFound(TensorlensError):
    """A named resource (op, sample, job, model) does not exist (context: `kind`, `name`)."""

    title = "Not found"


class Conflict(TensorlensError):
    """The resource is in a state that does not allow the request."""

    title = "Conflict"


class ModelUnavailable(Conflict):
    """A model exists but cannot be served (failed checksum, training not finished)."""

    title = "Model unavailable"


class QueueFull(TensorlensError):
    """The work queue is full; retry later (context: `retry_after_s`)."""

    title = "Too many requests"


class RateLimited(QueueFull):
    """The client is over its request rate; retry later (context: `retry_after_s`)."""

    title = "Rate limit exceeded"


class Unauthorized(TensorlensError):
    """The request needs an API key and carries none, or one that is not valid."""

    title = "Unauthorized"


class Forbidden(TensorlensError):
    """The API key is valid but its role may not do this (context: `required_role`)."""

    title = "Forbidden"


class WorkTimeout(TensorlensError):
    """The work did not finish within the per-request timeout (context: `timeout_s`)."""

    title = "Work timed out"


class WorkerDied(TensorlensError):
    """The worker process holding the request died; it has been replaced."""

    title = "Worker died"


class RemoteError(TensorlensError):
    """A worker raised an error outside this hierarchy: a bug on our side, not the input."""

    title = "Internal worker error"


class PoolUnavailable(TensorlensError):
    """The worker pool is not running (starting up or shutting down)."""

    title = "Worker pool unavailable"


class WorkCancelled(PoolUnavailable):
    """The backend cancelled the work before it finished (it is stopping, or a cancel asked)."""
