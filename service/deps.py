"""Typed dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.observability import Metrics
from service.settings import Settings, get_settings
from workers.pool import WorkerPool
from workers.training.manager import TrainingManager
from workers.training.serving import ModelServer


def get_pool(request: Request) -> WorkerPool:
    return request.app.state.pool


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
PoolDep = Annotated[WorkerPool, Depends(get_pool)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


def get_trainings(request: Request) -> TrainingManager:
    return request.app.state.trainings


def get_model_server(request: Request) -> ModelServer:
    return request.app.state.model_server


TrainingsDep = Annotated[TrainingManager, Depends(get_trainings)]
ModelServerDep = Annotated[ModelServer, Depends(get_model_server)]
