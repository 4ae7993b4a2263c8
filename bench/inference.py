"""Predictions over HTTP: two models, 1 and many concurrent clients, batching off and on.

Target (issue 3): batching on at 64 clients gives at least 5x batching off, for the
headline model.

Models, both spiral ReLU MLPs trained through the live service (Adam lr 1e-3, weight
decay 1e-5, 3 classes; accuracy does not change what a forward pass costs):

- ``notes``: the notes' network, hidden [100], 1000 points per class, 300 epochs. Its
  forward pass takes about 0.1 ms, a fraction of the server's HTTP work per request
  (reading, parsing and routing it, answering: about 0.5 ms of the event loop on the
  lean prediction path): batching saves the passes and some of that work per request,
  about 2x here. Reported as it is, not the goal's model.
- ``wide`` (the headline): hidden [2048] x 8, 29.4 M parameters, 118 MB of float32
  weights, trained briefly (100 points per class, 5 epochs). The weights are far larger
  than the CPU's caches, so a forward pass streams all of them from memory whatever its
  row count: one pass of 64 rows costs several times one pass of 1 row, not 64 times,
  and a pass of 1 row (about 10 ms on the 2-core machine this was written on) costs
  several times the HTTP work around it. That is the kind of model batching is for, and
  the one the target is about. 2048 units is over the service's default
  ``TENSORLENS_MAX_HIDDEN_UNITS`` (1024, a setting up to 4096), so the bench raises that
  setting, for both servers alike.

What bounds the ratio. Batching off runs one 1-row pass per request, several at once
(one per request in flight, up to the thread pool; torch does not split a 1-row pass
over threads, so each keeps one core), so it answers about
``cores / t(1 row, every core busy)`` requests/s: the passes stream the weights from
memory and share its bandwidth (on the 2-core machine 2 passes at once take 1.3-1.5x
one alone). Batching on (the defaults: one batch at a
time, ``TENSORLENS_INFERENCE_CPU_THREADS`` = every core for its pass) goes in cycles
at 64 closed-loop clients: the event loop answers a batch's 64 requests and parses the
next 64 (``L``, one core), then the pass runs on every core (``t(64 rows)``); so about
``64 / (L + t(64 rows))``. ``L`` is the lean prediction path (``service/routes/_lean.py``,
about 0.5 ms a request on the 2-core machine), and the batch must hold all 64: the
batcher waits, at most one pass long, for as many requests as it held at once in the
last second, so the first client whose answer went out does not run a pass of its own
(a 1-row pass of the wide model costs a fifth of a 64-row one). ``--instances 1,2``
compares a second batch instance (each with the same threads; oversubscribed on 2
cores), ``--env TENSORLENS_INFERENCE_CPU_THREADS=1 --instances 2`` one thread each.
A smaller model than [2048] x 8 is held back by ``L`` (the notes' model: about 2x); a
larger one by the pass ([4096] x 8, 117.5 M parameters, 470 MB:
``64 t(1 row) / t(64 rows)`` about 8 on every core, so at most about 5.5x; measured 4.5x
before the prediction path was lean).
``--hidden`` measures others.

For each model:

1. Baseline, in this process: :meth:`LoadedModel.forward` of the model loaded from the
   store, per call, for 1 row, 64 rows and each measured request shape, on the device
   the servers use, with the servers' torch thread count (``TENSORLENS_INFERENCE_CPU_
   THREADS``) and torch's default. ``64 x t(1 row) / t(64 rows)`` is what batching could
   give at 64 clients if HTTP cost nothing.
2. Throughput: two ``python -m service`` processes on free loopback ports, the same
   settings but ``TENSORLENS_BATCHING=false`` in one and ``true`` in the other (each with
   its own data dir holding a copy of the models; ``--instances 1,2`` runs one batching
   server per ``TENSORLENS_BATCH_INSTANCES`` value instead: ``on x1``, ``on x2``), asked
   for ``POST /v1/models/{id}/predict`` by 1 and by ``--clients`` concurrent clients for
   ``--seconds`` per phase. Requests carry ``--rows`` rows each (a comma-separated list
   explores several shapes). Phases alternate off/on within every round, so a machine
   getting busier or quieter affects both. Each phase reports the CPU time of the server
   process (all its threads) per request and per wall second, that of its event loop's
   thread, and the client's: a client process or the server's loop near 100% of a core
   is the bottleneck.

Before timing, each server's answer is compared with the baseline forward on the same
inputs, so a fast wrong answer cannot pass for a fast right one; while timing, only
the status is checked. The servers are stopped at the end, also on error.

The default client (``--client raw``) is a keep-alive HTTP/1.1 loop over asyncio
streams: ``httpx.AsyncClient`` with a pool of 64 connections spends tens of
milliseconds of CPU per request in its pool on a 2-core machine and would be the
bottleneck (``--client httpx`` shows it). ``--client-procs`` spreads the clients over
several processes.

    .venv/bin/python bench/inference.py [--models notes,wide] [--rows 1] [--clients 64]
        [--seconds 3] [--rounds 2] [--device auto|cpu|cuda] [--hidden 256,256 --epochs 5]
        [--client raw|httpx] [--client-procs 1] [--instances 1,2] [--env TENSORLENS_X=Y ...]

``--hidden`` (with ``--epochs``) adds a ``custom`` model of those hidden layers.
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
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import torch
from _live import Server, live_server

from service.settings import Settings
from workers.errors import InvalidParameter
from workers.serving import LoadedModel
from workers.training import ModelStore, resolve_device

TRAINING_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 30.0
MAX_REQUESTS_PER_CLIENT = 1_000_000  # a bound even if the clock misbehaves
BASELINE_BUDGET_S = 0.4  # per baseline cell
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
JSON = {"Content-Type": "application/json"}
SERVER_SETTINGS = (
    "max_batch_size",
    "max_queue_delay_ms",
    "batch_instances",
    "inference_cpu_threads",
)


@dataclass(frozen=True)
class BenchModel:
    """A spiral ReLU MLP to train through the service and measure."""

    name: str
    hidden: list[int]
    points_per_class: int
    epochs: int

    def config(self, device: str) -> dict[str, object]:
        return {
            "task": "spiral",
            "data": {"points_per_class": self.points_per_class, "classes": 3, "seed": 12345},
            "model": {"hidden": self.hidden, "activation": "relu"},
            "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 1e-5},
            "epochs": self.epochs,
            "report_every": self.epochs,
            "device": device,
        }


MODELS = {
    "notes": BenchModel("notes", [100], points_per_class=1000, epochs=300),
    "wide": BenchModel("wide", [2048] * 8, points_per_class=100, epochs=5),
}
HEADLINE = "wide"  # why: see the module docstring


#: The image pool is idle here; one worker keeps its processes out of the way.
IDLE_IMAGE_POOL = {"TENSORLENS_IMAGE_WORKERS": "1"}


def train_model(base_url: str, config: dict[str, object]) -> tuple[str, dict[str, float]]:
    """Submit ``config`` and wait for it; returns the model id and the last progress."""
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


def _cpu_seconds(pid: int) -> tuple[float, float] | None:
    """User + system CPU seconds of process ``pid``: all its threads, and its main thread
    (the server's event loop). From /proc; None where there is none."""
    used = []
    for stat in (Path(f"/proc/{pid}/stat"), Path(f"/proc/{pid}/task/{pid}/stat")):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        used.append((int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S)
    return used[0], used[1]


# --------------------------------------------------------------------------- baseline


def make_inputs(rows: int, seed: int) -> np.ndarray:
    """Points in the spiral's square, rounded so that JSON carries them exactly."""
    rng = np.random.default_rng(seed)
    return np.round(rng.uniform(-1, 1, size=(rows, 2)), 4).astype(np.float32)


def time_forward(model: LoadedModel, inputs: np.ndarray) -> tuple[float, float]:
    """(median, fastest) seconds per :meth:`LoadedModel.forward` call."""
    for _ in range(5):
        model.forward(inputs)
    per_call = []
    deadline = time.perf_counter() + BASELINE_BUDGET_S
    for _ in range(100_000):
        started = time.perf_counter()
        model.forward(inputs)
        per_call.append(time.perf_counter() - started)
        if time.perf_counter() > deadline and len(per_call) >= 5:
            break
    return statistics.median(per_call), min(per_call)


def check_answer(base_url: str, model_id: str, model: LoadedModel, inputs: np.ndarray) -> None:
    expected = model.forward(inputs)
    with httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as client:
        response = client.post(f"/v1/models/{model_id}/predict", json={"inputs": inputs.tolist()})
    response.raise_for_status()
    got = response.json()
    np.testing.assert_array_equal(got["classes"], expected["classes"])
    np.testing.assert_allclose(got["probabilities"], expected["probabilities"], atol=1e-5)


# --------------------------------------------------------------------------- load


class _RawConnection:
    """One keep-alive HTTP/1.1 connection posting one prepared request again and again."""

    def __init__(self, host: str, port: int, request: bytes) -> None:
        self.host, self.port, self.request = host, port, request
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def open(self) -> None:
        self.close()
        self._streams = await asyncio.open_connection(self.host, self.port)

    async def send(self) -> int:
        if self._streams is None:
            await self.open()
        assert self._streams is not None
        reader, writer = self._streams
        try:
            writer.write(self.request)
            head = await reader.readuntil(b"\r\n\r\n")
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    await reader.readexactly(int(value))
                    return int(head[9:12])
            raise RuntimeError(f"response without Content-Length: {head!r}")
        except (ConnectionError, asyncio.IncompleteReadError):
            self.close()  # the next send reconnects
            raise

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


async def _drive(
    base_url: str,
    path: str,
    body: bytes,
    clients: int,
    seconds: float,
    start_at: float | None,
    server_pid: int,
    client_kind: str,
) -> tuple[int, int, float, list[float], float, tuple[float, float] | None]:
    """``clients`` loops posting ``body`` to ``path`` until ``seconds`` after the start.

    Returns (requests, errors, elapsed s, latencies s, client CPU s, server CPU s (process,
    event loop)).
    Requests in flight at the deadline finish and count; so does their time.
    """
    url = httpx.URL(base_url)
    latencies: list[float] = []
    errors = 0
    async with contextlib.AsyncExitStack() as stack:
        senders: list[Callable[[], Awaitable[int]]]
        if client_kind == "raw":
            request = (
                f"POST {path} HTTP/1.1\r\nHost: {url.netloc.decode()}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            connections = [_RawConnection(url.host, url.port, request) for _ in range(clients)]
            for connection in connections:
                stack.callback(connection.close)
                await connection.open()  # every connection opens before the clock starts
            senders = [connection.send for connection in connections]
        else:
            limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
            client = await stack.enter_async_context(
                httpx.AsyncClient(base_url=base_url, limits=limits, timeout=REQUEST_TIMEOUT_S)
            )
            await asyncio.gather(*(client.get("/healthz") for _ in range(clients)))

            async def post() -> int:
                return (await client.post(path, content=body, headers=JSON)).status_code

            senders = [post] * clients
        if start_at is not None:
            await asyncio.sleep(max(0.0, start_at - time.time()))
        deadline = time.perf_counter() + seconds

        async def one_client(send: Callable[[], Awaitable[int]]) -> None:
            nonlocal errors
            for _ in range(MAX_REQUESTS_PER_CLIENT):
                if time.perf_counter() >= deadline:
                    return
                sent = time.perf_counter()
                try:
                    async with asyncio.timeout(REQUEST_TIMEOUT_S):
                        status = await send()
                except (OSError, asyncio.IncompleteReadError, httpx.TransportError, TimeoutError):
                    status = 0
                if status == 200:
                    latencies.append(time.perf_counter() - sent)
                else:
                    errors += 1

        server_cpu = _cpu_seconds(server_pid)
        client_cpu = time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(one_client(send) for send in senders))
        elapsed = time.perf_counter() - started
        client_cpu = time.process_time() - client_cpu
        server_end = _cpu_seconds(server_pid)
    server_used = None
    if server_cpu is not None and server_end is not None:
        server_used = (server_end[0] - server_cpu[0], server_end[1] - server_cpu[1])
    return len(latencies), errors, elapsed, latencies, client_cpu, server_used


def _drive_in_process(
    *args: object,
) -> tuple[int, int, float, list[float], float, tuple[float, float] | None]:
    return asyncio.run(_drive(*args))  # type: ignore[arg-type]


@dataclass
class Clients:
    """How the load is made: ``kind`` ("raw" or "httpx") loops spread over ``processes``."""

    kind: str
    processes: int
    executor: ProcessPoolExecutor | None = None


@dataclass
class Phase:
    model: str
    server: str
    rows: int
    clients: int
    requests: int
    errors: int
    seconds: float
    latencies_s: list[float]
    client_cpu_s: float
    server_cpu_s: tuple[float, float] | None  # the process, its event loop thread


def run_phase(
    server: Server,
    model: str,
    model_id: str,
    inputs: np.ndarray,
    clients: int,
    seconds: float,
    how: Clients,
) -> Phase:
    path = f"/v1/models/{model_id}/predict"
    body = json.dumps({"inputs": inputs.tolist()}).encode()
    pid = server.process.pid
    procs = min(how.processes, clients)
    if how.executor is None or procs == 1:
        parts = [
            asyncio.run(_drive(server.base_url, path, body, clients, seconds, None, pid, how.kind))
        ]
    else:
        shares = [clients // procs + (i < clients % procs) for i in range(procs)]
        start_at = time.time() + 1.0  # every process opens its connections first
        futures = [
            how.executor.submit(
                _drive_in_process, server.base_url, path, body, n, seconds, start_at, pid, how.kind
            )
            for n in shares
        ]
        parts = [f.result(timeout=seconds + REQUEST_TIMEOUT_S + 30) for f in futures]
    return Phase(
        model=model,
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
    server_cpu: float | None  # CPU s per wall s, all threads
    loop_cpu: float | None  # CPU s per wall s, the event loop's thread
    client_cpu: float
    rounds: list[float]  # req/s of each phase

    @property
    def server_ms_per_request(self) -> float | None:
        if self.server_cpu is None or not self.rate:
            return None
        return self.server_cpu / self.rate * 1000


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
        server_cpu=None if None in server else sum(u[0] for u in server) / seconds,  # type: ignore[index]
        loop_cpu=None if None in server else sum(u[1] for u in server) / seconds,  # type: ignore[index]
        client_cpu=sum(p.client_cpu_s for p in phases) / seconds,
        rounds=[p.requests / p.seconds for p in phases],
    )


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.0f}%"


def _bottleneck(result: Pooled, client_processes: int) -> str:
    """Which side ran out of CPU: a client process near one core, or the server's loop."""
    if result.client_cpu >= 0.85 * client_processes:
        return "client-bound"
    if result.loop_cpu is not None and result.loop_cpu >= 0.75:
        return "server-bound (event loop)"
    return "neither side saturated (waiting, or a busy machine)"


def _load() -> str:
    return "n/a" if not hasattr(os, "getloadavg") else f"{os.getloadavg()[0]:.2f}"


def _parse_env(pairs: list[str]) -> dict[str, str]:
    settings = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--env wants NAME=VALUE, got {pair!r}")
        settings[name] = value
    return settings


def _server_settings(env: dict[str, str]) -> Settings:
    """The settings the servers run with: their environment over the defaults."""
    prefix = "TENSORLENS_"
    overrides = {k[len(prefix) :].lower(): v for k, v in env.items() if k.startswith(prefix)}
    return Settings(**{k: v for k, v in overrides.items() if k in Settings.model_fields})


@dataclass
class Trained:
    spec: BenchModel
    model_id: str
    training_s: float
    progress: dict[str, float]
    loaded: LoadedModel | None = None


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        default=",".join(MODELS),
        help=f"comma-separated, of {', '.join(MODELS)} (the headline: {HEADLINE})",
    )
    parser.add_argument(
        "--rows", default="1", help="rows per request; a comma-separated list explores several"
    )
    parser.add_argument("--clients", type=int, default=64, help="the concurrent client count")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one phase")
    parser.add_argument("--rounds", type=int, default=2, help="phases per (rows, clients, server)")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="TENSORLENS_INFERENCE_DEVICE, the training device and the baseline's",
    )
    parser.add_argument(
        "--hidden", default="", help="hidden layer sizes of an extra `custom` model"
    )
    parser.add_argument("--epochs", type=int, default=5, help="training epochs of `custom`")
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="raw: keep-alive HTTP/1.1 over asyncio streams; httpx: one httpx.AsyncClient",
    )
    parser.add_argument(
        "--client-procs", type=int, default=1, help="processes sharing the concurrent clients"
    )
    parser.add_argument(
        "--instances",
        default="",
        help="TENSORLENS_BATCH_INSTANCES of the batching server; a comma-separated list runs "
        "one batching server per value (`on x1`, `on x2`, ...), alternating with the others",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for every server, e.g. TENSORLENS_MAX_QUEUE_DELAY_MS=1",
    )
    return parser.parse_args()


