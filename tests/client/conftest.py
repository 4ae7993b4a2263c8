"""Fixtures of the client's tests: the real app in process, and a live server.

The in-process recipe is the one the README documents: ``Client.from_app(app)``
(``AsyncClient.from_app`` in async tests) enters the app's lifespan, so its worker
pool and training lanes run for as long as the client is open.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.main import create_app
from service.settings import Settings
from tensorlens import AsyncClient, Client
from tensorlens._asgi import IN_PROCESS_BASE_URL, ThreadedASGITransport

REPO_ROOT = Path(__file__).resolve().parents[2]
AppFactory = Callable[..., Any]
STARTUP_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(base_url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited during startup:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"/readyz did not answer 200 in {STARTUP_TIMEOUT_S:g} s:\n{log_path.read_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)


@pytest.fixture(scope="session")
def make_app(tmp_path_factory: pytest.TempPathFactory) -> AppFactory:
    """An app with its own data directory and two image workers, settings overridable."""

    def factory(**overrides: Any) -> Any:
        data_dir = tmp_path_factory.mktemp("client-data")
        return create_app(Settings(**{"data_dir": data_dir, "image_workers": 2, **overrides}))

    return factory


@pytest.fixture(scope="session")
def transport(make_app: AppFactory) -> Iterator[ThreadedASGITransport]:
    """One started app for the session, behind the transport ``Client.from_app`` uses
    (here by hand, so that a test can put a faulty network in front of it)."""
    transport = ThreadedASGITransport(make_app())
    transport.start()
    yield transport
    transport.close()


@pytest.fixture(scope="session")
def client(transport: ThreadedASGITransport) -> Iterator[Client]:
    with Client(IN_PROCESS_BASE_URL, transport=transport) as c:
        yield c


@pytest.fixture(scope="module")
async def aclient(make_app: AppFactory) -> AsyncIterator[AsyncClient]:
    async with AsyncClient.from_app(make_app()) as c:
        yield c


@pytest.fixture(scope="module")
def live_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m service` under uvicorn on a free loopback port."""
    tmp = tmp_path_factory.mktemp("client-live")
    port = free_port()
    env = {
        **os.environ,
        "TENSORLENS_HOST": "127.0.0.1",
        "TENSORLENS_PORT": str(port),
        "TENSORLENS_DATA_DIR": str(tmp / "data"),
        "TENSORLENS_IMAGE_WORKERS": "2",
        "PYTHONUNBUFFERED": "1",
    }
    log_path = tmp / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base_url, process, log_path)
        yield base_url
    finally:
        stop(process)
    assert "Traceback" not in log_path.read_text(errors="replace")
