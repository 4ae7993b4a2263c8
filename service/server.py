"""How `tensorlens serve` runs uvicorn: its connection limits, from the settings.

uvicorn closes a keep-alive connection that stays idle after an answer
(``timeout_keep_alive``) and answers 503 above a number of connections and requests in
progress (``limit_concurrency``), but it arms no timer on a new connection: one that
never sends a request, or sends its headers a byte a minute, stays open for as long as
the client likes. :func:`header_timeout_protocol` adds that timer to uvicorn's httptools
protocol: a request's headers must be complete within ``http_header_timeout_s`` of the
connection opening, or of the first byte of each later request.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.observability import unparsable_request_response
from service.settings import Settings


class _HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose request headers are late."""

    header_timeout_s: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        # A problem document with a request id, not uvicorn's text/plain line.
        self.transport.write(unparsable_request_response(msg))
        self.transport.close()

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def header_timeout_protocol(header_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with a header-read timeout of ``header_timeout_s``."""
    return type(
        "HeaderTimeoutProtocol", (_HeaderTimeoutProtocol,), {"header_timeout_s": header_timeout_s}
    )


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of ``uvicorn.run`` that the settings decide."""
    return {
        "http": header_timeout_protocol(settings.http_header_timeout_s),
        "timeout_keep_alive": settings.http_keep_alive_s,
        "limit_concurrency": settings.http_max_connections,
    }
