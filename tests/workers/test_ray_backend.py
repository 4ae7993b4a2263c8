"""The Ray backend's pieces against a real local Ray cluster (the session's `ray_cluster`)."""

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest

from tests._support import ray_processes, wait_until
from tests.workers import _pool_tasks as tasks
from workers.errors import (
    InvalidParameter,
    PoolUnavailable,
    QueueFull,
    RemoteError,
    WorkCancelled,
    WorkerDied,
    WorkTimeout,
)
from workers.local import TrainingProcesses
from workers.ray_backend import RayModelServer, RayPool, TrainingTasks
from workers.ray_backend.lanes import _DirectRun
from workers.ray_backend.runtime import gpu_shares
from workers.ray_backend.serving import actor_for
from workers.serving import LoadedModel, ModelServer
from workers.training import ModelStore
from workers.training.lanes import Lanes

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


@pytest.mark.parametrize("keep_freed_bytes", [64 << 20, 0])
async def test_image_worker_actors_keep_freed_memory_as_told(keep_freed_bytes: int) -> None:
    pool = RayPool(
        task_cpus=2, max_queue_depth=2, default_timeout_s=20, keep_freed_bytes=keep_freed_bytes
    )
    await pool.start()
    try:
        faults = await pool.run(tasks.page_faults_of_big_temporaries, 10)
    finally:
        await pool.stop()
    # 10 rounds of three 16 MiB temporaries: about 15,000 faults when each is handed back.
    assert (faults < 100) if keep_freed_bytes else (faults > 3000), faults


async def test_a_stopped_pool_refuses_work(pool: RayPool) -> None:
    await pool.stop()
    assert not pool.ready
    with pytest.raises(PoolUnavailable):
        await pool.run(tasks.add, 1, 1)


async def test_same_config_gives_the_same_weights_as_the_local_lanes() -> None:
    # The rest of the lanes' behaviour, on both backends: tests/workers/test_lanes.py.
    outcomes = []
    for launcher in (TrainingProcesses(["cpu"]), TrainingTasks(task_cpus=1)):
        lanes = Lanes(launcher, max_queued=1)
        await lanes.start()
        try:
            outcomes.append(await lanes.submit("same", SMALL))
        finally:
            await lanes.stop()
    here, there = outcomes
    assert here.status == there.status == "succeeded"
    assert here.weights == there.weights


def _stream_that_stops_its_way(on_interrupt: str, end_at: int | None) -> Iterator[Any]:
    """A training task's stream that reacts to its cancel (an interrupt) by ending
    (``return``, what Ray reports when the interrupt lands in its own code around a yield)
    or by its worker's exit, or ends by itself at item ``end_at``."""
    yield "started", "cpu"
    try:
        for epoch in range(100_000):
            if epoch == end_at:
                return
            time.sleep(0.01)
            yield "progress", {"epoch": epoch}
    except KeyboardInterrupt:
        if on_interrupt == "exit":
            os._exit(3)


@pytest.mark.parametrize("on_interrupt", ["return", "exit"])
async def test_a_training_stream_that_ends_any_way_after_a_cancel_was_cancelled(
    on_interrupt: str,
) -> None:
    import ray

    task = ray.remote(max_calls=1)(_stream_that_stops_its_way)
    run = _DirectRun(task.options(num_returns="streaming").remote(on_interrupt, None))
    events = run.events()
    assert [await anext(events), await anext(events)] == [
        ("started", "cpu"),
        ("progress", {"epoch": 0}),
    ]
    run.stop(force=False)
    with pytest.raises(WorkCancelled):  # the lanes end the job `cancelled`
        async for _ in events:
            pass


async def test_a_training_stream_that_ends_early_by_itself_is_no_cancel() -> None:
    import ray

    task = ray.remote(max_calls=1)(_stream_that_stops_its_way)
    run = _DirectRun(task.options(num_returns="streaming").remote("exit", 2))
    items = [item async for item in run.events()]  # the lanes: "ended without an outcome"
    assert [kind for kind, _ in items] == ["started", "progress", "progress"]


@pytest.mark.parametrize(
    ("cluster_gpus", "settings", "shares"),
    [
        (0, {}, (0.0, 0.0)),
        (2, {}, (0.75, 0.25 / 8)),
        (2, {"model_cache_size": 4}, (0.75, 0.25 / 4)),
        (2, {"ray_training_gpus": 1.0, "ray_model_gpus": 0.5}, (1.0, 0.5)),
        (0, {"ray_training_gpus": 0.5}, (0.5, 0.0)),
    ],
)
def test_gpu_shares_default_to_a_training_and_the_cached_models_sharing_a_gpu(
    cluster_gpus: float, settings: dict, shares: tuple[float, float]
) -> None:
    from service.settings import Settings

    assert gpu_shares(Settings(**settings), cluster_gpus) == shares


@pytest.fixture(scope="module")
async def trained(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    """Two small models trained on the cluster, in a store on this node."""
    store = ModelStore(tmp_path_factory.mktemp("ray-models"))
    lanes = Lanes(TrainingTasks(), max_queued=4)
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
async def server(trained: ModelStore) -> AsyncIterator[ModelServer]:
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


async def test_actors_serve_what_the_model_computes_here(server: ModelServer) -> None:
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
    actor = actor_for(server, model_id)
    assert ray.get(actor.device.remote()) == "cpu"  # asked for no GPU, holds none


async def assert_killed(actor: Any) -> None:
    import ray

    with pytest.raises(ray.exceptions.RayActorError):
        await asyncio.wait_for(actor.device.remote(), 30)


async def test_evicted_actors_are_killed(server: ModelServer) -> None:
    first, second = f"{1:032x}", f"{2:032x}"
    await server.predict(first, [[0.0, 0.0]])
    actor = actor_for(server, first)
    await server.predict(second, [[0.0, 0.0]])  # cache_size=1: the first actor goes
    assert actor_for(server, first) is None
    await assert_killed(actor)


async def test_unloading_a_model_waits_for_its_requests_then_kills_its_actor(
    server: ModelServer,
) -> None:
    model_id = f"{1:032x}"
    await server.predict(model_id, [[0.0, 0.0]])
    actor = actor_for(server, model_id)
    inputs = np.random.default_rng(1).uniform(-1, 1, (8, 1, 2))
    in_flight = [asyncio.ensure_future(server.predict(model_id, rows)) for rows in inputs]
    await asyncio.sleep(0)  # the requests are with the model before the unload
    await server.unload(model_id)
    assert all(task.done() for task in in_flight)  # unload returned after its requests
    assert all(task.result()[1]["classes"].shape == (1,) for task in in_flight)
    assert actor_for(server, model_id) is None
    await assert_killed(actor)


async def test_a_dead_actor_fails_its_request_and_the_next_one_gets_a_new_actor(
    server: ModelServer,
) -> None:
    import ray

    model_id = f"{1:032x}"
    await server.predict(model_id, [[0.0, 0.0]])
    ray.kill(actor_for(server, model_id))
    with pytest.raises(WorkerDied):
        await server.predict(model_id, [[0.0, 0.0]])
    _, prediction = await server.predict(model_id, [[0.0, 0.0]])
    assert prediction["probabilities"].shape == (1, 3)
