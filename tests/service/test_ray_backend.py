"""What only the Ray backend can do wrong, over HTTP: lost workers, and staying optional.

The rest of the API suite runs against the Ray backend too: `pytest --executor=ray`
(what `make test` does after the local run).
"""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from service.settings import Settings
from tests._support import free_port, ray_processes, wait_until
from tests.service._api import (
    LONG,
    SMALL,
    assert_problem,
    assert_still_serving,
    submit,
    wait_finished,
    wait_status,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("ray_cluster")]


@pytest.fixture(scope="module")
async def on_ray(make_client) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(executor="ray") as c:
        yield c


async def test_health_reports_the_clusters_slots(on_ray: httpx.AsyncClient) -> None:
    ready = await on_ray.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["workers"] == 2  # the 2-CPU test cluster, 1 CPU per image task


async def test_a_killed_ray_worker_fails_its_request_with_503(on_ray: httpx.AsyncClient) -> None:
    slow = asyncio.ensure_future(
        on_ray.post("/v1/images/equalize_adapthist?sample=astronaut&kernel_size=4")
    )
    await wait_until(lambda: ray_processes("ImageWorker.run"))
    for pid in ray_processes("ImageWorker.run"):
        os.kill(pid, signal.SIGKILL)
    body = assert_problem(await slow, 503, "worker-died")
    assert "Ray worker" in body["detail"]
    assert (await on_ray.get("/readyz")).status_code == 200
    await assert_still_serving(on_ray)


async def test_a_training_whose_worker_dies_fails_with_the_reason(
    on_ray: httpx.AsyncClient,
) -> None:
    job = await submit(on_ray, LONG)
    await wait_status(on_ray, job["id"], "running")
    for pid in ray_processes("tensorlens-train"):
        os.kill(pid, signal.SIGKILL)
    finished = await wait_finished(on_ray, job["id"])
    assert finished["status"] == "failed"
    assert "died" in finished["reason"]
    after = await submit(on_ray, SMALL)
    assert (await wait_finished(on_ray, after["id"]))["status"] == "succeeded"
    assert (await on_ray.get("/readyz")).status_code == 200


