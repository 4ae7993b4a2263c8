"""Request ids, the one structured log line per request, body limits and Prometheus metrics."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import replace

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import (
    PROBLEM_MEDIA_TYPE,
    DomainHTTPException,
    HttpError,
    domain_error,
    render_error,
)
from workers.errors import PayloadTooLarge
from workers.pool import PoolStats

access_log = logging.getLogger("tensorlens.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")


class Metrics:
    """The service's Prometheus collectors, on a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tensorlens_http_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "tensorlens_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ["route"],
            registry=self.registry,
        )
        self.op_seconds = Histogram(
            "tensorlens_op_duration_seconds",
            "Time spent in one image operation inside a worker.",
            ["op"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "tensorlens_queue_depth", "Jobs waiting for a worker.", registry=self.registry
        )
        self.in_flight = Gauge(
            "tensorlens_in_flight", "Jobs running on workers.", registry=self.registry
        )
        self.workers_alive = Gauge(
            "tensorlens_workers_alive", "Worker processes alive.", registry=self.registry
        )
        self.worker_restarts = Gauge(
            "tensorlens_worker_restarts",
            "Worker processes replaced (died or killed after a timeout).",
            registry=self.registry,
        )
        self.trainings_queued = Gauge(
            "tensorlens_trainings_queued", "Trainings waiting for a lane.", registry=self.registry
        )
        self.trainings_running = Gauge(
            "tensorlens_trainings_running", "Trainings running on lanes.", registry=self.registry
        )

    def watch_trainings(self, queued: Callable[[], int], running: Callable[[], int]) -> None:
        self.trainings_queued.set_function(queued)
        self.trainings_running.set_function(running)

    def watch_pool(self, stats: Callable[[], PoolStats]) -> None:
        self.queue_depth.set_function(lambda: stats().queue_depth)
        self.in_flight.set_function(lambda: stats().in_flight)
        self.workers_alive.set_function(lambda: stats().workers_alive)
        self.worker_restarts.set_function(lambda: stats().restarts)


class RequestContextMiddleware:
    """Assigns the request id, enforces the body limit, counts and logs every request.

    Written as plain ASGI (not ``BaseHTTPMiddleware``) so streamed responses such as
    Server-Sent Events pass through untouched and the per-request cost stays small.
    """

    def __init__(
        self, app: ASGIApp, *, metrics: Metrics, max_multipart_bytes: int, max_other_bytes: int
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_multipart_bytes = max_multipart_bytes
        self.max_other_bytes = max_other_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        sent_id = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = sent_id if _REQUEST_ID.match(sent_id) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500

        status_sent = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, status_sent
            if message["type"] == "http.response.start":
                status = message["status"]
                status_sent = True
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode("latin-1")),
                    *security_headers(message["headers"]),
                ]
            await send(message)

        received = 0
        # Uploads are large by nature; JSON is parsed on the event loop, so it stays small.
        multipart = headers.get(b"content-type", b"").startswith(b"multipart/form-data")
        limit = self.max_multipart_bytes if multipart else self.max_other_bytes

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # An HTTPException, the one kind FastAPI's body parsing lets through
                    # (it turns any other into a 400), answered as the domain error.
                    raise DomainHTTPException(_too_large(limit))
            return message

        declared = headers.get(b"content-length")
        try:
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await _answer(scope, receive, send_with_id, domain_error(_too_large(limit)))
            else:
                await self.app(scope, receive_limited, send_with_id)
        except Exception:
            # Unhandled: answer here, inside this middleware, so even a 500 carries the id.
            access_log.exception("unhandled error, request_id=%s", request_id)
            if status_sent:
                raise
            await _answer(scope, receive, send_with_id, _UNEXPECTED)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(template, scope["method"], str(status)).inc()
            self.metrics.request_seconds.labels(template).observe(elapsed)
            # The line is built only when it will be written (e.g. not at level warning).
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    json.dumps(
                        {
                            "event": "request",
                            "request_id": request_id,
                            "method": scope["method"],
                            "path": scope["path"],
                            "route": template,
                            "status": status,
                            "duration_ms": round(elapsed * 1000, 3),
                            "client": (scope.get("client") or ("-",))[0],
                        }
                    )
                )


#: Sent with every answer: no MIME sniffing, no Referer to other sites.
SECURITY_HEADERS = ((b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"))
#: The Content-Security-Policy of every answer but a page: an API answer opened in a
#: browser runs nothing and cannot be framed. Pages (the playground, /docs, /redoc) set
#: their own, which lets them load their scripts from this origin.
API_CONTENT_SECURITY_POLICY = b"default-src 'none'; frame-ancestors 'none'"


def security_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The security headers a response's own ``headers`` lack."""
    present = {name.lower(): value for name, value in headers}
    missing = [(name, value) for name, value in SECURITY_HEADERS if name not in present]
    is_page = present.get(b"content-type", b"").startswith(b"text/html")
    if b"content-security-policy" not in present and not is_page:
        missing.append((b"content-security-policy", API_CONTENT_SECURITY_POLICY))
    return missing


def unparsable_request_response(reason: str) -> bytes:
    """The whole HTTP/1.1 answer to a request the server could not parse (a URL past the
    parser's limit, a NUL in the path): a 400 problem document with a request id and the
    security headers, like any other answer, where the server would send plain text."""
    request_id = uuid.uuid4().hex
    body = json.dumps(
        {
            "type": "/problems/bad-request",
            "title": "Bad Request",
            "status": 400,
            "detail": f"the request is not valid HTTP: {reason}",
            "request_id": request_id,
        }
    ).encode()
    headers = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        (b"x-request-id", request_id.encode()),
        *security_headers([]),
    ]
    head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    access_log.warning(json.dumps({"event": "unparsable_request", "request_id": request_id}))
    return b"HTTP/1.1 400 Bad Request\r\n" + head + b"\r\n" + body


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body is over the limit of {limit} bytes", limit_bytes=limit
    )


_UNEXPECTED = HttpError(
    500, "Internal server error", "an unexpected error occurred; it has been logged", "internal"
)


async def _answer(scope: Scope, receive: Receive, send: Send, error: HttpError) -> None:
    # Before or instead of the app: the connection may hold a body nobody will read.
    error = replace(error, headers={**(error.headers or {}), "connection": "close"})
    await render_error(scope, error)(scope, receive, send)
