"""Training jobs: submit, watch (JSON or Server-Sent Events), list, cancel."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response
from fastapi.responses import StreamingResponse

from service.deps import SettingsDep, TrainingsDep
from service.errors import problem_responses
from service.schemas.trainings import (
    ProgressPublic,
    TrainingPublic,
    TrainingsPage,
)
from service.settings import Settings
from workers.errors import Conflict
from workers.training import Job, TrainingConfig, TrainingLimits, validate_training
from workers.training.jobs import JobStatus

router = APIRouter(prefix="/v1/trainings", tags=["trainings"])

#: SQLite integers are 64-bit; larger query values would overflow in the driver.
MAX_INT64 = 2**63 - 1

JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="The job id.")]


def limits(settings: Settings) -> TrainingLimits:
    return TrainingLimits(
        max_epochs=settings.max_epochs,
        max_points=settings.max_points,
        max_hidden_units=settings.max_hidden_units,
        max_layers=settings.max_layers,
        max_ensemble=settings.max_ensemble,
    )


@router.post(
    "",
    response_model=TrainingPublic,
    status_code=202,
    responses=problem_responses(422, 429),
)
async def create_training(
    config: TrainingConfig, trainings: TrainingsDep, settings: SettingsDep, response: Response
) -> TrainingPublic:
    """Queue a training job; watch it at `links.events`, its model appears at `links.model`."""
    checked = validate_training(config.model_dump(mode="json"), limits(settings))
    job = trainings.submit(checked)
    response.headers["Location"] = f"/v1/trainings/{job.id}"
    return TrainingPublic.of(job)


@router.get("", response_model=TrainingsPage, status_code=200, responses=problem_responses(422))
async def list_trainings(
    trainings: TrainingsDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_INT64)] = 0,
    status: JobStatus | None = None,
) -> TrainingsPage:
    """Jobs, newest first."""
    page = trainings.jobs.list(limit=limit, offset=offset, status=status)
    return TrainingsPage(
        items=[TrainingPublic.of(job) for job in page.items],
        total=page.total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get(
    "/{job_id}", response_model=TrainingPublic, status_code=200, responses=problem_responses(404)
)
async def get_training(job_id: JobId, trainings: TrainingsDep) -> TrainingPublic:
    """Status and latest progress (epoch, loss, accuracy, elapsed)."""
    return TrainingPublic.of(trainings.jobs.get(job_id))


@router.delete(
    "/{job_id}",
    response_model=TrainingPublic,
    status_code=202,
    responses=problem_responses(404, 409),
)
async def cancel_training(job_id: JobId, trainings: TrainingsDep) -> TrainingPublic:
    """Cancel: a queued job at once, a running one at its next report."""
    job = trainings.jobs.get(job_id)
    if job.finished:
        raise Conflict(f"job {job_id} already {job.status}", job_status=job.status)
    return TrainingPublic.of(await trainings.cancel(job_id))


def _sse(event: str, data: str, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    status_code=200,
    responses={
        200: {
            "description": "`progress` events (id = seq), then one `end` event with the job.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **problem_responses(404),
    },
)
async def training_events(
    job_id: JobId,
    trainings: TrainingsDep,
    last_event_id: Annotated[int | None, Header(ge=0, le=MAX_INT64)] = None,
    after: Annotated[
        int, Query(ge=0, le=MAX_INT64, description="Replay reports after this seq.")
    ] = 0,
) -> StreamingResponse:
    """Server-Sent Events: every progress report as it happens, then the final job.

    Reconnecting clients send `Last-Event-ID` (browsers do this themselves) and get
    only what they missed.
    """
    trainings.jobs.get(job_id)  # 404 before the stream starts
    start = max(after, last_event_id or 0)

    async def stream() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        async for item in trainings.events(job_id, start):
            if isinstance(item, Job):
                yield _sse("end", TrainingPublic.of(item).model_dump_json())
            else:
                body = ProgressPublic.of(item).model_dump()
                yield _sse("progress", json.dumps(body), item.seq)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