def test_the_local_backend_never_imports_ray(tmp_path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from service.main import create_app
        from service.settings import Settings

        async def main():
            app = create_app(Settings(data_dir={str(tmp_path)!r}, image_workers=1))
            async with app.router.lifespan_context(app):
                pass

        asyncio.run(main())
        assert "ray" not in sys.modules, "the local backend imported ray"
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


JOIN_SCRIPT = """
import asyncio, json, sys, time
import httpx
from service.main import create_app
from service.settings import Settings

SMALL = json.loads(sys.argv[3])

async def main():
    settings = Settings(data_dir=sys.argv[1], executor="ray", ray_address=sys.argv[2])
    app = create_app(settings)
    report = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            image = await c.post("/v1/images/canny?sample=camera&include_image=false")
            report["image"] = image.status_code
            job = (await c.post("/v1/trainings", json=SMALL)).json()
            for _ in range(600):
                job = (await c.get(f"/v1/trainings/{job['id']}")).json()
                if job["status"] in ("succeeded", "failed", "cancelled"):
                    break
                await asyncio.sleep(0.1)
            report["training"] = job["status"], job["reason"], len(job["progress"] or {})
            predict = await c.post(
                f"/v1/models/{job['id']}/predict", json={"inputs": [[0.1, 0.2]]}
            )
            report["predict"] = predict.status_code
    print(json.dumps(report))

asyncio.run(main())
"""


def accepts(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def run_report(
    script: str,
    *args: str,
    timeout: float,
    env: dict[str, str] | None = None,
    context: Callable[[], str] = str,
) -> dict[str, Any]:
    """Run ``script`` in a Python of its own (Ray's state is per process) and return the
    JSON report on its last line; on failure, its stderr and ``context()`` say why."""
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        env={
            **os.environ,
            "RAY_USAGE_STATS_ENABLED": "0",
            "TENSORLENS_LOG_LEVEL": "warning",
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:] + context()
    return json.loads(result.stdout.strip().splitlines()[-1])


def head_logs(temp_dir: str) -> str:
    """The head's Ray Client server logs, for a failure message."""
    import glob

    parts = []
    for path in sorted(glob.glob(f"{temp_dir}/session_latest/logs/ray_client_server*")):
        with open(path, errors="replace") as f:
            parts.append(f"--- {path}\n{f.read()[-2000:]}")
    return "\n".join(parts)


def test_the_api_joins_a_running_cluster_as_a_driver_and_through_ray_client(tmp_path) -> None:
    """`ray start --head` as an operator runs it; the API joins by address and by ray://."""
    gcs, client = free_port(), free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    # Ray's socket paths must be short: not under pytest's deep tmp_path.
    temp_dir = tempfile.mkdtemp(prefix="tl-ray-", dir="/tmp")
    log = (tmp_path / "head.log").open("wb")
    head = subprocess.Popen(
        [
            ray_cli,
            "start",
            "--head",
            f"--port={gcs}",
            f"--ray-client-server-port={client}",
            "--num-cpus=2",
            "--include-dashboard=false",
            f"--object-store-memory={100 * 1024**2}",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
            "--block",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        check = [ray_cli, "health-check", "--address", f"127.0.0.1:{gcs}"]
        for _ in range(120):
            if subprocess.run(check, env=env, capture_output=True).returncode == 0 and accepts(
                client
            ):
                break
            assert head.poll() is None, (tmp_path / "head.log").read_text()[-3000:]
            time.sleep(0.5)
        for address in (f"127.0.0.1:{gcs}", f"ray://127.0.0.1:{client}"):
            data_dir = tmp_path / address.replace(":", "_").replace("/", "")
            report = run_report(
                JOIN_SCRIPT,
                str(data_dir),
                address,
                json.dumps(SMALL),
                timeout=240,
                env=env,
                context=lambda: head_logs(temp_dir),
            )
            assert report["image"] == 200, address
            status, reason, reports = report["training"]
            assert status == "succeeded", (address, reason)
            assert reports > 0  # progress reached the job store
            assert report["predict"] == 200, address
    finally:
        head.terminate()
        head.wait(timeout=90)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


GPU_SCRIPT = """
import asyncio, json, sys
import httpx, ray
from service.main import create_app
from service.settings import Settings

SMALL = json.loads(sys.argv[2])

async def main():
    # One GPU as Ray counts them, that torch (a CPU build) cannot use.
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 1024**2)
    app = create_app(Settings(data_dir=sys.argv[1], executor="ray"))
    report = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            async def train():
                job = (await c.post("/v1/trainings", json=SMALL)).json()
                for _ in range(900):
                    job = (await c.get(f"/v1/trainings/{job['id']}")).json()
                    if job["status"] in ("succeeded", "failed", "cancelled"):
                        break
                    await asyncio.sleep(0.1)
                return job
            first = await train()
            predict_path = f"/v1/models/{first['id']}/predict"
            predict = await c.post(predict_path, json={"inputs": [[0.1, 0.2]]})
            report["predict"] = predict.status_code
            report["gpu_free_beside_the_model"] = ray.available_resources().get("GPU", 0)
            # The model's actor keeps its share; a training still gets the GPU.
            second = await train()
            report["trainings"] = [first["status"], second["status"], second["reason"]]
            again = await c.post(predict_path, json={"inputs": [[0.1, 0.2]]})
            report["predict_again"] = again.status_code
    print(json.dumps(report))

asyncio.run(main())
"""


def test_on_a_cluster_with_a_gpu_trainings_and_loaded_models_share_it(tmp_path) -> None:
    """A GPU Ray counts but torch cannot use: work falls back to the CPU, and a model's
    actor holding its share of the GPU keeps no training off it."""
    report = run_report(GPU_SCRIPT, str(tmp_path), json.dumps(SMALL), timeout=300)
    assert report["predict"] == 200 and report["predict_again"] == 200
    cache_size = Settings().model_cache_size
    assert report["gpu_free_beside_the_model"] == pytest.approx(1 - 0.25 / cache_size, abs=1e-4)
    assert report["trainings"] == ["succeeded", "succeeded", None]


NODE_SCRIPT = """
import asyncio, json, sys, time
import httpx, ray
from ray.cluster_utils import Cluster
from service.main import create_app
from service.settings import Settings

LONG, SMALL = json.loads(sys.argv[2]), json.loads(sys.argv[3])
CANNY = "/v1/images/canny?sample=camera&include_image=false"
STORE = 80 * 1024**2

async def main():
    # A real multi-node Ray cluster on this machine: a head with no CPUs (like the API's
    # node in compose) and a worker node with 2.
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "object_store_memory": STORE})
    node = cluster.add_node(num_cpus=2, object_store_memory=STORE)
    ray.init(address=cluster.address, log_to_driver=False)
    app = create_app(Settings(data_dir=sys.argv[1], executor="ray"))
    report = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as c:
            async def finished(job):
                for _ in range(1200):
                    job = (await c.get(f"/v1/trainings/{job['id']}")).json()
                    if job["status"] in ("succeeded", "failed", "cancelled"):
                        return job
                    await asyncio.sleep(0.1)
                return job

            report["image"] = (await c.post(CANNY)).status_code
            job = (await c.post("/v1/trainings", json=LONG)).json()
            while (await c.get(f"/v1/trainings/{job['id']}")).json()["status"] != "running":
                await asyncio.sleep(0.1)
            cluster.remove_node(node)
            job = await finished(job)
            report["lost"] = job["status"], job["reason"]
            lost = [await c.post(CANNY) for _ in range(3)]
            report["image_lost"] = [(r.status_code, r.json()["type"]) for r in lost]
            report["ready_lost"] = (await c.get("/readyz")).status_code
            cluster.add_node(num_cpus=2, object_store_memory=STORE)
            deadline = time.monotonic() + 90
            while (await c.post(CANNY)).status_code != 200 and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            report["image_back"] = (await c.post(CANNY)).status_code
            report["ready_back"] = (await c.get("/readyz")).status_code
            job = await finished((await c.post("/v1/trainings", json=SMALL)).json())
            report["after"] = job["status"]
    ray.shutdown()
    cluster.shutdown()
    print(json.dumps(report))

asyncio.run(main())
"""


def test_a_worker_node_that_leaves_fails_its_jobs_and_one_that_joins_serves() -> None:
    """On a real two-node Ray cluster: the node running a training and the image workers
    goes away, then another joins."""
    with tempfile.TemporaryDirectory(prefix="tl-nodes-") as data_dir:
        report = run_report(NODE_SCRIPT, data_dir, json.dumps(LONG), json.dumps(SMALL), timeout=400)
    assert report["image"] == 200
    status, reason = report["lost"]
    assert status == "failed" and "died" in reason, reason
    # Image work has nowhere to run: 503 with a problem body, never 500; not ready.
    assert all(code == 503 for code, _ in report["image_lost"]), report["image_lost"]
    assert report["ready_lost"] == 503
    # The node that joined gets image workers and trainings.
    assert report["image_back"] == 200 and report["ready_back"] == 200
    assert report["after"] == "succeeded"
