"""The Ray backend: the same work as the local backend, on a Ray cluster.

Importing this package imports Ray (the optional ``ray`` extra); the local backend never does.
Image pipelines run on long-lived image worker actors (or as Ray tasks), trainings as Ray
tasks that stream their progress and return the weights, and loaded models as Ray actors
that batch their predictions. Ray's exceptions become :mod:`workers.errors` classes in one
place, :func:`workers.ray_backend._errors.map_ray_errors`.
"""

from __future__ import annotations

import asyncio

from workers.backend import Backend, BackendSettings, model_store
from workers.ray_backend.lanes import TrainingTasks
from workers.ray_backend.pool import RayPool
from workers.ray_backend.runtime import RayRuntime, gpu_shares
from workers.ray_backend.serving import RayModelServer
from workers.training.lanes import Lanes

__all__ = ["RayModelServer", "RayPool", "RayRuntime", "TrainingTasks", "build"]


async def build(settings: BackendSettings) -> Backend:
    """Joins Ray (or starts a local instance) and builds the three parts on it.

    Joined here rather than at start: the GPUs a training and a model ask for depend on
    whether the cluster has any (:func:`~workers.ray_backend.runtime.gpu_shares`). The
    backend's stop leaves the cluster.
    """
    runtime = RayRuntime(
        settings.ray_address, settings.ray_num_cpus, settings.ray_object_store_bytes
    )
    await asyncio.to_thread(runtime.start)
    try:
        shares = gpu_shares(settings, runtime.resources().get("GPU", 0.0))
        pool = RayPool(
            task_cpus=settings.ray_image_cpus,
            placement=settings.ray_image_placement,  # type: ignore[arg-type]
            max_queue_depth=settings.max_queue_depth,
            default_timeout_s=settings.request_timeout_s,
            retry_after_s=settings.retry_after_s,
            keep_freed_bytes=settings.image_worker_keep_freed_bytes,
        )
        trainings = Lanes(
            TrainingTasks(
                cpu_threads=settings.training_cpu_threads,
                task_cpus=settings.ray_training_cpus,
                task_gpus=shares.training,
            ),
            max_queued=settings.max_queued_trainings,
            max_job_s=settings.max_training_s,
        )
        server = RayModelServer(
            model_store(settings),
            cache_size=settings.model_cache_size,
            batching=settings.batching,
            max_batch_size=settings.max_batch_size,
            max_queue_delay_ms=settings.max_queue_delay_ms,
            actor_cpus=settings.ray_model_cpus,
            actor_gpus=shares.model,
            timeout_s=settings.request_timeout_s,
        )
    except BaseException:
        runtime.stop()
        raise
    return Backend(pool, trainings, server, on_stop=runtime.stop)
