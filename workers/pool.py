"""The worker pool: the single place where heavy work runs.

:class:`WorkerPool` is the interface the HTTP layer talks to; :class:`LocalPool`
implements it with spawned worker processes on this machine. Work is a
top-level (picklable) function plus picklable arguments, so the same functions
can run on any backend that implements the protocol.

Each worker process is owned by one runner task that takes jobs from a bounded
queue. A job that waits longer than its timeout is dropped before it starts; a
job that runs past its timeout has its worker killed and replaced, so a runaway
computation never keeps a core. A worker that dies mid-job fails only that job.

A worker talks to its runner over the socket pair of :mod:`workers._channel`, read by
the event loop, so handing a job over and getting its result back costs no thread
hand-offs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import importlib
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from workers import _channel
from workers._channel import Child
from workers.backend import PoolStats, WorkerPool
from workers.errors import (
    InvalidInput,
    PoolUnavailable,
    QueueFull,
    RemoteError,
    TensorlensError,
    WorkerDied,
    WorkTimeout,
)

__all__ = [
    "DEFAULT_PRELOAD",
    "LocalPool",
    "PoolStats",
    "WorkerPool",
    "execute",
    "get_within",
    "queue_full",
]

T = TypeVar("T")

#: How often an idle runner checks that its worker process is still alive.
_IDLE_CHECK_S = 1.0

#: How long past its deadline a caller waits for a running job to be settled.
_SETTLE_GRACE_S = 10.0

#: Modules a worker imports before it reports ready, so the first request is not slow.
DEFAULT_PRELOAD = ("workers.images",)


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


def queue_full(max_queue_depth: int, retry_after_s: int) -> QueueFull:
    """What every pool raises when ``max_queue_depth`` requests are already waiting."""
    return QueueFull(
        f"the work queue is full ({max_queue_depth} waiting); retry later",
        retry_after_s=retry_after_s,
    )


#: What a worker's C allocator keeps of the memory its work frees, by default (the
#: ``image_worker_keep_freed_bytes`` setting).
DEFAULT_KEEP_FREED_BYTES = 64 << 20

#: glibc's ``mallopt`` parameters (malloc.h), and the largest mmap threshold every glibc
#: takes on a 64-bit system (``DEFAULT_MMAP_THRESHOLD_MAX``; older ones refuse more, 2.36
#: takes any).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MAX_MMAP_THRESHOLD = 32 << 20


def keep_freed_memory(keep_bytes: int) -> bool:
    """Have the C allocator keep up to ``keep_bytes`` of freed memory for the next request.

    glibc gives a freed array of more than 128 KiB (a threshold it moves up to 32 MiB)
    back to the kernel, and trims its heap past 128 KiB of free space, so the next
    request's arrays fault every page in again: the dozen 2 MiB temporaries of a Canny on
    512x512 made it 30% slower in a fresh worker than in a long-lived process. Arrays of up
    to ``min(keep_bytes, 32 MiB)`` then come from a heap that keeps ``keep_bytes`` free.

    Returns whether the allocator took it: ``False`` for 0 (the C library's defaults) and
    where there is no glibc (``mallopt`` missing).
    """
    if keep_bytes <= 0:
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    mapped = mallopt(_M_MMAP_THRESHOLD, min(keep_bytes, _MAX_MMAP_THRESHOLD))
    return bool(mapped and mallopt(_M_TRIM_THRESHOLD, keep_bytes))


def prepare_worker(preload: Sequence[str], keep_freed_bytes: int) -> None:
    """Readies a process for image work, on any backend: the allocator tuned
    (:func:`keep_freed_memory`), the ``preload`` modules imported."""
    keep_freed_memory(keep_freed_bytes)
    for name in preload:
        importlib.import_module(name)


def _worker_main(sock: socket.socket, preload: Sequence[str], keep_freed_bytes: int) -> None:
    # Each worker computes on one core; BLAS threads would only fight the other workers.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    prepare_worker(preload, keep_freed_bytes)
    _channel.send(sock, _channel.dumps(("ready", os.getpid())))
    while True:
        try:
            message = _channel.receive(sock)
        except (EOFError, OSError):
            return
        reply = execute(functools.partial(_run_pickled, message))
        try:
            payload = _channel.dumps(reply)
        except Exception as exc:  # e.g. an unpicklable result
            payload = _channel.dumps(("err", RemoteError(f"result could not be sent: {exc}")))
        try:
            _channel.send(sock, payload)
        except OSError:  # the runner is gone
            return


def _run_pickled(message: _channel.Message) -> Any:
    fn, args = _channel.loads(message)
    return fn(*args)


async def get_within(queue: asyncio.Queue[T], timeout_s: float) -> T | None:
    """The queue's next item, or None past ``timeout_s``.

    Not ``asyncio.wait_for(queue.get(), ...)``: before Python 3.12, ``wait_for`` swallows
    a cancellation that arrives as the get completes (the caller goes on as if never
    cancelled, with the item), so a runner cancelled at shutdown could run on for ever.
    ``asyncio.timeout`` cancels the caller itself; ``Queue.get`` takes an item only once it
    runs again, so a cancelled get loses none.
    """
    try:
        async with asyncio.timeout(max(timeout_s, 0.0)):
            return await queue.get()
    except TimeoutError:
        return None


@dataclass(eq=False)
class _Job:
    message: _channel.Message  # the pickled (fn, args)
    deadline: float
    future: asyncio.Future[Any]
    started: bool = False


@dataclass(eq=False)
class _Worker:
    child: Child
    pid: int

    async def call(self, message: _channel.Message) -> tuple[str, Any]:
        await self.child.send(message)
        return await self.child.receive()  # type: ignore[no-any-return]


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
        keep_freed_bytes: int = DEFAULT_KEEP_FREED_BYTES,
    ) -> None:
        self.size = size
        self.max_queue_depth = max_queue_depth
        self.default_timeout_s = default_timeout_s
        self.retry_after_s = retry_after_s
        self.keep_freed_bytes = keep_freed_bytes
        self._preload = tuple(preload)
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
                worker.child.kill()
        self._workers = []

    @property
    def ready(self) -> bool:
        return self._started and all(_is_alive(w) for w in self._workers)

    def stats(self) -> PoolStats:
        return PoolStats(
            workers=self.size,
            workers_alive=sum(1 for w in self._workers if _is_alive(w)),
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
            raise queue_full(self.max_queue_depth, self.retry_after_s)
        # Pickled here, so work that cannot cross to a worker fails its caller at once.
        message = _channel.dumps((fn, args))
        job = _Job(message, loop.time() + timeout, loop.create_future())
        self._queue.put_nowait(job)
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(job.future)
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
                async with asyncio.timeout(_SETTLE_GRACE_S):
                    return await job.future
            except TimeoutError:
                raise WorkTimeout(f"the work did not finish within {timeout:g} s") from None
        except asyncio.CancelledError:
            # The client went away; a queued job need not run at all.
            if not job.started:
                job.future.cancel()
            raise

    async def _spawn(self) -> _Worker:
        child = _channel.spawn(
            _worker_main, self._preload, self.keep_freed_bytes, name="tensorlens-worker"
        )
        try:
            tag, pid = await child.receive()
        except (EOFError, OSError) as exc:
            child.kill()
            raise PoolUnavailable(f"a worker process failed to start: {exc}") from exc
        assert tag == "ready"
        return _Worker(child, pid)

    async def _replace(self, index: int) -> _Worker:
        """Kill worker ``index`` and start another, retrying until one starts."""
        old = self._workers[index]
        self._workers[index] = None
        if old is not None:
            await asyncio.to_thread(old.child.kill)
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
            job = await get_within(self._queue, _IDLE_CHECK_S)
            if job is None:
                # A worker that died while idle is replaced now, not at the next request,
                # so /readyz recovers without traffic.
                if not _is_alive(self._workers[index]):
                    await self._replace(index)
                continue
            if job.future.done():
                continue
            worker = self._workers[index]
            if worker is None or not _is_alive(worker):
                worker = await self._replace(index)
            job.started = True
            self._in_flight += 1
            started = time.monotonic()
            try:
                remaining = max(job.deadline - loop.time(), 0.0)
                try:
                    async with asyncio.timeout(remaining):
                        tag, payload = await worker.call(job.message)
                except TimeoutError:
                    worker.child.process.kill()
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
                    code = await worker.child.exit_code(1.0)
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


def _is_alive(worker: _Worker | None) -> bool:
    return worker is not None and worker.child.process.is_alive()


def _settle(job: _Job, *, result: Any = None, exc: BaseException | None = None) -> None:
    if job.future.done():
        return
    if exc is not None:
        job.future.set_exception(exc)
    else:
        job.future.set_result(result)
