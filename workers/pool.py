"""The worker pool: the single place where heavy work runs.

:class:`WorkerPool` is the interface the HTTP layer talks to; :class:`LocalPool`
implements it with spawned worker processes on this machine. Work is a
top-level (picklable) function plus picklable arguments, so the same functions
can run on any backend that implements the protocol.

Each worker process is owned by one runner task that takes jobs from a bounded
queue. A job that waits longer than its timeout is dropped before it starts; a
job that runs past its timeout has its worker killed and replaced, so a runaway
computation never keeps a core. A worker that dies mid-job fails only that job.

A worker talks to its runner over a socket pair: each message is a pickle behind its
length. The runner's end is non-blocking and driven by the event loop, so handing a
job over and getting its result back costs no thread hand-offs, and a large upload or
result streams through without blocking the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import multiprocessing
import os
import pickle
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any, Protocol, TypeVar

from workers.errors import (
    InvalidInput,
    PoolUnavailable,
    QueueFull,
    RemoteError,
    TensorlensError,
    WorkerDied,
    WorkTimeout,
)

T = TypeVar("T")

#: How often an idle runner checks that its worker process is still alive.
_IDLE_CHECK_S = 1.0

#: How long past its deadline a caller waits for a running job to be settled.
_SETTLE_GRACE_S = 10.0

#: Modules a worker imports before it reports ready, so the first request is not slow.
DEFAULT_PRELOAD = ("workers.images",)

#: What precedes every message between a runner and its worker: the pickle's length.
_LENGTH = struct.Struct("!Q")

#: Messages up to this size go out in one write, header and pickle joined.
_JOIN_BELOW_BYTES = 64 * 1024


@dataclass(frozen=True)
class PoolStats:
    """A snapshot for health checks and metrics."""

    workers: int
    workers_alive: int
    queue_depth: int
    queue_capacity: int
    in_flight: int
    restarts: int


class WorkerPool(Protocol):
    """What the service needs from a backend (local processes, a Ray cluster)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    @property
    def ready(self) -> bool: ...

    def stats(self) -> PoolStats: ...

    async def run(self, fn: Callable[..., T], *args: Any, timeout_s: float | None = None) -> T:
        """Run ``fn(*args)`` on a worker and return its result or raise its domain error.

        Raises
        ------
        QueueFull
            The bounded queue is full (context: ``retry_after_s``).
        WorkTimeout
            The job did not finish within ``timeout_s`` (queue wait included).
        WorkerDied
            The worker process running the job died; it has been replaced.
        PoolUnavailable
            The pool is not started.
        """
        ...


def execute(job: Callable[[], Any]) -> tuple[str, Any]:
    """``job()`` as ``("ok", result)`` or ``("err", domain error)``.

    What every backend's worker does with a job, so errors mean the same on each.
    """
    try:
        return "ok", job()
    except TensorlensError as exc:
        return "err", exc
    except MemoryError:
        # What the client sent needs more memory than a worker has: their input, not a bug.
        return "err", InvalidInput("the request needs more memory than a worker has")
    except Exception as exc:  # reported to the caller; the worker keeps serving
        return "err", RemoteError(f"{type(exc).__name__}: {exc}")


