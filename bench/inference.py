"""Predictions over HTTP: one model, 1 and many concurrent clients, batching off and on.

1. Trains one model through the live service: by default the notes' spiral ReLU MLP
   (hidden [100], Adam lr 1e-3, 3 classes of 1000 points; ``--epochs`` of them, since
   accuracy does not change what a forward pass costs).
2. Baseline, in this process: :meth:`LoadedModel.forward` of that model loaded from the
   store, per call, for 1 row, for 64 rows and for each measured request shape, on the
   device the servers use.
3. Throughput: two ``python -m service`` processes on free loopback ports, one with
   ``TENSORLENS_BATCHING=false`` and one with ``true`` (each with its own data dir
   holding a copy of the model), asked for ``POST /v1/models/{id}/predict`` by 1 and
   by ``--clients`` concurrent clients for ``--seconds`` per phase. Requests carry
   ``--rows`` rows each (a comma-separated list explores several shapes). The phases
   alternate off/on within every round so a machine getting busier or quieter affects
   both. Each phase also reports the CPU time the server and the client processes used
   per wall second (100% = one core), which says which side is the bottleneck.
   Target: batching on at 64 clients gives at least 5x batching off.

Every response is checked for its status; before timing, each server's answer is
compared with the baseline forward on the same inputs, so a fast wrong answer cannot
pass for a fast right one. Both servers are stopped at the end, also on error.

    .venv/bin/python bench/inference.py [--rows 1,16] [--clients 64] [--seconds 4]
        [--rounds 2] [--device auto|cpu|cuda] [--hidden 100] [--client-procs 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import multiprocessing
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import torch

from workers.training import LoadedModel, ModelStore, resolve_device

REPO_ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 90.0
SHUTDOWN_TIMEOUT_S = 15.0
TRAINING_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 30.0
MAX_REQUESTS_PER_CLIENT = 1_000_000  # a bound even if the clock misbehaves
BASELINE_BUDGET_S = 0.5  # per baseline row
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
JSON = {"Content-Type": "application/json"}


def training_config(hidden: list[int], epochs: int, device: str) -> dict[str, object]:
    """The notes' spiral ReLU MLP; ``hidden`` and ``epochs`` as asked."""
    return {
        "task": "spiral",
        "data": {"points_per_class": 1000, "classes": 3, "seed": 12345},
        "model": {"hidden": hidden, "activation": "relu"},
        "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 1e-5},
        "epochs": epochs,
        "report_every": epochs,
        "device": device,
    }


# --------------------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def live_server(name: str, data_dir: Path, settings: dict[str, str]) -> Iterator[Server]:
    """`python -m service` on a free loopback port; stopped on the way out, also on error."""
    port = _free_port()
    env = {
        "TENSORLENS_HOST": "127.0.0.1",
        "TENSORLENS_PORT": str(port),
        "TENSORLENS_DATA_DIR": str(data_dir),
        # Warnings only: an info line per request would cost the server time we measure.
        "TENSORLENS_LOG_LEVEL": "warning",
        # The image pool is idle here; one worker keeps its processes out of the way.
        "TENSORLENS_IMAGE_WORKERS": "1",
        **settings,
    }
    log_path = data_dir.parent / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service"],
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(name, f"http://127.0.0.1:{port}", process, log_path, env)
    try:
        _wait_until_ready(server)
        yield server
    except BaseException:
        print(f"--- {name} server log ---\n{log_path.read_text(errors='replace')}", file=sys.stderr)
        raise
    finally:
        _stop(process)


def _wait_until_ready(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited with {server.process.returncode} on startup")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{server.base_url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"/readyz did not answer 200 within {STARTUP_TIMEOUT_S:g} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=SHUTDOWN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=SHUTDOWN_TIMEOUT_S)


