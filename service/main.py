"""Assembles the application: settings, worker pool, middleware, error handlers, routers."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service.errors import install_error_handlers
from service.observability import Metrics, RequestContextMiddleware
from service.routes import health, images, models, operation_id, samples, trainings, v2
from service.routes._lean import add_lean_routes
from service.settings import Settings, get_settings
from workers.pool import LocalPool, WorkerPool
from workers.training import JobStore, ModelStore, resolve_device
from workers.training.lanes import DeviceLanes, TrainingLanes, plan_lanes
from workers.training.manager import TrainingManager
from workers.training.serving import ModelServer

#: Room for multipart framing around an upload of exactly ``max_upload_bytes``.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


def _configure_logging(level: str) -> None:
    # The service's own lines (one JSON line per request) go to stderr however the app
    # is served: `python -m service`, `uvicorn service.main:app` or a test client.
    logger = logging.getLogger("tensorlens")
    logger.setLevel(level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    _configure_logging(settings.log_level)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        model_store = ModelStore(settings.data_dir / "models")
        async with AsyncExitStack() as stack:
            if settings.executor == "ray":
                pool, lanes, server = await _ray_backend(settings, model_store, stack)
            else:
                pool, lanes, server = _local_backend(settings, model_store)
            await pool.start()
            stack.push_async_callback(pool.stop)
            app.state.pool = pool
            metrics.watch_pool(pool.stats)
            job_store = JobStore(settings.data_dir / "jobs.sqlite3")
            stack.callback(job_store.close)
            manager = TrainingManager(job_store, model_store, lanes)
            await manager.start()
            stack.push_async_callback(manager.stop)
            metrics.watch_trainings(lanes.queued, lambda: len(lanes.running()))
            app.state.trainings = manager
            app.state.model_server = server
            stack.push_async_callback(server.close)
            yield

    app = FastAPI(
        title="tensorlens",
        version="0.1.0",
        summary="Image operations and small-model training and inference over HTTP.",
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
        telemetry=None
        if settings.opentelemetry
        else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    install_error_handlers(app)
    # Routes are matched in this order: the busiest (predictions, on the lean path) first.
    add_lean_routes(app, models.predictions)
    add_lean_routes(app, v2.predictions)
    routers = (
        models.router,
        v2.router,
        images.router,
        samples.router,
        trainings.router,
        health.router,
    )
    for router in routers:
        app.include_router(router)
    if settings.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    # Added last so it is outermost: every response, CORS preflights included, gets an id.
    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        max_multipart_bytes=settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES,
        max_other_bytes=settings.max_json_bytes,
    )
    return app


def _local_backend(
    settings: Settings, model_store: ModelStore
) -> tuple[LocalPool, DeviceLanes, ModelServer]:
    # Settings that can be wrong are checked before any process starts.
    lane_devices = plan_lanes(settings.devices, settings.lanes_per_device)
    inference_device = resolve_device(settings.inference_device)
    pool = LocalPool(
        settings.image_workers,
        max_queue_depth=settings.max_queue_depth,
        default_timeout_s=settings.request_timeout_s,
        retry_after_s=settings.retry_after_s,
    )
    lanes = DeviceLanes(
        lane_devices,
        max_queued=settings.max_queued_trainings,
        cpu_threads=settings.training_cpu_threads,
        max_job_s=settings.max_training_s,
    )
    server = ModelServer(
        model_store,
        device=inference_device,
        cache_size=settings.model_cache_size,
        batching=settings.batching,
        max_batch_size=settings.max_batch_size,
        max_queue_delay_ms=settings.max_queue_delay_ms,
        cpu_threads=settings.inference_cpu_threads,
        batch_instances=settings.batch_instances,
    )
    return pool, lanes, server


async def _ray_backend(
    settings: Settings, model_store: ModelStore, stack: AsyncExitStack
) -> tuple[WorkerPool, TrainingLanes, ModelServer]:
    # Imported here: the local backend never imports Ray.
    from workers.ray_backend import RayLanes, RayModelServer, RayPool, RayRuntime
    from workers.ray_backend.runtime import MODEL_GPU_SHARE

    runtime = RayRuntime(
        settings.ray_address, settings.ray_num_cpus, settings.ray_object_store_bytes
    )
    await asyncio.to_thread(runtime.start)
    stack.callback(runtime.stop)
    has_gpus = runtime.resources().get("GPU", 0) > 0
    model_gpus = settings.ray_model_gpus
    if model_gpus is None:
        model_gpus = MODEL_GPU_SHARE / settings.model_cache_size if has_gpus else 0.0
    pool = RayPool(
        task_cpus=settings.ray_image_cpus,
        placement=settings.ray_image_placement,
        max_queue_depth=settings.max_queue_depth,
        default_timeout_s=settings.request_timeout_s,
        retry_after_s=settings.retry_after_s,
    )
    lanes = RayLanes(
        max_queued=settings.max_queued_trainings,
        cpu_threads=settings.training_cpu_threads,
        max_job_s=settings.max_training_s,
        task_cpus=settings.ray_training_cpus,
        task_gpus=settings.ray_training_gpus,
    )
    server = RayModelServer(
        model_store,
        cache_size=settings.model_cache_size,
        batching=settings.batching,
        max_batch_size=settings.max_batch_size,
        max_queue_delay_ms=settings.max_queue_delay_ms,
        actor_cpus=settings.ray_model_cpus,
        actor_gpus=model_gpus,
        timeout_s=settings.request_timeout_s,
    )
    return pool, lanes, server


@functools.cache
def _default_app() -> FastAPI:
    return create_app()


def __getattr__(name: str) -> FastAPI:
    # `uvicorn service.main:app` builds the app on first access, not at import time,
    # so importing this module (tests, spawned workers) has no side effects.
    if name == "app":
        return _default_app()
    raise AttributeError(name)
