"""The training lanes: one class over every backend's way of launching a job.

The bookkeeping (queue limit, slots, deadline, cancel grace, how a run's end becomes an
outcome) is checked against a scripted launcher whose runs do what each test says, when
it says, so no test waits on a clock it does not set. Then the same lanes run real
trainings on each backend: processes on this machine, and tasks on the session's local
Ray cluster.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests._support import ray_processes, wait_until
from tests.service._api import SMALL
from workers.errors import (
    PoolUnavailable,
    QueueFull,
    WorkCancelled,
    WorkerDied,
)
from workers.local import TrainingProcesses
from workers.training.lanes import JobRun, Lanes, Launcher, Outcome

pytestmark = pytest.mark.anyio

#: Runs until it is stopped (seconds at least), reporting every epoch.
ENDLESS = {**SMALL, "epochs": 10_000, "report_every": 1}
DONE = Outcome("succeeded", metadata={"final_metrics": {}}, weights=b"w")


# A scripted backend -----------------------------------------------------------------------


@dataclass(eq=False)
class ScriptedRun:
    """A run whose events the test feeds (``feed``) and whose stops it records."""

    job_id: str
    slot: str | None
    items: asyncio.Queue[tuple[str, Any] | BaseException] = field(default_factory=asyncio.Queue)
    stops: list[bool] = field(default_factory=list)  # each stop's `force`
    closed: bool = False
    ignores_stop: bool = False

    def feed(self, *items: tuple[str, Any] | BaseException) -> None:
        for item in items:
            self.items.put_nowait(item)

    async def events(self) -> AsyncIterator[tuple[str, Any]]:
        while True:
            item = await self.items.get()
            if isinstance(item, BaseException):
                raise item
            if item == ("end", None):
                return
            yield item

    def stop(self, *, force: bool) -> None:
        self.stops.append(force)
        if force:
            self.feed(WorkerDied("the scripted job was killed"))
        elif not self.ignores_stop:
            self.feed(WorkCancelled("the job was cancelled"))

    async def close(self) -> None:
        self.closed = True


class ScriptedLauncher:
    alive = True
    has_cuda = False

    def __init__(self, slots: Sequence[str] | None, *, ignores_stop: bool = False) -> None:
        self.slots = slots
        self.ignores_stop = ignores_stop
        self.runs: dict[str, ScriptedRun] = {}
        self.launched = asyncio.Queue[ScriptedRun]()

    def launch(self, job_id: str, config: dict[str, Any], slot: str | None) -> JobRun:
        if config.get("launch_fails"):
            raise ConnectionError("the cluster is gone")
        run = ScriptedRun(job_id, slot, ignores_stop=self.ignores_stop)
        self.runs[job_id] = run
        self.launched.put_nowait(run)
        return run


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[Lanes, ScriptedLauncher]]:
    launcher = ScriptedLauncher(["lane-0"])
    lanes = Lanes(launcher, max_queued=1)
    await lanes.start()
    yield lanes, launcher
    await lanes.stop()


async def test_one_job_per_slot_in_the_order_submitted(scripted) -> None:
    lanes, launcher = scripted
    started: list[tuple[str, str]] = []
    lanes.on_start = lambda job_id, device: started.append((job_id, device))
    first = lanes.submit("one", {})
    run = await launcher.launched.get()
    run.feed(("started", "cpu"))
    await wait_until(lambda: started)
    second = lanes.submit("two", {})
    assert lanes.running() == ["one"] and lanes.queued() == 1
    assert run.slot == "lane-0" and "two" not in launcher.runs  # waits for the slot
    run.feed(("progress", {"epoch": 0}), ("done", DONE))
    assert await first is DONE and run.closed
    following = await launcher.launched.get()
    assert following.job_id == "two" and following.slot == "lane-0"
    following.feed(("started", "cpu"), ("done", DONE))
    assert await second is DONE
    assert started == [("one", "cpu"), ("two", "cpu")]


async def test_past_max_queued_a_submit_is_refused_until_a_waiting_job_is_cancelled(
    scripted,
) -> None:
    lanes, launcher = scripted
    running = lanes.submit("running", {})
    (await launcher.launched.get()).feed(("started", "cpu"))
    await wait_until(lambda: lanes.running() == ["running"])
    waiting = lanes.submit("waiting", {})
    assert not lanes.has_room()
    with pytest.raises(QueueFull) as info:
        lanes.submit("refused", {})
    assert info.value.context["retry_after_s"] == 10
    lanes.cancel("waiting")
    assert lanes.has_room() and lanes.queued() == 0  # at once, not when its task ends
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert "waiting" not in launcher.runs  # it never ran
    lanes.cancel("running")
    assert (await running).status == "cancelled"


async def test_a_job_past_its_deadline_is_killed_and_fails() -> None:
    launcher = ScriptedLauncher(None)
    lanes = Lanes(launcher, max_queued=1, max_job_s=0.05)
    await lanes.start()
    try:
        outcome = lanes.submit("slow", {})
        (await launcher.launched.get()).feed(("started", "cpu"))  # and never a report
        result = await outcome
        assert result == Outcome("failed", reason="over the time limit of 0.05 s")
        assert launcher.runs["slow"].stops == [True] and launcher.runs["slow"].closed
    finally:
        await lanes.stop()


async def test_a_cancelled_job_that_does_not_stop_is_killed_after_the_grace() -> None:
    launcher = ScriptedLauncher(None, ignores_stop=True)
    lanes = Lanes(launcher, max_queued=1, cancel_grace_s=0.01)
    await lanes.start()
    try:
        outcome = lanes.submit("stubborn", {})
        run = await launcher.launched.get()
        run.feed(("started", "cpu"))
        await wait_until(lambda: lanes.running())
        lanes.cancel("stubborn")
        assert run.stops == [False]  # asked first
        result = await outcome
        assert run.stops == [False, True]  # then killed
        assert result == Outcome("failed", reason="the scripted job was killed")
    finally:
        await lanes.stop()


async def test_a_launched_job_cancelled_before_it_started_is_killed() -> None:
    launcher = ScriptedLauncher(None)  # the backend queues, as a Ray cluster does
    lanes = Lanes(launcher, max_queued=2)
    await lanes.start()
    try:
        outcome = lanes.submit("queued-in-the-cluster", {})
        run = await launcher.launched.get()
        assert lanes.queued() == 1
        lanes.cancel("queued-in-the-cluster")
        with pytest.raises(asyncio.CancelledError):
            await outcome
        assert run.stops == [True] and run.closed
    finally:
        await lanes.stop()


@pytest.mark.parametrize(
    ("ending", "expected"),
    [
        (("done", DONE), DONE),
        (WorkCancelled("the job was cancelled"), Outcome("cancelled", "cancelled by request")),
        (WorkerDied("the training process died (exit code -9)"), None),
        (PoolUnavailable("Ray failed the job (RaySystemError)"), None),
        (RuntimeError("boom"), Outcome("failed", "the lane failed: RuntimeError: boom")),
        (("end", None), Outcome("failed", "the training ended without an outcome")),
    ],
    ids=["done", "cancelled", "died", "backend-failed", "bug", "no-outcome"],
)
async def test_every_way_a_run_ends_is_an_outcome(
    scripted, ending: tuple[str, Any] | BaseException, expected: Outcome | None
) -> None:
    lanes, launcher = scripted
    outcome = lanes.submit("job", {})
    run = await launcher.launched.get()
    run.feed(("started", "cpu"), ending)
    if expected is None:  # a domain error: the job fails with its detail
        assert isinstance(ending, Exception)
        expected = Outcome("failed", str(ending))
    assert await outcome == expected
    assert run.closed
    following = lanes.submit("next", {})  # the lanes outlive every job
    (await launcher.launched.get()).feed(("started", "cpu"), ("done", DONE))
    assert await following is DONE


async def test_a_launch_that_fails_fails_only_its_job(scripted) -> None:
    lanes, _ = scripted
    result = await lanes.submit("job", {"launch_fails": True})
    assert result == Outcome("failed", "the lane failed: ConnectionError: the cluster is gone")
    assert lanes.alive


async def test_stop_ends_every_job_and_refuses_new_ones(scripted) -> None:
    lanes, launcher = scripted
    running = lanes.submit("running", {})
    run = await launcher.launched.get()
    run.feed(("started", "cpu"))
    await wait_until(lambda: lanes.running())
    waiting = lanes.submit("waiting", {})
    await lanes.stop()
    await lanes.stop()  # again: nothing left to do
    assert running.cancelled() and waiting.cancelled()
    assert run.stops and all(run.stops) and run.closed  # killed
    assert not lanes.alive and lanes.queued() == 0 and lanes.running() == []
    with pytest.raises(PoolUnavailable):
        lanes.submit("late", {})


# The real backends ------------------------------------------------------------------------


@dataclass
class Backend:
    lanes: Lanes
    started: list[tuple[str, str]]
    progress: list[dict]
    kill: Any  # kill(job_id): kills the process running the job


class Recording:
    """Wraps a launcher and keeps its runs, to reach a job's process."""

    def __init__(self, inner: Launcher) -> None:
        self.inner = inner
        self.slots = inner.slots
        self.runs: dict[str, JobRun] = {}

    alive = property(lambda self: self.inner.alive)
    has_cuda = property(lambda self: self.inner.has_cuda)

    def launch(self, job_id: str, config: dict[str, Any], slot: str | None) -> JobRun:
        run = self.runs[job_id] = self.inner.launch(job_id, config, slot)
        return run


