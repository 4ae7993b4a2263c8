"""The local backend: everything runs in processes on this machine.

Image work runs on the worker pool (:class:`~workers.pool.LocalPool`); each training
runs in a fresh spawned process on its device lane, so a crash, a leak or CUDA memory
never outlives the job; models are served from this process
(:class:`~workers.serving.ModelServer`). Parents and children talk over the socket
pairs of :mod:`workers._channel`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Any

from workers import _channel
from workers.backend import Backend, BackendSettings, model_store
from workers.errors import InvalidInput, WorkerDied
from workers.pool import LocalPool
from workers.serving import ModelServer
from workers.training import resolve_device
from workers.training.lanes import Lanes, plan_lanes, run_training

__all__ = ["TrainingProcesses", "build"]


async def build(settings: BackendSettings) -> Backend:
    """This machine's worker pool, device lanes and model server, not yet started."""
    # Settings that can be wrong are checked before any process starts.
    lanes = plan_lanes(settings.devices, settings.lanes_per_device)
    inference_device = resolve_device(settings.inference_device)
    pool = LocalPool(
        settings.image_workers,
        max_queue_depth=settings.max_queue_depth,
        default_timeout_s=settings.request_timeout_s,
        retry_after_s=settings.retry_after_s,
        keep_freed_bytes=settings.image_worker_keep_freed_bytes,
    )
    trainings = Lanes(
        TrainingProcesses(lanes, cpu_threads=settings.training_cpu_threads),
        max_queued=settings.max_queued_trainings,
        max_job_s=settings.max_training_s,
    )
    server = ModelServer(
        model_store(settings),
        device=inference_device,
        cache_size=settings.model_cache_size,
        batching=settings.batching,
        max_batch_size=settings.max_batch_size,
        max_queue_delay_ms=settings.max_queue_delay_ms,
        cpu_threads=settings.inference_cpu_threads,
        batch_instances=settings.batch_instances,
    )
    return Backend(pool, trainings, server)


class TrainingProcesses:
    """Launches each training in a fresh spawned process on its lane's device.

    Parameters
    ----------
    lanes : list of str
        Device names, one per concurrent job (see :func:`~workers.training.lanes.plan_lanes`).
    cpu_threads : int
        torch threads of a training process on the CPU.
    """

    alive = True

    def __init__(self, lanes: Sequence[str], *, cpu_threads: int = 1) -> None:
        if not lanes:
            raise InvalidInput("no training lanes configured")
        self.slots: Sequence[str] | None = list(lanes)
        self.cpu_threads = cpu_threads

    @property
    def has_cuda(self) -> bool:
        return any(lane.startswith("cuda") for lane in self.slots or ())

    def launch(self, job_id: str, config: dict[str, Any], slot: str | None) -> _TrainingProcess:
        assert slot is not None
        # `auto` and `cuda` go where the lane is; an explicit `cpu` stays on the CPU.
        device = "cpu" if config.get("device") == "cpu" else slot
        child = _channel.spawn(
            _train_main, config, device, self.cpu_threads, name=f"tensorlens-train-{job_id[:8]}"
        )
        return _TrainingProcess(child, device)


class _TrainingProcess:
    """A training's process, as :class:`~workers.training.lanes.Lanes` runs it."""

    def __init__(self, child: _channel.Child, device: str) -> None:
        self.child = child
        self.device = device

    async def events(self) -> AsyncIterator[tuple[str, Any]]:
        yield "started", self.device
        while True:
            try:
                kind, payload = await self.child.receive()
            except (EOFError, OSError):
                code = await self.child.exit_code(5.0)
                raise WorkerDied(f"the training process died (exit code {code})") from None
            yield kind, payload

    def stop(self, *, force: bool) -> None:
        if force:
            # ValueError: closed already (it ended and close() ran), nothing to kill.
            with contextlib.suppress(OSError, ValueError):
                self.child.process.kill()
        else:
            with contextlib.suppress(OSError):  # it has ended already
                self.child.post("cancel")

    async def close(self) -> None:
        if self.child.process.is_alive():
            await self.child.exit_code(10.0)
        await asyncio.to_thread(self.child.kill)


def _train_main(sock: socket.socket, config: dict[str, Any], device: str, cpu_threads: int) -> None:
    _die_with_parent()
    cancelled = False

    def should_stop() -> bool:
        nonlocal cancelled
        while not cancelled and _channel.pending(sock):
            try:
                cancelled = _channel.loads(_channel.receive(sock)) == "cancel"
            except EOFError:  # the parent is gone: nobody waits for the outcome
                cancelled = True
        return cancelled

    outcome = run_training(
        config,
        device,
        cpu_threads,
        report=lambda progress: _channel.send(sock, _channel.dumps(("progress", progress))),
        should_stop=should_stop,
    )
    _channel.send(sock, _channel.dumps(("done", outcome)))


def _die_with_parent() -> None:
    # Linux: the kernel kills this process when the API process dies, so a training
    # never runs on unobserved after a crash of its parent.
    with contextlib.suppress(Exception):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
