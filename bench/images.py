"""Image ops: the direct scikit-image call against the same op through the live HTTP service.

1. Latency, for Canny and equalize_hist on ``skimage.data.camera()`` (512x512 uint8):
   the direct call in this process against one client asking a live
   ``python -m service`` (uvicorn, loopback) for the result as ``image/png``, with
   the image given as ``?sample=camera`` and as an uploaded PNG. Each request is made
   by two clients, one connection each:

   - ``lean``: a keep-alive HTTP/1.1 loop over a plain socket (``bench/_live.py``)
     that costs about 0.25 ms of CPU per request. Its rows are the headline: what
     the service adds to the direct call.
   - ``httpx``: ``httpx.Client``, what a Python user would write. It also spends
     about 2 ms of CPU per request in this process (URL, header and cookie handling,
     its state machine): client time, on a machine whose 2 cores the server uses too.

   Two reference rows help read the gap: the direct call plus the service's own PNG
   encoder, and the JSON response whose ``timings_ms`` say how long the worker spent.
   Target: Canny through the service (lean client) costs at most 1.15x the direct call.
   The ``-> npy`` rows ask for ``application/x-npy``, the exact result array with no
   image encoding: targets 1.2x the direct call for equalize_hist, 1.05x for Canny.
2. Throughput: requests/second of Canny (sample, PNG) with 1 and with 8 concurrent
   clients for a fixed time. Target: 8 clients get at least 1.7x the single
   client's rate on 2 cores. To tell the service's limits from the machine's, the
   same Canny call also runs with no HTTP at all, in 1 and in as many processes
   as the server has workers: that ratio is the most any server could scale by here.

The contenders alternate within every repetition, in a rotating order, and the
throughput phases alternate 1, 8, 1, 8, ..., so a shared machine getting busier or
quieter affects all of them. The server runs with the default worker count (the CPU count) unless
``--workers`` says otherwise, and is stopped at the end, also on error.

    .venv/bin/python bench/images.py [--repeats 40] [--seconds 4] [--rounds 2] [--workers N]
    .venv/bin/python bench/images.py --npy-only   # the direct, `sample -> PNG` and `-> npy` rows
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import io
import json
import multiprocessing
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import skimage
from _live import LeanClient, live_server
from PIL import Image
from skimage import data, exposure, feature

from workers.images.codec import encode_png
from workers.pool import DEFAULT_KEEP_FREED_BYTES, keep_freed_memory

REQUEST_TIMEOUT_S = 30.0
PNG = "image/png"
PNG_ACCEPT = {"Accept": PNG}
NPY = "application/x-npy"
#: The `-> npy` rows' goals, as multiples of the direct call (issue 10).
NPY_GOALS = {"equalize_hist": 1.2, "canny": 1.05}
SERVICE_PNG_COMPRESS_LEVEL = 1  # the service's default `png_compress_level`

DIRECT: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "canny": feature.canny,
    "equalize_hist": exposure.equalize_hist,
}


# --------------------------------------------------------------------------- latency


@dataclass
class Samples:
    seconds: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1000

    def quantile_ms(self, q: float) -> float:
        return float(np.quantile(self.seconds, q)) * 1000


def _as_png_samples(image: np.ndarray) -> np.ndarray:
    """What the service's PNG holds for `image` (bool: 0/255, float in [0, 1]: x 255)."""
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    return np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)


