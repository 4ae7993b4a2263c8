"""Training jobs as Ray tasks, behind the same interface as the local device lanes.

Each job is one Ray task in a fresh worker process (``max_calls=1``, as the local
lanes spawn one process per job). The task streams its progress back (a Ray
streaming generator) and ends with the :class:`~workers.training.lanes.Outcome`,
weights included, so the API node's model store stays the source of truth and the
cluster needs no shared filesystem.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import ray
from ray import exceptions as rex

from workers.errors import InvalidInput, QueueFull
from workers.ray_backend.pool import WORKER_LOST
from workers.ray_backend.runtime import TRAINING_GPU_SHARE, ray_device
from workers.training.lanes import (
    CANCEL_GRACE_S,
    Outcome,
    ProgressCallback,
    run_training,
    training_queue_full,
)


def _train_task(config: dict[str, Any], cpu_threads: int) -> Iterator[tuple[str, Any]]:
    device = ray_device()
    if device == "cpu":
        if config.get("device") == "cuda":
            yield "done", Outcome("failed", reason="the Ray task was given no usable GPU")
            return
        # As on the local lanes, a CPU training yields the core to interactive work.
        with contextlib.suppress(OSError):
            os.nice(10)
    yield "started", device
    events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
    stop = threading.Event()

    def work() -> None:
        try:
            outcome = run_training(
                config,
                device,
                cpu_threads,
                report=lambda progress: events.put(("progress", progress)),
                should_stop=stop.is_set,
            )
        except BaseException as exc:  # e.g. torch failing to import: the job ends now
            outcome = Outcome("failed", reason=f"{type(exc).__name__}: {exc}")
        events.put(("done", outcome))

    # The training runs beside the generator so that a cancel (an interrupt here) can
    # stop it at its next report.
    threading.Thread(target=work, name="tensorlens-train", daemon=True).start()
    try:
        while True:
            kind, payload = events.get()
            yield kind, payload
            if kind == "done":
                return
    finally:
        stop.set()


class TrainingRelay:
    """Consumes a training task's stream inside the cluster, for an API on Ray Client.

    Ray Client drivers cannot iterate streaming generators, so there this actor does and
    hands the items on one call at a time; errors travel as values and are raised again
    on the API side, where they mean what they mean without the relay.
    """

    def __init__(self, options: dict[str, Any], config: dict[str, Any], cpu_threads: int) -> None:
        task = ray.remote(max_calls=1)(_train_task)
        self._stream = task.options(**options).remote(config, cpu_threads)

    async def next(self) -> tuple[str, Any]:
        try:
            return await (await self._stream.__anext__())
        except StopAsyncIteration:
            return "end", None
        except rex.RayError as exc:
            return "raise", exc

    def cancel(self, force: bool) -> None:
        ray.cancel(self._stream, force=force)


class RayLanes:
    """Runs training jobs as Ray tasks behind a bounded queue.

    Parameters
    ----------
    max_queued : int
        Jobs submitted but not yet started before :meth:`submit` raises :class:`QueueFull`.
    cpu_threads : int
        torch threads of a training on the CPU.
    max_job_s : float
        Wall-clock limit of one job, queueing in the cluster included.
    task_cpus : float
        CPUs each training task asks Ray for.
    task_gpus : float or None
        GPUs each training asks for (fractions share a GPU); ``None``:
        :data:`TRAINING_GPU_SHARE` when the cluster has GPUs, else 0. A job whose config
        says ``device: cpu`` asks for none.
    """

    def __init__(
        self,
        *,
        max_queued: int,
        cpu_threads: int = 1,
        max_job_s: float = 3600,
        task_cpus: float = 1.0,
        task_gpus: float | None = None,
    ) -> None:
        self.max_queued = max_queued
        self.cpu_threads = cpu_threads
        self.max_job_s = max_job_s
        self.task_cpus = task_cpus
        self.task_gpus = task_gpus
        self._remote = ray.remote(max_calls=1)(_train_task)
        self._waiting: dict[str, asyncio.Task[Outcome]] = {}
        self._running: dict[str, _DirectStream | _RelayedStream] = {}
        self._tasks: set[asyncio.Task[Outcome]] = set()
        self._started = False
        self.on_start: Callable[[str, str], None] = lambda job_id, device: None
        self.on_progress: ProgressCallback = lambda job_id, progress: None

    async def start(self) -> None:
        if self.task_gpus is None:
            has_gpus = ray.cluster_resources().get("GPU", 0) > 0
            self.task_gpus = TRAINING_GPU_SHARE if has_gpus else 0.0
        self._started = True

    async def stop(self) -> None:
        self._started = False
        for stream in list(self._running.values()):
            stream.cancel(force=True)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        self._running.clear()
        self._waiting.clear()

    @property
    def alive(self) -> bool:
        return self._started and ray.is_initialized()

    @property
    def has_cuda(self) -> bool:
        return bool(self.task_gpus)

    def queued(self) -> int:
        return len(self._waiting)

    def running(self) -> list[str]:
        return list(self._running)

    def has_room(self) -> bool:
        return len(self._waiting) < self.max_queued

    def queue_full(self) -> QueueFull:
        return training_queue_full(self.max_queued)

    def submit(self, job_id: str, config: dict[str, Any]) -> asyncio.Future[Outcome]:
        """Start a job's task; the future resolves with its :class:`Outcome`.

        Raises
        ------
        QueueFull
            When ``max_queued`` jobs are already waiting for the cluster.
        """
        if not self._started:
            raise InvalidInput("the training lanes are not running")
        if not self.has_room():
            raise self.queue_full()
        task = asyncio.get_running_loop().create_task(self._run_job(job_id, config))
        self._waiting[job_id] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def cancel(self, job_id: str) -> None:
        """Drop a waiting job, or interrupt a running one (killed after a grace period)."""
        stream = self._running.get(job_id)
        if stream is None:
            waiting = self._waiting.pop(job_id, None)
            if waiting is not None:
                waiting.cancel()
            return
        stream.cancel()
        loop = asyncio.get_running_loop()
        loop.call_later(
            CANCEL_GRACE_S,
            lambda: self._running.get(job_id) is stream and stream.cancel(force=True),
        )

    async def _run_job(self, job_id: str, config: dict[str, Any]) -> Outcome:
        gpus = 0.0 if config.get("device") == "cpu" else float(self.task_gpus or 0)
        options = {
            "num_cpus": self.task_cpus,
            "num_gpus": gpus,
            "num_returns": "streaming",
            "max_retries": 0,
            "name": "tensorlens-train",
        }
        stream: _DirectStream | _RelayedStream | None = None
        try:
            # Submitting can fail too (a lost connection): inside, so the job still ends.
            stream = (
                _RelayedStream(options, config, self.cpu_threads)
                if _on_ray_client()
                else _DirectStream(self._remote.options(**options).remote(config, self.cpu_threads))
            )
            async with asyncio.timeout(self.max_job_s):
                async for kind, payload in stream:
                    if kind == "started":
                        self._waiting.pop(job_id, None)
                        self._running[job_id] = stream
                        self.on_start(job_id, payload)
                    elif kind == "progress":
                        self.on_progress(job_id, payload)
                    else:
                        return payload
            return Outcome("failed", reason="the training task ended without an outcome")
        except TimeoutError:
            if stream is not None:
                stream.cancel(force=True)
            return Outcome("failed", reason=f"over the time limit of {self.max_job_s:g} s")
        except asyncio.CancelledError:
            # Cancelled while waiting for the cluster, or at shutdown.
            if stream is not None:
                stream.cancel(force=True)
            raise
        except rex.TaskCancelledError:
            return Outcome("cancelled", reason="cancelled by request")
        except WORKER_LOST as exc:
            return Outcome(
                "failed",
                reason=f"the Ray worker or node running the job died ({type(exc).__name__})",
            )
        except rex.RayError as exc:
            return Outcome("failed", reason=f"Ray failed the job: {type(exc).__name__}: {exc}")
        except Exception as exc:  # the API must outlive any one job
            return Outcome("failed", reason=f"the lane failed: {type(exc).__name__}: {exc}")
        finally:
            self._waiting.pop(job_id, None)
            self._running.pop(job_id, None)
            if stream is not None:
                stream.close()


def _on_ray_client() -> bool:
    return ray.util.client.ray.is_connected()


class _DirectStream:
    """A training task's stream, iterated here (a driver on a cluster node)."""

    def __init__(self, generator: ray.ObjectRefGenerator) -> None:
        self._generator = generator

    async def __aiter__(self) -> AsyncIterator[tuple[str, Any]]:
        async for ref in self._generator:
            yield await ref

    def cancel(self, force: bool = False) -> None:
        with contextlib.suppress(Exception):  # best effort: the task may be gone already
            ray.cancel(self._generator, force=force)

    def close(self) -> None:
        pass


class _RelayedStream:
    """A training task's stream, iterated by a :class:`TrainingRelay` actor (Ray Client)."""

    def __init__(self, options: dict[str, Any], config: dict[str, Any], cpu_threads: int) -> None:
        relay = ray.remote(num_cpus=0)(TrainingRelay)
        self._relay = relay.remote(options, config, cpu_threads)

    async def __aiter__(self) -> AsyncIterator[tuple[str, Any]]:
        while True:
            kind, payload = await self._relay.next.remote()
            if kind == "end":
                return
            if kind == "raise":
                raise payload
            yield kind, payload

    def cancel(self, force: bool = False) -> None:
        with contextlib.suppress(Exception):  # best effort: the relay may be gone already
            self._relay.cancel.remote(force)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            ray.kill(self._relay)
