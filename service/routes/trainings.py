"""Training jobs: submit, watch (JSON or Server-Sent Events), list, cancel."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, TypeVar

from fastapi import APIRouter, Header, Path, Query, Response
from fastapi.responses import StreamingResponse
from fastapi.sse import KEEPALIVE_COMMENT, EventSourceResponse

from service.deps import SettingsDep, TrainingsDep
from service.errors import problem_responses
from service.schemas.trainings import (
    ProgressPublic,
    TrainingPublic,
    TrainingsPage,
)
from service.settings import Settings
from workers.errors import Conflict, InvalidParameter
from workers.training import Job, TrainingConfig, TrainingLimits, validate_training
from workers.training.jobs import JobStatus

router = APIRouter(prefix="/v1/trainings", tags=["trainings"])

#: SQLite integers are 64-bit; larger query values would overflow in the driver.
MAX_INT64 = 2**63 - 1

JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="The job id.")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        min_length=1,
        max_length=255,
        description="Any unique string: a retried submission with the same key and body "
        "returns the job the first one made (200) instead of queuing another.",
    ),
]


def limits(settings: Settings) -> TrainingLimits:
    return TrainingLimits(
        max_epochs=settings.max_epochs,
        max_points=settings.max_points,
        max_hidden_units=settings.max_hidden_units,
        max_layers=settings.max_layers,
        max_ensemble=settings.max_ensemble,
    )


def fingerprint(config: dict) -> str:
    """The digest of a submission's config, equal for equal configs however they were sent."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@router.post(
    "",
    response_model=TrainingPublic,
    status_code=202,
    responses={
        200: {
            "description": "A submission repeated with its `Idempotency-Key`: the job it made.",
            "model": TrainingPublic,
        },
        **problem_responses(422, 429),
    },
)
async def create_training(
    config: TrainingConfig,
    trainings: TrainingsDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> TrainingPublic:
    """Queue a training job; watch it at `links.events`, its model appears at `links.model`.

    With an `Idempotency-Key`, a retry of the same body returns the first job (200); the
    same key with another body is a 422. Keys are kept with their jobs, across restarts.
    """
    body = config.model_dump(mode="json")
    digest = fingerprint(body)
    known = trainings.jobs.find_key(idempotency_key) if idempotency_key is not None else None
    if known is not None:
        job, known_digest = known
        if known_digest != digest:
            raise InvalidParameter(
                "Idempotency-Key", f"was used for job {job.id} with another body"
            )
        response.status_code = 200
    else:
        checked = validate_training(body, limits(settings))
        # No await from the lookup to here: one event loop cannot submit a key twice.
        job = trainings.submit(checked)
        if idempotency_key is not None:
            trainings.jobs.remember_key(idempotency_key, digest, job.id)
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


T = TypeVar("T")


def _sse(event: str, data: str, event_id: int | None = None) -> bytes:
    # The id first, as this stream always wrote it (fastapi.sse's formatter puts it last).
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n".encode()


async def with_keepalive(items: AsyncIterator[T], every_s: float) -> AsyncIterator[T | None]:
    """``items``, with None after each ``every_s`` seconds in which none came."""
    pending: asyncio.Future[T] = asyncio.ensure_future(anext(items))
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=every_s)
            if not done:
                yield None
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            yield item
            pending = asyncio.ensure_future(anext(items))
    finally:
        # The client went away (or the stream ended): stop waiting for the next item.
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
            await pending


@router.get(
    "/{job_id}/events",
    # Not EventSourceResponse: FastAPI would take the endpoint for a generator of events.
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
    settings: SettingsDep,
    last_event_id: Annotated[int | None, Header(ge=0, le=MAX_INT64)] = None,
    after: Annotated[
        int, Query(ge=0, le=MAX_INT64, description="Replay reports after this seq.")
    ] = 0,
) -> EventSourceResponse:
    """Server-Sent Events: every progress report as it happens, then the final job.

    Reconnecting clients send `Last-Event-ID` (browsers do this themselves) and get
    only what they missed. A silent stream (a queued job's) carries a `: ping` comment
    every `TENSORLENS_SSE_KEEPALIVE_S` seconds, so proxies do not cut it.
    """
    trainings.jobs.get(job_id)  # 404 before the stream starts
    start = max(after, last_event_id or 0)

    async def stream() -> AsyncIterator[bytes]:
        yield b"retry: 2000\n\n"
        events = trainings.events(job_id, start)
        async for item in with_keepalive(events, settings.sse_keepalive_s):
            if item is None:
                yield KEEPALIVE_COMMENT
            elif isinstance(item, Job):
                yield _sse("end", TrainingPublic.of(item).model_dump_json())
            else:
                body = ProgressPublic.of(item).model_dump()
                yield _sse("progress", json.dumps(body), item.seq)

    return EventSourceResponse(
        stream(), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