def _png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _multipart(field: str, filename: str, payload: bytes, media_type: str) -> tuple[bytes, str]:
    boundary = "tensorlens-bench-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{filename}"\r\nContent-Type: {media_type}\r\n\r\n'
        ).encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def measure_latency(
    client: httpx.Client,
    lean: LeanClient,
    camera: np.ndarray,
    repeats: int,
    budget_s: float,
    only: tuple[str, ...] = (),
) -> tuple[dict[str, dict[str, Samples]], dict[str, dict[str, list[float]]]]:
    """Median-ready samples per op and variant (those in ``only``, if given), plus the
    worker's own timings per op."""
    camera_png = _png_bytes(camera)
    upload = {"image": ("camera.png", camera_png, "image/png")}
    lean_upload, lean_upload_type = _multipart("image", "camera.png", camera_png, "image/png")

    def variants(op: str) -> dict[str, Callable[[], object]]:
        direct = DIRECT[op]

        def httpx_png(**kwargs: object) -> bytes:
            response = client.post(f"/v1/images/{op}", headers=PNG_ACCEPT, **kwargs)
            response.raise_for_status()
            return response.content

        def lean_post(query: str, accept: str, body: bytes = b"", **kwargs: str) -> bytes:
            status, content = lean.post(f"/v1/images/{op}{query}", body, accept=accept, **kwargs)
            if status != 200:
                raise RuntimeError(f"{op}: HTTP {status}: {content[:300]!r}")
            return content

        every: dict[str, Callable[[], object]] = {
            "direct skimage": lambda: direct(camera),
            "direct + PNG encode": lambda: encode_png(
                direct(camera), compress_level=SERVICE_PNG_COMPRESS_LEVEL
            ),
            "lean sample -> PNG": lambda: lean_post("?sample=camera", PNG),
            "lean upload -> PNG": lambda: lean_post(
                "", PNG, lean_upload, content_type=lean_upload_type
            ),
            "httpx sample -> PNG": lambda: httpx_png(params={"sample": "camera"}),
            "httpx upload -> PNG": lambda: httpx_png(files=upload),
            "lean sample -> JSON": lambda: json.loads(
                lean_post("?sample=camera&include_image=false", "application/json")
            ),
            "lean sample -> npy": lambda: lean_post("?sample=camera", NPY),
        }
        return {name: run for name, run in every.items() if not only or name in only}

    # Warm up every path (each worker loads the sample once) and check the answers,
    # so a fast wrong result cannot pass for a fast right one.
    for op, direct in DIRECT.items():
        expected = _as_png_samples(direct(camera))
        for _ in range(4):
            for name, run in variants(op).items():
                result = run()
                if name.endswith("-> PNG"):
                    got = np.asarray(Image.open(io.BytesIO(result)))  # type: ignore[arg-type]
                    if np.abs(got.astype(int) - expected).max() > 1:
                        raise AssertionError(f"{op}: {name} differs from the direct call")
                if name.endswith("-> npy"):
                    got = np.load(io.BytesIO(result), allow_pickle=False)  # type: ignore[arg-type]
                    if not np.array_equal(got, direct(camera)):
                        raise AssertionError(f"{op}: {name} is not the direct call's array")

    samples = {op: {name: Samples() for name in variants(op)} for op in DIRECT}
    worker_ms: dict[str, dict[str, list[float]]] = {op: {} for op in DIRECT}
    runs = {op: list(variants(op).items()) for op in DIRECT}
    deadline = time.monotonic() + budget_s
    for repeat in range(repeats):
        for op in DIRECT:
            # Rotate the order too, so no variant always runs right after an idle wait.
            shift = repeat % len(runs[op])
            for name, run in runs[op][shift:] + runs[op][:shift]:
                started = time.perf_counter()
                result = run()
                samples[op][name].seconds.append(time.perf_counter() - started)
                if name.endswith("-> JSON"):
                    for part, ms in result["timings_ms"].items():  # type: ignore[index]
                        worker_ms[op].setdefault(part, []).append(ms)
        if time.monotonic() > deadline:
            print(f"(latency: stopped at the {budget_s:g} s budget)")
            break
    return samples, worker_ms


# --------------------------------------------------------------------------- throughput


@dataclass
class Phase:
    clients: int
    requests: int
    errors: int
    seconds: float
    latencies_s: list[float]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


async def _phase(base_url: str, op: str, clients: int, seconds: float) -> Phase:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    latencies: list[float] = []
    errors = 0
    max_requests_per_client = 100_000  # a bound even if the clock misbehaves

    async with httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=REQUEST_TIMEOUT_S
    ) as client:
        # Open every connection before the clock starts.
        await asyncio.gather(*(client.get("/healthz") for _ in range(clients)))
        deadline = time.perf_counter() + seconds

        async def one_client() -> None:
            nonlocal errors
            for _ in range(max_requests_per_client):
                if time.perf_counter() >= deadline:
                    return
                started = time.perf_counter()
                response = await client.post(
                    f"/v1/images/{op}", params={"sample": "camera"}, headers=PNG_ACCEPT
                )
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    # Requests still in flight at the deadline finish and count; so does their time.
    return Phase(clients, len(latencies), errors, elapsed, latencies)


def measure_throughput(
    base_url: str, op: str, concurrency: tuple[int, ...], seconds: float, rounds: int
) -> dict[int, list[Phase]]:
    asyncio.run(_phase(base_url, op, max(concurrency), min(seconds, 1.0)))  # warm-up
    phases: dict[int, list[Phase]] = {c: [] for c in concurrency}
    for _ in range(rounds):
        for clients in concurrency:
            phases[clients].append(asyncio.run(_phase(base_url, op, clients, seconds)))
    return phases


def _canny_for(seconds: float) -> tuple[int, float]:
    """Canny on camera, back to back, for about `seconds`: (calls, seconds taken)."""
    keep_freed_memory(DEFAULT_KEEP_FREED_BYTES)  # as the service's workers do
    camera = data.camera()
    started = time.perf_counter()
    calls = 0
    while calls < 100_000 and time.perf_counter() - started < seconds:
        feature.canny(camera)
        calls += 1
    return calls, time.perf_counter() - started


