"""Image work on a Ray cluster, behind the same interface and limits as the local pool.

Two placements, one interface:

``actors`` (the default)
    One long-lived :class:`ImageWorker` actor per ``task_cpus`` of each node's CPUs,
    pinned to that node, each running one request at a time. A call to a live actor skips
    the worker lease a Ray task negotiates with the raylet on every submission, which
    costs about 2 ms per request here (``bench/ray.py``). The actors hold no CPU
    reservation (like the local pool's processes, they share their node's cores with the
    trainings), so the actor count, not Ray's scheduler, bounds concurrent image work.
``tasks``
    Each request is a Ray task asking for ``task_cpus`` CPUs: Ray accounts for every
    request, so an autoscaling cluster sees the demand and grows.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

import ray
from ray import exceptions as rex
from ray.actor import ActorHandle
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from workers.errors import (
    PoolUnavailable,
    QueueFull,
    RemoteError,
    WorkerDied,
    WorkTimeout,
)
from workers.pool import DEFAULT_PRELOAD, PoolStats, execute

T = TypeVar("T")

logger = logging.getLogger(__name__)

Placement = Literal["actors", "tasks"]

#: Ray errors meaning the process (or node) running a task or actor call is gone.
WORKER_LOST = (
    rex.WorkerCrashedError,
    rex.NodeDiedError,
    rex.ObjectLostError,
    rex.OwnerDiedError,
    rex.LocalRayletDiedError,
    rex.OutOfMemoryError,  # Ray's memory monitor killed the worker
    rex.RayActorError,  # an image worker actor died (Ray restarts it)
)

#: Longest the pool waits at start for its warm-up work to be scheduled.
START_TIMEOUT_S = 120.0


def _execute(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[str, Any]:
    return execute(functools.partial(fn, *args))


def _preload(modules: Sequence[str]) -> None:
    for name in modules:
        importlib.import_module(name)


class ImageWorker:
    """A Ray actor that runs image work, one call at a time, with the ops imported."""

    def __init__(self, preload: Sequence[str]) -> None:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # image work never touches a GPU
        _preload(preload)

    def run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[str, Any]:
        return _execute(fn, args)

    def ping(self) -> bool:
        return True


class RayPool:
    """Runs ``fn(*args)`` on the Ray cluster, on image worker actors or as Ray tasks.

    The queue bound and the deadline are the local pool's: at most ``max_queue_depth``
    requests wait beyond the slots (one per ``task_cpus`` of the cluster's CPUs; 429 past
    that), and work past its deadline is stopped, its worker killed (504). Work whose
    worker dies fails (503) and is never run twice; Ray replaces the worker.
    """

    def __init__(
        self,
        *,
        task_cpus: float,
        max_queue_depth: int,
        default_timeout_s: float,
        retry_after_s: int = 1,
        preload: Sequence[str] = DEFAULT_PRELOAD,
        placement: Placement = "actors",
    ) -> None:
        self.task_cpus = task_cpus
        self.max_queue_depth = max_queue_depth
        self.default_timeout_s = default_timeout_s
        self.retry_after_s = retry_after_s
        self.placement = placement
        self._preload = tuple(preload)
        self._remote = ray.remote(_execute).options(
            num_cpus=task_cpus, num_gpus=0, max_retries=0, name="tensorlens-image"
        )
        self._actors: list[ActorHandle] = []
        self._idle: asyncio.Queue[ActorHandle] | None = None
        self._reviving: set[asyncio.Task[None]] = set()
        self._killed: set[int] = set()  # id() of actors killed at a deadline, not yet reviving
        self._slots = 1
        self._outstanding = 0
        self._started = False
        self.restarts = 0

    async def start(self) -> None:
        if self.placement == "actors":
            warm = self._start_actors()
        else:
            self._slots = max(1, int(ray.cluster_resources().get("CPU", 0.0) // self.task_cpus))
            # One warm-up task per slot: the first requests find workers with the ops imported.
            warm = [self._remote.remote(_preload, (self._preload,)) for _ in range(self._slots)]
        try:
            started = await asyncio.wait_for(asyncio.gather(*warm), START_TIMEOUT_S)
        except TimeoutError:
            raise PoolUnavailable(
                f"no Ray worker started within {START_TIMEOUT_S:g} s: does the cluster have CPUs?"
            ) from None
        except rex.RayError as exc:
            raise PoolUnavailable(f"a Ray worker failed to start: {exc}") from None
        for result in started:
            if result is not True and result[0] != "ok":
                raise PoolUnavailable(f"a Ray worker failed to start: {result[1]}")
        self._started = True

    def _start_actors(self) -> list[ray.ObjectRef]:
        worker = ray.remote(ImageWorker)
        for node in ray.nodes():
            if not node["Alive"]:
                continue
            count = int(node["Resources"].get("CPU", 0.0) // self.task_cpus)
            # Restarted in place after a crash or a deadline; elsewhere if the node is gone.
            options = worker.options(
                num_cpus=0,
                num_gpus=0,
                max_restarts=-1,
                max_task_retries=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=True),
            )
            self._actors += [options.remote(self._preload) for _ in range(count)]
        if not self._actors:
            raise PoolUnavailable(f"no Ray node has {self.task_cpus:g} CPUs for an image worker")
        self._slots = len(self._actors)
        self._idle = asyncio.Queue()
        for actor in self._actors:
            self._idle.put_nowait(actor)
        return [actor.ping.remote() for actor in self._actors]

    async def stop(self) -> None:
        self._started = False
        for actor in self._actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        self._actors = []
        self._idle = None
        for task in self._reviving:
            task.cancel()

    @property
    def ready(self) -> bool:
        return self._started and ray.is_initialized()

    def stats(self) -> PoolStats:
        return PoolStats(
            workers=self._slots,
            workers_alive=self._slots - len(self._reviving) - len(self._killed)
            if self.ready
            else 0,
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
        self._outstanding += 1
        try:
            if self._idle is None:
                status, value = await self._on_task(fn, args, timeout)
            else:
                status, value = await self._on_actor(self._idle, fn, args, timeout)
        finally:
            self._outstanding -= 1
        if status == "ok":
            return value
        raise value

    async def _on_task(
        self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float
    ) -> tuple[str, Any]:
        ref = self._submit(self._remote, fn, args)
        try:
            return await asyncio.wait_for(ref, timeout)
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
        except rex.RayError as exc:
            raise self._failure(exc) from None

    async def _on_actor(
        self,
        idle: asyncio.Queue[ActorHandle],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        timeout: float,
    ) -> tuple[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        actor = await _take(idle, timeout)  # queued: waits for a free worker
        if actor is None:
            raise WorkTimeout(f"the work did not finish within {timeout:g} s", timeout_s=timeout)
        try:
            ref = self._submit(actor.run, fn, args)
        except RemoteError:
            idle.put_nowait(actor)
            raise
        # The actor takes new work only once this call is over, whoever stops waiting for it.
        call = asyncio.wrap_future(ref.future())
        call.add_done_callback(functools.partial(self._returned, idle, actor))
        try:
            return await asyncio.wait_for(asyncio.shield(call), deadline - loop.time())
        except TimeoutError:
            self._killed.add(id(actor))
            ray.kill(actor, no_restart=False)  # Ray restarts it; the call fails, freeing it
            raise WorkTimeout(
                f"the work did not finish within {timeout:g} s", timeout_s=timeout
            ) from None
        except asyncio.CancelledError:
            ray.cancel(ref)  # the client went away: a call that has not started never runs
            raise
        except rex.RayError as exc:
            raise self._failure(exc) from None

    @staticmethod
    def _submit(remote: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> ray.ObjectRef:
        try:
            return remote.remote(fn, args)
        except Exception as exc:  # unserialisable work, a lost connection
            raise RemoteError(f"the work could not be submitted to Ray: {exc}") from None

    def _returned(
        self, idle: asyncio.Queue[ActorHandle], actor: ActorHandle, call: asyncio.Future[Any]
    ) -> None:
        """Frees the actor once its call is over; one that died rejoins once Ray restarted it."""
        failure = None if call.cancelled() else call.exception()
        killed = id(actor) in self._killed
        self._killed.discard(id(actor))
        if killed or isinstance(failure, rex.RayActorError):
            task = asyncio.ensure_future(self._revive(idle, actor))
            self._reviving.add(task)
            task.add_done_callback(self._reviving.discard)
        else:
            idle.put_nowait(actor)

    async def _revive(self, idle: asyncio.Queue[ActorHandle], actor: ActorHandle) -> None:
        # Calls to a restarting actor fail at once (ActorUnavailableError): no request is
        # handed one until it answers again.
        loop = asyncio.get_running_loop()
        give_up = loop.time() + START_TIMEOUT_S
        while self._idle is idle:
            try:
                await actor.ping.remote()
            except rex.ActorUnavailableError:
                if loop.time() > give_up:
                    break
                await asyncio.sleep(0.1)
                continue
            except rex.RayError:
                break
            idle.put_nowait(actor)
            return
        logger.warning("an image worker actor did not come back; its slot stays empty")

    def _failure(self, exc: rex.RayError) -> Exception:
        if isinstance(exc, WORKER_LOST):
            self.restarts += 1
            return WorkerDied(
                f"the Ray worker running the request died ({type(exc).__name__}); retry the request"
            )
        if isinstance(exc, rex.TaskCancelledError):
            return PoolUnavailable("the work was cancelled: the pool is shutting down")
        return RemoteError(f"Ray failed the task: {type(exc).__name__}: {exc}")


async def _take(idle: asyncio.Queue[ActorHandle], timeout: float) -> ActorHandle | None:
    """The next free actor, or None past ``timeout``; never loses one to a cancellation
    (``asyncio.wait_for`` around ``Queue.get`` can, before Python 3.12)."""
    getter = asyncio.ensure_future(idle.get())
    try:
        await asyncio.wait((getter,), timeout=timeout)
    except asyncio.CancelledError:
        getter.cancel()
        if getter.done() and not getter.cancelled():
            idle.put_nowait(getter.result())
        raise
    if getter.done():
        return getter.result()
    getter.cancel()
    return None
