"""What the API returns, as typed objects, and the training configurations it takes.

The models mirror the service's response schemas (``openapi.json``) but accept
members they do not know (``extra="allow"``), so a newer server does not break an
older client. They hold no bounds: the server validates, and its 422 names the field.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "SGD",
    "Adam",
    "Health",
    "ImageResult",
    "InferRequest",
    "InferResponse",
    "InferTensor",
    "JobStatus",
    "Model",
    "ModelMetadata",
    "ModelReady",
    "ModelSpec",
    "ModelsPage",
    "OpInfo",
    "Prediction",
    "Problem",
    "Progress",
    "Readiness",
    "RegressionConfig",
    "RegressionData",
    "RegressionModelSpec",
    "SampleInfo",
    "ServerLive",
    "ServerReady",
    "SpiralConfig",
    "SpiralData",
    "StepReport",
    "TensorMetadata",
    "Training",
    "TrainingConfig",
    "TrainingsPage",
]

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class _Result(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Problem(_Result):
    """An RFC 9457 problem document; extra members (``parameter``, ``limit``...) kept."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    request_id: str | None = None


# Health ----------------------------------------------------------------------


class Health(_Result):
    status: str


class Readiness(_Result):
    status: str
    workers: int
    workers_alive: int
    queue_depth: int
    queue_capacity: int
    in_flight: int
    restarts: int


# Images ----------------------------------------------------------------------


class SampleInfo(_Result):
    name: str
    shape: list[int]
    dtype: str
    description: str


class OpInfo(_Result):
    name: str
    summary: str
    params: dict[str, Any]


class StepReport(_Result):
    op: str
    values: dict[str, Any]
    ms: float


class ImageResult(_Result):
    """An op's or pipeline's JSON answer: the result's summary, numbers and (as base64) PNG."""

    shape: list[int]
    dtype: str
    min: float | None
    max: float | None
    mean: float | None
    values: dict[str, Any]
    steps: list[StepReport]
    timings_ms: dict[str, float]
    png_base64: str | None = None

    @property
    def png(self) -> bytes | None:
        """The resulting image as PNG bytes (None when asked with ``include_image=False``)."""
        return base64.b64decode(self.png_base64) if self.png_base64 is not None else None


# Trainings -------------------------------------------------------------------


class Progress(_Result):
    """One progress report of a training (``seq`` is the event id of the SSE stream)."""

    seq: int
    epoch: int
    loss: float
    accuracy: float | None
    elapsed_s: float


class Training(_Result):
    id: str
    status: JobStatus
    config: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested: bool
    progress: Progress | None
    metrics: dict[str, Any] | None
    reason: str | None
    model_id: str | None
    links: dict[str, str]

    @property
    def finished(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled")


class TrainingsPage(_Result):
    items: list[Training]
    total: int
    limit: int
    offset: int


# Models ----------------------------------------------------------------------


class Model(_Result):
    id: str
    valid: bool
    reason: str | None
    created_at: datetime | None
    weights_bytes: int | None
    task: str | None
    architecture: str | None
    parameter_count: int | None
    final_metrics: dict[str, Any] | None
    metadata: dict[str, Any]
    links: dict[str, str]


class ModelsPage(_Result):
    items: list[Model]
    total: int
    limit: int
    offset: int


class Prediction(_Result):
    """``classes`` and ``probabilities`` (spiral), or ``mean`` and ``std`` (regression)."""

    model_id: str
    task: str
    classes: list[int] | None = None
    probabilities: list[list[float]] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None


# Open Inference Protocol v2 ----------------------------------------------------


class ServerLive(_Result):
    live: bool


class ServerReady(_Result):
    ready: bool


class TensorMetadata(_Result):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(_Result):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ModelReady(_Result):
    name: str
    ready: bool


class InferTensor(_Result):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]
    parameters: dict[str, Any] | None = None


class InferRequest(_Result):
    id: str | None = None
    inputs: list[InferTensor]
    outputs: list[dict[str, str]] | None = None
    parameters: dict[str, Any] | None = None


class InferResponse(_Result):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[InferTensor]


# Training configurations -------------------------------------------------------
#
# Every field left as None is left out of the request, so the server's default applies
# (the README lists them); the server checks the bounds.


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SpiralData(_Config):
    points_per_class: int | None = None
    classes: int | None = None
    noise: float | None = None
    seed: int | None = None


class RegressionData(_Config):
    n_points: int | None = None
    x_min: float | None = None
    x_max: float | None = None
    noise: float | None = None
    seed: int | None = None
    eval_x_min: float | None = None
    eval_x_max: float | None = None


Activation = Literal["relu", "tanh", "sigmoid", "identity"]


class ModelSpec(_Config):
    hidden: list[int] | None = None
    activation: Activation | None = None


class RegressionModelSpec(ModelSpec):
    ensemble_size: int | None = None


class SGD(_Config):
    name: Literal["sgd"] = "sgd"
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float | None = None


class Adam(_Config):
    name: Literal["adam"] = "adam"
    lr: float | None = None
    weight_decay: float | None = None


class _Training(_Config):
    optimizer: Annotated[SGD | Adam, Field(discriminator="name")] | None = None
    epochs: int | None = None
    batch_size: int | None = None
    report_every: int | None = None
    device: Literal["auto", "cpu", "cuda"] | None = None


class SpiralConfig(_Training):
    """Classify the points of a spiral by arm (the notes' first half)."""

    task: Literal["spiral"] = "spiral"
    data: SpiralData | None = None
    model: ModelSpec | None = None
    loss: Literal["cross_entropy"] | None = None


class RegressionConfig(_Training):
    """Fit the noisy cubic with one network or an ensemble (the notes' second half)."""

    task: Literal["regression"] = "regression"
    data: RegressionData | None = None
    model: RegressionModelSpec | None = None
    loss: Literal["mse", "l1", "smooth_l1"] | None = None


TrainingConfig = SpiralConfig | RegressionConfig