def _worker_main(sock: socket.socket, preload: Sequence[str]) -> None:
    # Each worker computes on one core; BLAS threads would only fight the other workers.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    for name in preload:
        importlib.import_module(name)
    _send(sock, pickle.dumps(("ready", os.getpid()), pickle.HIGHEST_PROTOCOL))
    while True:
        try:
            message = _receive(sock)
        except (EOFError, OSError):
            return
        reply = execute(functools.partial(_run_pickled, message))
        try:
            payload = pickle.dumps(reply, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # e.g. an unpicklable result
            error = RemoteError(f"result could not be sent: {exc}")
            payload = pickle.dumps(("err", error), pickle.HIGHEST_PROTOCOL)
        try:
            _send(sock, payload)
        except OSError:  # the runner is gone
            return


def _run_pickled(message: bytes) -> Any:
    fn, args = pickle.loads(message)
    return fn(*args)


def _send(sock: socket.socket, payload: bytes) -> None:
    header = _LENGTH.pack(len(payload))
    if len(payload) < _JOIN_BELOW_BYTES:
        sock.sendall(header + payload)
    else:
        sock.sendall(header)
        sock.sendall(payload)


def _receive_exactly(sock: socket.socket, size: int) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        count = sock.recv_into(view[received:])
        if count == 0:
            raise EOFError("the other end closed the connection")
        received += count
    return buffer


def _receive(sock: socket.socket) -> bytearray:
    (size,) = _LENGTH.unpack(_receive_exactly(sock, _LENGTH.size))
    return _receive_exactly(sock, size)


async def _send_async(sock: socket.socket, payload: bytes) -> None:
    loop = asyncio.get_running_loop()
    header = _LENGTH.pack(len(payload))
    if len(payload) < _JOIN_BELOW_BYTES:
        await loop.sock_sendall(sock, header + payload)
    else:
        await loop.sock_sendall(sock, header)
        await loop.sock_sendall(sock, payload)


async def _receive_exactly_async(sock: socket.socket, size: int) -> bytearray:
    loop = asyncio.get_running_loop()
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        count = await loop.sock_recv_into(sock, view[received:])
        if count == 0:
            raise EOFError("the worker closed the connection")
        received += count
    return buffer


async def _receive_async(sock: socket.socket) -> Any:
    (size,) = _LENGTH.unpack(await _receive_exactly_async(sock, _LENGTH.size))
    return pickle.loads(await _receive_exactly_async(sock, size))


@dataclass(eq=False)
class _Job:
    message: bytes  # the pickled (fn, args)
    deadline: float
    future: asyncio.Future[Any]
    started: bool = False


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    sock: socket.socket
    pid: int = 0

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.process.kill()
        self.process.join(timeout=5)
        with contextlib.suppress(Exception):
            self.sock.close()

    async def call(self, message: bytes) -> tuple[str, Any]:
        await _send_async(self.sock, message)
        return await _receive_async(self.sock)  # type: ignore[no-any-return]


class LocalPool:
    """Spawned worker processes on this machine behind a bounded queue."""

    def __init__(
        self,
        size: int,
        *,
        max_queue_depth: int,
        default_timeout_s: float,
        retry_after_s: int = 1,
        preload: Sequence[str] = DEFAULT_PRELOAD,
    ) -> None:
        self.size = size
        self.max_queue_depth = max_queue_depth
        self.default_timeout_s = default_timeout_s
        self.retry_after_s = retry_after_s
        self._preload = tuple(preload)
        self._ctx = multiprocessing.get_context("spawn")
        self._queue: asyncio.Queue[_Job] | None = None
        self._workers: list[_Worker | None] = []
        self._runners: list[asyncio.Task[None]] = []
        self._in_flight = 0
        self._started = False
        self.restarts = 0

    # lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.max_queue_depth)
        self._workers = list(await asyncio.gather(*(self._spawn() for _ in range(self.size))))
        self._runners = [
            asyncio.create_task(self._run_worker(i), name=f"pool-runner-{i}")
            for i in range(self.size)
        ]
        self._started = True

    async def stop(self) -> None:
        self._started = False
        for task in self._runners:
            task.cancel()
        for task in self._runners:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._runners = []
        if self._queue is not None:
            while not self._queue.empty():
                job = self._queue.get_nowait()
                if not job.future.done():
                    job.future.set_exception(PoolUnavailable("the worker pool is shutting down"))
        for worker in self._workers:
            if worker is not None:
                worker.kill()
        self._workers = []

    @property
    def ready(self) -> bool:
        return self._started and all(w is not None and w.process.is_alive() for w in self._workers)

    def stats(self) -> PoolStats:
        return PoolStats(
            workers=self.size,
            workers_alive=sum(1 for w in self._workers if w is not None and w.process.is_alive()),
            queue_depth=self._queue.qsize() if self._queue is not None else 0,
            queue_capacity=self.max_queue_depth,
            in_flight=self._in_flight,
            restarts=self.restarts,
        )

    def worker_pids(self) -> list[int]:
        return [w.pid for w in self._workers if w is not None]

    # work ----------------------------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: Any, timeout_s: float | None = None) -> T:
        if not self._started or self._queue is None:
            raise PoolUnavailable("the worker pool is not running")
        timeout = self.default_timeout_s if timeout_s is None else timeout_s
        loop = asyncio.get_running_loop()
        if self._queue.full():
            raise QueueFull(
                f"the work queue is full ({self.max_queue_depth} waiting); retry later",
                retry_after_s=self.retry_after_s,
            )
        # Pickled here, so work that cannot cross to a worker fails its caller at once.
        message = pickle.dumps((fn, args), pickle.HIGHEST_PROTOCOL)
        job = _Job(message, loop.time() + timeout, loop.create_future())
        self._queue.put_nowait(job)
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout)
        except TimeoutError:
            if not job.started:
                # Still queued: the runner will skip it.
                job.future.cancel()
                raise WorkTimeout(
                    f"the work did not start within {timeout:g} s", timeout_s=timeout
                ) from None
            # Running: the runner enforces the same deadline and kills the worker; the
            # grace bounds the wait should the runner itself be gone (shutdown).
            try:
                return await asyncio.wait_for(job.future, _SETTLE_GRACE_S)
            except TimeoutError:
                raise WorkTimeout(f"the work did not finish within {timeout:g} s") from None
        except asyncio.CancelledError:
            # The client went away; a queued job need not run at all.
            if not job.started:
                job.future.cancel()
            raise

    async def _spawn(self) -> _Worker:
        parent, child = socket.socketpair()
        process = self._ctx.Process(
            target=_worker_main, args=(child, self._preload), daemon=True, name="tensorlens-worker"
        )
        try:
            process.start()
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        parent.setblocking(False)
        try:
            tag, pid = await _receive_async(parent)
        except (EOFError, OSError) as exc:
            process.kill()
            parent.close()
            raise PoolUnavailable(f"a worker process failed to start: {exc}") from exc
        assert tag == "ready"
        return _Worker(process, parent, pid)

    async def _replace(self, index: int) -> _Worker:
        """Kill worker ``index`` and start another, retrying until one starts."""
        old = self._workers[index]
        self._workers[index] = None
        if old is not None:
            await asyncio.get_running_loop().run_in_executor(None, old.kill)
        self.restarts += 1
        delay_s = 0.1
        while True:
            try:
                worker = await self._spawn()
            except PoolUnavailable:  # e.g. out of memory or file descriptors: try again
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 5.0)
                continue
            self._workers[index] = worker
            return worker

    async def _run_worker(self, index: int) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                job = await asyncio.wait_for(self._queue.get(), _IDLE_CHECK_S)
            except TimeoutError:
                # A worker that died while idle is replaced now, not at the next request,
                # so /readyz recovers without traffic.
                idle = self._workers[index]
                if idle is None or not idle.process.is_alive():
                    await self._replace(index)
                continue
            if job.future.done():
                continue
            worker = self._workers[index]
            if worker is None or not worker.process.is_alive():
                worker = await self._replace(index)
            job.started = True
            self._in_flight += 1
            started = time.monotonic()
            try:
                remaining = max(job.deadline - loop.time(), 0.0)
                try:
                    tag, payload = await asyncio.wait_for(worker.call(job.message), remaining)
                except TimeoutError:
                    worker.process.kill()
                    elapsed = time.monotonic() - started
                    _settle(
                        job,
                        exc=WorkTimeout(
                            f"the work was stopped after {elapsed:.1f} s (limit reached)",
                            timeout_s=round(job.deadline - started, 3),
                        ),
                    )
                    await self._replace(index)
                    continue
                except (EOFError, OSError):
                    await loop.run_in_executor(None, worker.process.join, 1.0)
                    code = worker.process.exitcode
                    _settle(
                        job,
                        exc=WorkerDied(
                            f"the worker process died (exit code {code}) and was replaced; "
                            "retry the request",
                            exit_code=code,
                        ),
                    )
                    await self._replace(index)
                    continue
                if tag == "ok":
                    _settle(job, result=payload)
                else:
                    _settle(job, exc=payload)
            finally:
                self._in_flight -= 1


def _settle(job: _Job, *, result: Any = None, exc: BaseException | None = None) -> None:
    if job.future.done():
        return
    if exc is not None:
        job.future.set_exception(exc)
    else:
        job.future.set_result(result)
