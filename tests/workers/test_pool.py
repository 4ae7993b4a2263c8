import asyncio
import os
import pickle
import re
import signal
import socket
import threading
import time

import pytest

from tests._support import wait_until
from tests.workers import _pool_tasks as tasks
from workers import _channel
from workers import pool as pool_module
from workers.backend import PoolStats
from workers.errors import (
    InvalidInput,
    InvalidParameter,
    PoolUnavailable,
    QueueFull,
    RemoteError,
    TensorlensError,
    WorkerDied,
    WorkTimeout,
)
from workers.pool import (
    DEFAULT_KEEP_FREED_BYTES,
    LocalPool,
    _worker_main,
    execute,
    get_within,
    keep_freed_memory,
)

pytestmark = pytest.mark.anyio


def make_pool(
    size: int = 1,
    *,
    queue: int = 4,
    timeout_s: float = 10.0,
    retry_after_s: int = 1,
    keep_freed_bytes: int = DEFAULT_KEEP_FREED_BYTES,
) -> LocalPool:
    return LocalPool(
        size,
        max_queue_depth=queue,
        default_timeout_s=timeout_s,
        retry_after_s=retry_after_s,
        preload=(),
        keep_freed_bytes=keep_freed_bytes,
    )


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
    pool = make_pool(1, queue=2, retry_after_s=7)  # not the default: the setting's own value
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
        assert info.value.detail == "the work queue is full (2 waiting); retry later"
        assert info.value.context["retry_after_s"] == 7
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
        with pytest.raises(WorkTimeout) as info:
            await pool.run(tasks.sleep, 30)
        assert time.perf_counter() - started < 0.9  # stopped at its 0.5 s, not later
        assert re.fullmatch(
            r"the work was stopped after 0\.[4-8] s \(limit reached\)", info.value.detail
        )
        # The limit the job had from its start (it did not wait), to the millisecond.
        limit = info.value.context["timeout_s"]
        assert 0.45 < limit <= 0.5 and round(limit, 3) == limit, limit
        assert await pool.run(tasks.add, 2, 2, timeout_s=30) == 4  # on the replacement
        assert pool.worker_pids() != before and pool.restarts == 1
        with pytest.raises(WorkTimeout):
            await pool.run(tasks.sleep, 30)
        assert await pool.run(tasks.add, 1, 1, timeout_s=30) == 2
        assert pool.stats().restarts == 2  # counted, not flagged
    finally:
        await pool.stop()


async def test_queued_job_past_its_deadline_never_runs() -> None:
    pool = make_pool(1, timeout_s=5)
    await pool.start()
    try:
        (pid,) = pool.worker_pids()
        blocker = asyncio.ensure_future(pool.run(tasks.sleep, 0.8))
        await asyncio.sleep(0.1)
        with pytest.raises(WorkTimeout, match=r"did not start within 0\.2 s") as info:
            await pool.run(tasks.sleep, 0.01, timeout_s=0.2)
        assert info.value.context == {"timeout_s": 0.2}  # the problem body's `timeout_s`
        assert await blocker == 0.8
        # Only once the pool has moved past the stale job does its fate show: run on a
        # spent deadline, it would have had its worker killed and replaced.
        assert await pool.run(tasks.pid) == pid
        assert pool.worker_pids() == [pid] and pool.restarts == 0
    finally:
        await pool.stop()


async def test_a_running_job_whose_runner_is_gone_fails_after_the_grace(monkeypatch) -> None:
    # At shutdown the runners are cancelled with their jobs unsettled: a caller still
    # waiting gives up a grace period after its deadline instead of waiting for ever.
    monkeypatch.setattr(pool_module, "_SETTLE_GRACE_S", 0.3)
    pool = make_pool(1, timeout_s=5)
    await pool.start()
    caller = asyncio.ensure_future(pool.run(tasks.sleep, 30, timeout_s=0.5))
    await wait_until(lambda: pool.stats().in_flight == 1)
    await pool.stop()
    started = time.monotonic()
    with pytest.raises(WorkTimeout, match=r"^the work did not finish within 0\.5 s$"):
        await asyncio.wait_for(caller, 5)
    assert time.monotonic() - started < 2


async def test_a_queued_job_whose_client_left_never_runs(tmp_path) -> None:
    pool = make_pool(1, timeout_s=5)
    await pool.start()
    try:
        (pid,) = pool.worker_pids()
        blocker = asyncio.ensure_future(pool.run(tasks.sleep, 0.5))
        await wait_until(lambda: pool.stats().in_flight == 1)
        marker = tmp_path / "ran"
        left = asyncio.ensure_future(pool.run(tasks.touch, str(marker)))
        await wait_until(lambda: pool.stats().queue_depth == 1)
        left.cancel()  # the client disconnects while its job waits
        with pytest.raises(asyncio.CancelledError):
            await left
        assert await blocker == 0.5
        assert await pool.run(tasks.pid) == pid  # the pool has moved past the left job
        assert not marker.exists()
        assert pool.restarts == 0
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
        assert info.value.detail == (
            "the worker process died (exit code 3) and was replaced; retry the request"
        )
        assert await survivor == 0.5
        assert await pool.run(tasks.add, 3, 4) == 7
        await wait_until(lambda: pool.ready)
        assert pool.restarts == 1
    finally:
        await pool.stop()


