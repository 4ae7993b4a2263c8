"""Typed dependencies shared by the routers.

Each reads what the lifespan put on ``app.state``; they are ``async`` so FastAPI calls
them inline instead of on its thread pool.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.observability import Metrics
from service.settings import Settings
from workers.backend import WorkerPool
from workers.serving import ModelServer
from workers.training.manager import TrainingManager


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_pool(request: Request) -> WorkerPool:
    return request.app.state.pool


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_trainings(request: Request) -> TrainingManager:
    return request.app.state.trainings


async def get_model_server(request: Request) -> ModelServer:
    return request.app.state.model_server


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
PoolDep = Annotated[WorkerPool, Depends(get_pool)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
TrainingsDep = Annotated[TrainingManager, Depends(get_trainings)]
ModelServerDep = Annotated[ModelServer, Depends(get_model_server)]
