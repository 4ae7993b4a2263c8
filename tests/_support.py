"""What tests in more than one folder share: waiting on a condition, a live
`python -m service`, free ports and Ray's worker processes. Test modules import this (or
a conftest fixture), never each other."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 60.0
SHUTDOWN_TIMEOUT_S = 15.0


async def wait_until(condition: Callable[[], object], timeout_s: float = 30.0) -> None:
    """Poll ``condition`` on the event loop until it holds; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(base_url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Until the server's ``/readyz`` answers 200; fails with its log if it exits or hangs."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"the server exited with {process.returncode} during startup:\n"
                + log_path.read_text(errors="replace")
            )
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(
        f"/readyz did not answer 200 within {STARTUP_TIMEOUT_S:g} s:\n"
        + log_path.read_text(errors="replace")
    )


def stop(process: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM, then SIGKILL; the exit code after SIGTERM, or None if it had to be killed."""
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=SHUTDOWN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=SHUTDOWN_TIMEOUT_S)
        return None


@dataclass(frozen=True)
class LiveServer:
    base_url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def live_service(work_dir: Path, settings: Mapping[str, str]) -> Iterator[LiveServer]:
    """`python -m service` on a free loopback port, its data and ``server.log`` under
    ``work_dir``, ``settings`` over the defaults; ready when yielded, stopped on the way
    out (its ``process.returncode`` then says how it ended)."""
    port = free_port()
    env = {
        **os.environ,
        "TENSORLENS_HOST": "127.0.0.1",
        "TENSORLENS_PORT": str(port),
        "TENSORLENS_DATA_DIR": str(work_dir / "data"),
        "PYTHONUNBUFFERED": "1",
        **settings,
    }
    log_path = work_dir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", process, log_path)
        yield LiveServer(f"http://127.0.0.1:{port}", log_path, process)
    finally:
        stop(process)


def ray_processes(title: str) -> list[int]:
    """Pids of Ray workers whose process title is ``ray::<title>`` (what they are running)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(f"ray::{title}".encode()):
                pids.append(int(entry.name))
    return pids