async def test_the_runner_of_a_dead_worker_goes_on_with_a_replacement() -> None:
    pool = make_pool(1)
    await pool.start()
    try:
        with pytest.raises(WorkerDied):
            await pool.run(tasks.crash)
        assert await asyncio.wait_for(pool.run(tasks.add, 1, 2), 20) == 3  # one worker
    finally:
        await pool.stop()


async def test_a_job_for_a_worker_found_dead_runs_on_its_replacement() -> None:
    # Killed while idle, the worker is found dead by the next job (before the idle check,
    # every second, gets to it): the job runs on a replacement, it does not fail.
    pool = make_pool(1)
    await pool.start()
    try:
        (pid,) = pool.worker_pids()
        assert await pool.run(tasks.pid) == pid
        os.kill(pid, signal.SIGKILL)
        await wait_until(lambda: not pool.ready)
        assert await pool.run(tasks.pid) not in (pid, None)
        assert pool.restarts == 1
    finally:
        await pool.stop()


async def test_healthy_idle_workers_are_left_alone() -> None:
    pool = make_pool(1)
    await pool.start()
    try:
        (pid,) = pool.worker_pids()
        await asyncio.sleep(2.5)  # past two of the runner's idle checks
        assert pool.worker_pids() == [pid] and pool.restarts == 0
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


async def test_a_worker_that_cannot_start_is_retried_until_one_does(monkeypatch) -> None:
    pool = LocalPool(
        1, max_queue_depth=4, default_timeout_s=10, preload=("tests.workers._refuse_start",)
    )
    await pool.start()
    try:
        (pid,) = pool.worker_pids()
        monkeypatch.setenv("TENSORLENS_TEST_REFUSE_START", "1")  # replacements fail to start
        os.kill(pid, signal.SIGKILL)
        await wait_until(lambda: pool.restarts == 1)
        await asyncio.sleep(1.0)  # attempts fail meanwhile, backing off
        assert not pool.ready and pool.worker_pids() == []
        monkeypatch.delenv("TENSORLENS_TEST_REFUSE_START")
        await wait_until(lambda: pool.ready, timeout_s=20)
        assert pool.restarts == 1  # one replacement, however many attempts it took
        assert await pool.run(tasks.add, 1, 2) == 3
    finally:
        await pool.stop()


async def test_a_pool_whose_workers_cannot_start_does_not_start(monkeypatch) -> None:
    monkeypatch.setenv("TENSORLENS_TEST_REFUSE_START", "1")
    pool = LocalPool(
        1, max_queue_depth=4, default_timeout_s=10, preload=("tests.workers._refuse_start",)
    )
    with pytest.raises(PoolUnavailable, match=r"^a worker process failed to start: "):
        await pool.start()


async def test_stop_fails_the_waiting_jobs_at_once_and_may_be_called_again() -> None:
    pool = make_pool(1, queue=4)
    await pool.start()
    running = asyncio.ensure_future(pool.run(tasks.sleep, 30, timeout_s=60))
    await wait_until(lambda: pool.stats().in_flight == 1)
    waiting = [asyncio.ensure_future(pool.run(tasks.add, i, i)) for i in range(2)]
    await wait_until(lambda: pool.stats().queue_depth == 2)
    await pool.stop()
    for job in waiting:
        with pytest.raises(PoolUnavailable) as info:
            await asyncio.wait_for(job, 5)
        assert info.value.detail == "the worker pool is shutting down"
    assert pool.ready is False and pool.worker_pids() == []
    await pool.stop()  # again: nothing left to do
    running.cancel()  # its runner is gone: it would wait out its deadline and the grace
    with pytest.raises(asyncio.CancelledError):
        await running


async def test_pool_refuses_work_when_not_started_or_stopped() -> None:
    pool = make_pool()
    assert pool.ready is False
    await pool.stop()  # stopping one never started (an app whose start failed) is a no-op
    with pytest.raises(PoolUnavailable) as caught:
        await pool.run(tasks.add, 1, 2)
    assert caught.value.detail == "the worker pool is not running"
    await pool.start()
    await pool.stop()
    with pytest.raises(PoolUnavailable):  # at once, not after the request's timeout
        await pool.run(tasks.add, 1, 2, timeout_s=30)


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
    started = time.perf_counter()
    assert await get_within(queue, 0.0) is None
    assert await get_within(queue, -1.0) is None  # a deadline already past: no wait
    assert await get_within(queue, 0.2) is None
    assert 0.2 <= time.perf_counter() - started < 0.6
    queue.put_nowait(1)
    assert await get_within(queue, 0.0) == 1


