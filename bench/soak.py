"""Soak: a mixed load at saturation against a live server for a given time.

    .venv/bin/python bench/soak.py --duration-s 300            # starts its own server
    .venv/bin/python bench/soak.py --url http://host:8000 --pid 1234 --api-key ...

``--concurrency`` clients loop without pause over a weighted mix: image ops on samples
and on uploads, two-step pipelines, predictions on a model trained at the start, reads
of models and jobs, and hostile uploads (damaged files of every format,
bench/_hostile.py); beside them a training is submitted every ``--training-every-s``
(every other one cancelled while it runs). After ``--warmup-s`` of that, it runs for
``--duration-s`` and reports requests by status and the p50 and p99 latency per route,
and the resident memory (RSS) and open file descriptors of the server and every process
under it before the load, after the warm-up and at the end, each sample taken with no
client connected and no training running.

It fails (exit status 1) when any answer is not 2xx or 4xx (a 5xx, or a request
that got no answer), when a long-lived process grew its RSS by more than
``--max-rss-growth`` (5%) from warm-up to the end, or its fds at all. Training
processes come and go; only processes alive at both samples are compared.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from _hostile import mutants
from _live import live_server
from PIL import Image

from tensorlens._core import KEEPALIVE_EXPIRY_S

SMALL_TRAINING = {
    "task": "spiral",
    "data": {"points_per_class": 200, "classes": 3, "seed": 7},
    "model": {"hidden": [32], "activation": "relu"},
    "optimizer": {"name": "adam", "lr": 1e-2},
    "epochs": 300,
    "report_every": 20,
}


# Processes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessSample:
    pid: int
    name: str
    rss_bytes: int
    #: What each open fd is (``readlink`` of /proc/<pid>/fd/<n>), to say what a growth is.
    fd_targets: tuple[str, ...]

    @property
    def fds(self) -> int:
        return len(self.fd_targets)


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            kids += [int(child) for child in task.read_text().split()]
    return kids


def process_tree(root: int) -> Iterator[int]:
    stack = [root]
    while stack:
        pid = stack.pop()
        yield pid
        stack += _children(pid)


def sample_processes(root: int) -> dict[int, ProcessSample]:
    """RSS and open fds of ``root`` and every process under it (Linux /proc)."""
    samples = {}
    for pid in process_tree(root):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            rss = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
            fds = tuple(_fd_targets(pid))
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue  # it ended while we looked
        samples[pid] = ProcessSample(pid, _short_name(cmdline, fields), rss, fds)
    return samples


def _fd_targets(pid: int) -> Iterator[str]:
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            # socket:[123] and pipe:[456] differ by inode only: count them by kind.
            yield target.split(":[")[0] if ":[" in target else target


def _short_name(cmdline: str, fields: dict[str, str]) -> str:
    if "-m service" in cmdline:
        return "server"
    if "multiprocessing" in cmdline or "spawn_main" in cmdline:
        return "worker"
    return fields.get("Name", "?").strip()


# Load ----------------------------------------------------------------------------------


@dataclass
class Tally:
    statuses: Counter[tuple[str, str]] = field(default_factory=Counter)
    latencies_s: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, route: str, status: str, elapsed_s: float) -> None:
        self.statuses[route, status] += 1
        self.latencies_s[route].append(elapsed_s)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


class Load:
    """The request mix; each call sends one request and tallies it under its route."""

    def __init__(self, http: httpx.AsyncClient, model_id: str, seed: int) -> None:
        self.http = http
        self.model_id = model_id
        self.rng = random.Random(seed)
        self.tally = Tally()
        rng = np.random.default_rng(seed)
        self.uploads = [_png(rng.integers(0, 256, (256, 256), dtype=np.uint8)) for _ in range(4)]
        self.hostile = [content for _, content in mutants(seed, per_format=40)]
        self.mix = [
            (self.sample_op, 3),
            (self.upload_op, 3),
            (self.pipeline, 2),
            (self.predict, 6),
            (self.read, 2),
            (self.hostile_upload, 2),
        ]

    async def send(self, route: str, method: str, url: str, **kwargs: Any) -> None:
        started = time.perf_counter()
        try:
            response = await self.http.request(method, url, **kwargs)
            status = str(response.status_code)
        except httpx.HTTPError as exc:
            status = type(exc).__name__  # no answer: a failure
        self.tally.add(route, status, time.perf_counter() - started)

    async def one(self) -> None:
        calls, weights = zip(*self.mix, strict=True)
        await self.rng.choices(calls, weights)[0]()

    async def sample_op(self) -> None:
        op, params = self.rng.choice(
            [("canny", "sigma=2"), ("equalize_adapthist", "clip_limit=0.03"), ("rgb2gray", "")]
        )
        sample = "camera" if op == "canny" else "chelsea" if op == "rgb2gray" else "moon"
        url = f"/v1/images/{op}?sample={sample}&include_image=false&{params}".rstrip("&")
        await self.send(f"POST /v1/images/{op}", "POST", url)

    async def upload_op(self) -> None:
        files = {"image": ("x.png", self.rng.choice(self.uploads), "image/png")}
        await self.send(
            "POST /v1/images/equalize_hist (upload)",
            "POST",
            "/v1/images/equalize_hist",
            files=files,
            headers={"Accept": "image/png"},
        )

    async def pipeline(self) -> None:
        steps = json.dumps([{"op": "canny", "sigma": 2}, {"op": "fill_holes"}])
        await self.send(
            "POST /v1/images/pipeline",
            "POST",
            "/v1/images/pipeline?sample=coins&include_image=false",
            data={"steps": steps},
        )

    async def predict(self) -> None:
        rows = [[self.rng.uniform(-1, 1), self.rng.uniform(-1, 1)] for _ in range(16)]
        await self.send(
            "POST /v1/models/{id}/predict",
            "POST",
            f"/v1/models/{self.model_id}/predict",
            json={"inputs": rows},
        )

    async def read(self) -> None:
        url = self.rng.choice(["/v1/models", "/v1/trainings?limit=20", "/v1/samples"])
        await self.send(f"GET {url.split('?')[0]}", "GET", url)

    async def hostile_upload(self) -> None:
        content = self.rng.choice(self.hostile)
        files = {"image": ("x", content, "application/octet-stream")}
        await self.send(
            "POST /v1/images/histogram (hostile)",
            "POST",
            "/v1/images/histogram?include_image=false",
            files=files,
        )


async def train(http: httpx.AsyncClient, config: dict[str, Any], timeout_s: float = 300) -> str:
    """Submit a training and wait for it to succeed; its model id."""
    job = (await http.post("/v1/trainings", json=config)).raise_for_status().json()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = (await http.get(f"/v1/trainings/{job['id']}")).raise_for_status().json()
        if job["status"] == "succeeded":
            return str(job["id"])
        if job["status"] in ("failed", "cancelled"):
            raise RuntimeError(f"the setup training {job['status']}: {job}")
        await asyncio.sleep(0.5)
    raise RuntimeError("the setup training did not finish in time")


async def trainings_now_and_then(load: Load, every_s: float, until: float) -> None:
    """A training every ``every_s``; every other one is cancelled once it runs."""
    n = 0
    while time.monotonic() + every_s < until:
        await asyncio.sleep(every_s)
        n += 1
        config = {**SMALL_TRAINING, "data": {**SMALL_TRAINING["data"], "seed": n}}
        started = time.perf_counter()
        response = await load.http.post("/v1/trainings", json=config)
        load.tally.add(
            "POST /v1/trainings", str(response.status_code), time.perf_counter() - started
        )
        if n % 2 == 0 and response.status_code == 202:
            await asyncio.sleep(1)
            await load.send(
                "DELETE /v1/trainings/{id}", "DELETE", f"/v1/trainings/{response.json()['id']}"
            )


async def cancel_trainings(http: httpx.AsyncClient, timeout_s: float = 60) -> None:
    """Cancel what is queued or running and wait for it to end: a training's process holds
    fds of the server's, which would read as growth."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        active = [
            job
            for status in ("queued", "running")
            for job in (await http.get(f"/v1/trainings?status={status}")).json()["items"]
        ]
        if not active:
            return
        for job in active:
            await http.delete(f"/v1/trainings/{job['id']}")
        await asyncio.sleep(0.5)