def measure_compute_ceiling(
    processes: int, seconds: float, rounds: int
) -> dict[int, list[tuple[int, float]]]:
    """Canny calls/second in 1 and in `processes` spawned processes, no HTTP involved."""
    runs: dict[int, list[tuple[int, float]]] = {1: [], processes: []}
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pool.map(_canny_for, [min(seconds, 0.5)] * processes, chunksize=1)  # warm-up
        for _ in range(rounds):
            runs[1].append(pool.apply(_canny_for, (seconds,)))
            results = pool.map(_canny_for, [seconds] * processes, chunksize=1)
            runs[processes].append(
                (sum(calls for calls, _ in results), max(taken for _, taken in results))
            )
    return runs


# --------------------------------------------------------------------------- report


def _pooled(phases: list[Phase]) -> tuple[float, int, int, list[float]]:
    requests = sum(p.requests for p in phases)
    seconds = sum(p.seconds for p in phases)
    latencies = [s for p in phases for s in p.latencies_s]
    return requests / seconds, requests, sum(p.errors for p in phases), latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40, help="latency runs per variant")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of a throughput phase")
    parser.add_argument("--rounds", type=int, default=2, help="throughput phases per concurrency")
    parser.add_argument("--clients", type=int, default=8, help="the concurrent client count")
    parser.add_argument(
        "--workers", type=int, default=None, help="TENSORLENS_IMAGE_WORKERS (default: CPU count)"
    )
    parser.add_argument(
        "--latency-budget-s", type=float, default=60.0, help="stop latency runs after this long"
    )
    parser.add_argument(
        "--npy-only",
        action="store_true",
        help="only the direct call, `sample -> PNG` and `-> npy` latency rows (no throughput)",
    )
    args = parser.parse_args()
    # With --npy-only, the PNG answer stays as the reference the npy rows improve on.
    # The JSON row gives the worker's own timings: what of the npy row is the op itself.
    npy_rows = (
        "direct skimage",
        "lean sample -> PNG",
        "lean sample -> npy",
        "lean sample -> JSON",
    )
    only = npy_rows if args.npy_only else ()
    # The direct calls get the allocator the service's image workers run with: without it
    # glibc faults the pages of every big temporary in again, and Canny takes ~30% longer.
    keep_freed_memory(DEFAULT_KEEP_FREED_BYTES)

    camera = data.camera()
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    print(f"command:  {command}")
    print(
        f"machine:  {platform.platform()}, {platform.machine()}, os.cpu_count()={os.cpu_count()}, "
        f"Python {platform.python_version()}, scikit-image {skimage.__version__}, "
        f"numpy {np.__version__}, httpx {httpx.__version__}"
    )
    print(
        f"baseline: skimage.feature.canny(camera) and skimage.exposure.equalize_hist(camera) "
        f"in this process (glibc heap kept as in the workers); camera = skimage.data.camera(), "
        f"{camera.shape[1]}x{camera.shape[0]} "
        f"{camera.dtype}"
    )
    fast_parts = [m for m in ("uvloop", "httptools") if importlib.util.find_spec(m)]
    workers = {} if args.workers is None else {"TENSORLENS_IMAGE_WORKERS": str(args.workers)}
    with live_server("images", workers) as server:
        shown = " ".join(f"{k}={v}" for k, v in server.env.items() if "DATA_DIR" not in k)
        print(
            f"server:   python -m service ({shown}; uvicorn loop/http 'auto', installed: "
            f"{', '.join(fast_parts) or 'neither uvloop nor httptools'})"
        )
        started = time.monotonic()
        with (
            httpx.Client(base_url=server.base_url, timeout=REQUEST_TIMEOUT_S) as client,
            LeanClient(server.base_url, timeout_s=REQUEST_TIMEOUT_S) as lean,
        ):
            workers = client.get("/readyz").json()["workers"]
            print(f"          {workers} image workers; client and server share this machine")
            latency, worker_ms = measure_latency(
                client, lean, camera, args.repeats, args.latency_budget_s, only
            )
        if args.npy_only:
            print_latency(latency)
            print_npy_verdicts(latency, worker_ms)
            return
        concurrency = (1, args.clients)
        throughput = measure_throughput(
            server.base_url, "canny", concurrency, args.seconds, args.rounds
        )
        ceiling = measure_compute_ceiling(workers, args.seconds, args.rounds)
        elapsed = time.monotonic() - started

    print_latency(latency)
    print()
    print(
        "inside the worker (median ms, from the JSON responses' timings_ms, which encode no "
        "PNG); the rest of the lean sample -> PNG median is PNG encoding, client, server, "
        "queue and IPC"
    )
    print(f"{'op':<15}{'load':>8}{'op':>8}{'encode':>8}{'total':>8}{'rest of lean PNG':>18}")
    for op, parts in worker_ms.items():
        med = {part: statistics.median(values) for part, values in parts.items()}
        rest = latency[op]["lean sample -> PNG"].median_ms - med["total"]
        print(
            f"{op:<15}{med['decode']:>8.2f}{med['ops']:>8.2f}{med['encode']:>8.2f}"
            f"{med['total']:>8.2f}{rest:>18.2f}"
        )

    print()
    print(
        f"throughput, canny sample -> PNG, {args.rounds} x {args.seconds:g} s per client count "
        f"(alternating)"
    )
    print(f"{'clients':>7}{'req/s':>9}{'requests':>10}{'errors':>8}{'p50 ms':>9}{'p95 ms':>9}")
    rates = {}
    for clients, phases in throughput.items():
        rate, requests, errors, latencies = _pooled(phases)
        rates[clients] = rate
        p50, p95 = (float(np.quantile(latencies, q)) * 1000 for q in (0.5, 0.95))
        per_round = ", ".join(f"{p.rate:.1f}" for p in phases)
        print(
            f"{clients:>7}{rate:>9.1f}{requests:>10}{errors:>8}{p50:>9.1f}{p95:>9.1f}"
            f"   rounds: {per_round}"
        )

    ceiling_rates = {
        n: sum(calls for calls, _ in runs) / sum(taken for _, taken in runs)
        for n, runs in ceiling.items()
    }
    ceiling_scaling = ceiling_rates[workers] / ceiling_rates[1]
    print(
        f"no HTTP: canny calls/s in 1 process {ceiling_rates[1]:.1f}, in {workers} processes "
        f"{ceiling_rates[workers]:.1f}: the machine scales {ceiling_scaling:.2f}x "
        f"(rounds: {', '.join(f'{c / t:.1f}' for c, t in ceiling[workers])})"
    )

    print()
    canny = latency["canny"]
    ratio = {name: s.median_ms / canny["direct skimage"].median_ms for name, s in canny.items()}
    overhead = ratio["lean sample -> PNG"]
    verdict = "ok" if overhead <= 1.15 else "OVER the 1.15x budget"
    print(
        f"canny 512x512, service / direct, lean client: {overhead:.2f}x sample, "
        f"{ratio['lean upload -> PNG']:.2f}x upload (goal <= 1.15x: {verdict})"
    )
    print(
        f"canny 512x512, service / direct, httpx client: {ratio['httpx sample -> PNG']:.2f}x "
        f"sample, {ratio['httpx upload -> PNG']:.2f}x upload (includes httpx's own CPU time)"
    )
    scaling = rates[args.clients] / rates[1]
    verdict = "ok" if scaling >= 1.7 else "UNDER the 1.7x goal"
    print(
        f"throughput, {args.clients} clients / 1 client: {scaling:.2f}x "
        f"on {os.cpu_count()} CPUs, {workers} workers (goal >= 1.7x on 2 cores: {verdict}); "
        f"the same canny without HTTP scales {ceiling_scaling:.2f}x here"
    )
    print_npy_verdicts(latency, worker_ms)
    print(f"(measured in {elapsed:.0f} s)")


