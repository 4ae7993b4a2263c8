"""Settings away from their defaults, each seen to take effect through the running app.

The limits a client can hit (upload, JSON and pixel sizes, pipeline steps, queue depth,
timeouts, Retry-After) are checked in ``test_image_errors.py``; the model server's
batching knobs in ``tests/workers/serving``; the training limits on configs in
``tests/workers/training/test_configs.py``. These are the rest: each setting below has no
other test that sets a non-default value and watches it change what the service does.
"""

import logging
from pathlib import Path

import pytest
import torch
from skimage import data

from service.settings import Settings
from tests.service._api import LONG, SMALL, assert_problem, submit, wait_finished, wait_status
from workers.errors import InvalidParameter
from workers.images.codec import encode_png

pytestmark = [pytest.mark.anyio, pytest.mark.local_backend]


async def test_png_compress_level_is_the_level_of_every_png_answer(make_client) -> None:
    camera = data.camera()
    assert encode_png(camera, compress_level=9) != encode_png(camera, compress_level=1)
    async with make_client(image_workers=1, png_compress_level=9) as c:
        sample = await c.get("/v1/samples/camera")
        assert sample.content == encode_png(camera, compress_level=9)
        op = await c.post("/v1/images/img_as_ubyte?sample=camera", headers={"Accept": "image/png"})
        assert op.content == encode_png(camera, compress_level=9)


async def test_lanes_per_device_runs_that_many_trainings_at_once(make_client) -> None:
    async with make_client(image_workers=1, devices="cpu", lanes_per_device=2) as c:
        first, second, third = [await submit(c, LONG) for _ in range(3)]
        await wait_status(c, first["id"], "running")
        await wait_status(c, second["id"], "running")
        assert (await c.get(f"/v1/trainings/{third['id']}")).json()["status"] == "queued"
        for job in (third, second, first):
            await c.delete(f"/v1/trainings/{job['id']}")
        for job in (first, second):
            assert (await wait_finished(c, job["id"]))["status"] == "cancelled"


async def test_max_training_s_fails_a_training_that_runs_past_it(make_client) -> None:
    async with make_client(image_workers=1, max_training_s=1.5) as c:
        job = await submit(c, LONG)
        done = await wait_finished(c, job["id"])
        assert done["status"] == "failed"
        assert done["reason"] == "over the time limit of 1.5 s"


async def test_max_predict_rows_limits_a_prediction(make_client) -> None:
    async with make_client(image_workers=1, max_predict_rows=3) as c:
        job = await submit(c, SMALL)
        assert (await wait_finished(c, job["id"]))["status"] == "succeeded"
        predict = f"/v1/models/{job['id']}/predict"
        assert (await c.post(predict, json={"inputs": [[0.1, 0.2]] * 3})).status_code == 200
        body = assert_problem(await c.post(predict, json={"inputs": [[0.1, 0.2]] * 4}), 422)
        assert body["parameter"] == "inputs" and "over the limit of 3" in body["detail"]


async def test_inference_cpu_threads_sets_the_api_processs_torch_threads(make_client) -> None:
    before = torch.get_num_threads()
    threads = 2 if before == 1 else 1
    try:
        async with make_client(image_workers=1, inference_cpu_threads=threads):
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
async def test_inference_device_is_where_models_are_served(make_client) -> None:
    # Read before any process starts: a device this machine lacks stops the app at once.
    with pytest.raises(InvalidParameter, match="CUDA is not available"):
        async with make_client(image_workers=1, inference_device="cuda"):
            pass


async def test_log_level_above_info_silences_the_access_log(
    make_client, caplog: pytest.LogCaptureFixture
) -> None:
    try:
        with caplog.at_level(logging.DEBUG):
            async with make_client(image_workers=1, log_level="warning") as quiet:
                assert (await quiet.get("/healthz")).status_code == 200
            async with make_client(image_workers=1, log_level="info") as loud:
                assert (await loud.get("/healthz")).status_code == 200
        access = [r for r in caplog.records if r.name == "tensorlens.access"]
        assert len(access) == 1  # the second app's request only
    finally:
        # The level is the process's logger's: put back what the other tests expect.
        logging.getLogger("tensorlens").setLevel(Settings().log_level.upper())


def _minor_faults(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


@pytest.mark.parametrize("keep_freed_bytes", [None, 0])
async def test_image_worker_keep_freed_bytes_spares_each_request_its_page_faults(
    make_client, keep_freed_bytes: int | None
) -> None:
    # Canny on camera makes a dozen 2 MiB temporaries: with glibc's defaults (0) each
    # request faults their pages in again (thousands of faults), with the default setting
    # the worker's heap keeps them.
    overrides = {} if keep_freed_bytes is None else {"image_worker_keep_freed_bytes": 0}
    async with make_client(image_workers=1, **overrides) as c:
        (pid,) = c.app.state.pool.worker_pids()
        canny = "/v1/images/canny?sample=camera&include_image=false"
        assert (await c.post(canny)).status_code == 200  # the sample loaded, the heap grown
        before = _minor_faults(pid)
        for _ in range(5):
            assert (await c.post(canny)).status_code == 200
        per_request = (_minor_faults(pid) - before) / 5
    if keep_freed_bytes is None:
        assert per_request < 100, per_request
    else:
        assert per_request > 1000, per_request
