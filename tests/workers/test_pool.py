import asyncio
import os
import pickle
import signal
import time

import pytest

from tests._support import wait_until
from tests.workers import _pool_tasks as tasks
from workers.errors import (
    InvalidParameter,
    PoolUnavailable,
    QueueFull,
    TensorlensError,
    WorkerDied,
    WorkTimeout,
)
from workers.pool import LocalPool, get_within

pytestmark = pytest.mark.anyio


def make_pool(size: int = 1, *, queue: int = 4, timeout_s: float = 10.0) -> LocalPool:
    return LocalPool(size, max_queue_depth=queue, default_timeout_s=timeout_s, preload=())


async def test_runs_work_in_other_processes_and_in_parallel() -> None:
    pool = make_pool(2, queue=16)
    await pool.start()
    try:
        assert pool.ready
        assert await pool.run(tasks.add, 2, 3) == 5
        pids = set(await asyncio.gather(*(pool.run(tasks.pid) for _ in range(8))))
        assert pids <= set(pool.worker_pids()) and len(pool.worker_pids()) == 2
        started = time.perf_counter()
        await asyncio.gather(pool.run(tasks.sleep, 0.5), pool.run(tasks.sleep, 0.5))
        assert time.perf_counter() - started < 0.9  # two workers, not one after the other
    finally:
        await pool.stop()
    assert not pool.ready


async def test_domain_errors_cross_the_process_boundary_intact() -> None:
    pool = make_pool()
    await pool.start()
    try:
        with pytest.raises(InvalidParameter) as info:
            await pool.run(tasks.raise_domain_error)
        assert info.value.parameter == "sigma"
        assert info.value.detail == "invalid `sigma`: must be positive"
        with pytest.raises(TensorlensError, match="ZeroDivisionError"):
            await pool.run(tasks.raise_bug)
        assert await pool.run(tasks.add, 1, 1) == 2  # the worker keeps serving
    finally:
        await pool.stop()


async def test_large_arguments_and_results_cross_intact() -> None:
    pool = make_pool()
    await pool.start()
    try:
        # Far larger than a socket buffer, both ways: the transfer spans many reads.
        upload = os.urandom(8 * 1024 * 1024)
        assert await pool.run(tasks.add, upload, b"!") == upload + b"!"
        assert await pool.run(tasks.add, 1, 2) == 3  # the stream is still in step
    finally:
        await pool.stop()


async def test_work_that_cannot_be_pickled_fails_its_caller_and_nothing_else() -> None:
    pool = make_pool()
    await pool.start()
    try:
        with pytest.raises((pickle.PicklingError, AttributeError)):  # which one: pickle's choice
            await pool.run(lambda: 1)
        with pytest.raises(TensorlensError, match="could not be sent"):
            await pool.run(tasks.unpicklable_result)
        assert await pool.run(tasks.add, 1, 1) == 2
        assert pool.restarts == 0
    finally:
        await pool.stop()


async def test_full_queue_answers_at_once_instead_of_hanging() -> None:
    pool = make_pool(1, queue=2)
    await pool.start()
    try:
        running = asyncio.ensure_future(pool.run(tasks.sleep, 0.6))
        await asyncio.sleep(0.2)  # the worker has taken it; the queue is empty again
        queued = [asyncio.ensure_future(pool.run(tasks.sleep, 0.01)) for _ in range(2)]
        await asyncio.sleep(0)
        started = time.perf_counter()
        with pytest.raises(QueueFull) as info:
            await pool.run(tasks.add, 1, 2)
        assert time.perf_counter() - started < 0.05
        assert info.value.context["retry_after_s"] == 1
        assert pool.stats().queue_depth == 2 and pool.stats().in_flight == 1
        assert await running == 0.6
        assert await asyncio.gather(*queued) == [0.01, 0.01]
    finally:
        await pool.stop()


async def test_timeout_kills_the_runaway_worker_and_replaces_it() -> None:
    pool = make_pool(1, timeout_s=0.5)
    await pool.start()
    try:
        before = pool.worker_pids()
        started = time.perf_counter()
        with pytest.raises(WorkTimeout):
            await pool.run(tasks.sleep, 30)
        assert time.perf_counter() - started < 2
        assert await pool.run(tasks.add, 2, 2, timeout_s=30) == 4  # on the replacement
        assert pool.worker_pids() != before and pool.restarts == 1
    finally:
        await pool.stop()


async def test_queued_job_past_its_deadline_never_runs() -> None:
    pool = make_pool(1, timeout_s=5)
    await pool.start()
    try:
        blocker = asyncio.ensure_future(pool.run(tasks.sleep, 0.8))
        await asyncio.sleep(0.1)
        with pytest.raises(WorkTimeout, match="did not start"):
            await pool.run(tasks.sleep, 0.01, timeout_s=0.2)
        assert await blocker == 0.8
        assert pool.restarts == 0  # the running job was not disturbed
    finally:
        await pool.stop()


async def test_dead_worker_fails_only_its_request_and_is_replaced() -> None:
    pool = make_pool(2)
    await pool.start()
    try:
        survivor = asyncio.ensure_future(pool.run(tasks.sleep, 0.5))
        await asyncio.sleep(0.1)
        with pytest.raises(WorkerDied) as info:
            await pool.run(tasks.crash)
        assert info.value.context["exit_code"] == 3
        assert await survivor == 0.5
        assert await pool.run(tasks.add, 3, 4) == 7
        await wait_until(lambda: pool.ready)
        assert pool.restarts == 1
    finally:
        await pool.stop()


async def test_a_worker_that_dies_while_idle_is_replaced_without_traffic() -> None:
    pool = make_pool(1)
    await pool.start()
    try:
        (pid,) = pool.worker_pids()
        os.kill(pid, signal.SIGKILL)
        await wait_until(lambda: not pool.ready)
        await wait_until(lambda: pool.ready)
        assert pool.worker_pids() != [pid]
    finally:
        await pool.stop()


async def test_pool_refuses_work_when_not_started() -> None:
    with pytest.raises(PoolUnavailable):
        await make_pool().run(tasks.add, 1, 2)


async def test_a_runner_cancelled_as_its_job_arrives_stops_and_the_job_stays_queued() -> None:
    # `asyncio.wait_for(queue.get(), ...)` returns the job and swallows the cancellation
    # here before Python 3.12: a pool's stop() would then wait on its runner for ever.
    queue: asyncio.Queue[str] = asyncio.Queue()
    runner = asyncio.ensure_future(get_within(queue, 5.0))
    await asyncio.sleep(0)  # the runner waits on the queue
    queue.put_nowait("job")  # wakes it ...
    runner.cancel()  # ... and stop() cancels it before it runs again
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert queue.get_nowait() == "job"  # nothing lost


async def test_get_within_waits_at_most_its_timeout() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    assert await get_within(queue, 0.0) is None
    queue.put_nowait(1)
    assert await get_within(queue, 0.0) == 1
