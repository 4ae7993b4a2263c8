"""The TypeScript check: openapi-typescript turns `openapi.json` into types, and the
example client in `clients/typescript/` must type-check against them (`tsc --noEmit`).

Needs Node and npm (`.ci/run` installs Debian's); `npm ci` installs the locked packages
from the npm registry the first time. Without npm the test skips with one line.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ROOT / "clients" / "typescript"


def _npm(*args: str, timeout_s: float) -> None:
    npm = shutil.which("npm")
    assert npm is not None
    done = subprocess.run(
        [npm, *args], cwd=PROJECT, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    assert done.returncode == 0, f"npm {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"


@pytest.mark.skipif(
    shutil.which("npm") is None or shutil.which("node") is None,
    reason="Node.js and npm are not installed: the TypeScript check of openapi.json "
    "did not run (apt-get install nodejs npm)",
)
def test_generated_types_check_the_example_client() -> None:
    if not (PROJECT / "node_modules" / ".package-lock.json").exists():
        _npm("ci", "--no-audit", "--no-fund", timeout_s=300)
    _npm("run", "--silent", "generate", timeout_s=120)
    generated = (PROJECT / "src" / "schema.d.ts").read_text()
    assert '"/v1/trainings"' in generated and "SpiralConfig" in generated
    _npm("run", "--silent", "check", timeout_s=180)
