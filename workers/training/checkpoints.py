"""The model registry: named models with numbered versions and movable aliases.

Layout under ``root`` (the service uses ``<data dir>/models``)::

    <name>/<version>/weights.safetensors
    <name>/<version>/metadata.json   # caller's metadata + name, version, weights_sha256, ...
    <name>/registry.json             # {"aliases": {"production": 2}, "last_version": 3}

A version directory appears whole or not at all: it is written as
``<name>/.tmp-<version>-<nonce>`` (files fsynced, then the directory), renamed to
``<name>/<version>`` and the name's directory fsynced. ``registry.json`` is replaced
whole (written beside, fsynced, renamed over), so an alias moves atomically: a reader
sees the old target or the new one. Versions count up from 1 and are never reused
(``last_version``). Weights are only ever read with safetensors, after their checksum
has been verified; nothing is unpickled.

Resolution, what every route that serves a model goes through::

    store.resolve(name)                      # the version policy: alias `default`, else latest
    store.resolve(name, version=3)           # ModelRef(name, 3), if version 3 exists
    store.resolve(name, alias="production")  # the version the alias points at

each returning a :class:`ModelRef` (``name``, ``version``) or raising ``NotFound`` that
says which of name, version or alias is unknown. :meth:`ModelStore.versions` lists a
name's versions, :meth:`ModelStore.aliases` its aliases, :meth:`ModelStore.get` and
the loading methods take a ``ModelRef`` or a bare name (resolved by the policy).

A data dir written before names existed (``<id>/weights.safetensors``) is migrated by
:meth:`ModelStore.migrate` (the training manager calls it at start): each model becomes
version 1 of a name equal to its id, moved with renames only, so nothing is copied and
an interrupted migration resumes.

Writes (saves, deletes, aliases) take a lock file (``.lock``), so several processes may
share a store. Resolution is cached per name and checked against the name directory's
and ``registry.json``'s identity on every call: this process's writes are seen at once,
another process's at its next change of either.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from workers.errors import Conflict, InvalidInput, InvalidParameter, ModelUnavailable, NotFound

__all__ = [
    "DEFAULT_ALIAS",
    "MODEL_ID_PATTERN",
    "ModelInfo",
    "ModelRef",
    "ModelStore",
    "RegisteredModel",
    "validate_alias",
    "validate_model_id",
]

MODEL_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
#: Alias names that would read as a version number (``3``, ``v3``) are refused.
_VERSION_LIKE = re.compile(r"v?[0-9]+")
#: The alias the version policy serves when a request names no version or alias.
DEFAULT_ALIAS = "default"
WEIGHTS_FILE = "weights.safetensors"
METADATA_FILE = "metadata.json"
REGISTRY_FILE = "registry.json"
_LOCK_FILE = ".lock"
_TEMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"
_MIGRATING_PREFIX = ".migrating-"


def validate_model_id(model_id: str, parameter: str = "model_id") -> str:
    """Return ``model_id`` (a model's name) if it can name a directory, else raise.

    Names are lower-case letters, digits and dashes, 1 to 64 long, not starting with a
    dash: no separator, dot or NUL can reach the file system.

    Raises
    ------
    InvalidParameter
        For ``parameter``.
    """
    if not isinstance(model_id, str) or MODEL_ID_PATTERN.fullmatch(model_id) is None:
        raise InvalidParameter(
            parameter,
            "must be 1-64 lower-case letters, digits or dashes, not starting with a dash",
        )
    return model_id


def validate_alias(alias: str) -> str:
    """Return ``alias`` if it can name an alias: a name, but not one like ``3`` or ``v3``.

    Raises
    ------
    InvalidParameter
        For ``alias``.
    """
    validate_model_id(alias, "alias")
    if _VERSION_LIKE.fullmatch(alias):
        raise InvalidParameter("alias", f"{alias!r} looks like a version number")
    return alias


def _validate_version(version: int) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidParameter("version", "must be an integer >= 1")
    return version


@dataclass(frozen=True, order=True)
class ModelRef:
    """One version of a named model: what the model cache is keyed by."""

    name: str
    version: int

    def __str__(self) -> str:
        return f"{self.name} version {self.version}"


@dataclass(frozen=True)
class ModelInfo:
    """A stored version as listed: its metadata, and whether its weights pass their checksum."""

    name: str
    version: int
    metadata: dict[str, Any]
    valid: bool
    reason: str | None = None
    created_at: datetime | None = None
    weights_bytes: int | None = None
    path: Path | None = field(default=None, compare=False)

    @property
    def id(self) -> str:
        """The model's name (what a model was called before it had versions)."""
        return self.name

    @property
    def ref(self) -> ModelRef:
        return ModelRef(self.name, self.version)

    @property
    def job_id(self) -> str | None:
        job_id = self.metadata.get("job_id")
        return job_id if isinstance(job_id, str) else None


@dataclass(frozen=True)
class RegisteredModel:
    """A name: its versions (oldest first), its aliases and what the policy serves."""

    name: str
    versions: list[ModelInfo]
    aliases: dict[str, int]

    @property
    def latest(self) -> ModelInfo:
        return self.versions[-1]

    @property
    def default(self) -> ModelInfo:
        """The version the policy serves: the ``default`` alias's, else the latest."""
        target = self.aliases.get(DEFAULT_ALIAS)
        for info in self.versions:
            if info.version == target:
                return info
        return self.latest


@dataclass(frozen=True)
class _View:
    # What resolution needs of one name, read from disk once per change.
    versions: tuple[int, ...]
    aliases: dict[str, int]
    last_version: int


class ModelStore:
    """Named, versioned models under ``root``; safe to share between threads and processes.

    Parameters
    ----------
    root : Path
        Directory holding one subdirectory per name; created if missing.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # sha256 digests keyed by the weights file's identity, so listing a store
        # does not re-hash every model each time; any rewrite changes the key.
        self._digests: dict[str, tuple[tuple[int, int, int], str | None]] = {}
        # name -> (the two paths _view stats, their identity when read, the view)
        self._views: dict[str, tuple[tuple[str, str], tuple[int, ...], _View]] = {}
        self._lock = threading.Lock()

    # Writing ---------------------------------------------------------------------

    def save(
        self, name: str, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]
    ) -> ModelInfo:
        """Store ``tensors`` (contiguous, unshared) and ``metadata`` as ``name``'s next version.

        Raises
        ------
        InvalidParameter
            For a malformed ``name``.
        InvalidInput
            When ``metadata`` is not JSON.
        """
        tensors = {key: tensor.detach().to("cpu").contiguous() for key, tensor in tensors.items()}
        return self._write(name, safetensors.torch.save(tensors), metadata)

    def save_bytes(self, name: str, weights: bytes, metadata: dict[str, Any]) -> ModelInfo:
        """Store weights already serialised as safetensors (e.g. returned by a remote worker).

        Raises
        ------
        InvalidInput
            When ``weights`` is not a safetensors file.
        InvalidParameter
            As for :meth:`save`.
        """
        try:
            safetensors.deserialize(weights)
        except Exception as exc:  # the parser raises its own error types
            raise InvalidInput(f"weights are not a safetensors file: {exc}") from None
        return self._write(name, weights, metadata)

    def set_alias(self, name: str, alias: str, version: int) -> ModelRef:
        """Point ``alias`` at ``version`` of ``name`` (moving it if it points elsewhere).

        Raises
        ------
        InvalidParameter
            For a malformed name or version, or an alias like a version number.
        NotFound
            For an unknown name or version.
        """
        validate_alias(alias)
        ref = self.resolve(name, version=version)
        with self._locked():
            registry = self._registry(self._existing_dir(name))
            if version not in self._version_numbers(self.root / name):
                raise _no_version(name, version)
            registry["aliases"][alias] = version
            self._write_registry(name, registry)
        return ref

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove ``alias``; the versions stay.

        Raises
        ------
        NotFound
            For an unknown name or alias.
        """
        validate_alias(alias)
        with self._locked():
            registry = self._registry(self._existing_dir(name))
            if registry["aliases"].pop(alias, None) is None:
                raise _no_alias(name, alias)
            self._write_registry(name, registry)

    def delete_version(self, ref: ModelRef) -> None:
        """Remove one version, whole; the name goes with its last version.

        Raises
        ------
        NotFound
            For an unknown name or version.
        Conflict
            When an alias points at the version.
        """
        _validate_version(ref.version)
        with self._locked():
            directory = self._existing_dir(ref.name)
            registry = self._registry(directory)
            pointing = sorted(a for a, v in registry["aliases"].items() if v == ref.version)
            if pointing:
                raise Conflict(
                    f"{ref} is the target of alias {', '.join(pointing)}; move or delete"
                    " the alias first",
                    kind="version",
                    name=ref.name,
                    version=ref.version,
                    aliases=pointing,
                )
            versions = self._version_numbers(directory)
            if ref.version not in versions:
                raise _no_version(ref.name, ref.version)
            if versions == [ref.version]:
                self._trash(directory, self.root, ref.name)
            else:
                self._trash(directory / str(ref.version), directory, str(ref.version))
            self._views.pop(ref.name, None)

    def delete(self, name: str) -> None:
        """Remove the name with every version and alias; it disappears at once, whole.

        Raises
        ------
        InvalidParameter, NotFound
            For a malformed or unknown name.
        """
        with self._locked():
            self._trash(self._existing_dir(name), self.root, name)
            self._views.pop(name, None)

    # Resolving -------------------------------------------------------------------

    def resolve(self, name: str, version: int | None = None, alias: str | None = None) -> ModelRef:
        """The version a request means: ``version``, ``alias``'s target, or the policy's.

        The policy, with neither: the ``default`` alias's version if it is set, else the
        latest version.

        Raises
        ------
        InvalidParameter
            For a malformed name, version or alias, or both a version and an alias.
        NotFound
            Naming the unknown name, version or alias.
        """
        if version is not None and alias is not None:
            raise InvalidParameter("alias", "give a version or an alias, not both")
        view = self._view(name)
        if version is not None:
            if _validate_version(version) not in view.versions:
                raise _no_version(name, version)
            return ModelRef(name, version)
        if alias is not None:
            target = view.aliases.get(validate_alias(alias))
            if target is None:
                raise _no_alias(name, alias)
            return ModelRef(name, target)
        target = view.aliases.get(DEFAULT_ALIAS)
        if target is None:
            target = view.versions[-1]
        return ModelRef(name, target)

    def versions(self, name: str) -> list[ModelInfo]:
        """Every version of ``name``, oldest first; damaged ones included, marked invalid.

        Raises
        ------
        InvalidParameter, NotFound
            For a malformed or unknown name.
        """
        return self.model(name).versions

    def aliases(self, name: str) -> dict[str, int]:
        """``name``'s aliases and the versions they point at."""
        return dict(self._view(name).aliases)

    def model(self, name: str) -> RegisteredModel:
        """The name with its versions and aliases.

        Raises
        ------
        InvalidParameter, NotFound
            For a malformed or unknown name.
        """
        directory = self._existing_dir(name)
        view = self._view(name)
        infos = []
        for version in view.versions:
            with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                infos.append(self._info(directory / str(version), name, version))
        if not infos:
            raise _no_model(name)
        return RegisteredModel(name, infos, dict(view.aliases))

    def list(self) -> list[RegisteredModel]:
        """Every name, the newest latest version first."""
        models = []
        for entry in self.root.iterdir():
            if MODEL_ID_PATTERN.fullmatch(entry.name) and entry.is_dir():
                with contextlib.suppress(NotFound):  # deleted meanwhile
                    models.append(self.model(entry.name))
        epoch = datetime.fromtimestamp(0, UTC)
        models.sort(key=lambda m: (m.latest.created_at or epoch, m.name), reverse=True)
        return models

    def exists(self, name: str) -> bool:
        return (self.root / validate_model_id(name, "name")).is_dir()

    def find_job(self, name: str, job_id: str) -> ModelRef | None:
        """The version of ``name`` that job ``job_id`` registered, if any."""
        with contextlib.suppress(NotFound):
            for info in self.versions(name):
                if info.job_id == job_id:
                    return info.ref
        return None

    # Reading one version -----------------------------------------------------------

    def get(self, target: ModelRef | str) -> ModelInfo:
        """A version's metadata, with ``valid`` False and a ``reason`` if its files are damaged.

        A bare name means the version the policy serves (:meth:`resolve`).

        Raises
        ------
        InvalidParameter, NotFound
            For a malformed or unknown name or version.
        """
        ref = self._ref(target)
        directory = self.root / ref.name / str(ref.version)
        try:
            return self._info(directory, ref.name, ref.version)
        except FileNotFoundError:
            raise _no_version(ref.name, ref.version) from None

    def weights_bytes(self, target: ModelRef | str) -> bytes:
        """The safetensors file, after checking it against its recorded sha256.

        Raises
        ------
        InvalidParameter, NotFound
            As for :meth:`get`.
        ModelUnavailable
            When the weights or metadata are missing, damaged or fail the checksum.
        """
        ref = self._ref(target)
        directory = self.root / ref.name / str(ref.version)
        if not directory.is_dir():
            raise _no_version(ref.name, ref.version)
        metadata, problem = _read_metadata(directory)
        if problem is not None:
            raise ModelUnavailable(f"{ref} is damaged: {problem}", model_id=ref.name)
        try:
            data = (directory / WEIGHTS_FILE).read_bytes()
        except FileNotFoundError:
            raise ModelUnavailable(
                f"{ref} is damaged: weights are missing", model_id=ref.name
            ) from None
        if hashlib.sha256(data).hexdigest() != metadata.get("weights_sha256"):
            raise ModelUnavailable(
                f"{ref} is damaged: weights fail their checksum", model_id=ref.name
            )
        return data

    def load_tensors(self, target: ModelRef | str) -> dict[str, torch.Tensor]:
        """The version's tensors on the CPU, read only after the checksum passes.

        Raises
        ------
        InvalidParameter, NotFound, ModelUnavailable
            As for :meth:`weights_bytes`.
        """
        return safetensors.torch.load(self.weights_bytes(target))

    # Upkeep ------------------------------------------------------------------------

    def migrate(self) -> list[str]:
        """Turn each model of the layout before names (``<id>/weights.safetensors``) into
        version 1 of the name ``<id>``; return the names migrated.

        Each model moves by renames: ``<id>`` to ``.migrating-<id>/1``, then that to
        ``<id>``. A migration cut between the two is finished by the next call.
        """
        migrated = []
        with self._locked():
            for entry in self.root.iterdir():
                if entry.name.startswith(_MIGRATING_PREFIX) and entry.is_dir():
                    name = entry.name[len(_MIGRATING_PREFIX) :]
                    if MODEL_ID_PATTERN.fullmatch(name) and not (self.root / name).exists():
                        os.rename(entry, self.root / name)
                        migrated.append(name)
            for entry in self.root.iterdir():
                if not (MODEL_ID_PATTERN.fullmatch(entry.name) and entry.is_dir()):
                    continue
                if not any((entry / f).exists() for f in (METADATA_FILE, WEIGHTS_FILE)):
                    continue
                staging = self.root / f"{_MIGRATING_PREFIX}{entry.name}"
                # Left empty by a migration killed before its first rename: reuse it.
                staging.mkdir(exist_ok=True)
                os.rename(entry, staging / "1")
                _fsync_dir(staging)
                os.rename(staging, entry)
                migrated.append(entry.name)
            if migrated:
                _fsync_dir(self.root)
                self._views.clear()
        return migrated

    def cleanup(self, older_than_s: float = 0.0) -> int:
        """Remove what interrupted saves and deletes left behind; return how many.

        Only entries older than ``older_than_s`` go, so a store shared with other
        processes can pass the longest time a save may take.
        """
        removed = 0
        now = time.time()
        names = [e for e in self.root.iterdir() if MODEL_ID_PATTERN.fullmatch(e.name)]
        for parent in (self.root, *names):
            with contextlib.suppress(NotADirectoryError, FileNotFoundError):
                for entry in parent.iterdir():
                    if not entry.name.startswith((_TEMP_PREFIX, _TRASH_PREFIX)):
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        if now - entry.stat().st_mtime >= older_than_s:
                            _remove(entry)
                            removed += 1
        return removed

    # Internals ---------------------------------------------------------------------

    def _ref(self, target: ModelRef | str) -> ModelRef:
        if isinstance(target, ModelRef):
            validate_model_id(target.name, "name")
            _validate_version(target.version)
            return target
        return self.resolve(target)

    def _write(self, name: str, weights: bytes, metadata: dict[str, Any]) -> ModelInfo:
        validate_model_id(name, "name")
        with self._locked():
            directory = self.root / name
            directory.mkdir(exist_ok=True)
            registry = self._registry(directory)
            version = max([registry["last_version"], *self._version_numbers(directory)]) + 1
            record = dict(metadata)
            record.update(
                id=name,
                name=name,
                version=version,
                weights_file=WEIGHTS_FILE,
                weights_sha256=hashlib.sha256(weights).hexdigest(),
                weights_bytes=len(weights),
            )
            record.setdefault("created_at", datetime.now(UTC).isoformat())
            try:
                encoded = json.dumps(record, indent=2, sort_keys=True, allow_nan=False).encode()
            except (TypeError, ValueError) as exc:
                self._drop_if_empty(directory)
                raise InvalidInput(f"model metadata is not JSON: {exc}") from None

            temp = directory / f"{_TEMP_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
            temp.mkdir()
            try:
                _write_durably(temp / WEIGHTS_FILE, weights)
                _write_durably(temp / METADATA_FILE, encoded)
                _fsync_dir(temp)
                os.rename(temp, directory / str(version))
            except BaseException:
                shutil.rmtree(temp, ignore_errors=True)
                self._drop_if_empty(directory)
                raise
            _fsync_dir(directory)
            _fsync_dir(self.root)
            registry["last_version"] = version
            self._write_registry(name, registry)
        return self._info(directory / str(version), name, version)

    def _drop_if_empty(self, directory: Path) -> None:
        # A name made for a save that failed must not list as a name without versions.
        with contextlib.suppress(OSError):
            if not self._version_numbers(directory) and not (directory / REGISTRY_FILE).exists():
                directory.rmdir()

    def _view(self, name: str) -> _View:
        # On every prediction: two stats, and the disk read only after a change. A name
        # seen before (so valid) goes by the paths kept for it, with no pathlib on the way.
        cached = self._views.get(name)
        if cached is not None:
            paths, key, view = cached
            if _identity(paths[0]) + _identity(paths[1]) == key:
                return view
        directory = self.root / validate_model_id(name, "name")
        paths = (str(directory), str(directory / REGISTRY_FILE))
        key = _identity(paths[0]) + _identity(paths[1])
        registry = self._registry(directory)
        versions = tuple(self._version_numbers(directory))
        if not versions:
            raise _no_model(name)
        view = _View(versions, registry["aliases"], registry["last_version"])
        self._views[name] = (paths, key, view)
        return view

    def _registry(self, directory: Path) -> dict[str, Any]:
        try:
            raw = json.loads((directory / REGISTRY_FILE).read_text())
        except (FileNotFoundError, NotADirectoryError, ValueError, UnicodeDecodeError):
            raw = {}
        aliases = raw.get("aliases") if isinstance(raw, dict) else None
        if not isinstance(aliases, dict):
            aliases = {}
        last = raw.get("last_version") if isinstance(raw, dict) else None
        return {
            "aliases": {
                a: v
                for a, v in aliases.items()
                if isinstance(a, str) and isinstance(v, int) and not isinstance(v, bool)
            },
            "last_version": last if isinstance(last, int) else 0,
        }

    def _write_registry(self, name: str, registry: dict[str, Any]) -> None:
        directory = self.root / name
        temp = directory / f"{_TEMP_PREFIX}{REGISTRY_FILE}-{uuid.uuid4().hex[:8]}"
        _write_durably(temp, json.dumps(registry, indent=2, sort_keys=True).encode())
        os.replace(temp, directory / REGISTRY_FILE)
        _fsync_dir(directory)
        self._views.pop(name, None)

    @staticmethod
    def _version_numbers(directory: Path) -> list[int]:
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(
            int(e.name)
            for e in entries
            if e.name.isascii() and e.name.isdigit() and e.name[0] != "0" and e.is_dir()
        )

    def _existing_dir(self, name: str) -> Path:
        directory = self.root / validate_model_id(name, "name")
        if not directory.is_dir():
            raise _no_model(name)
        return directory

    def _trash(self, directory: Path, parent: Path, label: str) -> None:
        trash = parent / f"{_TRASH_PREFIX}{label}-{uuid.uuid4().hex[:8]}"
        os.rename(directory, trash)
        _fsync_dir(parent)
        shutil.rmtree(trash, ignore_errors=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # The thread lock orders this process's writers; the file lock, other processes'.
        with self._lock, open(self.root / _LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _info(self, directory: Path, name: str, version: int) -> ModelInfo:
        if not directory.is_dir():
            raise FileNotFoundError(directory)
        metadata, problem = _read_metadata(directory)
        size = None
        if problem is None:
            problem, size = self._verify(directory, metadata)
        created_at = None
        with contextlib.suppress(KeyError, TypeError, ValueError):
            created_at = datetime.fromisoformat(metadata["created_at"])
        if created_at is None:
            created_at = datetime.fromtimestamp(directory.stat().st_mtime, UTC)
        return ModelInfo(
            name=name,
            version=version,
            metadata=metadata,
            valid=problem is None,
            reason=problem,
            created_at=created_at,
            weights_bytes=size,
            path=directory,
        )

    def _verify(self, directory: Path, metadata: dict[str, Any]) -> tuple[str | None, int | None]:
        path = directory / WEIGHTS_FILE
        try:
            stat = path.stat()
        except FileNotFoundError:
            return "weights are missing", None
        key = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        expected = metadata.get("weights_sha256")
        with self._lock:
            cached = self._digests.get(str(path))
        if cached is not None and cached[0] == key:
            digest = cached[1]
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            with self._lock:
                self._digests[str(path)] = (key, digest)
        if digest != expected:
            return "weights fail their checksum", stat.st_size
        return None, stat.st_size


def _no_model(name: str) -> NotFound:
    return NotFound(f"model {name} not found", kind="model", name=name)


def _no_version(name: str, version: int) -> NotFound:
    return NotFound(
        f"model {name} has no version {version}", kind="version", name=name, version=version
    )


def _no_alias(name: str, alias: str) -> NotFound:
    return NotFound(f"model {name} has no alias {alias}", kind="alias", name=name, alias=alias)


def _identity(path: str) -> tuple[int, ...]:
    try:
        stat = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return (0, 0, 0)
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def _read_metadata(directory: Path) -> tuple[dict[str, Any], str | None]:
    try:
        metadata = json.loads((directory / METADATA_FILE).read_text())
    except FileNotFoundError:
        return {}, "metadata is missing"
    except (ValueError, UnicodeDecodeError):
        return {}, "metadata is not valid JSON"
    if not isinstance(metadata, dict):
        return {}, "metadata is not a JSON object"
    return metadata, None


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "xb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
