"""Device lanes: where training jobs run, one job per lane at a time.

A lane is a device name (``cpu``, ``cuda:0``, ...). Each job runs in a fresh spawned
process on its lane, so a crash, a leak or CUDA memory never outlives the job, and
on the CPU the process runs at a lower priority so interactive requests (image ops,
predictions) keep answering while models train. The process streams its progress
back over a pipe; the parent writes it to the job store and wakes the listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

from workers.errors import InvalidInput, InvalidParameter, QueueFull, TensorlensError

#: How long a cancelled job may take to reach its next report before it is killed.
CANCEL_GRACE_S = 30.0


def plan_lanes(devices: str, lanes_per_device: int, cuda_count: int | None = None) -> list[str]:
    """The lanes for a ``devices`` setting: ``auto``, ``cpu``, ``cuda`` or ``cuda:0,cuda:1``.

    ``auto`` and ``cuda`` mean every visible CUDA device; ``auto`` falls back to the CPU
    when there is none.
    """
    if cuda_count is None:
        import torch

        cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    names = [d.strip() for d in devices.split(",") if d.strip()]
    if names in (["auto"], ["cuda"]):
        if cuda_count == 0:
            if names == ["cuda"]:
                raise InvalidParameter("devices", "CUDA was asked for but none is visible")
            names = ["cpu"]
        else:
            names = [f"cuda:{i}" for i in range(cuda_count)]
    if "cpu" in names and len(set(names)) > 1:
        raise InvalidParameter("devices", "lanes are all `cpu` or all CUDA devices, not a mix")
    for name in names:
        if name != "cpu" and not (
            name.startswith("cuda:") and name[5:].isdigit() and int(name[5:]) < cuda_count
        ):
            raise InvalidParameter("devices", f"no such device {name!r}")
    return [name for name in names for _ in range(lanes_per_device)]


@dataclass(frozen=True)
class Outcome:
    """How a job ended: ``succeeded`` with weights and metadata, ``failed`` or ``cancelled``."""

    status: str
    reason: str | None = None
    weights: bytes | None = None
    metadata: dict[str, Any] | None = None


def _train_main(conn: Connection, config: dict[str, Any], device: str, cpu_threads: int) -> None:
    _die_with_parent()
    if device == "cpu":
        # Yield the CPU to interactive work: a training never starves image ops.
        with contextlib.suppress(OSError):
            os.nice(10)
    cancelled = False

    def should_stop() -> bool:
        nonlocal cancelled
        while not cancelled and conn.poll():
            cancelled = conn.recv() == "cancel"
        return cancelled

    outcome = run_training(
        config,
        device,
        cpu_threads,
        report=lambda progress: conn.send(("progress", progress)),
        should_stop=should_stop,
    )
    conn.send(("done", outcome))


def run_training(
    config: dict[str, Any],
    device: str,
    cpu_threads: int,
    *,
    report: Callable[[dict[str, Any]], None],
    should_stop: Callable[[], bool],
) -> Outcome:
    """Train ``config`` on ``device`` and say how it ended; the same on every backend."""
    import safetensors.torch
    import torch

    from workers.training.configs import validate_training
    from workers.training.trainer import TrainingCancelled, build_metadata, train

    torch.set_num_threads(cpu_threads)
    try:
        parsed = validate_training(config)
        result = train(
            parsed, report=lambda p: report(asdict(p)), should_stop=should_stop, device=device
        )
        weights = safetensors.torch.save(result.tensors)
        return Outcome("succeeded", weights=weights, metadata=build_metadata(parsed, result))
    except TrainingCancelled:
        return Outcome("cancelled", reason="cancelled by request")
    except TensorlensError as exc:  # diverged, invalid config
        return Outcome("failed", reason=exc.detail)
    except Exception as exc:  # a bug or a device error: the job fails with the reason
        return Outcome("failed", reason=f"{type(exc).__name__}: {exc}")


ProgressCallback = Callable[[str, dict[str, Any]], None]

#: What a client is told to wait before resubmitting when the training queue is full.
TRAINING_RETRY_AFTER_S = 10


def training_queue_full(max_queued: int) -> QueueFull:
    """What :meth:`TrainingLanes.submit` raises past ``max_queued`` waiting jobs."""
    return QueueFull(
        f"{max_queued} trainings are already waiting; retry later",
        retry_after_s=TRAINING_RETRY_AFTER_S,
    )


def _die_with_parent() -> None:
    # Linux: the kernel kills this process when the API process dies, so a training
    # never runs on unobserved after a crash of its parent.
    with contextlib.suppress(Exception):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class TrainingLanes(Protocol):
    """What the training manager needs from a backend (device lanes here, Ray tasks)."""

    on_start: Callable[[str, str], None]
    on_progress: ProgressCallback

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    @property
    def alive(self) -> bool: ...

    @property
    def has_cuda(self) -> bool: ...

    def queued(self) -> int: ...

    def running(self) -> list[str]: ...

    def has_room(self) -> bool: ...

    def queue_full(self) -> QueueFull: ...

    def submit(self, job_id: str, config: dict[str, Any]) -> asyncio.Future[Outcome]: ...

    def cancel(self, job_id: str) -> None: ...


class DeviceLanes:
    """Runs training jobs on device lanes behind a bounded queue.

    Parameters
    ----------
    lanes : list of str
        Device names, one per concurrent job (see :func:`plan_lanes`).
    max_queued : int
        Jobs waiting for a lane before :meth:`submit` raises :class:`QueueFull`.
    cpu_threads : int
        torch threads of a training process on the CPU.
    max_job_s : float
        Wall-clock limit of one job; past it the process is killed and the job fails.
    """

    def __init__(
        self, lanes: list[str], *, max_queued: int, cpu_threads: int = 1, max_job_s: float = 3600
    ) -> None:
        if not lanes:
            raise InvalidInput("no training lanes configured")
        self.lanes = lanes
        self.max_queued = max_queued
        self.cpu_threads = cpu_threads
        self.max_job_s = max_job_s
        self._ctx = multiprocessing.get_context("spawn")
        self._queue: asyncio.Queue[tuple[str, dict[str, Any], asyncio.Future[Outcome]]] | None = (
            None
        )
        self._waiting: dict[str, asyncio.Future[Outcome]] = {}
        self._runners: list[asyncio.Task[None]] = []
        self._running: dict[str, tuple[BaseProcess, Connection]] = {}
        self._io = ThreadPoolExecutor(max_workers=len(lanes) + 1, thread_name_prefix="lane-io")
        self.on_start: Callable[[str, str], None] = lambda job_id, device: None
        self.on_progress: ProgressCallback = lambda job_id, progress: None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._runners = [
            asyncio.create_task(self._run_lane(device), name=f"lane-{i}-{device}")
            for i, device in enumerate(self.lanes)
        ]

    async def stop(self) -> None:
        # Kill first: a runner cancelled mid-job would forget its process.
        for process, _ in list(self._running.values()):
            process.kill()
        for task in self._runners:
            task.cancel()
        for task in self._runners:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._running.clear()
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()
        self._io.shutdown(wait=False, cancel_futures=True)

    @property
    def alive(self) -> bool:
        return bool(self._runners) and not any(task.done() for task in self._runners)

    @property
    def has_cuda(self) -> bool:
        return any(lane.startswith("cuda") for lane in self.lanes)

    def queued(self) -> int:
        return len(self._waiting)

    def running(self) -> list[str]:
        return list(self._running)

    def submit(self, job_id: str, config: dict[str, Any]) -> asyncio.Future[Outcome]:
        """Queue a job; the future resolves with its :class:`Outcome`.

        Raises
        ------
        QueueFull
            When ``max_queued`` jobs are already waiting.
        """
        assert self._queue is not None, "lanes not started"
        if not self.has_room():
            raise self.queue_full()
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting[job_id] = future
        self._queue.put_nowait((job_id, config, future))
        return future

    def has_room(self) -> bool:
        return len(self._waiting) < self.max_queued

    def queue_full(self) -> QueueFull:
        return training_queue_full(self.max_queued)

    def cancel(self, job_id: str) -> None:
        """Drop a queued job, or ask a running one to stop at its next report.

        A running job that has not stopped after :data:`CANCEL_GRACE_S` is killed.
        """
        waiting = self._waiting.pop(job_id, None)
        if waiting is not None:
            waiting.cancel()
            return
        entry = self._running.get(job_id)
        if entry is None:
            return
        process, conn = entry
        with contextlib.suppress(OSError):
            conn.send("cancel")
        loop = asyncio.get_running_loop()
        loop.call_later(CANCEL_GRACE_S, lambda: process.is_alive() and process.kill())

    async def _run_lane(self, device: str) -> None:
        assert self._queue is not None
        while True:
            job_id, config, future = await self._queue.get()
            self._waiting.pop(job_id, None)
            if future.done():  # cancelled while queued
                continue
            try:
                outcome = await self._run_job(job_id, config, device)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the lane must outlive any one job
                outcome = Outcome("failed", reason=f"the lane failed: {type(exc).__name__}: {exc}")
            if not future.done():
                future.set_result(outcome)

    async def _run_job(self, job_id: str, config: dict[str, Any], device: str) -> Outcome:
        loop = asyncio.get_running_loop()
        parent, child = self._ctx.Pipe(duplex=True)
        # `auto` and `cuda` go where the lane is; an explicit `cpu` stays on the CPU.
        placed = "cpu" if config.get("device") == "cpu" else device
        process = self._ctx.Process(
            target=_train_main,
            args=(child, config, placed, self.cpu_threads),
            daemon=True,
            name=f"tensorlens-train-{job_id[:8]}",
        )
        try:
            process.start()
            child.close()
            self._running[job_id] = (process, parent)
            self.on_start(job_id, placed)
            deadline = loop.time() + self.max_job_s
            while True:
                remaining = deadline - loop.time()
                try:
                    kind, payload = await asyncio.wait_for(
                        loop.run_in_executor(self._io, parent.recv), max(remaining, 0)
                    )
                except TimeoutError:
                    process.kill()
                    return Outcome("failed", reason=f"over the time limit of {self.max_job_s:g} s")
                except (EOFError, OSError):
                    await loop.run_in_executor(self._io, process.join, 5)
                    return Outcome(
                        "failed",
                        reason=f"the training process died (exit code {process.exitcode})",
                    )
                if kind == "progress":
                    self.on_progress(job_id, payload)
                else:
                    return payload
        finally:
            self._running.pop(job_id, None)
            if process.is_alive():
                await loop.run_in_executor(self._io, process.join, 10)
                process.kill()
            parent.close()
