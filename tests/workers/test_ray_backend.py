"""The Ray backend's pieces against a real local Ray cluster (the session's `ray_cluster`)."""

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from tests.workers import _pool_tasks as tasks
from workers.errors import (
    InvalidParameter,
    PoolUnavailable,
    QueueFull,
    RemoteError,
    WorkerDied,
    WorkTimeout,
)
from workers.ray_backend import RayLanes, RayModelServer, RayPool
from workers.training import ModelStore
from workers.training.inference import LoadedModel

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("ray_cluster")]

SMALL = {
    "task": "spiral",
    "data": {"points_per_class": 50, "classes": 3, "seed": 3},
    "model": {"hidden": [8], "activation": "relu"},
    "optimizer": {"name": "adam", "lr": 1e-2},
    "epochs": 20,
    "report_every": 5,
    "device": "auto",
}
LONG = {**SMALL, "model": {"hidden": [256, 256]}, "epochs": 10_000, "report_every": 1}


def ray_processes(title: str) -> list[int]:
    """Pids of Ray workers whose process title is ``ray::<title>`` (what they are running)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(f"ray::{title}".encode()):
                pids.append(int(entry.name))
    return pids


async def wait_until(condition: Callable[[], object], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


@pytest.fixture(params=["actors", "tasks"])
async def pool(request: pytest.FixtureRequest) -> AsyncIterator[RayPool]:
    pool = RayPool(
        task_cpus=1, max_queue_depth=2, default_timeout_s=20, preload=(), placement=request.param
    )
    await pool.start()
    yield pool
    await pool.stop()


def busy_workers(pool: RayPool) -> list[int]:
    """Pids of the Ray workers now running the pool's work (by their process title)."""
    return ray_processes("ImageWorker.run" if pool.placement == "actors" else "tensorlens-image")


async def test_runs_work_on_ray_workers_in_parallel(pool: RayPool) -> None:
    assert pool.ready and pool.stats().workers == 2  # two 1-CPU slots on the 2-CPU cluster
    assert await pool.run(tasks.add, 2, 3) == 5
    assert os.getpid() not in set(await asyncio.gather(*(pool.run(tasks.pid) for _ in range(4))))
    started = time.perf_counter()
    await asyncio.gather(pool.run(tasks.sleep, 1.0), pool.run(tasks.sleep, 1.0))
    assert time.perf_counter() - started < 1.8


async def test_errors_keep_their_class_and_the_pool_keeps_serving(pool: RayPool) -> None:
    with pytest.raises(InvalidParameter) as info:
        await pool.run(tasks.raise_domain_error)
    assert info.value.parameter == "sigma"
    with pytest.raises(RemoteError, match="ZeroDivisionError"):
        await pool.run(tasks.raise_bug)
    big = np.arange(3_000_000, dtype=np.float64)  # through the object store, both ways
    assert np.array_equal(await pool.run(np.copy, big), big)


async def test_a_full_queue_answers_at_once(pool: RayPool) -> None:
    running = [asyncio.ensure_future(pool.run(tasks.sleep, 1.0)) for _ in range(4)]
    await asyncio.sleep(0)
    assert pool.stats().queue_depth == 2 and pool.stats().in_flight == 2
    started = time.perf_counter()
    with pytest.raises(QueueFull) as info:
        await pool.run(tasks.add, 1, 1)
    assert time.perf_counter() - started < 0.1 and info.value.context["retry_after_s"] == 1
    assert await asyncio.gather(*running) == [1.0] * 4


async def test_a_runaway_task_is_stopped_at_its_deadline(pool: RayPool) -> None:
    started = time.perf_counter()
    with pytest.raises(WorkTimeout):
        await pool.run(tasks.sleep, 30, timeout_s=0.5)
    assert time.perf_counter() - started < 5
    await wait_until(lambda: not busy_workers(pool))  # its worker was killed
    assert await pool.run(tasks.add, 1, 2) == 3
    if pool.placement == "actors":
        # The killed actor rejoins once Ray restarted it in place: both slots serve again.
        await wait_until(lambda: pool.stats().workers_alive == 2)
        started = time.perf_counter()
        await asyncio.gather(pool.run(tasks.sleep, 1.0), pool.run(tasks.sleep, 1.0))
        assert time.perf_counter() - started < 1.8


