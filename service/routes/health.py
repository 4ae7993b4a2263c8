"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from service.deps import MetricsDep, PoolDep, TrainingsDep
from service.errors import problem_responses
from workers.errors import PoolUnavailable

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    workers: int
    workers_alive: int
    queue_depth: int
    queue_capacity: int
    in_flight: int
    restarts: int


@router.get("/healthz", response_model=Health, status_code=200)
async def live() -> Health:
    """The process is up and its event loop answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, status_code=200, responses=problem_responses(503))
async def ready(pool: PoolDep, trainings: TrainingsDep) -> Readiness:
    """The worker pool is started, every worker is alive and the training lanes run."""
    if not pool.ready:
        raise PoolUnavailable("the worker pool is not ready")
    if not trainings.lanes.alive:
        raise PoolUnavailable("the training lanes are not running")
    stats = pool.stats()
    return Readiness(status="ready", **stats.__dict__)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
async def metrics(metrics: MetricsDep) -> Response:
    """Prometheus exposition: requests, queue depth, in-flight work, op durations."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
