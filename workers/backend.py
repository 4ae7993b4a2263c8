"""What the HTTP face needs from a backend, and the one way to build one.

The way httpx puts its transports behind ``BaseTransport``, a backend is three parts
behind small protocols:

:class:`WorkerPool`
    runs image work (a top-level function and its arguments) behind a bounded queue;
:class:`TrainingLanes`
    runs training jobs and streams their progress (one class,
    :class:`workers.training.lanes.Lanes`, over a backend's way of launching a job);
:class:`ModelServing`
    loads trained models and answers predictions.

:class:`Backend` bundles the three with one ``start``/``stop``. Each backend is one
module with ``async def build(settings) -> Backend``: :mod:`workers.local` (this
machine's processes) and :mod:`workers.ray_backend` (a Ray cluster), named in
:data:`BACKENDS`. Adding a backend is writing such a module and naming it there; the
service never knows which one it talks to.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    import asyncio

    from workers.serving import LoadedModel, Prediction
    from workers.training.checkpoints import ModelRef, ModelStore
    from workers.training.lanes import Outcome

T = TypeVar("T")

#: ``settings.executor`` -> the module whose ``build(settings)`` makes that backend.
BACKENDS = {"local": "workers.local", "ray": "workers.ray_backend"}


class BackendSettings(Protocol):
    """The settings the backends read (``service.settings.Settings`` has them all)."""

    @property
    def executor(self) -> str: ...
    @property
    def data_dir(self) -> Path: ...

    # image pool
    @property
    def image_workers(self) -> int: ...
    @property
    def max_queue_depth(self) -> int: ...
    @property
    def request_timeout_s(self) -> float: ...
    @property
    def retry_after_s(self) -> int: ...
    @property
    def image_worker_keep_freed_bytes(self) -> int: ...

    # training lanes
    @property
    def devices(self) -> str: ...
    @property
    def lanes_per_device(self) -> int: ...
    @property
    def training_cpu_threads(self) -> int: ...
    @property
    def max_queued_trainings(self) -> int: ...
    @property
    def max_training_s(self) -> float: ...

    # model serving
    @property
    def inference_device(self) -> str: ...
    @property
    def inference_cpu_threads(self) -> int: ...
    @property
    def batch_instances(self) -> int: ...
    @property
    def model_cache_size(self) -> int: ...
    @property
    def batching(self) -> bool: ...
    @property
    def max_batch_size(self) -> int: ...
    @property
    def max_queue_delay_ms(self) -> float: ...

    # Ray
    @property
    def ray_address(self) -> str: ...
    @property
    def ray_num_cpus(self) -> int | None: ...
    @property
    def ray_object_store_bytes(self) -> int: ...
    @property
    def ray_image_cpus(self) -> float: ...
    @property
    def ray_image_placement(self) -> str: ...
    @property
    def ray_training_cpus(self) -> float: ...
    @property
    def ray_training_gpus(self) -> float | None: ...
    @property
    def ray_model_cpus(self) -> float: ...
    @property
    def ray_model_gpus(self) -> float | None: ...


@dataclass(frozen=True)
class PoolStats:
    """A snapshot for health checks and metrics."""

    workers: int
    workers_alive: int
    queue_depth: int
    queue_capacity: int
    in_flight: int
    restarts: int


class WorkerPool(Protocol):
    """Runs image work: the local pool's processes, a Ray cluster's image workers."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    @property
    def ready(self) -> bool: ...

    def stats(self) -> PoolStats: ...

    async def run(self, fn: Callable[..., T], *args: Any, timeout_s: float | None = None) -> T:
        """Run ``fn(*args)`` on a worker and return its result or raise its domain error.

        Raises
        ------
        QueueFull
            The bounded queue is full (context: ``retry_after_s``).
        WorkTimeout
            The job did not finish within ``timeout_s`` (queue wait included).
        WorkerDied
            The worker process running the job died; it has been replaced.
        PoolUnavailable
            The pool is not started.
        """
        ...


#: ``on_progress(job_id, progress)``: a training reported its progress.
ProgressCallback = Callable[[str, dict[str, Any]], None]


class TrainingLanes(Protocol):
    """Runs training jobs: ``on_start(job_id, device)`` when one starts, ``on_progress``
    at each report, and the future :meth:`submit` returns resolves with its outcome."""

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

    def queue_full(self) -> Exception: ...

    def submit(self, job_id: str, config: dict[str, Any]) -> asyncio.Future[Outcome]: ...

    def cancel(self, job_id: str) -> None: ...


class ModelServing(Protocol):
    """Serves the trained models of :attr:`store`: loads them (a cache) and predicts."""

    @property
    def store(self) -> ModelStore: ...

    def resolve(
        self, name: str, version: int | None = None, alias: str | None = None
    ) -> ModelRef: ...

    async def model(self, target: ModelRef | str) -> LoadedModel: ...

    async def predict(
        self, target: ModelRef | str, inputs: Any
    ) -> tuple[LoadedModel, Prediction]: ...

    async def unload(self, target: ModelRef | str) -> None: ...

    async def close(self) -> None: ...


class Backend:
    """A backend's three parts, started and stopped together.

    ``on_stop`` runs last, after the parts have stopped: e.g. leaving the Ray cluster
    that :meth:`start` never joined (``build`` did, to size the parts).
    """

    def __init__(
        self,
        pool: WorkerPool,
        lanes: TrainingLanes,
        models: ModelServing,
        *,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self.pool = pool
        self.lanes = lanes
        self.models = models
        self._stack = AsyncExitStack()
        if on_stop is not None:
            self._stack.callback(on_stop)

    async def start(self) -> None:
        """Starts the pool, then the lanes; on a failure, stops what had started."""
        async with AsyncExitStack() as stack:
            stack.push_async_exit(self._stack)
            stack.push_async_callback(self.models.close)
            await self.pool.start()
            stack.push_async_callback(self.pool.stop)
            await self.lanes.start()
            stack.push_async_callback(self.lanes.stop)
            self._stack = stack.pop_all()

    async def stop(self) -> None:
        """Stops the lanes (every job ends), the model server, the pool; then ``on_stop``."""
        await self._stack.aclose()


def model_store(settings: BackendSettings) -> ModelStore:
    """The store every backend serves from: ``<data_dir>/models`` on the API's machine."""
    from workers.training.checkpoints import ModelStore

    return ModelStore(settings.data_dir / "models")


async def build(settings: BackendSettings) -> Backend:
    """The backend ``settings.executor`` names (see :data:`BACKENDS`), not yet started.

    Its module is imported here, so the local backend never imports Ray.
    """
    module = importlib.import_module(BACKENDS[settings.executor])
    backend: Backend = await module.build(settings)
    return backend