async def test_a_client_that_goes_away_loses_no_image_worker_actor() -> None:
    pool = RayPool(task_cpus=1, max_queue_depth=2, default_timeout_s=20, preload=())
    await pool.start()
    try:
        for _ in range(3):
            gone = asyncio.ensure_future(pool.run(tasks.sleep, 0.5))
            await asyncio.sleep(0.1)
            gone.cancel()
            with pytest.raises(asyncio.CancelledError):
                await gone
        assert pool.stats().in_flight == 0
        started = time.perf_counter()
        await asyncio.gather(pool.run(tasks.sleep, 1.0), pool.run(tasks.sleep, 1.0))
        assert time.perf_counter() - started < 2.8  # behind at most the last 0.5 s call
    finally:
        await pool.stop()


async def test_a_dead_worker_fails_its_request_and_ray_replaces_it(pool: RayPool) -> None:
    with pytest.raises(WorkerDied, match="retry"):
        await pool.run(tasks.crash)
    assert pool.stats().restarts == 1
    assert await pool.run(tasks.add, 1, 2) == 3


async def test_image_workers_are_one_per_task_cpus_of_each_node() -> None:
    pool = RayPool(task_cpus=0.5, max_queue_depth=0, default_timeout_s=20, preload=())
    await pool.start()
    try:
        assert pool.stats().workers == 4  # the 2-CPU node, half a CPU each
        pids = await asyncio.gather(*(pool.run(tasks.sleep_pid, 0.5) for _ in range(4)))
        assert len(set(pids)) == 4
    finally:
        await pool.stop()
    await wait_until(lambda: not ray_processes("ImageWorker"))  # stopping kills them


async def test_a_stopped_pool_refuses_work(pool: RayPool) -> None:
    await pool.stop()
    assert not pool.ready
    with pytest.raises(PoolUnavailable):
        await pool.run(tasks.add, 1, 1)


@pytest.fixture
async def lanes() -> AsyncIterator[RayLanes]:
    lanes = RayLanes(max_queued=4, task_cpus=1)
    progress: list[tuple[str, dict]] = []
    started: list[tuple[str, str]] = []
    lanes.on_progress = lambda job_id, p: progress.append((job_id, p))
    lanes.on_start = lambda job_id, device: started.append((job_id, device))
    lanes.progress, lanes.started = progress, started  # type: ignore[attr-defined]
    await lanes.start()
    yield lanes
    await lanes.stop()


async def test_a_training_streams_progress_and_returns_its_weights(lanes: RayLanes) -> None:
    assert not lanes.has_cuda  # a CPU-only cluster: trainings ask for no GPU
    outcome = await lanes.submit("a", SMALL)
    assert outcome.status == "succeeded", outcome.reason
    assert lanes.started == [("a", "cpu")]  # type: ignore[attr-defined]
    epochs = [p["epoch"] for _, p in lanes.progress]  # type: ignore[attr-defined]
    assert epochs == [0, 5, 10, 15, 19]
    assert outcome.metadata is not None and outcome.weights
    assert outcome.metadata["final_metrics"]["epoch"] == 19


async def test_same_config_gives_the_same_weights_as_the_local_lanes(lanes: RayLanes) -> None:
    from workers.training.lanes import DeviceLanes

    local = DeviceLanes(["cpu"], max_queued=1)
    await local.start()
    try:
        here = await local.submit("local", SMALL)
    finally:
        await local.stop()
    there = await lanes.submit("ray", SMALL)
    assert here.weights == there.weights


async def test_cancelling_a_running_training_stops_its_task(lanes: RayLanes) -> None:
    outcome = lanes.submit("long", LONG)
    await wait_until(lambda: lanes.running() == ["long"] and lanes.progress)  # type: ignore[attr-defined]
    lanes.cancel("long")
    started = time.monotonic()
    assert (await outcome).status == "cancelled"
    assert time.monotonic() - started < 10
    await wait_until(lambda: not ray_processes("tensorlens-train"))


