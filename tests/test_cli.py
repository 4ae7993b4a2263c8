"""The command line, `python -m service` and the `tensorlens` script, run as a user would:
in a subprocess."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests._support import free_port, stop, wait_until_ready

ROOT = Path(__file__).resolve().parents[1]
MODULE = [sys.executable, "-m", "service"]
#: Where the project's install puts the console script: beside this Python.
SCRIPT = Path(sys.executable).parent / "tensorlens"
#: A parser error comes back at once; a started server would still be running.
PARSE_TIMEOUT_S = 30.0


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=PARSE_TIMEOUT_S,
        **kwargs,
    )


def listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("command", [[], ["serve"], ["openapi"]], ids=["top", "serve", "openapi"])
def test_help_exits_0_with_usage(command: list[str]) -> None:
    result = run([*MODULE, *command, "--help"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {' '.join(['tensorlens', *command])} ")
    assert result.stderr == ""


def test_top_level_help_lists_every_command() -> None:
    usage = run([*MODULE, "--help"]).stdout
    assert "serve" in usage and "openapi" in usage


@pytest.mark.parametrize(
    ("arguments", "usage", "message"),
    [
        (["calibrate"], "tensorlens", "invalid choice: 'calibrate'"),
        (["--bogus"], "tensorlens", "unrecognized arguments: --bogus"),
        (["--port", "{port}"], "tensorlens", "unrecognized arguments: --port"),
        (["serve", "--prot", "{port}"], "tensorlens serve", "unrecognized arguments: --prot"),
        (["serve", "--port", "http"], "tensorlens serve", "not a port number: 'http'"),
        (["serve", "extra"], "tensorlens serve", "unrecognized arguments: extra"),
        (["openapi", "--out", "x"], "tensorlens openapi", "unrecognized arguments: --out x"),
    ],
    ids=[
        "unknown-command",
        "unknown-option",
        "option-before-command",
        "mistyped",
        "bad-port",
        "extra",
        "openapi-option",
    ],
)
def test_wrong_arguments_exit_2_with_usage_and_start_no_server(
    arguments: list[str], usage: str, message: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "TENSORLENS_PORT": str(port),  # where a wrongly started server would listen
        "TENSORLENS_DATA_DIR": str(tmp_path / "data"),
    }
    args = [argument.format(port=port) for argument in arguments]
    try:
        result = run([*MODULE, *args], env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`tensorlens {' '.join(args)}` did not exit: it started a server")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"usage: {usage} "), result.stderr
    assert message in result.stderr
    assert result.stdout == ""
    assert not listening(port)


def test_a_setting_that_does_not_parse_exits_2_without_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "TENSORLENS_PORT": "eighty", "TENSORLENS_DATA_DIR": str(tmp_path)}
    result = run([*MODULE, "serve"], env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("tensorlens: error: invalid settings:")
    assert "port" in result.stderr and "Traceback" not in result.stderr


def test_openapi_prints_the_committed_document() -> None:
    result = run([*MODULE, "openapi"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == (ROOT / "openapi.json").read_text()


def test_serve_listens_on_the_port_given_and_stops_on_sigterm(tmp_path: Path) -> None:
    port, settings_port = free_port(), free_port()
    env = {
        **os.environ,
        "TENSORLENS_PORT": str(settings_port),  # --port wins over the setting
        "TENSORLENS_DATA_DIR": str(tmp_path / "data"),
        "TENSORLENS_IMAGE_WORKERS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*MODULE, "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", process, log_path)
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        assert not listening(settings_port)
    finally:
        code = stop(process)
    log_text = log_path.read_text(errors="replace")
    # uvicorn re-raises the signal it caught after a graceful shutdown.
    assert code in (0, -signal.SIGTERM), f"exit code {code} (None: killed):\n{log_text}"
    assert "Application shutdown complete." in log_text, log_text
    assert not listening(port)


def test_console_script_runs_the_same_command_line() -> None:
    assert SCRIPT.exists(), "no `tensorlens` script: reinstall with `pip install -e .`"
    script_help = run([str(SCRIPT), "--help"])
    assert script_help.returncode == 0
    assert script_help.stdout == run([*MODULE, "--help"]).stdout
    wrong = run([str(SCRIPT), "calibrate"])
    assert wrong.returncode == 2 and wrong.stderr.startswith("usage: tensorlens ")
    version = run([str(SCRIPT), "--version"])
    assert version.returncode == 0 and version.stdout.startswith("tensorlens ")
