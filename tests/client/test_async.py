"""The async client in process (``AsyncClient.from_app``): the README's first session,
errors, and retries of a real 429 honouring ``Retry-After``."""

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import tensorlens
from tensorlens import AsyncClient
from tensorlens._asgi import IN_PROCESS_BASE_URL
from tensorlens.types import Readiness
from tests.client.session import afirst_session

pytestmark = pytest.mark.anyio

#: Seconds of work for the one worker of the limited app.
SLOW = {"sample": "astronaut", "kernel_size": 8, "include_image": False}


async def test_the_readme_first_session(aclient: AsyncClient, tmp_path: Path) -> None:
    await afirst_session(aclient, tmp_path)


async def test_errors_and_pages(aclient: AsyncClient) -> None:
    with pytest.raises(tensorlens.NotFound) as caught:
        await aclient.get_training("0" * 32)
    assert caught.value.problem.instance == f"/v1/trainings/{'0' * 32}"
    with pytest.raises(tensorlens.InvalidParameter) as invalid:
        await aclient.create_training({"task": "spiral", "epochs": 0})
    assert invalid.value.parameter == "epochs"
    assert [job async for job in aclient.iter_trainings()] == []
    assert (await aclient.list_models()).total == 0


class Recording(httpx.AsyncBaseTransport):
    """Passes requests on and records the status of every answer."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.statuses: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        self.statuses.append(response.status_code)
        return response


async def until(client: AsyncClient, condition: Callable[[Readiness], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition(await client.readiness()):
        assert time.monotonic() < deadline, "the pool never got there"
        await asyncio.sleep(0.005)


async def test_a_full_queue_is_retried_after_retry_after(make_app) -> None:
    app = make_app(image_workers=1, max_queue_depth=1, retry_after_s=1)
    async with AsyncClient.from_app(app) as plain:
        running = asyncio.ensure_future(plain.equalize_adapthist(**SLOW))
        await until(plain, lambda ready: ready.in_flight == 1)
        queued = asyncio.ensure_future(plain.equalize_adapthist(**SLOW))
        await until(plain, lambda ready: ready.queue_depth == 1)

        with pytest.raises(tensorlens.QueueFull) as caught:
            await plain.equalize_adapthist(**SLOW)  # no retries unless asked for
        assert caught.value.status == 429 and caught.value.retry_after_s == 1

        network = Recording(httpx.ASGITransport(app=app))
        patient = AsyncClient(IN_PROCESS_BASE_URL, transport=network, retries=5)
        started = time.monotonic()
        result = await patient.equalize_adapthist(**SLOW)
        waited = time.monotonic() - started
        assert result.steps[0].op == "equalize_adapthist"
        assert network.statuses[0] == 429 and network.statuses[-1] == 200
        assert waited >= (len(network.statuses) - 1) * 1.0  # one Retry-After per 429
        assert {(await task).dtype for task in (running, queued)} == {"float64"}