def _kill_local(recording: Recording, job_id: str) -> None:
    os.kill(recording.runs[job_id].child.process.pid, signal.SIGKILL)  # type: ignore[attr-defined]


def _kill_ray(recording: Recording, job_id: str) -> None:
    for pid in ray_processes("tensorlens-train"):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture(params=["local", "ray"])
def launcher(request: pytest.FixtureRequest) -> Iterator[tuple[Launcher, Any]]:
    if request.param == "local":
        yield TrainingProcesses(["cpu"]), _kill_local
    else:
        request.getfixturevalue("ray_cluster")
        from workers.ray_backend import TrainingTasks

        yield TrainingTasks(task_cpus=1), _kill_ray


@pytest.fixture
async def backend(launcher: tuple[Launcher, Any]) -> AsyncIterator[Backend]:
    inner, kill = launcher
    recording = Recording(inner)
    lanes = Lanes(recording, max_queued=2, max_job_s=120)
    started: list[tuple[str, str]] = []
    progress: list[dict] = []
    lanes.on_start = lambda job_id, device: started.append((job_id, device))
    lanes.on_progress = lambda job_id, p: progress.append(p)
    await lanes.start()
    yield Backend(lanes, started, progress, lambda job_id: kill(recording, job_id))
    await lanes.stop()


