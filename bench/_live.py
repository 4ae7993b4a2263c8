"""What the benchmarks share: a live `python -m service` on a free port, and a lean HTTP
client whose own cost per request is small next to the server's."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 90.0
SHUTDOWN_TIMEOUT_S = 15.0


@dataclass
class Server:
    name: str
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    #: The settings it was started with (environment variables), beside the inherited ones.
    env: dict[str, str]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def live_server(
    name: str, settings: Mapping[str, str] | None = None, data_dir: Path | None = None
) -> Iterator[Server]:
    """`python -m service` on a free loopback port; stopped on the way out, also on error.

    ``settings`` are environment variables over the defaults; without a ``data_dir`` the
    server gets a throwaway one. Its output goes to ``<name>.log`` beside the data dir and
    is printed if anything fails while it runs.
    """
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="tensorlens-bench-"))
            data_dir = Path(tmp) / "data"
        port = free_port()
        env = {
            "TENSORLENS_HOST": "127.0.0.1",
            "TENSORLENS_PORT": str(port),
            "TENSORLENS_DATA_DIR": str(data_dir),
            # Warnings only: an info line per request would cost the server time we measure.
            "TENSORLENS_LOG_LEVEL": "warning",
            **(settings or {}),
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
            wait_until_ready(server.base_url, process)
            yield server
        except BaseException:
            log_text = log_path.read_text(errors="replace")
            print(f"--- {name} server log ---\n{log_text}", file=sys.stderr)
            raise
        finally:
            stop(process)


def wait_until_ready(base_url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} on startup")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"/readyz did not answer 200 within {STARTUP_TIMEOUT_S:g} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=SHUTDOWN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=SHUTDOWN_TIMEOUT_S)


class LeanClient:
    """One keep-alive HTTP/1.1 connection, blocking, that sends requests and reads
    Content-Length responses, nothing more.

    httpx spends about 2 ms of CPU per request in the calling process (headers,
    URL and cookie handling, its state machine); on a shared 2-core machine that is
    client time, not server time. This client costs about 0.25 ms (mostly the socket
    calls), so what it measures is close to what the server and the network add.
    """

    def __init__(self, base_url: str, timeout_s: float = 30.0) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or url.hostname is None or url.port is None:
            raise ValueError(f"expected http://host:port, got {base_url!r}")
        self.host_header = f"{url.hostname}:{url.port}".encode()
        self._address = (url.hostname, url.port)
        self._timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._buffer = b""

    def __enter__(self) -> LeanClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer = b""

    def post(
        self,
        target: str,
        body: bytes = b"",
        *,
        content_type: str | None = None,
        accept: str = "application/json",
    ) -> tuple[int, bytearray]:
        """POST `target` (path and query string); return the status and the body."""
        head = [
            b"POST " + target.encode() + b" HTTP/1.1",
            b"Host: " + self.host_header,
            b"Accept: " + accept.encode(),
            b"Content-Length: " + str(len(body)).encode(),
        ]
        if content_type is not None:
            head.append(b"Content-Type: " + content_type.encode())
        request = b"\r\n".join(head) + b"\r\n\r\n" + body
        if self._sock is None:
            self._sock = socket.create_connection(self._address, timeout=self._timeout_s)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self._sock.sendall(request)
            return self._read_response()
        except BaseException:
            self.close()  # the connection's state is unknown; the next call reconnects
            raise

    def _read_response(self) -> tuple[int, bytearray]:
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise RuntimeError(f"response without Content-Length: {head!r}")
        # The body straight into a buffer of its size: appending chunks to bytes would copy
        # the whole body once per chunk (a 2 MB body comes in some 30 of them), client time
        # that would read as server time.
        body = bytearray(length)
        view = memoryview(body)
        have = min(len(self._buffer), length)
        view[:have] = self._buffer[:have]
        self._buffer = self._buffer[have:]
        assert self._sock is not None
        while have < length:
            count = self._sock.recv_into(view[have:])
            if count == 0:
                raise ConnectionError("the server closed the connection")
            have += count
        return status, body

    def _fill(self) -> None:
        assert self._sock is not None
        chunk = self._sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self._buffer += chunk
