"""Running an ASGI app in process, lifespan included, for the clients' ``from_app``.

The async client talks to the app through httpx's ``ASGITransport`` in the caller's
event loop. The sync client has no loop: :class:`ThreadedASGITransport` runs one in a
thread, where the app's lifespan and every request run. Both enter the app's
lifespan through the ASGI lifespan protocol, so any ASGI app works, and nothing here
imports a web framework.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, MutableMapping
from concurrent.futures import Future
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import httpx

T = TypeVar("T")
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[Message]],
        Callable[[Message], Awaitable[None]],
    ],
    Awaitable[None],
]
IN_PROCESS_BASE_URL = "http://tensorlens"


class LifespanError(RuntimeError):
    """The app's startup or shutdown failed (its message says why)."""


@asynccontextmanager
async def lifespan(app: ASGIApp) -> AsyncIterator[None]:
    """Start the app (``lifespan.startup``), yield, then stop it (``lifespan.shutdown``)."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}

    async def run() -> None:
        try:
            await app(scope, inbox.get, outbox.put)
        finally:
            # An app that returns (or raises) without answering: unblock the waiter.
            await outbox.put({"type": "lifespan.ended"})

    task = asyncio.create_task(run())
    try:
        await inbox.put({"type": "lifespan.startup"})
        answer = await outbox.get()
        if answer["type"] != "lifespan.startup.complete":
            raise LifespanError(f"startup failed: {answer.get('message', answer['type'])}")
        yield
        await inbox.put({"type": "lifespan.shutdown"})
        answer = await outbox.get()
        if answer["type"] != "lifespan.shutdown.complete":
            raise LifespanError(f"shutdown failed: {answer.get('message', answer['type'])}")
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class _LoopThread:
    """An event loop running in a daemon thread; ``run`` waits for a coroutine there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="tensorlens-asgi", daemon=True
        )
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class ThreadedASGITransport(httpx.BaseTransport):
    """A sync transport to an ASGI app whose lifespan runs on a loop in a thread."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._inner = httpx.ASGITransport(app=app)
        self._loop: _LoopThread | None = None
        self._lifespan: AbstractAsyncContextManager[None] | None = None

    def start(self) -> None:
        self._loop = _LoopThread()
        self._lifespan = lifespan(self._app)
        try:
            self._loop.run(self._lifespan.__aenter__())
        except BaseException:
            self._loop.close()
            raise

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._loop is None:
            raise RuntimeError("the app is not started: use Client.from_app(app) as a context")
        return self._loop.run(self._send(request, request.read()))

    async def _send(self, request: httpx.Request, body: bytes) -> httpx.Response:
        inner = httpx.Request(request.method, request.url, headers=request.headers, content=body)
        response = await self._inner.handle_async_request(inner)
        content = await response.aread()
        return httpx.Response(
            response.status_code, headers=response.headers, stream=httpx.ByteStream(content)
        )

    def close(self) -> None:
        if self._loop is None:
            return
        loop, self._loop = self._loop, None
        try:
            if self._lifespan is not None:
                loop.run(self._lifespan.__aexit__(None, None, None))
        finally:
            loop.close()