def train_model(base_url: str, config: dict[str, object]) -> tuple[str, dict[str, object]]:
    """Submit ``config``, wait for the job; returns the model id and the last progress."""
    with httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as client:
        response = client.post("/v1/trainings", json=config)
        if response.status_code != 202:
            raise RuntimeError(f"training refused: {response.status_code} {response.text}")
        job_id = response.json()["id"]
        deadline = time.monotonic() + TRAINING_TIMEOUT_S
        while time.monotonic() < deadline:
            job = client.get(f"/v1/trainings/{job_id}").json()
            if job["status"] == "succeeded":
                return job_id, job["progress"] or {}
            if job["status"] in ("failed", "cancelled"):
                raise RuntimeError(f"training {job['status']}: {job.get('reason')}")
            time.sleep(0.2)
    raise RuntimeError(f"training did not finish within {TRAINING_TIMEOUT_S:g} s")


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` (all its threads), from /proc; None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


# --------------------------------------------------------------------------- baseline


def time_forward(model: LoadedModel, inputs: np.ndarray) -> float:
    """Median seconds per :meth:`LoadedModel.forward` call, over batches of calls."""
    for _ in range(20):
        model.forward(inputs)
    per_call = []
    deadline = time.perf_counter() + BASELINE_BUDGET_S
    for _ in range(1000):
        started = time.perf_counter()
        for _ in range(10):
            model.forward(inputs)
        per_call.append((time.perf_counter() - started) / 10)
        if time.perf_counter() > deadline and len(per_call) >= 5:
            break
    return statistics.median(per_call)


def make_inputs(rows: int, seed: int) -> np.ndarray:
    """Points in the spiral's square, rounded so that JSON carries them exactly."""
    rng = np.random.default_rng(seed)
    return np.round(rng.uniform(-1, 1, size=(rows, 2)), 4).astype(np.float32)


def check_answer(base_url: str, model_id: str, model: LoadedModel, inputs: np.ndarray) -> None:
    expected = model.forward(inputs)
    with httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as client:
        response = client.post(f"/v1/models/{model_id}/predict", json={"inputs": inputs.tolist()})
    response.raise_for_status()
    got = response.json()
    np.testing.assert_array_equal(got["classes"], expected["classes"])
    np.testing.assert_allclose(got["probabilities"], expected["probabilities"], atol=1e-5)


# --------------------------------------------------------------------------- load


@dataclass
class Phase:
    server: str
    rows: int
    clients: int
    requests: int
    errors: int
    seconds: float
    latencies_s: list[float]
    client_cpu_s: float
    server_cpu_s: float | None

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


async def _drive(
    base_url: str,
    path: str,
    body: bytes,
    clients: int,
    seconds: float,
    start_at: float | None,
    server_pid: int,
) -> tuple[int, int, float, list[float], float, float | None]:
    """``clients`` loops posting ``body`` until ``seconds`` after the start.

    Returns (requests, errors, elapsed s, latencies, client CPU s, server CPU s).
    Requests in flight at the deadline finish and count; so does their time.
    """
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    latencies: list[float] = []
    errors = 0
    async with httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=REQUEST_TIMEOUT_S
    ) as client:
        # Open every connection before the clock starts.
        await asyncio.gather(*(client.get("/healthz") for _ in range(clients)))
        if start_at is not None:
            await asyncio.sleep(max(0.0, start_at - time.time()))
        deadline = time.perf_counter() + seconds

        async def one_client() -> None:
            nonlocal errors
            for _ in range(MAX_REQUESTS_PER_CLIENT):
                if time.perf_counter() >= deadline:
                    return
                sent = time.perf_counter()
                response = await client.post(path, content=body, headers=JSON)
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - sent)
                else:
                    errors += 1

        server_cpu = _cpu_seconds(server_pid)
        client_cpu = time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
        client_cpu = time.process_time() - client_cpu
        server_end = _cpu_seconds(server_pid)
        server_used = None if server_cpu is None or server_end is None else server_end - server_cpu
    return len(latencies), errors, elapsed, latencies, client_cpu, server_used


def _drive_in_process(*args: object) -> tuple[int, int, float, list[float], float, float | None]:
    return asyncio.run(_drive(*args))  # type: ignore[arg-type]


def run_phase(
    server: Server,
    model_id: str,
    inputs: np.ndarray,
    clients: int,
    seconds: float,
    executor: ProcessPoolExecutor | None,
) -> Phase:
    path = f"/v1/models/{model_id}/predict"
    body = json.dumps({"inputs": inputs.tolist()}).encode()
    pid = server.process.pid
    if executor is None or clients == 1:
        parts = [asyncio.run(_drive(server.base_url, path, body, clients, seconds, None, pid))]
    else:
        procs = min(executor._max_workers, clients)
        shares = [clients // procs + (i < clients % procs) for i in range(procs)]
        start_at = time.time() + 1.0  # every process opens its connections first
        futures = [
            executor.submit(
                _drive_in_process, server.base_url, path, body, n, seconds, start_at, pid
            )
            for n in shares
        ]
        parts = [f.result(timeout=seconds + REQUEST_TIMEOUT_S + 30) for f in futures]
    return Phase(
        server=server.name,
        rows=len(inputs),
        clients=clients,
        requests=sum(p[0] for p in parts),
        errors=sum(p[1] for p in parts),
        seconds=max(p[2] for p in parts),
        latencies_s=[s for p in parts for s in p[3]],
        client_cpu_s=sum(p[4] for p in parts),
        server_cpu_s=parts[0][5],
    )


# --------------------------------------------------------------------------- report


@dataclass
class Pooled:
    rate: float
    requests: int
    errors: int
    p50_ms: float
    p95_ms: float
    server_cpu: float | None
    client_cpu: float


def pool_phases(phases: list[Phase]) -> Pooled:
    requests = sum(p.requests for p in phases)
    seconds = sum(p.seconds for p in phases)
    latencies = [s for p in phases for s in p.latencies_s] or [float("nan")]
    server = [p.server_cpu_s for p in phases]
    return Pooled(
        rate=requests / seconds,
        requests=requests,
        errors=sum(p.errors for p in phases),
        p50_ms=float(np.quantile(latencies, 0.5)) * 1000,
        p95_ms=float(np.quantile(latencies, 0.95)) * 1000,
        server_cpu=None if None in server else sum(server) / seconds,  # type: ignore[arg-type]
        client_cpu=sum(p.client_cpu_s for p in phases) / seconds,
    )


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.0f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", default="1,16", help="rows per request; a comma-separated list explores several"
    )
    parser.add_argument("--clients", type=int, default=64, help="the concurrent client count")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of one phase")
    parser.add_argument("--rounds", type=int, default=2, help="phases per (rows, clients, server)")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="TENSORLENS_INFERENCE_DEVICE, the training device and the baseline's",
    )
    parser.add_argument(
        "--hidden", default="100", help="hidden layer sizes, comma-separated (notes: 100)"
    )
    parser.add_argument("--epochs", type=int, default=300, help="training epochs")
    parser.add_argument(
        "--max-queue-delay-ms", type=float, default=None, help="TENSORLENS_MAX_QUEUE_DELAY_MS"
    )
    parser.add_argument(
        "--client-procs",
        type=int,
        default=1,
        help="processes sharing the concurrent clients (1: asyncio in this process)",
    )
    args = parser.parse_args()
    row_counts = [int(r) for r in args.rows.split(",") if r.strip()]
    hidden = [int(h) for h in args.hidden.split(",") if h.strip()]
    device = resolve_device(args.device)
    concurrency = (1, args.clients)

    command = shlex.join([Path(sys.executable).name, *sys.argv])
    gpu = f", {torch.cuda.get_device_name(device)}" if device.startswith("cuda") else ""
    fast_parts = [m for m in ("uvloop", "httptools") if importlib.util.find_spec(m)]
    print(f"command:  {command}")
    print(
        f"machine:  {platform.platform()}, {platform.machine()}, os.cpu_count()={os.cpu_count()}, "
        f"Python {platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), httpx {httpx.__version__}, "
        f"uvicorn with {', '.join(fast_parts) or 'neither uvloop nor httptools'}"
    )
    print(f"device:   {device}{gpu} (--device {args.device})")

    server_settings = {"TENSORLENS_INFERENCE_DEVICE": args.device, "TENSORLENS_DEVICES": "auto"}
    if args.max_queue_delay_ms is not None:
        server_settings["TENSORLENS_MAX_QUEUE_DELAY_MS"] = f"{args.max_queue_delay_ms:g}"
    config = training_config(hidden, args.epochs, args.device)
    executor = None
    if args.client_procs > 1:
        executor = ProcessPoolExecutor(
            args.client_procs, mp_context=multiprocessing.get_context("spawn")
        )
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="tensorlens-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        if executor is not None:
            stack.callback(executor.shutdown, cancel_futures=True)
        off_dir, on_dir = Path(tmp) / "off" / "data", Path(tmp) / "on" / "data"
        off_dir.mkdir(parents=True)
        on_dir.mkdir(parents=True)
        off = stack.enter_context(
            live_server("off", off_dir, {**server_settings, "TENSORLENS_BATCHING": "false"})
        )
        trained = time.monotonic()
        model_id, progress = train_model(off.base_url, config)
        trained = time.monotonic() - trained
        # The model store is a directory per model: the second server gets a copy.
        shutil.copytree(off_dir / "models", on_dir / "models")
        on = stack.enter_context(
            live_server("on", on_dir, {**server_settings, "TENSORLENS_BATCHING": "true"})
        )
        servers = (off, on)
        shown = " ".join(f"{k}={v}" for k, v in server_settings.items())
        print(
            f"model:    spiral MLP hidden {hidden}, relu, adam lr 1e-3, 3 classes x 1000 points, "
            f"{args.epochs} epochs in {trained:.1f} s (loss {progress.get('loss', float('nan')):.4f}"
            f", accuracy {progress.get('accuracy', float('nan')):.3f}); id {model_id}"
        )
        print(
            f"servers:  python -m service, TENSORLENS_BATCHING=false and =true; {shown} "
            f"(others default: max_batch_size 1024, max_queue_delay_ms 2)"
        )
        print(
            f"clients:  httpx.AsyncClient, {args.client_procs} process(es), one connection per "
            f"client; client and servers share this machine"
        )

        model = LoadedModel.from_store(ModelStore(off_dir / "models"), model_id, device)
        shapes = sorted({1, 64, *row_counts, *(r * args.clients for r in row_counts)})
        baseline = {rows: time_forward(model, make_inputs(rows, rows)) for rows in shapes}
        print()
        print("baseline: LoadedModel.forward in this process, per call (median)")
        print(f"{'rows':>7}{'us/call':>10}{'rows/s':>13}")
        for rows, seconds in baseline.items():
            print(f"{rows:>7}{seconds * 1e6:>10.1f}{rows / seconds:>13,.0f}")

        for server in servers:
            for rows in row_counts:
                check_answer(server.base_url, model_id, model, make_inputs(rows, 1000 + rows))
            # Warm-up: loads the model, opens the batcher, fills the thread pool.
            run_phase(server, model_id, make_inputs(1, 0), args.clients, 1.0, executor)

        phases: list[Phase] = []
        for _ in range(args.rounds):
            for rows in row_counts:
                inputs = make_inputs(rows, rows)
                for clients in concurrency:
                    for server in servers:
                        phases.append(
                            run_phase(server, model_id, inputs, clients, args.seconds, executor)
                        )
        elapsed = time.monotonic() - started

    print()
    print(
        f"throughput: POST /v1/models/{{id}}/predict, {args.rounds} x {args.seconds:g} s per "
        f"row, alternating off/on; CPU = process CPU s per wall s (100% = one core)"
    )
    header = (
        f"{'rows':>5}{'clients':>8}{'batching':>9}{'req/s':>9}{'rows/s':>10}{'p50 ms':>8}"
        f"{'p95 ms':>8}{'errors':>7}{'server CPU':>11}{'client CPU':>11}"
    )
    print(header)
    print("-" * len(header))
    pooled: dict[tuple[int, int, str], Pooled] = {}
    for rows in row_counts:
        for clients in concurrency:
            for server in servers:
                key = (rows, clients, server.name)
                chosen = [p for p in phases if (p.rows, p.clients, p.server) == key]
                result = pooled[key] = pool_phases(chosen)
                print(
                    f"{rows:>5}{clients:>8}{server.name:>9}{result.rate:>9.1f}"
                    f"{result.rate * rows:>10,.0f}{result.p50_ms:>8.1f}{result.p95_ms:>8.1f}"
                    f"{result.errors:>7}{_percent(result.server_cpu):>11}"
                    f"{_percent(result.client_cpu):>11}"
                )

    print()
    many = args.clients
    for rows in row_counts:
        ratio = pooled[(rows, many, "on")].rate / pooled[(rows, many, "off")].rate
        verdict = "ok" if ratio >= 5 else "UNDER the 5x goal"
        forward_share = baseline[rows] * pooled[(rows, many, "off")].rate
        print(
            f"rows={rows}: batching on / off at {many} clients: {ratio:.2f}x ({verdict}); "
            f"{many} / 1 client: off {pooled[(rows, many, 'off')].rate / pooled[(rows, 1, 'off')].rate:.2f}x, "  # noqa: E501
            f"on {pooled[(rows, many, 'on')].rate / pooled[(rows, 1, 'on')].rate:.2f}x; "
            f"batching off spends {forward_share * 100:.0f}% of a core in forward passes"
        )
    print(f"(measured in {elapsed:.0f} s on {device})")


if __name__ == "__main__":
    main()
