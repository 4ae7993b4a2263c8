"""How the Ray backend launches a training: a Ray task that streams its events.

:class:`~workers.training.lanes.Lanes` does the rest (queue, deadline, cancel, outcome),
as for the local lanes. Each job is one Ray task in a fresh worker process
(``max_calls=1``, as the local lanes spawn one process per job). The task streams its
progress back (a Ray streaming generator) and ends with the
:class:`~workers.training.lanes.Outcome`, weights included, so the API node's model
store stays the source of truth and the cluster needs no shared filesystem.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import ray
from ray import exceptions as rex

from workers.errors import PoolUnavailable, WorkCancelled, WorkerDied
from workers.ray_backend._errors import map_ray_errors
from workers.ray_backend.runtime import ray_device
from workers.training.lanes import Outcome, run_training


def _train_task(config: dict[str, Any], cpu_threads: int) -> Iterator[tuple[str, Any]]:
    device = ray_device()
    if device == "cpu" and config.get("device") == "cuda":
        yield "done", Outcome("failed", reason="the Ray task was given no usable GPU")
        return
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
        except rex.RayError as exc:  # raised again on the API side, as itself
            return "raise", exc

    def cancel(self, force: bool) -> None:
        ray.cancel(self._stream, force=force)


class TrainingTasks:
    """Launches each training as a Ray task, for :class:`~workers.training.lanes.Lanes`.

    Every job is submitted at once: the cluster queues the tasks it has no room for
    (they count as waiting until they start).

    Parameters
    ----------
    cpu_threads : int
        torch threads of a training on the CPU.
    task_cpus : float
        CPUs each training task asks Ray for.
    task_gpus : float
        GPUs each training asks for (fractions share a GPU; the Ray backend's default is
        :func:`~workers.ray_backend.runtime.gpu_shares`). A job whose config says
        ``device: cpu`` asks for none.
    """

    slots = None

    def __init__(
        self, *, cpu_threads: int = 1, task_cpus: float = 1.0, task_gpus: float = 0.0
    ) -> None:
        self.cpu_threads = cpu_threads
        self.task_cpus = task_cpus
        self.task_gpus = task_gpus
        self._remote = ray.remote(max_calls=1)(_train_task)

    @property
    def alive(self) -> bool:
        return ray.is_initialized()

    @property
    def has_cuda(self) -> bool:
        return self.task_gpus > 0

    def launch(self, job_id: str, config: dict[str, Any], slot: str | None) -> _TaskRun:
        options = {
            "num_cpus": self.task_cpus,
            "num_gpus": 0.0 if config.get("device") == "cpu" else self.task_gpus,
            "num_returns": "streaming",
            "max_retries": 0,
            "name": "tensorlens-train",
        }
        with map_ray_errors("the job"):
            if _on_ray_client():
                return _RelayedRun(options, config, self.cpu_threads)
            return _DirectRun(self._remote.options(**options).remote(config, self.cpu_threads))


def _on_ray_client() -> bool:
    return ray.util.client.ray.is_connected()


class _TaskRun:
    """A training task's run: its stream, with Ray's errors in this house's terms."""

    #: Whether the run was asked to stop (:meth:`stop`).
    stopping = False

    async def events(self) -> AsyncIterator[tuple[str, Any]]:
        try:
            with map_ray_errors("the job"):
                async for item in self._stream():
                    yield item
        except WorkCancelled:
            raise
        except (WorkerDied, PoolUnavailable) as exc:
            # A cancel is an interrupt in the task. Landing in the training's loop it
            # comes back as TaskCancelledError; landing in Ray's own code around a
            # yield it may come back as the task's failure or its worker's exit, or
            # end the stream early. Any of them after a stop is the stop's doing.
            if self.stopping:
                raise WorkCancelled(f"the job was cancelled ({exc.detail})") from None
            raise
        if self.stopping:
            raise WorkCancelled("the job was cancelled (its stream ended early)")

    def _stream(self) -> AsyncIterator[tuple[str, Any]]:
        raise NotImplementedError

    def stop(self, *, force: bool) -> None:
        self.stopping = True
        self._stop(force=force)

    def _stop(self, *, force: bool) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class _DirectRun(_TaskRun):
    """The stream iterated here (a driver on a cluster node)."""

    def __init__(self, generator: ray.ObjectRefGenerator) -> None:
        self._generator = generator

    async def _stream(self) -> AsyncIterator[tuple[str, Any]]:
        async for ref in self._generator:
            yield await ref

    def _stop(self, *, force: bool) -> None:
        with contextlib.suppress(Exception):  # best effort: the task may be gone already
            ray.cancel(self._generator, force=force)


class _RelayedRun(_TaskRun):
    """The stream iterated by a :class:`TrainingRelay` actor (an API on Ray Client)."""

    def __init__(self, options: dict[str, Any], config: dict[str, Any], cpu_threads: int) -> None:
        relay = ray.remote(num_cpus=0)(TrainingRelay)
        self._relay = relay.remote(options, config, cpu_threads)

    async def _stream(self) -> AsyncIterator[tuple[str, Any]]:
        while True:
            kind, payload = await self._relay.next.remote()
            if kind == "end":
                return
            if kind == "raise":
                raise payload
            yield kind, payload

    def _stop(self, *, force: bool) -> None:
        with contextlib.suppress(Exception):  # best effort: the relay may be gone already
            self._relay.cancel.remote(force)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            ray.kill(self._relay)
