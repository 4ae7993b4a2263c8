"""The same client against a live server (uvicorn on a loopback port, real SSE)."""

from pathlib import Path

import pytest

from tensorlens import AsyncClient, Client, Progress, Training
from tests.client.session import TINY, first_session


def test_the_readme_first_session(live_url: str, tmp_path: Path) -> None:
    with Client(live_url) as client:
        assert client.health().status == "ok"
        first_session(client, tmp_path)


@pytest.mark.anyio
async def test_a_training_streamed_as_it_happens_then_predict(live_url: str) -> None:
    async with AsyncClient(live_url) as client:
        job = await client.create_training(TINY)
        events = [event async for event in client.training_events(job.id)]
        *reports, end = events
        assert [r.seq for r in reports if isinstance(r, Progress)] == [1, 2, 3, 4, 5]
        assert isinstance(end, Training) and end.status == "succeeded"
        prediction = await client.predict(job.id, [[0.1, 0.2]])
        assert prediction.task == "spiral" and len(prediction.probabilities or []) == 1
