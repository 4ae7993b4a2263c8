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
    "Alias",
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
    "ModelVersion",
    "ModelsPage",
    "OpInfo",
    "Prediction",
    "Problem",
    "Progress",
    "Readiness",
    "RegressionConfig",
    "RegressionData",
    "RegressionModelSpec",
    "RepositoryModel",
    "SampleInfo",
    "ServerLive",
    "ServerMetadata",
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
    model_version: int | None = None
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


class ModelVersion(_Result):
    """One version of a named model, with the aliases that point at it."""

    name: str
    version: int
    valid: bool
    reason: str | None
    created_at: datetime | None
    weights_bytes: int | None
    job_id: str | None
    description: str | None
    task: str | None
    architecture: str | None
    parameter_count: int | None
    final_metrics: dict[str, Any] | None
    aliases: list[str]
    metadata: dict[str, Any]
    links: dict[str, str]


class Model(_Result):
    """A name: its versions and aliases; the top-level fields are its default version's."""

    id: str
    name: str
    default_version: int
    latest_version: int
    aliases: dict[str, int]
    versions: list[ModelVersion]
    description: str | None
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


class Alias(_Result):
    name: str
    alias: str
    version: int
    links: dict[str, str]


class ModelsPage(_Result):
    items: list[Model]
    total: int
    limit: int
    offset: int


class Prediction(_Result):
    """``classes`` and ``probabilities`` (spiral), or ``mean`` and ``std`` (regression)."""

    model_id: str
    model_version: int
    task: str
    classes: list[int] | None = None
    probabilities: list[list[float]] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None


# Open Inference Protocol v2 ----------------------------------------------------


class ServerMetadata(_Result):
    name: str
    version: str
    extensions: list[str]


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
    outputs: list[dict[str, Any]] | None = None
    parameters: dict[str, Any] | None = None


class InferResponse(_Result):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[InferTensor]


class RepositoryModel(_Result):
    """A model version in ``repository_index()``: ``state`` is ``READY`` when it is loaded."""

    name: str
    version: str
    state: str
    reason: str


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
    model_name: str | None = Field(
        None, description="Register the model as this name's next version (else: the job id)."
    )
    description: str | None = None
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
