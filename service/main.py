"""Assembles the application: settings, backend, middleware, error handlers, routers."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service.auth import AccessMiddleware
from service.errors import install_error_handlers
from service.observability import Metrics, RequestContextMiddleware
from service.openapi import install as install_openapi
from service.routes import (
    docs,
    exports,
    health,
    images,
    models,
    operation_id,
    samples,
    trainings,
    ui,
    v2,
)
from service.routes._lean import add_lean_routes, refuse_unknown_query
from service.settings import Settings, get_settings
from workers.backend import build as build_backend
from workers.training import JobStore
from workers.training.manager import TrainingManager

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
        async with AsyncExitStack() as stack:
            # The backend `settings.executor` names: workers.local or workers.ray_backend.
            backend = await build_backend(settings)
            stack.push_async_callback(backend.stop)
            await backend.start()
            job_store = JobStore(settings.data_dir / "jobs.sqlite3")
            stack.callback(job_store.close)
            manager = TrainingManager(job_store, backend.models.store, backend.lanes)
            await manager.start()
            stack.push_async_callback(manager.stop)
            app.state.pool = backend.pool
            app.state.trainings = manager
            app.state.model_server = backend.models
            metrics.watch_pool(backend.pool.stats)
            metrics.watch_trainings(backend.lanes.queued, lambda: len(backend.lanes.running()))
            yield

    app = FastAPI(
        title="tensorlens",
        version="0.1.0",
        summary="Image operations and small-model training and inference over HTTP.",
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
        # Served from bundled assets by service/routes/docs.py, so they work offline.
        docs_url=None,
        redoc_url=None,
        telemetry=None
        if settings.opentelemetry
        else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    install_error_handlers(app)
    install_openapi(app)
    # Routes are matched in this order: the busiest (predictions, on the lean path) first.
    add_lean_routes(app, models.predictions)
    add_lean_routes(app, v2.predictions)
    routers = (
        models.router,
        exports.router,
        v2.router,
        images.router,
        samples.router,
        trainings.router,
        health.router,
        docs.router,
        ui.router,
    )
    for router in routers:
        # One rule on /v1: a query parameter the route does not declare is refused.
        v1 = router.prefix.startswith("/v1/")
        app.include_router(router, dependencies=[Depends(refuse_unknown_query)] if v1 else None)
    # Inside CORS, so preflights need no key and refusals carry the CORS headers.
    app.add_middleware(
        AccessMiddleware,
        api_keys=settings.api_keys,
        metrics_require_key=settings.metrics_require_key,
        rate_limit_per_s=settings.rate_limit_per_s,
        rate_limit_burst=settings.rate_limit_burst,
    )
    if settings.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            # What a browser client reads: ids for bug reports, when to retry, new jobs,
            # validators to revalidate with, and what an export is.
            expose_headers=[
                "X-Request-ID",
                "Retry-After",
                "Location",
                "ETag",
                "Content-Disposition",
                "X-Model-Version",
                "X-ONNX-Opset",
            ],
        )
    # Added last so it is outermost: every response, CORS preflights included, gets an id.
    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        max_multipart_bytes=settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES,
        max_other_bytes=settings.max_json_bytes,
    )
    return app


@functools.cache
def _default_app() -> FastAPI:
    return create_app()


def __getattr__(name: str) -> FastAPI:
    # `uvicorn service.main:app` builds the app on first access, not at import time,
    # so importing this module (tests, spawned workers) has no side effects.
    if name == "app":
        return _default_app()
    raise AttributeError(name)