async def soak(load: Load, args: argparse.Namespace, duration_s: float) -> float:
    """The mix at saturation for ``duration_s``; the seconds it took."""
    started = time.monotonic()
    until = started + duration_s

    async def client() -> None:
        while time.monotonic() < until:
            await load.one()

    await asyncio.gather(
        *(client() for _ in range(args.concurrency)),
        trainings_now_and_then(load, args.training_every_s, until),
    )
    return time.monotonic() - started


async def run_load(args: argparse.Namespace, base_url: str, pid: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    options: dict[str, Any] = {
        "base_url": base_url,
        "headers": headers,
        # Idle connections dropped before the server's keep-alive closes them (see
        # tensorlens._core.KEEPALIVE_EXPIRY_S): else a request can race the close.
        "limits": httpx.Limits(
            max_connections=args.concurrency + 4, keepalive_expiry=KEEPALIVE_EXPIRY_S
        ),
        "timeout": httpx.Timeout(120.0),
    }

    async def quiet_sample() -> dict[int, ProcessSample]:
        # With no client connected and no training running, so that neither the
        # connections nor a training's pipes count as growth.
        async with httpx.AsyncClient(**options) as http:
            await cancel_trainings(http)
        await asyncio.sleep(2)
        return sample_processes(pid)

    async with httpx.AsyncClient(**options) as http:
        print("training the model the predictions use ...", file=sys.stderr)
        model_id = await train(http, SMALL_TRAINING)
    processes = {"cold": await quiet_sample()}
    async with httpx.AsyncClient(**options) as http:
        load = Load(http, model_id, args.seed)
        print(f"warming up for {args.warmup_s:g} s ...", file=sys.stderr)
        await soak(load, args, args.warmup_s)
    processes["warm"] = await quiet_sample()
    async with httpx.AsyncClient(**options) as http:
        load.http, load.tally = http, Tally()
        print(
            f"soaking for {args.duration_s:g} s with {args.concurrency} clients ...",
            file=sys.stderr,
        )
        elapsed = await soak(load, args, args.duration_s)
    processes["end"] = await quiet_sample()
    async with httpx.AsyncClient(**options) as http:
        ready = (await http.get("/readyz")).status_code
    return {"tally": load.tally, "processes": processes, "elapsed_s": elapsed, "ready": ready}


# Report --------------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def report(result: dict[str, Any], max_rss_growth: float) -> list[str]:
    """Print the figures; the list of what failed."""
    tally: Tally = result["tally"]
    total = sum(tally.statuses.values())
    print(
        f"\n{total} requests in {result['elapsed_s']:.0f} s ({total / result['elapsed_s']:.1f}/s)"
    )
    print(f"\n{'route':44} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8}  statuses")
    for route in sorted(tally.latencies_s):
        latencies = tally.latencies_s[route]
        statuses = {s: n for (r, s), n in sorted(tally.statuses.items()) if r == route}
        print(
            f"{route:44} {len(latencies):8} {_percentile(latencies, 50) * 1000:8.1f} "
            f"{_percentile(latencies, 99) * 1000:8.1f}  {statuses}"
        )
    by_status = Counter()
    for (_, status), n in tally.statuses.items():
        by_status[status] += n
    print(f"\nby status: {dict(sorted(by_status.items()))}")
    failures = []
    bad = {s: n for s, n in by_status.items() if not (s[0] in "24" and s.isdigit())}
    if bad:
        failures.append(f"answers that are not 2xx, 4xx or 429: {bad}")
    if result["ready"] != 200:
        failures.append(f"/readyz answered {result['ready']} after the soak")

    processes = result["processes"]
    print(
        f"\n{'pid':>7} {'process':8} "
        + " ".join(f"{f'{s} RSS MB':>12} {f'{s} fds':>9}" for s in processes)
    )
    pids = sorted(set().union(*processes.values()))
    for pid in pids:
        cells = []
        name = next(p[pid].name for p in processes.values() if pid in p)
        for stage in processes.values():
            sample = stage.get(pid)
            cells.append(
                f"{sample.rss_bytes / 2**20:12.1f} {sample.fds:9}"
                if sample
                else f"{'-':>12} {'-':>9}"
            )
        print(f"{pid:7} {name:8} " + " ".join(cells))
    # Both from after warm-up (caches filled, pools grown, lazily opened files open).
    warm, end = processes["warm"], processes["end"]
    for pid in sorted(set(warm) & set(end)):
        growth = end[pid].rss_bytes / warm[pid].rss_bytes - 1
        if growth > max_rss_growth:
            failures.append(f"pid {pid} ({end[pid].name}): RSS +{growth:.1%} after warm-up")
        if end[pid].fds > warm[pid].fds:
            opened = Counter(end[pid].fd_targets) - Counter(warm[pid].fd_targets)
            failures.append(
                f"pid {pid} ({end[pid].name}): fds {warm[pid].fds} -> {end[pid].fds}, "
                f"more of: {dict(opened)}"
            )
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=300)
    parser.add_argument("--warmup-s", type=float, default=60, help="load before the measured run")
    parser.add_argument("--concurrency", type=int, default=32, help="clients sending at once")
    parser.add_argument("--training-every-s", type=float, default=30)
    parser.add_argument("--max-rss-growth", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--url", help="a running server (default: start one)")
    parser.add_argument("--pid", type=int, help="the running server's process id (with --url)")
    parser.add_argument("--api-key", help="a `train` key, when the server has keys on")
    args = parser.parse_args()
    if args.url:
        if args.pid is None:
            parser.error("--url needs --pid, to read the processes' memory and fds")
        result = asyncio.run(run_load(args, args.url, args.pid))
    else:
        with live_server("soak") as server:
            result = asyncio.run(run_load(args, server.base_url, server.process.pid))
    failures = report(result, args.max_rss_growth)
    for failure in failures:
        print(f"FAIL: {failure}")
    print("\nPASS" if not failures else "\nFAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
