"""Image work on a Ray cluster, behind the same interface and limits as the local pool.

Two placements, one interface:

``actors`` (the default)
    One long-lived :class:`ImageWorker` actor per ``task_cpus`` of each live node's CPUs,
    pinned to that node, each running one request at a time (:class:`ImageWorkers`). A
    call to a live actor skips the worker lease a Ray task negotiates with the raylet on
    every submission, which costs about 2 ms per request here (``bench/ray.py``). The
    actors hold no CPU reservation (like the local pool's processes, they share their
    node's cores with the trainings), so the actor count, not Ray's scheduler, bounds
    concurrent image work. Nodes joining or leaving the cluster are followed.
``tasks``
    Each request is a Ray task asking for ``task_cpus`` CPUs: Ray accounts for every
    request, so an autoscaling cluster sees the demand and grows.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import pickle
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

import ray
from ray import exceptions as rex
from ray.actor import ActorHandle
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from workers.errors import PoolUnavailable, RemoteError, WorkerDied, WorkTimeout
from workers.pool import (
    DEFAULT_KEEP_FREED_BYTES,
    DEFAULT_PRELOAD,
    PoolStats,
    execute,
    get_within,
    prepare_worker,
    queue_full,
)
from workers.ray_backend._errors import WORKER_LOST, map_ray_errors

T = TypeVar("T")

logger = logging.getLogger(__name__)

Placement = Literal["actors", "tasks"]

#: Longest the pool waits at start for its warm-up work to be scheduled, and for an
#: image worker actor to come back after a restart.
START_TIMEOUT_S = 120.0

#: How often the pool looks at the cluster's nodes (image worker actors for nodes that
#: joined, none kept for nodes that left; the task slots).
NODE_CHECK_INTERVAL_S = 5.0

NO_NODE_LEFT = "no Ray node with CPUs is left to run image work"


def _execute(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[str, Any]:
    return execute(functools.partial(fn, *args))


class ImageWorker:
    """A Ray actor that runs image work, one call at a time, with the ops imported."""

    def __init__(self, preload: Sequence[str], keep_freed_bytes: int) -> None:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # image work never touches a GPU
        prepare_worker(preload, keep_freed_bytes)

    def run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[str, Any]:
        return _execute(fn, args)

    def ping(self) -> bool:
        return True


class ImageWorkers:
    """The image worker actors: one per ``task_cpus`` of each live node's CPUs, pinned to it.

    Each runs one call at a time, handed out by :meth:`take` and back with :meth:`give_back`.
    An actor that died (a crash, a kill at a deadline) is restarted in place by Ray and
    handed out again once it answers; one that cannot come back leaves the pool.
    :meth:`reconcile` follows the cluster: a node that joined gets its actors, the actors
    of a node that left are dropped.
    """

    def __init__(self, task_cpus: float, preload: Sequence[str], keep_freed_bytes: int) -> None:
        self.task_cpus = task_cpus
        self._preload = tuple(preload)
        self._keep_freed_bytes = keep_freed_bytes
        self._class = ray.remote(ImageWorker)
        # The pool's actors by id(), with the node each is pinned to.
        self._members: dict[int, tuple[str, ActorHandle]] = {}
        self._idle: asyncio.Queue[ActorHandle] = asyncio.Queue()
        self._coming: dict[int, asyncio.Task[None]] = {}  # starting or restarting
        self._killed: set[int] = set()  # killed at a deadline, their call not yet over

    @property
    def size(self) -> int:
        return len(self._members)

    @property
    def alive(self) -> int:
        return len(self._members) - len(self._coming) - len(self._killed)

    async def reconcile(self) -> None:
        """Matches the actors to the cluster's live nodes (at start, then now and then)."""
        nodes = await asyncio.to_thread(ray.nodes)
        wanted = {
            node["NodeID"]: int(node["Resources"].get("CPU", 0.0) // self.task_cpus)
            for node in nodes
            if node["Alive"]
        }
        placed = Counter[str]()
        for node_id, actor in list(self._members.values()):
            if node_id in wanted:
                placed[node_id] += 1
            else:
                self._drop(actor)
        for node_id, count in wanted.items():
            for _ in range(count - placed[node_id]):
                # Restarted in place after a crash or a kill; never placed elsewhere, so
                # no image work lands on a node without CPUs (the API's, in compose).
                actor = self._class.options(
                    num_cpus=0,
                    num_gpus=0,
                    max_restarts=-1,
                    max_task_retries=0,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
                ).remote(self._preload, self._keep_freed_bytes)
                self._members[id(actor)] = node_id, actor
                self._await_answer(actor)

    async def ready(self, timeout_s: float) -> None:
        """Waits until every actor answers (PoolUnavailable past ``timeout_s``)."""
        if not self._members:
            raise PoolUnavailable(f"no Ray node has {self.task_cpus:g} CPUs for an image worker")
        started = self.size
        pending = list(self._coming.values())
        done, _ = await asyncio.wait(pending, timeout=timeout_s)
        if len(done) < len(pending):
            raise PoolUnavailable(
                f"no image worker answered within {timeout_s:g} s: does the cluster have CPUs?"
            )
        if self.size < started:
            raise PoolUnavailable("an image worker failed to start (see the log)")

    async def take(self, timeout: float) -> ActorHandle | None:
        """The next free actor, or None past ``timeout``; PoolUnavailable once the pool has
        no actor left (its nodes are gone), even while waiting."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if not self._members:
                raise PoolUnavailable(NO_NODE_LEFT)
            remaining = deadline - loop.time()
            actor = await get_within(self._idle, min(remaining, 0.5))
            if actor is not None and id(actor) in self._members:
                return actor
            if actor is None and remaining <= 0.5:
                return None

    def kill(self, actor: ActorHandle) -> None:
        """Kills a busy actor (past a deadline); Ray restarts it, its call fails."""
        self._killed.add(id(actor))
        ray.kill(actor, no_restart=False)

    def give_back(self, actor: ActorHandle, died: bool) -> None:
        """Once the actor's call is over; ``died``: the call failed with the actor."""
        killed = id(actor) in self._killed
        self._killed.discard(id(actor))
        if id(actor) not in self._members:
            return
        if died or killed:
            self._await_answer(actor)
        else:
            self._idle.put_nowait(actor)

    def close(self) -> None:
        for task in self._coming.values():
            task.cancel()
        for _, actor in list(self._members.values()):
            self._drop(actor)

    def _await_answer(self, actor: ActorHandle) -> None:
        task = asyncio.ensure_future(self._answer(actor))
        self._coming[id(actor)] = task
        task.add_done_callback(lambda _: self._coming.pop(id(actor), None))

    async def _answer(self, actor: ActorHandle) -> None:
        # Calls to a restarting actor fail at once (ActorUnavailableError): it is handed
        # out again only once it answers.
        loop = asyncio.get_running_loop()
        give_up = loop.time() + START_TIMEOUT_S
        while id(actor) in self._members:
            try:
                await actor.ping.remote()
            except rex.ActorUnavailableError:
                if loop.time() > give_up:
                    break
                await asyncio.sleep(0.1)
                continue
            except rex.RayError:
                break
            self._idle.put_nowait(actor)
            return
        if id(actor) in self._members:
            logger.warning("an image worker actor did not come back; it leaves the pool")
            self._drop(actor)

    def _drop(self, actor: ActorHandle) -> None:
        self._members.pop(id(actor), None)
        with contextlib.suppress(Exception):
            ray.kill(actor, no_restart=True)


class RayPool:
    """Runs ``fn(*args)`` on the Ray cluster, on image worker actors or as Ray tasks.

    The queue bound and the deadline are the local pool's: at most ``max_queue_depth``
    requests wait beyond the slots (one per ``task_cpus`` of the cluster's CPUs; 429 past
    that), and work past its deadline is stopped, its worker killed (504). Work whose
    worker dies fails (503) and is never run twice; Ray replaces the worker. The slots
    follow the cluster: it is looked at every ``NODE_CHECK_INTERVAL_S``.
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
        keep_freed_bytes: int = DEFAULT_KEEP_FREED_BYTES,
    ) -> None:
        self.task_cpus = task_cpus
        self.max_queue_depth = max_queue_depth
        self.default_timeout_s = default_timeout_s
        self.retry_after_s = retry_after_s
        self.placement = placement
        self.keep_freed_bytes = keep_freed_bytes
        self._preload = tuple(preload)
        self._remote = ray.remote(_execute).options(
            num_cpus=task_cpus, num_gpus=0, max_retries=0, name="tensorlens-image"
        )
        self._workers: ImageWorkers | None = None
        self._task_slots = 1
        self._watch: asyncio.Task[None] | None = None
        self._outstanding = 0
        self._started = False
        self.restarts = 0

    async def start(self) -> None:
        if self.placement == "actors":
            self._workers = ImageWorkers(self.task_cpus, self._preload, self.keep_freed_bytes)
            await self._workers.reconcile()
            await self._workers.ready(START_TIMEOUT_S)
        else:
            self._count_task_slots()
            # One warm-up task per slot: the first requests find workers with the ops imported.
            warm = [
                self._remote.remote(prepare_worker, (self._preload, self.keep_freed_bytes))
                for _ in range(self._task_slots)
            ]
            try:
                async with asyncio.timeout(START_TIMEOUT_S):
                    with map_ray_errors("the start of an image worker"):
                        await asyncio.gather(*warm)
            except TimeoutError:
                raise PoolUnavailable(
                    f"no Ray worker started within {START_TIMEOUT_S:g} s: "
                    "does the cluster have CPUs?"
                ) from None
        self._watch = asyncio.ensure_future(self._follow_the_cluster())
        self._started = True

    async def stop(self) -> None:
        self._started = False
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._workers is not None:
            self._workers.close()
            self._workers = None

    @property
    def ready(self) -> bool:
        return self._started and ray.is_initialized() and self._slots > 0

    @property
    def _slots(self) -> int:
        return self._task_slots if self._workers is None else self._workers.size

    def stats(self) -> PoolStats:
        if not self.ready:
            alive = 0
        elif self._workers is None:
            alive = self._slots
        else:
            alive = self._workers.alive
        return PoolStats(
            workers=self._slots,
            workers_alive=alive,
            queue_depth=max(0, self._outstanding - self._slots),
            queue_capacity=self.max_queue_depth,
            in_flight=min(self._outstanding, self._slots),
            restarts=self.restarts,
        )

    async def run(self, fn: Callable[..., T], *args: Any, timeout_s: float | None = None) -> T:
        if not self._started:
            raise PoolUnavailable("the worker pool is not running")
        if self._slots == 0:
            raise PoolUnavailable(NO_NODE_LEFT)
        if self._outstanding >= self._slots + self.max_queue_depth:
            raise queue_full(self.max_queue_depth, self.retry_after_s)
        timeout = self.default_timeout_s if timeout_s is None else timeout_s
        self._outstanding += 1
        try:
            # The work's own errors come back as values; what is raised is Ray's.
            with map_ray_errors("the request", then="; retry the request"):
                if self._workers is None:
                    status, value = await self._on_task(fn, args, timeout)
                else:
                    status, value = await self._on_actor(self._workers, fn, args, timeout)
        except WorkerDied:
            self.restarts += 1
            raise
        finally:
            self._outstanding -= 1
        if status == "ok":
            return value
        raise value

    async def _follow_the_cluster(self) -> None:
        while True:
            await asyncio.sleep(NODE_CHECK_INTERVAL_S)
            try:
                if self._workers is None:
                    await asyncio.to_thread(self._count_task_slots)
                else:
                    await self._workers.reconcile()
            except Exception:  # a lost connection: the requests report it
                logger.warning("could not look at the Ray cluster's nodes", exc_info=True)

    def _count_task_slots(self) -> None:
        cpus = ray.cluster_resources().get("CPU", 0.0)
        self._task_slots = max(1, int(cpus // self.task_cpus))

    async def _on_task(
        self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float
    ) -> tuple[str, Any]:
        ref = self._submit(self._remote, fn, args)
        try:
            async with asyncio.timeout(timeout):
                return await ref  # type: ignore[no-any-return]
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

    async def _on_actor(
        self,
        workers: ImageWorkers,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        timeout: float,
    ) -> tuple[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        actor = await workers.take(timeout)  # queued: waits for a free worker
        if actor is None:
            raise WorkTimeout(f"the work did not finish within {timeout:g} s", timeout_s=timeout)
        try:
            ref = self._submit(actor.run, fn, args)
        except (RemoteError, PoolUnavailable):
            workers.give_back(actor, died=False)
            raise
        # The actor takes new work only once this call is over, whoever stops waiting for it.
        call = asyncio.wrap_future(ref.future())
        call.add_done_callback(functools.partial(self._returned, workers, actor))
        try:
            async with asyncio.timeout_at(deadline):
                return await asyncio.shield(call)
        except TimeoutError:
            workers.kill(actor)  # Ray restarts it; the call fails, freeing it
            raise WorkTimeout(
                f"the work did not finish within {timeout:g} s", timeout_s=timeout
            ) from None
        except asyncio.CancelledError:
            ray.cancel(ref)  # the client went away: a call that has not started never runs
            raise

    def _returned(
        self, workers: ImageWorkers, actor: ActorHandle, call: asyncio.Future[Any]
    ) -> None:
        failure = None if call.cancelled() else call.exception()  # retrieved: logs nothing
        workers.give_back(actor, died=isinstance(failure, WORKER_LOST))

    @staticmethod
    def _submit(remote: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> ray.ObjectRef:
        try:
            return remote.remote(fn, args)
        except (TypeError, pickle.PicklingError) as exc:  # unserialisable work: our bug
            raise RemoteError(f"the work could not be submitted to Ray: {exc}") from None
        except Exception as exc:  # a lost connection
            raise PoolUnavailable(f"the work could not be submitted to Ray: {exc}") from None
