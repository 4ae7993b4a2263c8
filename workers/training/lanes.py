"""Training lanes: where training jobs wait, run, and end, on every backend.

:class:`Lanes` owns what is the same wherever a job runs: the bounded queue, the
deadline, the cancel and its grace period, and how each way of ending becomes an
:class:`Outcome`. A backend supplies only a :class:`Launcher`: how a job is started
and how its event stream is read (a process on this machine in :mod:`workers.local`,
a Ray streaming task in :mod:`workers.ray_backend.lanes`). Every job's stream is the
same: ``("started", device)``, ``("progress", dict)`` at each report, then
``("done", Outcome)``; its code is :func:`run_training`, on every backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from workers.backend import ProgressCallback
from workers.errors import (
    InvalidParameter,
    PoolUnavailable,
    QueueFull,
    TensorlensError,
    WorkCancelled,
)

#: How long a cancelled job may take to reach its next report before it is killed.
CANCEL_GRACE_S = 30.0

#: What a client is told to wait before resubmitting when the training queue is full.
TRAINING_RETRY_AFTER_S = 10

#: How much a training on the CPU lowers its priority: interactive requests (image ops,
#: predictions) keep answering while models train.
CPU_TRAINING_NICE = 10


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

    if device == "cpu":
        with contextlib.suppress(OSError):
            os.nice(CPU_TRAINING_NICE)
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


class JobRun(Protocol):
    """One launched job, as its backend runs it."""

    def events(self) -> AsyncIterator[tuple[str, Any]]:
        """The job's stream (see the module); raises a :mod:`workers.errors` class when the
        job's process or task fails (:class:`~workers.errors.WorkCancelled`: it stopped on
        a cancel)."""
        ...

    def stop(self, *, force: bool) -> None:
        """Asks the job to stop at its next report; ``force``: kills it now."""

    async def close(self) -> None:
        """Releases what the run holds, once its job is over."""


class Launcher(Protocol):
    """How a backend starts training jobs."""

    #: One name (a device) per job that may run at once; None: every job is launched at
    #: once and the backend queues them (a Ray cluster).
    slots: Sequence[str] | None

    @property
    def alive(self) -> bool: ...

    @property
    def has_cuda(self) -> bool: ...

    def launch(self, job_id: str, config: dict[str, Any], slot: str | None) -> JobRun: ...


@dataclass(eq=False)
class _Job:
    id: str
    config: dict[str, Any]
    task: asyncio.Task[Outcome] | None = None
    run: JobRun | None = None
    started: bool = False
    dropped: bool = False  # cancelled before it started: it no longer waits


class Lanes:
    """Runs training jobs behind a bounded queue, however a backend launches them.

    A job waits (counted by :meth:`queued`) until its run reports ``started``: for a
    free slot, then (on Ray) for the cluster. Past ``max_job_s`` after its launch it is
    killed and fails; a cancelled job is asked to stop at its next report and killed
    after ``cancel_grace_s``.

    Parameters
    ----------
    launcher : Launcher
        How the backend starts a job and reads its stream.
    max_queued : int
        Jobs waiting before :meth:`submit` raises :class:`QueueFull`.
    max_job_s : float
        Wall-clock limit of one job from its launch.
    """

    def __init__(
        self,
        launcher: Launcher,
        *,
        max_queued: int,
        max_job_s: float = 3600,
        cancel_grace_s: float = CANCEL_GRACE_S,
    ) -> None:
        self.launcher = launcher
        self.max_queued = max_queued
        self.max_job_s = max_job_s
        self.cancel_grace_s = cancel_grace_s
        self._jobs: dict[str, _Job] = {}  # submitted and not over, in submission order
        self._free: asyncio.Queue[str] | None = None
        self._started = False
        self.on_start: Callable[[str, str], None] = lambda job_id, device: None
        self.on_progress: ProgressCallback = lambda job_id, progress: None

    async def start(self) -> None:
        if self.launcher.slots is not None:
            self._free = asyncio.Queue()
            for slot in self.launcher.slots:
                self._free.put_nowait(slot)
        self._started = True

    async def stop(self) -> None:
        """Kills every running job and drops the waiting ones: their futures are cancelled.
        Stopping again does nothing."""
        self._started = False
        jobs = list(self._jobs.values())
        for job in jobs:
            if job.run is not None:
                job.run.stop(force=True)
            if job.task is not None:
                job.task.cancel()
        tasks = [job.task for job in jobs if job.task is not None]
        if tasks:
            await asyncio.wait(tasks)
        self._jobs.clear()

    @property
    def alive(self) -> bool:
        return self._started and self.launcher.alive

    @property
    def has_cuda(self) -> bool:
        return self.launcher.has_cuda

    def queued(self) -> int:
        return sum(1 for job in self._jobs.values() if not (job.started or job.dropped))

    def running(self) -> list[str]:
        return [job.id for job in self._jobs.values() if job.started]

    def has_room(self) -> bool:
        return self.queued() < self.max_queued

    def queue_full(self) -> QueueFull:
        """What :meth:`submit` raises past ``max_queued`` waiting jobs."""
        return QueueFull(
            f"{self.max_queued} trainings are already waiting; retry later",
            retry_after_s=TRAINING_RETRY_AFTER_S,
        )

    def submit(self, job_id: str, config: dict[str, Any]) -> asyncio.Future[Outcome]:
        """Queue a job; the future resolves with its :class:`Outcome` (it is cancelled when
        the job is cancelled before it started, or the lanes stop).

        Raises
        ------
        QueueFull
            When ``max_queued`` jobs are already waiting.
        PoolUnavailable
            When the lanes are not running.
        """
        if not self._started:
            raise PoolUnavailable("the training lanes are not running")
        if not self.has_room():
            raise self.queue_full()
        job = _Job(job_id, config)
        job.task = asyncio.get_running_loop().create_task(
            self._run(job), name=f"training-{job_id[:8]}"
        )
        # Not in _run: a job cancelled before its task first ran never enters it.
        job.task.add_done_callback(lambda _: self._forget(job))
        self._jobs[job_id] = job
        return job.task

    def cancel(self, job_id: str) -> None:
        """Drop a waiting job, or ask a running one to stop at its next report.

        A running job that has not stopped after ``cancel_grace_s`` is killed.
        """
        job = self._jobs.get(job_id)
        if job is None or job.task is None:
            return
        if not job.started or job.run is None:
            job.dropped = True
            job.task.cancel()  # it never runs (a launched one is killed)
            return
        job.run.stop(force=False)
        asyncio.get_running_loop().call_later(self.cancel_grace_s, self._kill_if_running, job)

    @staticmethod
    def _kill_if_running(job: _Job) -> None:
        if job.run is not None and job.task is not None and not job.task.done():
            job.run.stop(force=True)

    def _forget(self, job: _Job) -> None:
        if self._jobs.get(job.id) is job:
            del self._jobs[job.id]

    async def _run(self, job: _Job) -> Outcome:
        if self._free is None:
            return await self._launch(job, None)
        slot = await self._free.get()
        try:
            return await self._launch(job, slot)
        finally:
            self._free.put_nowait(slot)

    async def _launch(self, job: _Job, slot: str | None) -> Outcome:
        try:
            # Launching can fail too (a lost connection): inside, so the job still ends.
            job.run = self.launcher.launch(job.id, job.config, slot)
            async with (
                asyncio.timeout(self.max_job_s),
                contextlib.aclosing(job.run.events()) as events,
            ):
                async for kind, payload in events:
                    if kind == "started":
                        job.started = True
                        self.on_start(job.id, payload)
                    elif kind == "progress":
                        self.on_progress(job.id, payload)
                    else:
                        return payload  # type: ignore[no-any-return]
            return Outcome("failed", reason="the training ended without an outcome")
        except TimeoutError:
            if job.run is not None:
                job.run.stop(force=True)
            return Outcome("failed", reason=f"over the time limit of {self.max_job_s:g} s")
        except asyncio.CancelledError:
            # Cancelled before it started, or the lanes are stopping: it must not run on.
            if job.run is not None:
                job.run.stop(force=True)
            raise
        except WorkCancelled:
            return Outcome("cancelled", reason="cancelled by request")
        except TensorlensError as exc:  # its process, task or node died; Ray failed it
            return Outcome("failed", reason=exc.detail)
        except Exception as exc:  # the lanes must outlive any one job
            return Outcome("failed", reason=f"the lane failed: {type(exc).__name__}: {exc}")
        finally:
            if job.run is not None:
                await job.run.close()
