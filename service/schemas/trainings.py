"""Request and response bodies of the training, model and prediction routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from workers.training import (
    Job,
    JobEvent,
    JobStatus,
    ModelInfo,
    RegisteredModel,
    TrainingConfig,
)


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
    config: TrainingConfig = Field(description="The validated configuration, defaults filled in.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested: bool
    progress: ProgressPublic | None = Field(description="The latest report.")
    metrics: dict[str, Any] | None = Field(description="Final metrics once succeeded.")
    reason: str | None = Field(description="Why the job failed (`interrupted` after a restart).")
    model_id: str | None = Field(description="The name of the model it registered.")
    model_version: int | None = Field(description="The version of it that the job registered.")
    links: dict[str, str]

    @classmethod
    def of(cls, job: Job) -> TrainingPublic:
        links = {
            "self": f"/v1/trainings/{job.id}",
            "events": f"/v1/trainings/{job.id}/events",
        }
        if job.model_id:
            links["model"] = f"/v1/models/{job.model_id}"
            if job.model_version is not None:
                links["model_version"] = f"/v1/models/{job.model_id}/versions/{job.model_version}"
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
            model_version=job.model_version,
            links=links,
        )


class TrainingsPage(BaseModel):
    items: list[TrainingPublic]
    total: int
    limit: int
    offset: int


class ModelVersionPublic(BaseModel):
    name: str
    version: int
    valid: bool = Field(description="False when the weights fail their checksum: not served.")
    reason: str | None
    created_at: datetime | None
    weights_bytes: int | None
    job_id: str | None = Field(description="The training job that made this version.")
    description: str | None
    task: str | None
    architecture: str | None
    parameter_count: int | None
    final_metrics: dict[str, Any] | None
    aliases: list[str] = Field(description="The aliases that point at this version.")
    metadata: dict[str, Any] = Field(description="Everything stored beside the weights.")
    links: dict[str, str]

    @classmethod
    def of(cls, info: ModelInfo, aliases: dict[str, int]) -> ModelVersionPublic:
        meta = info.metadata
        path = f"/v1/models/{info.name}"
        return cls(
            name=info.name,
            version=info.version,
            valid=info.valid,
            reason=info.reason,
            created_at=info.created_at,
            weights_bytes=info.weights_bytes,
            job_id=info.job_id,
            description=meta.get("description"),
            task=meta.get("task"),
            architecture=meta.get("architecture"),
            parameter_count=meta.get("parameter_count"),
            final_metrics=meta.get("final_metrics"),
            aliases=sorted(a for a, v in aliases.items() if v == info.version),
            metadata=meta,
            links={
                "self": f"{path}/versions/{info.version}",
                "model": path,
                "predict": f"{path}/predict?version={info.version}",
                "infer": f"/v2/models/{info.name}/versions/{info.version}/infer",
            },
        )


class ModelPublic(BaseModel):
    """A name: its versions and aliases, and (at the top level) the version it serves."""

    id: str = Field(description="The name (an unnamed training's model: its job id).")
    name: str
    default_version: int = Field(
        description="What a request naming no version or alias gets: the `default` alias's"
        " version, else the latest."
    )
    latest_version: int
    aliases: dict[str, int] = Field(description="Each alias and the version it points at.")
    versions: list[ModelVersionPublic] = Field(description="Oldest first.")
    description: str | None = Field(description="The latest version's description.")
    valid: bool = Field(description="The default version's: false when it fails its checksum.")
    reason: str | None
    created_at: datetime | None = Field(description="The default version's.")
    weights_bytes: int | None
    task: str | None
    architecture: str | None
    parameter_count: int | None
    final_metrics: dict[str, Any] | None
    metadata: dict[str, Any] = Field(description="The default version's stored metadata.")
    links: dict[str, str]

    @classmethod
    def of(cls, model: RegisteredModel) -> ModelPublic:
        served = model.default
        top = ModelVersionPublic.of(served, model.aliases)
        return cls(
            id=model.name,
            name=model.name,
            default_version=served.version,
            latest_version=model.latest.version,
            aliases=dict(sorted(model.aliases.items())),
            versions=[ModelVersionPublic.of(info, model.aliases) for info in model.versions],
            description=model.latest.metadata.get("description"),
            valid=top.valid,
            reason=top.reason,
            created_at=top.created_at,
            weights_bytes=top.weights_bytes,
            task=top.task,
            architecture=top.architecture,
            parameter_count=top.parameter_count,
            final_metrics=top.final_metrics,
            metadata=top.metadata,
            links={
                "self": f"/v1/models/{model.name}",
                "predict": f"/v1/models/{model.name}/predict",
                "infer": f"/v2/models/{model.name}/infer",
            },
        )


class AliasUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=2**31 - 1, description="The version the alias points at.")


class AliasPublic(BaseModel):
    name: str
    alias: str
    version: int
    links: dict[str, str]

    @classmethod
    def of(cls, name: str, alias: str, version: int) -> AliasPublic:
        return cls(
            name=name,
            alias=alias,
            version=version,
            links={
                "model": f"/v1/models/{name}",
                "version": f"/v1/models/{name}/versions/{version}",
                "predict": f"/v1/models/{name}/predict?alias={alias}",
            },
        )


class ModelsPage(BaseModel):
    items: list[ModelPublic]
    total: int
    limit: int
    offset: int


class PredictRequest(BaseModel):
    # One rule on /v1: a field the route does not know is refused (a mistyped name).
    model_config = ConfigDict(extra="forbid")

    inputs: list[list[float]] | list[float] = Field(
        description="Rows of features, e.g. `[[x1, x2], ...]` (a flat list for 1-feature models).",
        examples=[[[0.1, 0.2], [-0.5, 0.3]], [-1.5, 0.0, 1.5]],
    )


class PredictionPublic(BaseModel):
    model_id: str = Field(description="The model's name.")
    model_version: int = Field(description="The version that answered.")
    task: str
    classes: list[int] | None = None
    probabilities: list[list[float]] | None = None
    mean: list[float] | None = None
    std: list[float] | None = Field(None, description="Spread over the ensemble's members.")
