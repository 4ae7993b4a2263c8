"""KServe Open Inference Protocol v2: server health (model routes join with the model store)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel

from service.deps import PoolDep

router = APIRouter(prefix="/v2", tags=["v2"])


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


@router.get("/health/live", response_model=ServerLive, status_code=200)
async def server_live() -> ServerLive:
    """OIP `GET v2/health/live`: the server can receive requests."""
    return ServerLive(live=True)


@router.get(
    "/health/ready",
    response_model=ServerReady,
    status_code=200,
    responses={503: {"model": ServerReady, "description": "Not ready"}},
)
async def server_ready(pool: PoolDep, response: Response) -> ServerReady:
    """OIP `GET v2/health/ready`: 200 when ready for inference, 503 otherwise."""
    if not pool.ready:
        response.status_code = 503
    return ServerReady(ready=pool.ready)
