"""Mutation testing (`make mutate`): mutmut over the modules where a silent bug costs most,
each against its own test files, with a report of the mutants no test kills.

Each module gets its own working folder, ``.mutmut/<module>/``: a snapshot of the
project's packages and tests taken when the run starts (so other people's edits in the
checkout do not land mid-run) and a ``pyproject.toml`` naming the module and its tests.
mutmut keeps every verdict in that folder's ``mutants/``, so a run stopped half-way goes
on where it stopped, and a later run retests only the functions whose source changed.

    python -m tests.mutate [MODULE ...]   # default: every module below
    python -m tests.mutate --recheck [MODULE ...]  # only the survivors, after adding tests
    python -m tests.mutate --report       # the report of what is stored, running nothing

Not part of `make test`: it runs the module's tests once per mutant.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
WORK_ROOT = REPO_ROOT / ".mutmut"
REPORT = WORK_ROOT / "report.md"
SNAPSHOT = ("service", "workers", "tensorlens", "tests")
#: Files at the top of the checkout that tests read (the pins `test_lean_routes.py` checks).
SNAPSHOT_FILES = ("constraints.txt",)

#: Each module and the test files that are its own.
MODULES: dict[str, tuple[str, ...]] = {
    "workers/images/ops.py": ("tests/workers/images/test_ops.py",),
    "workers/images/_canny.py": ("tests/workers/images/test_canny.py",),
    "workers/images/codec.py": (
        "tests/workers/images/test_codec.py",
        "tests/workers/images/test_codec_arrays.py",
    ),
    "workers/serving/batching.py": ("tests/workers/serving/test_inference.py",),
    "service/errors.py": (
        "tests/service/test_errors.py",
        "tests/service/test_image_errors.py",
        "tests/service/test_lean_routes.py",
    ),
    "workers/pool.py": ("tests/workers/test_pool.py",),
    "workers/training/jobs.py": ("tests/workers/training/test_jobs.py",),
    "workers/training/checkpoints.py": ("tests/workers/training/test_checkpoints.py",),
}

#: mutmut's exit codes as verdicts (mutmut.stats.status_by_exit_code, condensed).
#: A test failed (1, 3), ran out of time (the rest: the mutant hangs or loops) or the
#: mutant crashed the test process (-9, -11).
_KILLED = {1, 3, -24, 24, 36, 152, 255, -9, -11}
_NO_TESTS = {5, 33}  # no test of the module's own reaches the mutated function
_SKIPPED = {34}
_MUTANT_NAME = re.compile(r"[\w.\u01c1]+__mutmut_\d+")


def slug(module: str) -> str:
    return module.removesuffix(".py").replace("/", ".")


def snapshot(work: Path) -> None:
    """Copy the packages and tests into ``work``, only what changed (mtimes kept)."""
    for name in SNAPSHOT_FILES:
        source, target = REPO_ROOT / name, work / name
        if source.exists() and not (target.exists() and filecmp.cmp(source, target, shallow=False)):
            shutil.copy2(source, target)
    for top in SNAPSHOT:
        source_root = REPO_ROOT / top
        for source in source_root.rglob("*"):
            if "__pycache__" in source.parts or source.is_dir():
                continue
            target = work / source.relative_to(REPO_ROOT)
            if target.exists() and filecmp.cmp(source, target, shallow=False):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        # Files deleted from the checkout leave the snapshot too.
        for target in (work / top).rglob("*"):
            if target.is_file() and not (REPO_ROOT / target.relative_to(work)).exists():
                target.unlink()


def configure(work: Path, module: str, tests: tuple[str, ...]) -> None:
    """The project's pyproject.toml (pytest's settings) plus mutmut's for this module."""
    config = "\n".join(
        [
            (REPO_ROOT / "pyproject.toml").read_text(),
            "[tool.mutmut]",
            f"source_paths = {json.dumps(list(SNAPSHOT[:3]))}",
            f"only_mutate = {json.dumps([module])}",
            f"pytest_add_cli_args_test_selection = {json.dumps(list(tests))}",
            f"also_copy = {json.dumps(list(SNAPSHOT_FILES))}",
            'pytest_add_cli_args = ["-p", "no:cacheprovider"]',
            # torch and the pool's processes do not survive a plain fork of a busy parent.
            'process_isolation = "forkserver"',
            "",
        ]
    )
    path = work / "pyproject.toml"
    if not path.exists() or path.read_text() != config:
        path.write_text(config)


