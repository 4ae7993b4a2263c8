import asyncio

import pytest
import torch

from workers.local import TrainingProcesses
from workers.training import JobStore, ModelStore
from workers.training.lanes import Lanes
from workers.training.manager import TrainingManager

pytestmark = pytest.mark.anyio


async def test_start_reconciles_what_a_crash_left_behind(tmp_path) -> None:
    jobs, models = JobStore(tmp_path / "jobs.sqlite3"), ModelStore(tmp_path / "models")
    written = jobs.create({"task": "spiral"})
    jobs.set_running(written.id)
    models.save(written.id, {"w": torch.zeros(2)}, {"final_metrics": {"epoch": 9, "loss": 0.5}})
    cut = jobs.create({"task": "spiral"})
    jobs.set_running(cut.id)
    waiting = jobs.create({"task": "spiral"})
    (tmp_path / "models" / ".tmp-half-written").mkdir()

    manager = TrainingManager(jobs, models, Lanes(TrainingProcesses(["cpu"]), max_queued=1))
    await manager.lanes.start()
    interrupted = await manager.start()
    try:
        assert sorted(interrupted) == sorted([cut.id, waiting.id])
        assert jobs.get(written.id).status == "succeeded"  # its model was on disk
        assert jobs.get(written.id).metrics == {"epoch": 9, "loss": 0.5}
        assert jobs.get(cut.id).reason == "interrupted"
        assert not (tmp_path / "models" / ".tmp-half-written").exists()
        assert manager.lanes.alive
    finally:
        await manager.stop()
        jobs.close()
    assert not manager.lanes.alive  # the manager's stop stops the lanes


async def test_event_streams_end_when_the_manager_stops(tmp_path) -> None:
    jobs, models = JobStore(tmp_path / "jobs.sqlite3"), ModelStore(tmp_path / "models")
    manager = TrainingManager(jobs, models, Lanes(TrainingProcesses(["cpu"]), max_queued=1))
    await manager.lanes.start()
    await manager.start()
    job = jobs.create({"task": "spiral"})
    jobs.set_running(job.id)

    async def consume() -> list:
        return [item async for item in manager.events(job.id)]

    stream = asyncio.ensure_future(consume())
    await asyncio.sleep(0.05)
    assert not stream.done()
    await manager.stop()
    (last,) = await asyncio.wait_for(stream, 5)
    assert last.id == job.id and last.status == "failed" and last.reason == "interrupted"
    jobs.close()
