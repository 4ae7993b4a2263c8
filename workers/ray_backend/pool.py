"""Image work as Ray tasks, behind the same interface and limits as the local pool."""

from __future__ import annotations

import asyncio
import functools
import importlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import ray
from ray import exceptions as rex

from workers.errors import (
    PoolUnavailable,
    QueueFull,
    RemoteError,
    WorkerDied,
    WorkTimeout,
)
from workers.pool import DEFAULT_PRELOAD, PoolStats, execute

T = TypeVar("T")

#: Ray errors meaning the process (or node) running a task is gone.
WORKER_LOST = (
    rex.WorkerCrashedError,
    rex.NodeDiedError,
    rex.ObjectLostError,
    rex.OwnerDiedError,
    rex.LocalRayletDiedError,
    rex.OutOfMemoryError,  # Ray's memory monitor killed the worker
)

#: Longest the pool waits at start for its warm-up tasks to be scheduled.
START_TIMEOUT_S = 120.0


def _execute(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[str, Any]:
    return execute(functools.partial(fn, *args))


def _preload(modules: Sequence[str]) -> None:
    for name in modules:
        importlib.import_module(name)


class RayPool:
    """Runs ``fn(*args)`` as a Ray task that asks for ``task_cpus`` CPUs and no GPU.

    The queue bound and the deadline are the local pool's: at most ``max_queue_depth``
    tasks wait beyond what the cluster's CPUs can run at once (429 past that), and a
    task past its deadline is cancelled, its worker killed (504).
    """

    def __init__(
        self,
        *,
        task_cpus: float,
        max_queue_depth: int,
        default_timeout_s: float,
        retry_after_s: int = 1,
        preload: Sequence[str] = DEFAULT_PRELOAD,
    ) -> None:
        self.task_cpus = task_cpus
        self.max_queue_depth = max_queue_depth
        self.default_timeout_s = default_timeout_s
        self.retry_after_s = retry_after_s
        self._preload = tuple(preload)
        # No retries: a task whose worker died fails its request (503) rather than
        # running twice; Ray starts a new worker for the next one.
        self._remote = ray.remote(_execute).options(
            num_cpus=task_cpus, num_gpus=0, max_retries=0, name="tensorlens-image"
        )
        self._slots = 1
        self._outstanding = 0
        self._started = False
        self.restarts = 0

    async def start(self) -> None:
        cpus = ray.cluster_resources().get("CPU", 0.0)
        self._slots = max(1, int(cpus // self.task_cpus)) if self.task_cpus else 1
        # One warm-up task per slot, so the first requests find workers with the ops imported.
        warm = [self._remote.remote(_preload, (self._preload,)) for _ in range(self._slots)]
        try:
            started = await asyncio.wait_for(asyncio.gather(*warm), START_TIMEOUT_S)
        except TimeoutError:
            raise PoolUnavailable(
                f"no Ray worker started within {START_TIMEOUT_S:g} s: does the cluster have CPUs?"
            ) from None
        for status, value in started:
            if status != "ok":
                raise PoolUnavailable(f"a Ray worker failed to start: {value}")
        self._started = True

    async def stop(self) -> None:
        self._started = False

    @property
    def ready(self) -> bool:
        return self._started and ray.is_initialized()

    def stats(self) -> PoolStats:
        return PoolStats(
            workers=self._slots,
            workers_alive=self._slots if self.ready else 0,
            queue_depth=max(0, self._outstanding - self._slots),
            queue_capacity=self.max_queue_depth,
            in_flight=min(self._outstanding, self._slots),
            restarts=self.restarts,
        )

    async def run(self, fn: Callable[..., T], *args: Any, timeout_s: float | None = None) -> T:
        if not self._started:
            raise PoolUnavailable("the worker pool is not running")
        if self._outstanding >= self._slots + self.max_queue_depth:
            raise QueueFull(
                f"the work queue is full ({self.max_queue_depth} waiting); retry later",
                retry_after_s=self.retry_after_s,
            )
        timeout = self.default_timeout_s if timeout_s is None else timeout_s
        try:
            ref = self._remote.remote(fn, args)
        except Exception as exc:  # unserialisable work, a lost connection
            raise RemoteError(f"the work could not be submitted to Ray: {exc}") from None
        self._outstanding += 1
        try:
            status, value = await asyncio.wait_for(ref, timeout)
        except TimeoutError:
            ray.cancel(ref, force=True)
            raise WorkTimeout(
                f"the work did not finish within {timeout:g} s", timeout_s=timeout
            ) from None
        except asyncio.CancelledError:
            # The client went away: a queued task need not run, a running one is
            # interrupted (its worker survives).
            ray.cancel(ref)
            raise
        except WORKER_LOST as exc:
            self.restarts += 1
            raise WorkerDied(
                f"the Ray worker running the request died ({type(exc).__name__}); retry the request"
            ) from None
        except rex.TaskCancelledError:
            raise PoolUnavailable("the work was cancelled: the pool is shutting down") from None
        except rex.RayError as exc:
            raise RemoteError(f"Ray failed the task: {type(exc).__name__}: {exc}") from None
        finally:
            self._outstanding -= 1
        if status == "ok":
            return value
        raise value
