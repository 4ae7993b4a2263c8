"""Nothing in the tree unpickles what a client or a file could have written.

Fails on a call to ``pickle.load``/``pickle.loads`` (or an ``Unpickler``, or a subclass
of one), ``torch.load`` without ``weights_only=True``, or any ``load``/``read_array`` with
``allow_pickle`` not ``False`` (``numpy.load``, ``numpy.lib.format.read_array``). Two
uses are allowed: the process channel, which reads only what our own processes wrote to
a socket pair, and a round trip, ``pickle.loads(pickle.dumps(x))``, of an object the
code itself just made.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests._support import REPO_ROOT

#: Files that unpickle, each with why it is safe.
ALLOWED = {
    "workers/_channel.py": "the process channel: frames our own processes wrote",
}
SKIPPED_DIRS = {".venv", "node_modules", "build", "dist"}


def python_files() -> list[Path]:
    return sorted(
        path
        for path in REPO_ROOT.rglob("*.py")
        if not any(
            part.startswith(".") or part in SKIPPED_DIRS
            for part in path.relative_to(REPO_ROOT).parts[:-1]
        )
    )


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_constant(node: ast.expr | None, value: bool) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_calls(source: str) -> list[str]:
    """``line: call`` for every unsafe load in ``source``."""
    pickle_names = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle"}
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module in pickle_names:
            names = {alias.name for alias in node.names}
            if names & {"load", "loads", "Unpickler"}:
                found.append(f"{node.lineno}: from {node.module} import {', '.join(sorted(names))}")
        if isinstance(node, ast.ClassDef):
            for base in map(_dotted, node.bases):
                module, _, function = base.rpartition(".")
                if module in pickle_names and function == "Unpickler":
                    found.append(f"{node.lineno}: class {node.name}({base})")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        module, _, function = name.rpartition(".")
        if module in pickle_names and function in ("load", "loads", "Unpickler"):
            round_trip = (
                function == "loads"
                and node.args
                and isinstance(node.args[0], ast.Call)
                and _dotted(node.args[0].func) == f"{module}.dumps"
            )
            if not round_trip:
                found.append(f"{node.lineno}: {name}")
        elif name == "torch.load" and not _is_constant(_keyword(node, "weights_only"), True):
            found.append(f"{node.lineno}: {name} without weights_only=True")
        elif function in ("load", "read_array") or name in ("load", "read_array"):
            allow = _keyword(node, "allow_pickle")
            if allow is not None and not _is_constant(allow, False):
                found.append(f"{node.lineno}: {name} with allow_pickle")
    return found


def test_the_tree_unpickles_nothing_it_did_not_write() -> None:
    files = python_files()
    assert len(files) > 50  # the walk found the tree
    offenders = {}
    for path in files:
        relative = path.relative_to(REPO_ROOT).as_posix()
        calls = unsafe_calls(path.read_text())
        if calls and relative not in ALLOWED:
            offenders[relative] = calls
    assert not offenders, f"unsafe loads: {offenders}"


def test_the_allowed_files_still_need_it() -> None:
    # An entry whose file no longer unpickles is removed, so the list stays short.
    for relative in ALLOWED:
        assert unsafe_calls((REPO_ROOT / relative).read_text()), relative


@pytest.mark.parametrize(
    "source",
    [
        "import pickle\npickle.loads(data)",
        "import pickle\npickle.load(open('f', 'rb'))",
        "import pickle\npickle.Unpickler(f).load()",
        "import pickle\nclass Reader(pickle.Unpickler):\n    pass",
        "from pickle import loads",
        "import torch\ntorch.load('model.pt')",
        "import torch\ntorch.load('model.pt', weights_only=False)",
        "import torch\ntorch.load('model.pt', weights_only=flag)",
        "import numpy as np\nnp.load('a.npy', allow_pickle=True)",
        "import numpy\nnumpy.load('a.npy', allow_pickle=flag)",
        "import numpy as np\nnp.lib.format.read_array(f, allow_pickle=True)",
    ],
)
def test_unsafe_loads_are_found(source: str) -> None:
    assert unsafe_calls(source)


@pytest.mark.parametrize(
    "source",
    [
        "import pickle\npickle.dumps(x)",
        "import pickle\npickle.loads(pickle.dumps(error))",
        "import torch\ntorch.load('model.pt', weights_only=True)",
        "import numpy as np\nnp.load('a.npy')",
        "import numpy as np\nnp.load('a.npy', allow_pickle=False)",
        "import numpy as np\nnp.save(f, a, allow_pickle=True)",
        "import safetensors.torch\nsafetensors.torch.load(data)",
    ],
)
def test_safe_calls_pass(source: str) -> None:
    assert not unsafe_calls(source)
