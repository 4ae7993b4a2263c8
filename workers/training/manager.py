"""The training job lifecycle: store, queue on device lanes, register models, notify."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from workers.errors import InvalidParameter, QueueFull
from workers.training.checkpoints import ModelStore
from workers.training.configs import RegressionConfig, SpiralConfig
from workers.training.jobs import Job, JobEvent, JobStore
from workers.training.lanes import DeviceLanes, Outcome

log = logging.getLogger("tensorlens.training")


class TrainingManager:
    """Owns training jobs from submission to a registered model.

    The job store is the source of truth: every transition is written there first,
    then listeners (Server-Sent Events streams) are woken to read it.
    """

    def __init__(self, jobs: JobStore, models: ModelStore, lanes: DeviceLanes) -> None:
        self.jobs = jobs
        self.models = models
        self.lanes = lanes
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self._outcomes: dict[str, asyncio.Future[Outcome]] = {}
        lanes.on_start = self._started
        lanes.on_progress = self._progress

    async def start(self) -> list[str]:
        """Fail what a previous process left queued or running; start the lanes."""
        interrupted = self.jobs.recover_interrupted()
        if interrupted:
            log.warning("marked %d interrupted training job(s) failed", len(interrupted))
        await self.lanes.start()
        return interrupted

    async def stop(self) -> None:
        await self.lanes.stop()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Jobs cut short by the shutdown are failed now rather than at the next start.
        self.jobs.recover_interrupted()

    def submit(self, config: SpiralConfig | RegressionConfig) -> Job:
        """Store a queued job and put it on the lanes.

        Raises
        ------
        QueueFull
            When the training queue is full; nothing is stored then.
        """
        if config.device == "cuda" and not self.lanes.has_cuda:
            raise InvalidParameter("device", "no CUDA device is available on this server")
        if not self.lanes.has_room():
            raise QueueFull(
                f"{self.lanes.max_queued} trainings are already waiting; retry later",
                retry_after_s=10,
            )
        job = self.jobs.create(config.model_dump(mode="json"))
        outcome = self.lanes.submit(job.id, job.config)
        self._outcomes[job.id] = outcome
        task = asyncio.get_running_loop().create_task(self._finish(job.id, outcome))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def cancel(self, job_id: str) -> Job:
        job = self.jobs.request_cancel(job_id)
        if job.status == "running":
            self.lanes.cancel(job_id)
        elif job.status == "cancelled" and job_id in self._outcomes:
            self._outcomes[job_id].cancel()  # still queued: the lane skips it
        await self._notify()
        return job

    async def events(self, job_id: str, after_seq: int = 0) -> AsyncIterator[Job | JobEvent]:
        """Progress events after ``after_seq`` as they happen, then the finished job."""
        seq = after_seq
        while True:
            async with self._changed:
                job = self.jobs.get(job_id)
                new = self.jobs.events(job_id, seq)
                if not new and not job.finished:
                    await self._changed.wait()
                    continue
            for event in new:
                seq = event.seq
                yield event
            if job.finished:
                yield job
                return

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _wake(self) -> None:
        task = asyncio.get_running_loop().create_task(self._notify())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _started(self, job_id: str, device: str) -> None:
        self.jobs.set_running(job_id)
        self._wake()

    def _progress(self, job_id: str, progress: dict[str, Any]) -> None:
        self.jobs.add_progress(job_id, **progress)
        self._wake()

    async def _finish(self, job_id: str, outcome_future: asyncio.Future[Outcome]) -> None:
        try:
            outcome = await outcome_future
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if outcome_future.cancelled() and current is not None and not current.cancelling():
                return  # cancelled while queued; the store already says so
            raise
        finally:
            self._outcomes.pop(job_id, None)
        job = self.jobs.get(job_id)
        if job.finished:  # cancelled while queued
            return
        if outcome.status == "succeeded":
            assert outcome.weights is not None and outcome.metadata is not None
            metadata = {**outcome.metadata, "job_id": job_id}
            try:
                await asyncio.to_thread(self.models.save_bytes, job_id, outcome.weights, metadata)
            except Exception as exc:  # a full disk must not leave the job running
                log.exception("saving the model of job %s failed", job_id)
                self.jobs.set_failed(job_id, f"saving the model failed: {exc}")
            else:
                self.jobs.set_succeeded(job_id, job_id, metadata["final_metrics"])
        elif outcome.status == "cancelled":
            self.jobs.set_cancelled(job_id)
        else:
            self.jobs.set_failed(job_id, outcome.reason or "failed")
        await self._notify()
