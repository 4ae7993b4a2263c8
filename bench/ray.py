"""The Ray backend against the local one: the same requests through both, side by side.

A Ray cluster is started the way an operator starts one (``ray start --head --block``:
2 CPUs here, no dashboard, a capped object store), and live ``python -m service``
servers run next to each other: ``TENSORLENS_EXECUTOR=local`` (the baseline) and
``TENSORLENS_EXECUTOR=ray`` joined to that cluster by its address (image worker actors,
the default; and, for image requests, a second one with Ray tasks).

1. Image requests: Canny on ``skimage.data.camera()`` (512x512, ``?sample=camera``,
   ``Accept: image/png``), one lean keep-alive client, the servers taking turns request
   by request; with the direct skimage call in this process as a reference. A third
   server runs the Ray backend with ``TENSORLENS_RAY_IMAGE_PLACEMENT=tasks``. The Ray
   path's overhead per image request is its median latency minus the local backend's.
   Target: under 5 ms.
2. Predictions: the notes' spiral MLP ([100], ReLU) trained on each server with the same
   config, then predictions/s (1 row per request) with 1 and with 64 concurrent
   clients, batching on; the local server batches in its event loop, the Ray server in
   the model's actor.

    .venv/bin/python bench/ray.py [--repeats 60] [--seconds 4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from _live import LeanClient, free_port, live_server
from inference import (
    MODELS,
    Clients,
    make_inputs,
    pool_phases,
    run_phase,
    train_model,
)
from skimage import data, feature

RAY_CPUS = 2
RAY_OBJECT_STORE_BYTES = 256 * 1024**2
CANNY = "/v1/images/canny?sample=camera"


@contextlib.contextmanager
def ray_cluster(env: dict[str, str]) -> Iterator[str]:
    """``ray start --head --block`` on free ports; yields the address to join."""
    ray_cli = str(Path(sys.executable).with_name("ray"))
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="tl-ray-", dir="/tmp")  # Ray's socket paths are short
    head = subprocess.Popen(
        [
            ray_cli, "start", "--head", f"--port={port}", f"--num-cpus={RAY_CPUS}",
            "--include-dashboard=false", f"--object-store-memory={RAY_OBJECT_STORE_BYTES}",
            f"--temp-dir={temp_dir}", "--disable-usage-stats", "--block",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    try:
        check = [ray_cli, "health-check", "--address", address]
        deadline = time.monotonic() + 120
        while subprocess.run(check, env=env, capture_output=True).returncode != 0:
            if head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the Ray head did not start")
            time.sleep(0.5)
        yield address
    finally:
        head.terminate()
        head.wait(timeout=90)
        shutil.rmtree(temp_dir, ignore_errors=True)


def image_latency(servers: dict[str, str], repeats: int) -> dict[str, list[float]]:
    """Median-ready latencies per server name, the servers taking turns request by request."""
    camera = data.camera()
    times: dict[str, list[float]] = {"direct": [], **{name: [] for name in servers}}
    with contextlib.ExitStack() as stack:
        clients = {name: stack.enter_context(LeanClient(url)) for name, url in servers.items()}
        for client in clients.values():  # connections open, workers warm
            for _ in range(5):
                status, _ = client.post(CANNY, accept="image/png")
                assert status == 200, status
        order = list(clients.items())
        for i in range(repeats):
            for name, client in order[i % len(order) :] + order[: i % len(order)]:
                started = time.perf_counter()
                status, _ = client.post(CANNY, accept="image/png")
                times[name].append(time.perf_counter() - started)
                assert status == 200, status
            started = time.perf_counter()
            feature.canny(camera)
            times["direct"].append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    # A private loopback cluster: no token (a real one runs RAY_AUTH_MODE=token, see README).
    os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    env = dict(os.environ)
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, load {os.getloadavg()}")
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tl-bench-ray-")))
        address = stack.enter_context(ray_cluster(env))
        common = {"TENSORLENS_IMAGE_WORKERS": str(RAY_CPUS)}
        local = stack.enter_context(live_server("local", common, work / "local"))
        ray = stack.enter_context(
            live_server(
                "ray",
                {**common, "TENSORLENS_EXECUTOR": "ray", "TENSORLENS_RAY_ADDRESS": address},
                work / "ray",
            )
        )
        tasks = stack.enter_context(
            live_server(
                "ray-tasks",
                {
                    **common,
                    "TENSORLENS_EXECUTOR": "ray",
                    "TENSORLENS_RAY_ADDRESS": address,
                    "TENSORLENS_RAY_IMAGE_PLACEMENT": "tasks",
                },
                work / "ray-tasks",
            )
        )
        print(
            f"Ray cluster at {address} ({RAY_CPUS} CPUs); servers: local, ray (image worker "
            "actors, the default) and ray-tasks (TENSORLENS_RAY_IMAGE_PLACEMENT=tasks)\n"
        )

        servers = {s.name: s.base_url for s in (local, ray, tasks)}
        times = image_latency(servers, args.repeats)
        median = {name: statistics.median(values) * 1000 for name, values in times.items()}
        print(f"1. Canny 512x512 as PNG, median of {args.repeats}, one lean client")
        for name in times:
            print(f"   {name:9s} {median[name]:7.2f} ms   {median[name] / median['direct']:.2f}x")
        for name in ("ray", "ray-tasks"):
            overhead = median[name] - median["local"]
            verdict = "met" if overhead < 5 else "NOT met"
            print(
                f"   {name} path overhead per request: {overhead:+.2f} ms "
                f"(target < 5 ms: {verdict})"
            )
        print()

        print("2. Predictions/s, notes' spiral MLP [100] ReLU, 1 row per request, batching on")
        notes = MODELS["notes"].config("cpu")
        model_ids = {s.name: train_model(s.base_url, notes)[0] for s in (local, ray)}
        inputs = make_inputs(1, seed=0)
        body = json.dumps({"inputs": inputs.tolist()}).encode()
        for server in (local, ray):  # loads the model (on Ray: starts its actor) before timing
            with LeanClient(server.base_url) as client:
                path = f"/v1/models/{model_ids[server.name]}/predict"
                status, _ = client.post(path, body, content_type="application/json")
                assert status == 200, status
        how = Clients("raw", 1)
        for clients in (1, 64):
            rates = {}
            for server in (local, ray, local, ray):  # alternate; each gets two rounds
                phase = run_phase(
                    server, "notes", model_ids[server.name], inputs, clients, args.seconds / 2, how
                )
                rates.setdefault(server.name, []).append(phase)
            pooled = {name: pool_phases(phases) for name, phases in rates.items()}
            print(
                f"   {clients:2d} clients: local {pooled['local'].rate:7.1f} req/s "
                f"(p50 {pooled['local'].p50_ms:.2f} ms), ray {pooled['ray'].rate:7.1f} req/s "
                f"(p50 {pooled['ray'].p50_ms:.2f} ms) -> ray/local "
                f"{pooled['ray'].rate / pooled['local'].rate:.2f}x, "
                f"errors {pooled['local'].errors + pooled['ray'].errors}"
            )
    print(f"\nload at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
