"""Request and response bodies of the training, model and prediction routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from workers.training import Job, JobEvent, JobStatus, ModelInfo


class ProgressPublic(BaseModel):
    seq: int = Field(description="Report number within the job, from 1 (the SSE event id).")
    epoch: int
    loss: float
    accuracy: float | None = Field(description="Training accuracy; null for regression.")
    elapsed_s: float

    @classmethod
    def of(cls, event: JobEvent) -> ProgressPublic:
        return cls(**vars(event))


class TrainingPublic(BaseModel):
    id: str
    status: JobStatus
    config: dict[str, Any] = Field(description="The validated configuration, defaults filled in.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested: bool
    progress: ProgressPublic | None = Field(description="The latest report.")
    metrics: dict[str, Any] | None = Field(description="Final metrics once succeeded.")
    reason: str | None = Field(description="Why the job failed (`interrupted` after a restart).")
    model_id: str | None
    links: dict[str, str]

    @classmethod
    def of(cls, job: Job) -> TrainingPublic:
        links = {
            "self": f"/v1/trainings/{job.id}",
            "events": f"/v1/trainings/{job.id}/events",
        }
        if job.model_id:
            links["model"] = f"/v1/models/{job.model_id}"
        return cls(
            id=job.id,
            status=job.status,
            config=job.config,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            cancel_requested=job.cancel_requested,
            progress=ProgressPublic.of(job.progress) if job.progress else None,
            metrics=job.metrics,
            reason=job.reason,
            model_id=job.model_id,
            links=links,
        )


class TrainingsPage(BaseModel):
    items: list[TrainingPublic]
    total: int
    limit: int
    offset: int


class ModelPublic(BaseModel):
    id: str
    valid: bool = Field(description="False when the weights fail their checksum: not served.")
    reason: str | None
    created_at: datetime | None
    weights_bytes: int | None
    task: str | None
    architecture: str | None
    parameter_count: int | None
    final_metrics: dict[str, Any] | None
    metadata: dict[str, Any] = Field(description="Everything stored beside the weights.")
    links: dict[str, str]

    @classmethod
    def of(cls, info: ModelInfo) -> ModelPublic:
        meta = info.metadata
        return cls(
            id=info.id,
            valid=info.valid,
            reason=info.reason,
            created_at=info.created_at,
            weights_bytes=info.weights_bytes,
            task=meta.get("task"),
            architecture=meta.get("architecture"),
            parameter_count=meta.get("parameter_count"),
            final_metrics=meta.get("final_metrics"),
            metadata=meta,
            links={
                "self": f"/v1/models/{info.id}",
                "predict": f"/v1/models/{info.id}/predict",
                "infer": f"/v2/models/{info.id}/infer",
            },
        )


class ModelsPage(BaseModel):
    items: list[ModelPublic]
    total: int
    limit: int
    offset: int


class PredictRequest(BaseModel):
    inputs: list[list[float]] | list[float] = Field(
        description="Rows of features, e.g. `[[x1, x2], ...]` (a flat list for 1-feature models)."
    )


class PredictionPublic(BaseModel):
    model_id: str
    task: str
    classes: list[int] | None = None
    probabilities: list[list[float]] | None = None
    mean: list[float] | None = None
    std: list[float] | None = Field(None, description="Spread over the ensemble's members.")