async def test_a_training_streams_its_progress_and_returns_its_weights(backend: Backend) -> None:
    assert not backend.lanes.has_cuda  # a CPU-only machine and cluster
    outcome = await backend.lanes.submit("a", {**SMALL, "device": "cpu"})
    assert outcome.status == "succeeded", outcome.reason
    assert backend.started == [("a", "cpu")]
    assert [p["epoch"] for p in backend.progress] == [0, 10, 20, 30, 40, 49]
    assert outcome.metadata is not None and outcome.weights
    assert outcome.metadata["final_metrics"]["epoch"] == 49


async def test_a_cancelled_training_stops_at_its_next_report(backend: Backend) -> None:
    outcome = backend.lanes.submit("long", ENDLESS)
    await wait_until(lambda: backend.progress, timeout_s=60)
    backend.lanes.cancel("long")
    result = await asyncio.wait_for(outcome, 30)  # well within the 30 s grace: not killed
    assert result == Outcome("cancelled", "cancelled by request"), result.reason


async def test_a_training_whose_process_dies_fails_with_the_reason(backend: Backend) -> None:
    outcome = backend.lanes.submit("doomed", ENDLESS)
    await wait_until(lambda: backend.progress, timeout_s=60)
    backend.kill("doomed")
    result = await outcome
    assert result.status == "failed" and "died" in (result.reason or ""), result.reason
    after = await backend.lanes.submit("after", SMALL)  # the lanes outlive the dead process
    assert after.status == "succeeded"


async def test_a_training_past_its_deadline_is_stopped(backend: Backend) -> None:
    backend.lanes.max_job_s = 1.0
    result = await backend.lanes.submit("slow", ENDLESS)
    assert result == Outcome("failed", "over the time limit of 1 s")
