"""What the API tests share: training configs and jobs, and the shape of a problem answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

SMALL = {
    "task": "spiral",
    "data": {"points_per_class": 100, "classes": 3, "seed": 7},
    "model": {"hidden": [16], "activation": "relu"},
    "optimizer": {"name": "adam", "lr": 1e-2},
    "epochs": 50,
    "report_every": 10,
}
# Minutes of work: only ever cancelled or cut short by a restart.
LONG = {
    **SMALL,
    "data": {"points_per_class": 2000, "classes": 3, "seed": 7},
    "model": {"hidden": [256, 256], "activation": "relu"},
    "epochs": 10_000,
    "report_every": 10,
}
FINISHED = ("succeeded", "failed", "cancelled")


async def submit(client: httpx.AsyncClient, config: dict[str, Any]) -> dict:
    response = await client.post("/v1/trainings", json=config)
    assert response.status_code == 202, response.text
    return response.json()


async def wait_job(
    client: httpx.AsyncClient, job_id: str, done: Callable[[dict], bool], timeout_s: float = 60
) -> dict:
    """The job once ``done(job)`` holds, polled every 50 ms; fails after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = (await client.get(f"/v1/trainings/{job_id}")).json()
        if done(job):
            return job
        assert time.monotonic() < deadline, f"job still {job['status']}"
        await asyncio.sleep(0.05)


async def wait_finished(client: httpx.AsyncClient, job_id: str, timeout_s: float = 60) -> dict:
    return await wait_job(client, job_id, lambda job: job["status"] in FINISHED, timeout_s)


async def wait_status(client: httpx.AsyncClient, job_id: str, status: str) -> dict:
    """The job once in ``status`` (and, for `running`, once it has reported progress)."""

    def reached(job: dict) -> bool:
        return job["status"] == status and (status != "running" or bool(job["progress"]))

    return await wait_job(client, job_id, reached, timeout_s=30)


def assert_problem(response: httpx.Response, status: int, slug: str | None = None) -> dict:
    """``response`` is an RFC 9457 problem with ``status`` (and type ``slug``); its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["title"] and body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    if slug is not None:
        assert body["type"] == f"/problems/{slug}"
    return body


async def assert_still_serving(client: httpx.AsyncClient) -> None:
    ok = await client.post("/v1/images/rgb2gray?sample=chelsea&include_image=false")
    assert ok.status_code == 200