async def test_a_dead_training_worker_fails_its_job_with_the_reason(lanes: RayLanes) -> None:
    outcome = lanes.submit("doomed", LONG)
    await wait_until(lambda: lanes.running() == ["doomed"] and ray_processes("tensorlens-train"))
    for pid in ray_processes("tensorlens-train"):
        os.kill(pid, signal.SIGKILL)
    result = await outcome
    assert result.status == "failed"
    assert "died" in (result.reason or "")
    after = await lanes.submit("after", SMALL)  # the lanes outlive the dead worker
    assert after.status == "succeeded"


async def test_a_full_training_queue_is_refused(lanes: RayLanes) -> None:
    lanes.max_queued = 1
    first = lanes.submit("one", LONG)
    with pytest.raises(QueueFull):
        lanes.submit("two", SMALL)
    lanes.cancel("one")
    await asyncio.gather(first, return_exceptions=True)


@pytest.fixture(scope="module")
async def trained(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    """Two small models trained on the cluster, in a store on this node."""
    store = ModelStore(tmp_path_factory.mktemp("ray-models"))
    lanes = RayLanes(max_queued=4)
    await lanes.start()
    seeds = (1, 2)
    outcomes = await asyncio.gather(
        *(
            lanes.submit(f"m{seed}", {**SMALL, "data": {**SMALL["data"], "seed": seed}})
            for seed in seeds
        )
    )
    await lanes.stop()
    for seed, outcome in zip(seeds, outcomes, strict=True):
        assert outcome.weights is not None and outcome.metadata is not None
        store.save_bytes(f"{seed:032x}", outcome.weights, outcome.metadata)
    return store


@pytest.fixture
async def server(trained: ModelStore) -> AsyncIterator[RayModelServer]:
    server = RayModelServer(
        trained,
        cache_size=1,
        batching=True,
        max_batch_size=256,
        max_queue_delay_ms=0,
        actor_cpus=0,
        actor_gpus=0,
        timeout_s=30,
    )
    yield server
    await server.close()


async def test_actors_serve_what_the_model_computes_here(server: RayModelServer) -> None:
    import ray

    model_id = f"{1:032x}"
    inputs = np.random.default_rng(0).uniform(-1, 1, (64, 2))
    results = await asyncio.gather(
        *(server.predict(model_id, inputs[i : i + 1]) for i in range(64))
    )
    here = LoadedModel.from_store(server.store, model_id, "cpu")
    local = here.forward(here.validate_inputs(inputs))
    gathered = np.concatenate([prediction["probabilities"] for _, prediction in results])
    np.testing.assert_allclose(gathered, local["probabilities"], rtol=1e-6)
    actor = server.actor_for(model_id)
    assert ray.get(actor.device.remote()) == "cpu"  # asked for no GPU, holds none


async def test_evicted_actors_are_killed(server: RayModelServer) -> None:
    import ray

    first, second = f"{1:032x}", f"{2:032x}"
    await server.predict(first, [[0.0, 0.0]])
    actor = server.actor_for(first)
    await server.predict(second, [[0.0, 0.0]])  # cache_size=1: the first actor goes
    assert server.actor_for(first) is None
    with pytest.raises(ray.exceptions.RayActorError):
        await asyncio.wait_for(actor.device.remote(), 30)


async def test_a_dead_actor_fails_its_request_and_the_next_one_gets_a_new_actor(
    server: RayModelServer,
) -> None:
    import ray

    model_id = f"{1:032x}"
    await server.predict(model_id, [[0.0, 0.0]])
    ray.kill(server.actor_for(model_id))
    with pytest.raises(WorkerDied):
        await server.predict(model_id, [[0.0, 0.0]])
    _, prediction = await server.predict(model_id, [[0.0, 0.0]])
    assert prediction["probabilities"].shape == (1, 3)