def survivors(module: str) -> list[str]:
    """The mutants of ``module`` whose last verdict was not a kill."""
    results = verdicts(module) or {}
    return sorted(k for k, v in results.items() if v is not None and v not in _KILLED | _SKIPPED)


def run_module(module: str, max_children: int, *, recheck: bool = False) -> int:
    work = WORK_ROOT / slug(module)
    work.mkdir(parents=True, exist_ok=True)
    snapshot(work)
    configure(work, module, MODULES[module])
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", module],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (work / "STATE").write_text(f"{head}{' + uncommitted changes' if dirty else ''}\n")
    mutmut = Path(sys.executable).with_name("mutmut")
    command = ["nice", "-n", "19", str(mutmut), "run", "--max-children", str(max_children)]
    if recheck:
        # mutmut keeps a verdict until the function's source changes, not when a test is
        # added: name the survivors to test them again against the tests as they are now.
        names = survivors(module)
        if not names:
            return 0
        command += names
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(command, cwd=work, env=env, check=False).returncode


def verdicts(module: str) -> dict[str, int | None] | None:
    meta = WORK_ROOT / slug(module) / "mutants" / f"{module}.meta"
    if not meta.exists():
        return None
    data = json.loads(meta.read_text())
    return dict(data.get("exit_code_by_key", {}))


def diff_of(module: str, mutant: str) -> str:
    mutmut = Path(sys.executable).with_name("mutmut")
    shown = subprocess.run(
        [str(mutmut), "show", mutant],
        cwd=WORK_ROOT / slug(module),
        capture_output=True,
        text=True,
        check=False,
    )
    return shown.stdout.strip() or shown.stderr.strip()


def explained() -> set[str]:
    """The mutants tests/MUTANTS.md explains (equivalent or harmless), by name."""
    path = REPO_ROOT / "tests" / "MUTANTS.md"
    return set(_MUTANT_NAME.findall(path.read_text())) if path.exists() else set()


def report(modules: list[str]) -> str:
    """Kill rate per module and every survivor's diff; a survivor tests/MUTANTS.md
    explains is counted apart, so what is left to look at is what nobody has yet."""
    lines = [
        "# Mutation testing report",
        "",
        "| module | state | mutants | killed | rate | explained in MUTANTS.md | unexplained |",
        "|---|---|---|---|---|---|---|",
    ]
    known = explained()
    unexplained: list[tuple[str, str, str]] = []
    for module in modules:
        results = verdicts(module)
        if results is None:
            lines.append(f"| `{module}` | not run | | | | | |")
            continue
        state_file = WORK_ROOT / slug(module) / "STATE"
        state = state_file.read_text().strip() if state_file.exists() else "?"
        tested = {k: v for k, v in results.items() if v is not None and v not in _SKIPPED}
        killed = sum(1 for v in tested.values() if v in _KILLED)
        rate = f"{100 * killed / len(tested):.1f}%" if tested else "-"
        pending = sum(1 for v in results.values() if v is None)
        note = f" ({pending} not yet run)" if pending else ""
        left = {k: v for k, v in tested.items() if v not in _KILLED}
        listed = sum(1 for name in left if name in known)
        for name, code in sorted(left.items()):
            if name not in known:
                verdict = "no tests" if code in _NO_TESTS else "survived"
                unexplained.append((module, name, verdict))
        lines.append(
            f"| `{module}` | {state} | {len(tested)}{note} | {killed} | {rate} | {listed} "
            f"| {len(left) - listed} |"
        )
    lines += ["", "## Unexplained survivors", ""]
    for module, name, verdict in unexplained:
        lines += [f"### {name} ({verdict})", "", "```diff", diff_of(module, name), "```", ""]
    if not unexplained:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help=f"default: all of {', '.join(MODULES)}")
    parser.add_argument("--report", action="store_true", help="only write the report")
    parser.add_argument("--max-children", type=int, default=1, help="mutants tested at once")
    parser.add_argument(
        "--recheck", action="store_true", help="test only the survivors again (after new tests)"
    )
    args = parser.parse_args()
    modules = args.modules or list(MODULES)
    unknown = sorted(set(modules) - set(MODULES))
    if unknown:
        parser.error(f"not a module of MODULES: {', '.join(unknown)}")
    if not args.report:
        for module in modules:
            print(f"== {module}", flush=True)
            run_module(module, args.max_children, recheck=args.recheck)
    WORK_ROOT.mkdir(exist_ok=True)
    REPORT.write_text(report(list(MODULES)))  # every module: what was run before stays
    print(REPORT.read_text())


if __name__ == "__main__":
    main()