async def test_a_full_queue_asks_to_retry_after_a_second_by_default() -> None:
    pool = LocalPool(1, max_queue_depth=1, default_timeout_s=10, preload=())
    await pool.start()
    try:
        running = asyncio.ensure_future(pool.run(tasks.sleep, 0.3))
        await wait_until(lambda: pool.stats().in_flight == 1)
        waiting = asyncio.ensure_future(pool.run(tasks.add, 1, 1))
        await wait_until(lambda: pool.stats().queue_depth == 1)
        with pytest.raises(QueueFull) as info:
            await pool.run(tasks.add, 2, 2)
        assert info.value.context["retry_after_s"] == 1
        assert await running == 0.3 and await waiting == 2
    finally:
        await pool.stop()


async def test_stats_say_how_many_workers_live_wait_and_work() -> None:
    pool = make_pool(2, queue=3)
    assert pool.stats() == PoolStats(2, 0, 0, 3, 0, 0)  # not started: nothing alive
    await pool.start()
    try:
        assert pool.stats() == PoolStats(2, 2, 0, 3, 0, 0)
        running = [asyncio.ensure_future(pool.run(tasks.sleep, 0.5)) for _ in range(3)]
        await wait_until(lambda: pool.stats().in_flight == 2)
        assert pool.stats() == PoolStats(2, 2, 1, 3, 2, 0)
        await asyncio.gather(*running)
        assert pool.stats() == PoolStats(2, 2, 0, 3, 0, 0)  # each job counted out once
    finally:
        await pool.stop()
    assert pool.stats().workers_alive == 0


def test_execute_turns_every_outcome_into_a_reply() -> None:
    assert execute(lambda: 5) == ("ok", 5)
    tag, domain = execute(tasks.raise_domain_error)
    assert tag == "err" and isinstance(domain, InvalidParameter) and domain.parameter == "sigma"
    tag, memory = execute(tasks.out_of_memory)
    assert tag == "err" and type(memory) is InvalidInput
    assert memory.detail == "the request needs more memory than a worker has"
    tag, bug = execute(tasks.raise_bug)
    assert tag == "err" and type(bug) is RemoteError
    assert bug.detail == "ZeroDivisionError: division by zero"


def test_a_worker_loop_answers_each_job_and_ends_with_its_runner(monkeypatch) -> None:
    # The worker's side of the channel, run in a thread here so that every step is seen.
    threads = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    for var in threads:
        monkeypatch.delenv(var, raising=False)
    runner, worker = socket.socketpair()
    loop = threading.Thread(target=_worker_main, args=(worker, ("json",), 0))
    loop.start()
    try:
        assert _channel.receive(runner) == _channel.dumps(("ready", os.getpid()))
        for job, reply in [
            ((tasks.add, (2, 3)), ("ok", 5)),
            ((tasks.unpicklable_result, ()), None),
        ]:
            _channel.send(runner, _channel.dumps(job))
            answer = _channel.loads(_channel.receive(runner))
            if reply is not None:
                assert answer == reply
            else:
                assert answer[0] == "err" and "could not be sent" in answer[1].detail
        assert [os.environ[var] for var in threads] == ["1", "1", "1"]  # a core per worker
    finally:
        runner.close()  # the runner goes away: the loop returns
        loop.join(timeout=10)
        worker.close()
    assert not loop.is_alive()


@pytest.mark.parametrize("keep_freed_bytes", [DEFAULT_KEEP_FREED_BYTES, 1 << 20, 0])
async def test_workers_keep_freed_memory_for_the_next_request(keep_freed_bytes: int) -> None:
    # glibc by default returns big freed arrays to the kernel, so every request faults
    # their pages in again; the setting has the worker's heap keep them. 1 MiB: less than
    # one temporary, which glibc then maps and unmaps each time, as by default.
    pool = make_pool(keep_freed_bytes=keep_freed_bytes)
    await pool.start()
    try:
        faults = await pool.run(tasks.page_faults_of_big_temporaries, 10)
    finally:
        await pool.stop()
    # 10 rounds of three 16 MiB arrays: about 15,000 faults handed back (huge pages make
    # it fewer than 4 KiB pages would), none kept.
    if keep_freed_bytes >= 48 << 20:
        assert faults < 100, faults
    else:
        assert faults > 3000, faults


def test_keep_freed_memory_here_as_a_worker_does() -> None:
    # What a worker does at start, in this process (which then keeps freed memory too:
    # faster, nothing else), so that the call's every detail is seen here.
    assert keep_freed_memory(0) is False  # 0: glibc's defaults, untouched
    assert keep_freed_memory(-1) is False
    assert keep_freed_memory(DEFAULT_KEEP_FREED_BYTES) is True  # Linux with glibc here
    assert tasks.page_faults_of_big_temporaries(5) < 100
