"""The training job lifecycle: store, queue on the lanes, register models, notify."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from workers.errors import InvalidParameter, NotFound
from workers.training.checkpoints import ModelStore
from workers.training.configs import RegressionConfig, SpiralConfig
from workers.training.jobs import Job, JobEvent, JobStore
from workers.training.lanes import Outcome

if TYPE_CHECKING:
    from workers.backend import TrainingLanes

log = logging.getLogger("tensorlens.training")


class TrainingManager:
    """Owns training jobs from submission to a registered model.

    The job store is the source of truth: every transition is written there first,
    then listeners (Server-Sent Events streams) are woken to read it.
    """

    def __init__(self, jobs: JobStore, models: ModelStore, lanes: TrainingLanes) -> None:
        self.jobs = jobs
        self.models = models
        self.lanes = lanes
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        lanes.on_start = self._started
        lanes.on_progress = self._progress

    async def start(self) -> list[str]:
        """Reconcile what a previous process left behind (the backend starts the lanes).

        Models of the layout before names are migrated (:meth:`ModelStore.migrate`). A
        job whose model was written before the process stopped succeeded; every other
        queued or running job failed with reason ``interrupted``. Temporary directories
        of interrupted model writes are removed.
        """
        migrated = self.models.migrate()
        if migrated:
            log.warning("migrated %d model(s) to version 1 of their names", len(migrated))
        self.models.cleanup()
        for job in self.jobs.list(limit=1000, status="running").items:
            name = job.config.get("model_name") or job.id
            ref = self.models.find_job(name, job.id)
            if ref is None and name == job.id and self.models.exists(name):
                ref = self.models.resolve(name)  # written before versions recorded their job
            if ref is not None:
                metadata = self.models.get(ref).metadata
                self.jobs.set_succeeded(
                    job.id, ref.name, metadata.get("final_metrics", {}), ref.version
                )
        interrupted = self.jobs.recover_interrupted()
        if interrupted:
            log.warning("marked %d interrupted training job(s) failed", len(interrupted))
        self._closing = False
        return interrupted

    async def stop(self) -> None:
        """Stop the lanes, let model writes in progress finish, end the event streams.

        The lanes are stopped here, not left to the backend's stop: every job has ended
        (its future settled) before the manager waits for what follows them.
        """
        await self.lanes.stop()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=30)
        # Jobs cut short by the shutdown are failed now rather than at the next start,
        # so their event streams end with that.
        self.jobs.recover_interrupted()
        self._closing = True
        await self._notify()

    def submit(self, config: SpiralConfig | RegressionConfig) -> Job:
        """Store a queued job and put it on the lanes.

        Raises
        ------
        InvalidParameter
            For ``device: cuda`` on a server without CUDA lanes, or a ``model_name`` that is
            another training job's id (that job's model is version 1 of that name).
        QueueFull
            When the training queue is full; nothing is stored then.
        """
        if config.device == "cuda" and not self.lanes.has_cuda:
            raise InvalidParameter("device", "no CUDA device is available on this server")
        if config.model_name is not None and self._is_job(config.model_name):
            raise InvalidParameter(
                "model_name", f"{config.model_name} is the id of a training job; choose another"
            )
        if not self.lanes.has_room():
            raise self.lanes.queue_full()
        job = self.jobs.create(config.model_dump(mode="json"))
        outcome = self.lanes.submit(job.id, job.config)
        task = asyncio.get_running_loop().create_task(self._finish(job.id, outcome))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def cancel(self, job_id: str) -> Job:
        job = self.jobs.request_cancel(job_id)
        self.lanes.cancel(job_id)
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
                    if self._closing:
                        return
                    await self._changed.wait()
                    continue
            for event in new:
                seq = event.seq
                yield event
            if job.finished:
                yield job
                return

    def _is_job(self, job_id: str) -> bool:
        try:
            self.jobs.get(job_id)
        except NotFound:
            return False
        return True

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
                return  # cancelled while queued (or at shutdown); the store says so
            raise
        job = self.jobs.get(job_id)
        if job.finished:
            return
        if outcome.status == "succeeded":
            assert outcome.weights is not None and outcome.metadata is not None
            metadata = {**outcome.metadata, "job_id": job_id}
            if job.config.get("description") is not None:
                metadata["description"] = job.config["description"]
            name = job.config.get("model_name") or job_id
            try:
                info = await asyncio.to_thread(
                    self.models.save_bytes, name, outcome.weights, metadata
                )
            except Exception as exc:  # a full disk must not leave the job running
                log.exception("saving the model of job %s failed", job_id)
                self.jobs.set_failed(job_id, f"saving the model failed: {exc}")
            else:
                self.jobs.set_succeeded(job_id, info.name, metadata["final_metrics"], info.version)
        elif outcome.status == "cancelled" or job.cancel_requested:
            # Also a job killed after the cancel grace period: it was still cancelled.
            self.jobs.set_cancelled(job_id)
        else:
            self.jobs.set_failed(job_id, outcome.reason or "failed")
        await self._notify()