def main() -> None:
    args = _parse_args()
    specs = []
    for name in (n.strip() for n in args.models.split(",") if n.strip()):
        if name not in MODELS:
            raise SystemExit(f"--models: unknown {name!r}; known: {', '.join(MODELS)}")
        specs.append(MODELS[name])
    if args.hidden:
        hidden = [int(h) for h in args.hidden.split(",") if h.strip()]
        specs.append(BenchModel("custom", hidden, points_per_class=100, epochs=args.epochs))
    if not specs:
        raise SystemExit("no model to measure")
    row_counts = [int(r) for r in args.rows.split(",") if r.strip()]
    try:
        device = resolve_device(args.device)
    except InvalidParameter as exc:
        raise SystemExit(f"--device {args.device}: {exc}") from None
    concurrency = (1, args.clients)
    server_env = {
        "TENSORLENS_INFERENCE_DEVICE": args.device,
        **_limits_for(specs),
        **_parse_env(args.env),
    }
    settings = _server_settings(server_env)
    instances = [int(n) for n in args.instances.split(",") if n.strip()]
    if any(n < 1 for n in instances):
        raise SystemExit("--instances: each must be >= 1")
    on_servers: dict[str, dict[str, str]] = (
        {f"on x{n}": {"TENSORLENS_BATCH_INSTANCES": str(n)} for n in instances}
        if instances
        else {"on": {}}
    )

    command = shlex.join([Path(sys.executable).name, *sys.argv])
    gpu = f", {torch.cuda.get_device_name(device)}" if device.startswith("cuda") else ""
    fast_parts = [m for m in ("uvloop", "httptools") if importlib.util.find_spec(m)]
    print(f"command:  {command}")
    print(
        f"machine:  {platform.platform()}, {platform.machine()}, os.cpu_count()={os.cpu_count()}, "
        f"Python {platform.python_version()}, torch {torch.__version__}, httpx {httpx.__version__}"
        f", uvicorn with {', '.join(fast_parts) or 'neither uvloop nor httptools'}"
    )
    print(f"device:   {device}{gpu} (--device {args.device}); load average {_load()} at start")
    print(
        f"servers:  python -m service, TENSORLENS_BATCHING=false and =true, otherwise the same: "
        f"{' '.join(f'{k}={v}' for k, v in server_env.items())}; "
        + ", ".join(f"{name} {getattr(settings, name)}" for name in SERVER_SETTINGS)
    )
    if instances:
        print(
            "          batching servers: "
            + ", ".join(
                f"{name}: TENSORLENS_BATCH_INSTANCES={n}"
                for name, n in zip(on_servers, instances, strict=True)
            )
        )
    print(
        f"clients:  {args.client}, {args.client_procs} process(es), one connection per "
        f"client; clients and servers share this machine"
    )

    how = Clients(args.client, args.client_procs)
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="tensorlens-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        if args.client_procs > 1:
            how.executor = stack.enter_context(
                ProcessPoolExecutor(
                    args.client_procs, mp_context=multiprocessing.get_context("spawn")
                )
            )
        off_dir = Path(tmp) / "off" / "data"
        off_dir.mkdir(parents=True)
        off = stack.enter_context(
            live_server(
                "off", {**IDLE_IMAGE_POOL, **server_env, "TENSORLENS_BATCHING": "false"}, off_dir
            )
        )
        trained = []
        for spec in specs:
            training_s = time.monotonic()
            model_id, progress = train_model(off.base_url, spec.config(args.device))
            trained.append(Trained(spec, model_id, time.monotonic() - training_s, progress))
        servers = [off]
        for name, extra in on_servers.items():
            # The model store is a directory per model: each batching server gets a copy.
            on_dir = Path(tmp) / name.replace(" ", "") / "data"
            shutil.copytree(off_dir / "models", on_dir / "models")
            on_env = {**IDLE_IMAGE_POOL, **server_env, "TENSORLENS_BATCHING": "true", **extra}
            servers.append(stack.enter_context(live_server(name, on_env, on_dir)))
        for t in trained:
            loss = t.progress.get("loss", float("nan"))
            accuracy = t.progress.get("accuracy", float("nan"))
            print(
                f"model:    {t.spec.name}{' (headline)' if t.spec.name == HEADLINE else ''}: "
                f"spiral MLP, hidden {_hidden(t.spec.hidden)}, relu, 3 classes x "
                f"{t.spec.points_per_class} points; {t.spec.epochs} epochs in "
                f"{t.training_s:.1f} s, loss {loss:.4f}, accuracy {accuracy:.3f}"
            )

        # Baselines: the servers' torch threads, and torch's default where that differs.
        default_threads = torch.get_num_threads()
        thread_counts = [settings.inference_cpu_threads, default_threads]
        if device.startswith("cuda"):
            thread_counts = [default_threads]
        shapes = sorted({1, 64, *row_counts, *(r * args.clients for r in row_counts)})
        baseline: dict[tuple[str, int, int], tuple[float, float]] = {}
        try:
            for t in trained:
                t.loaded = LoadedModel.from_store(
                    ModelStore(off_dir / "models"), t.model_id, device
                )
                for threads in dict.fromkeys(thread_counts):
                    torch.set_num_threads(threads)
                    for rows in shapes:
                        inputs = make_inputs(rows, rows)
                        baseline[t.spec.name, threads, rows] = time_forward(t.loaded, inputs)
        finally:
            torch.set_num_threads(default_threads)

        for t in trained:
            assert t.loaded is not None
            for server in servers:
                for rows in row_counts:
                    inputs = make_inputs(rows, 1000 + rows)
                    check_answer(server.base_url, t.model_id, t.loaded, inputs)
                # Warm-up: loads the model, starts the batcher, fills the thread pools.
                run_phase(server, t.spec.name, t.model_id, make_inputs(1, 0), args.clients, 1, how)

        phases: list[Phase] = []
        for _ in range(args.rounds):
            for t in trained:
                for rows in row_counts:
                    inputs = make_inputs(rows, rows)
                    for clients in concurrency:
                        for server in servers:
                            phases.append(
                                run_phase(
                                    server,
                                    t.spec.name,
                                    t.model_id,
                                    inputs,
                                    clients,
                                    args.seconds,
                                    how,
                                )
                            )
        elapsed = time.monotonic() - started

    server_threads = settings.inference_cpu_threads if not device.startswith("cuda") else None
    for t in trained:
        name = t.spec.name
        print()
        headline = " (headline)" if name == HEADLINE else ""
        print(f"=== {name}{headline}: hidden {_hidden(t.spec.hidden)}")
        print(f"baseline: LoadedModel.forward in this process on {device}, per call")
        print(f"{'threads':>7}{'rows':>7}{'median us':>11}{'min us':>9}{'rows/s':>13}")
        for (model, threads, rows), (median_s, min_s) in baseline.items():
            if model != name:
                continue
            servers_note = "  (the servers')" if threads == server_threads else ""
            print(
                f"{threads:>7}{rows:>7}{median_s * 1e6:>11.1f}{min_s * 1e6:>9.1f}"
                f"{rows / median_s:>13,.0f}{servers_note}"
            )
        print(
            f"throughput: POST /v1/models/{{id}}/predict, {args.rounds} x {args.seconds:g} s "
            f"each, off/on alternating. CPU: CPU s per wall s (100% = one core) of the server "
            f"process (all threads), of its event loop's thread, and of the client process(es)"
        )
        header = (
            f"{'rows':>5}{'clients':>8}{'batching':>9}{'req/s':>9}{'rows/s':>10}{'p50 ms':>8}"
            f"{'p95 ms':>8}{'errors':>7}{'server':>8}{'loop':>6}{'ms CPU/req':>11}{'client':>8}"
            f"   req/s per round"
        )
        print(header)
        print("-" * len(header))
        pooled: dict[tuple[int, int, str], Pooled] = {}
        for rows in row_counts:
            for clients in concurrency:
                for server in servers:
                    key = (rows, clients, server.name)
                    chosen = [
                        p for p in phases if (p.model, p.rows, p.clients, p.server) == (name, *key)
                    ]
                    result = pooled[key] = pool_phases(chosen)
                    ms = result.server_ms_per_request
                    print(
                        f"{rows:>5}{clients:>8}{server.name:>9}{result.rate:>9.1f}"
                        f"{result.rate * rows:>10,.0f}{result.p50_ms:>8.1f}{result.p95_ms:>8.1f}"
                        f"{result.errors:>7}{_percent(result.server_cpu):>8}"
                        f"{_percent(result.loop_cpu):>6}{'-' if ms is None else f'{ms:.2f}':>11}"
                        f"{_percent(result.client_cpu):>8}"
                        f"   {', '.join(f'{r:.0f}' for r in result.rounds)}"
                    )
        many = args.clients
        threads = server_threads or default_threads
        for rows, on_name in ((r, n) for r in row_counts for n in on_servers):
            off_many, on_many = pooled[rows, many, "off"], pooled[rows, many, on_name]
            ratio = on_many.rate / off_many.rate
            if name == HEADLINE and rows == 1:
                verdict = "meets the 5x goal" if ratio >= 5 else "UNDER the 5x goal"
            else:
                verdict = "not the goal's measurement"
            one = baseline[name, threads, rows][0]
            batch = baseline[name, threads, rows * many][0]
            print(
                f"rows={rows}: batching {on_name} / off at {many} clients: {ratio:.2f}x "
                f"({verdict}); {many} / 1 client: off "
                f"{off_many.rate / pooled[rows, 1, 'off'].rate:.2f}x, "
                f"{on_name} {on_many.rate / pooled[rows, 1, on_name].rate:.2f}x"
            )
            print(
                f"  forward ({threads} thread(s)): {rows} row(s) {one * 1000:.3f} ms, "
                f"{rows * many} rows {batch * 1000:.3f} ms, so at most {many * one / batch:.1f}x "
                f"from batching if HTTP were free; a request costs the server "
                f"{off_many.server_ms_per_request or 0:.2f} ms CPU with batching off, "
                f"{on_many.server_ms_per_request or 0:.2f} ms {on_name}; at {many} clients: "
                f"off {_bottleneck(off_many, how.processes)}, "
                f"{on_name} {_bottleneck(on_many, how.processes)}"
            )
    print()
    print(f"(measured in {elapsed:.0f} s; load average {_load()} at the end)")


def _limits_for(specs: list[BenchModel]) -> dict[str, str]:
    """Server settings raising the default training limits where a model needs it."""
    defaults = Settings.model_fields
    units = max(h for spec in specs for h in spec.hidden)
    layers = max(len(spec.hidden) for spec in specs)
    env = {}
    if units > defaults["max_hidden_units"].default:
        env["TENSORLENS_MAX_HIDDEN_UNITS"] = str(units)
    if layers > defaults["max_layers"].default:
        env["TENSORLENS_MAX_LAYERS"] = str(layers)
    return env


def _hidden(hidden: list[int]) -> str:
    if len(set(hidden)) == 1 and len(hidden) > 1:
        return f"[{hidden[0]}] x {len(hidden)}"
    return str(hidden)


if __name__ == "__main__":
    main()