def print_latency(latency: dict[str, dict[str, Samples]]) -> None:
    print()
    print(
        f"latency, one client, {len(latency['canny']['direct skimage'].seconds)} alternating runs"
    )
    header = f"{'op':<15}{'variant':<22}{'median ms':>10}{'p25':>8}{'p75':>8}{'x direct':>10}"
    print(header)
    print("-" * len(header))
    for op, rows in latency.items():
        direct_ms = rows["direct skimage"].median_ms
        for name, samples in rows.items():
            print(
                f"{op:<15}{name:<22}{samples.median_ms:>10.2f}{samples.quantile_ms(0.25):>8.2f}"
                f"{samples.quantile_ms(0.75):>8.2f}{samples.median_ms / direct_ms:>9.2f}x"
            )


def print_npy_verdicts(
    latency: dict[str, dict[str, Samples]], worker_ms: dict[str, dict[str, list[float]]]
) -> None:
    for op, goal in NPY_GOALS.items():
        rows = latency[op]
        npy_ms = rows["lean sample -> npy"].median_ms
        ratio = npy_ms / rows["direct skimage"].median_ms
        verdict = "ok" if ratio <= goal else f"OVER the {goal:g}x goal"
        print(f"{op} 512x512 -> npy, service / direct, lean client: {ratio:.2f}x ({verdict})")
        if worker_ms[op]:
            op_ms = statistics.median(worker_ms[op]["ops"])
            print(
                f"  of its {npy_ms:.2f} ms, the op in the worker {op_ms:.2f} ms, the rest "
                f"{npy_ms - op_ms:.2f} ms (client, HTTP, hand-over to the worker and back, "
                f"sample load, npy encode)"
            )


if __name__ == "__main__":
    main()
