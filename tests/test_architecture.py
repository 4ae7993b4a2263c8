"""The layering ARCHITECTURE.md describes, checked on the source: imports run one way."""

import ast
import importlib
import inspect
import re
from pathlib import Path
from typing import get_args

import pytest

from service.settings import Settings
from workers.backend import BACKENDS

ROOT = Path(__file__).resolve().parents[1]
#: Package -> top-level modules it must never import.
FORBIDDEN = {
    "workers": {"service", "tensorlens", "fastapi", "starlette", "uvicorn"},
    "tensorlens": {"service", "workers", "fastapi", "starlette", "torch", "skimage", "numpy"},
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_run_one_way(package: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & FORBIDDEN[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {path: names for path, names in wrong.items() if names} == {}


def test_every_backend_the_settings_name_has_a_build() -> None:
    assert set(get_args(Settings.model_fields["executor"].annotation)) == set(BACKENDS)
    for name in ("local",):  # importing workers.ray_backend imports Ray: its tests do that
        build = importlib.import_module(BACKENDS[name]).build
        assert inspect.iscoroutinefunction(build)
        assert list(inspect.signature(build).parameters) == ["settings"]


def test_the_architecture_document_names_files_that_exist() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    # A file or folder in backticks: `workers/backend.py`, `tests/service/`.
    paths = set(re.findall(r"`((?:service|workers|tensorlens|tests|bench)/[\w./]*)`", text))
    assert len(paths) > 10, "ARCHITECTURE.md names almost no files"
    missing = sorted(path for path in paths if not (ROOT / path).exists())
    assert missing == []
