"""Who may do what, and how often: API keys with roles and a rate limit, in one place.

Keys are off until ``TENSORLENS_API_KEYS`` lists some: each entry is ``<role>:<sha256 of
the key>`` (``tensorlens hash-key`` makes one), so the settings never hold a key itself.
A client sends ``Authorization: Bearer <key>``. Roles are ranked, each allowing what the
ones below it allow, as TorchServe separates its inference and management keys:

- ``infer``: images, samples, predictions, reading models and jobs (every route not
  listed below);
- ``train``: submitting and cancelling trainings;
- ``admin``: deleting models, versions and aliases, setting aliases, loading and
  unloading models.

Liveness, readiness, the docs and the playground page stay open; ``/metrics`` too,
unless ``TENSORLENS_METRICS_REQUIRE_KEY``. :data:`RULES` is the whole table.

The rate limit (``TENSORLENS_RATE_LIMIT_PER_S``, off by default) is a token bucket per
key, or per client address when the request carries no key: ``TENSORLENS_RATE_LIMIT_BURST``
requests at once, refilled at the rate; above it, 429 with ``Retry-After``.

Both are checked by :class:`AccessMiddleware` before any route runs, so every route, the
lean prediction routes included, is covered, and a refused request costs no parsing.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from enum import IntEnum

from starlette.routing import get_route_path
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import domain_error, render_error
from workers.errors import Forbidden, RateLimited, TensorlensError, Unauthorized

log = logging.getLogger("tensorlens")

KEY_PREFIX = "tl_"


class Role(IntEnum):
    """What a key may do; a higher role may do everything a lower one may."""

    INFER = 1
    TRAIN = 2
    ADMIN = 3


#: A rule's marker for "open, or ``infer`` when metrics require a key".
METRICS = "metrics"


@dataclass(frozen=True)
class Rule:
    """Requests with one of ``methods`` (all, when empty) to a path matching ``path``
    need ``role`` (None: open to anyone)."""

    methods: frozenset[str]
    path: re.Pattern[str]
    role: Role | str | None


def rule(methods: str, path: str, role: Role | str | None) -> Rule:
    return Rule(frozenset(methods.split()), re.compile(f"(?:{path})"), role)


#: The first rule that matches decides; a request no rule matches needs ``infer``.
RULES: tuple[Rule, ...] = (
    rule("GET HEAD", r"/healthz|/readyz|/v2/health/(?:live|ready)", None),
    rule("GET HEAD", r"/metrics", METRICS),
    rule("GET HEAD", r"/|/ui/?|/ui/[^/]+|/docs(?:/.*)?|/redoc|/openapi\.json", None),
    rule("POST", r"/v1/trainings", Role.TRAIN),
    rule("DELETE", r"/v1/trainings/[^/]+", Role.TRAIN),
    rule("PUT DELETE", r"/v1/models/.+", Role.ADMIN),
    rule("POST", r"/v2/repository/models/[^/]+/(?:load|unload)", Role.ADMIN),
)
DEFAULT_ROLE = Role.INFER


def required_role(method: str, path: str, *, metrics_require_key: bool) -> Role | None:
    """The role a request needs (None: none, the route is open)."""
    for entry in RULES:
        if (not entry.methods or method in entry.methods) and entry.path.fullmatch(path):
            if entry.role == METRICS:
                return Role.INFER if metrics_require_key else None
            return entry.role  # type: ignore[return-value]
    return DEFAULT_ROLE


# Keys --------------------------------------------------------------------------------


def hash_key(key: str) -> str:
    """The form a key is kept in: the SHA-256 of its UTF-8 bytes, in hex.

    A fast hash suffices because keys are random (:func:`new_key`: 256 bits), not
    passwords: there is nothing to guess from the digest.
    """
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


_ENTRY = re.compile(r"^(infer|train|admin):([0-9a-f]{64})$")


def parse_key_entry(entry: str) -> tuple[str, Role]:
    """``<role>:<sha256 hex>`` as (digest, role); ValueError when malformed."""
    match = _ENTRY.match(entry.strip().lower())
    if match is None:
        raise ValueError(
            "an API key entry is `<role>:<sha256 of the key in hex>` with role infer, train or "
            "admin (`tensorlens hash-key` prints one)"
        )
    return match[2], Role[match[1].upper()]


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the service on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def warn_if_exposed(host: str, api_keys: list[str]) -> str | None:
    """Log a warning, and return it, when ``host`` is reachable from elsewhere and no key
    protects the service."""
    if api_keys or is_loopback(host):
        return None
    message = (
        f"serving on {host} without API keys: anyone who can reach it may train, predict and "
        "delete models. Set TENSORLENS_API_KEYS (`tensorlens hash-key` makes entries)."
    )
    log.warning(message)
    return message


# Rate limit --------------------------------------------------------------------------


class RateLimiter:
    """Token buckets by client: ``burst`` requests at once, refilled at ``per_s``.

    At most ``max_clients`` buckets are kept; past that the least recently seen go (a
    client forgotten starts again with a full bucket, which is what it would have had).
    """

    def __init__(self, per_s: float, burst: int, max_clients: int = 10_000) -> None:
        self.per_s = per_s
        self.burst = burst
        self.max_clients = max_clients
        # client -> (tokens, at); most recently seen last.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def wait_s(self, client: str, now: float | None = None) -> float:
        """0 and a token taken when ``client`` may go now, else the seconds until it may."""
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.per_s)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.per_s
        self._buckets[client] = (tokens, now)
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


# The middleware ----------------------------------------------------------------------


class AccessMiddleware:
    """Checks the key and the rate limit of every HTTP request before any route runs.

    Errors are answered with :func:`service.errors.render_error`, so they are problem
    documents (the protocol's ``{"error": ...}`` under ``/v2``) with the request id.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_keys: list[str],
        metrics_require_key: bool,
        rate_limit_per_s: float,
        rate_limit_burst: int,
    ) -> None:
        self.app = app
        self.keys = dict(parse_key_entry(entry) for entry in api_keys)
        self.metrics_require_key = metrics_require_key
        self.limiter = (
            RateLimiter(rate_limit_per_s, rate_limit_burst) if rate_limit_per_s > 0 else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (not self.keys and self.limiter is None):
            await self.app(scope, receive, send)
            return
        try:
            self.check(scope)
        except TensorlensError as exc:
            await render_error(scope, domain_error(exc))(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def check(self, scope: Scope) -> None:
        needed = required_role(
            scope["method"], get_route_path(scope), metrics_require_key=self.metrics_require_key
        )
        if needed is None:
            return  # open routes (probes, docs) are neither keyed nor limited
        digest = self._presented_key(scope)
        if self.keys:
            if digest is None:
                raise Unauthorized(
                    "this route needs an API key: send `Authorization: Bearer <key>`"
                )
            role = self.keys.get(digest)
            if role is None:
                raise Unauthorized("the API key is not valid", invalid=True)
            if role < needed:
                raise Forbidden(
                    f"a `{role.name.lower()}` key may not do this: it needs `"
                    f"{needed.name.lower()}`",
                    role=role.name.lower(),
                    required_role=needed.name.lower(),
                )
        if self.limiter is not None:
            # By key when keys are on (a valid one, by now); else by address, so that
            # made-up keys do not each get a bucket of their own.
            address = (scope.get("client") or ("-",))[0]
            client = f"key:{digest}" if self.keys else f"address:{address}"
            wait = self.limiter.wait_s(client)
            if wait > 0:
                retry_after = max(1, math.ceil(wait))
                raise RateLimited(
                    f"over the rate limit of {self.limiter.per_s:g} requests/s; retry in "
                    f"{retry_after} s",
                    retry_after_s=retry_after,
                    limit_per_s=self.limiter.per_s,
                )

    @staticmethod
    def _presented_key(scope: Scope) -> str | None:
        """The digest of the Bearer key the request carries, if any."""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, key = value.decode("latin-1").partition(" ")
                key = key.strip()
                if scheme.lower() == "bearer" and key:
                    return hash_key(key)
                return None
        return None
