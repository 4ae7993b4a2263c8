"""The model store: safetensors weights and JSON metadata, one directory per model.

Layout under ``root`` (the service uses ``<data dir>/models``)::

    <id>/weights.safetensors
    <id>/metadata.json          # caller's metadata + weights_sha256, weights_bytes, created_at

A model directory appears whole or not at all: it is written as ``.tmp-<id>-<nonce>``
(files fsynced, then the directory), renamed to ``<id>`` and the root fsynced. A crash
leaves at most a ``.tmp-*`` directory, which listings ignore and :meth:`ModelStore.cleanup`
removes. Weights are only ever read with safetensors, after their checksum has been
verified; nothing is unpickled.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from workers.errors import Conflict, InvalidInput, InvalidParameter, ModelUnavailable, NotFound

__all__ = ["MODEL_ID_PATTERN", "ModelInfo", "ModelStore", "validate_model_id"]

MODEL_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
WEIGHTS_FILE = "weights.safetensors"
METADATA_FILE = "metadata.json"
_TEMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"


def validate_model_id(model_id: str) -> str:
    """Return ``model_id`` if it can name a model directory, else raise.

    Ids are lower-case letters, digits and dashes, 1 to 64 long, not starting with a
    dash: no separator, dot or NUL can reach the file system.

    Raises
    ------
    InvalidParameter
        For ``model_id``.
    """
    if not isinstance(model_id, str) or MODEL_ID_PATTERN.fullmatch(model_id) is None:
        raise InvalidParameter(
            "model_id",
            "must be 1-64 lower-case letters, digits or dashes, not starting with a dash",
        )
    return model_id


@dataclass(frozen=True)
class ModelInfo:
    """A stored model as listed: its metadata, and whether its weights pass their checksum."""

    id: str
    metadata: dict[str, Any]
    valid: bool
    reason: str | None = None
    created_at: datetime | None = None
    weights_bytes: int | None = None
    path: Path | None = field(default=None, compare=False)


class ModelStore:
    """Models on disk under ``root``; safe to share between threads and processes.

    Parameters
    ----------
    root : Path
        Directory holding one subdirectory per model; created if missing.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # sha256 digests keyed by the weights file's identity, so listing a store
        # does not re-hash every model each time; any rewrite changes the key.
        self._digests: dict[str, tuple[tuple[int, int, int], str | None]] = {}
        self._lock = threading.Lock()

    def save(
        self, model_id: str, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]
    ) -> ModelInfo:
        """Store ``tensors`` (contiguous, unshared) with ``metadata`` as model ``model_id``.

        Raises
        ------
        InvalidParameter
            For a malformed ``model_id``.
        Conflict
            When a model with this id exists.
        """
        tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in tensors.items()}
        return self._write(model_id, safetensors.torch.save(tensors), metadata)

    def save_bytes(self, model_id: str, weights: bytes, metadata: dict[str, Any]) -> ModelInfo:
        """Store weights already serialised as safetensors (e.g. returned by a remote worker).

        Raises
        ------
        InvalidInput
            When ``weights`` is not a safetensors file.
        InvalidParameter, Conflict
            As for :meth:`save`.
        """
        try:
            safetensors.deserialize(weights)
        except Exception as exc:  # the parser raises its own error types
            raise InvalidInput(f"weights are not a safetensors file: {exc}") from None
        return self._write(model_id, weights, metadata)

    def get(self, model_id: str) -> ModelInfo:
        """The model's metadata, with ``valid`` False and a ``reason`` if its files are damaged.

        Raises
        ------
        InvalidParameter
            For a malformed ``model_id``.
        NotFound
            When there is no such model.
        """
        return self._info(self._existing_dir(model_id))

    def list(self) -> list[ModelInfo]:
        """Every stored model, newest first; damaged ones included, marked invalid."""
        infos = []
        for entry in self.root.iterdir():
            if MODEL_ID_PATTERN.fullmatch(entry.name) and entry.is_dir():
                with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                    infos.append(self._info(entry))
        epoch = datetime.fromtimestamp(0, UTC)
        infos.sort(key=lambda info: (info.created_at or epoch, info.id), reverse=True)
        return infos

    def weights_bytes(self, model_id: str) -> bytes:
        """The safetensors file, after checking it against its recorded sha256.

        Raises
        ------
        InvalidParameter, NotFound
            As for :meth:`get`.
        ModelUnavailable
            When the weights or metadata are missing, damaged or fail the checksum.
        """
        directory = self._existing_dir(model_id)
        metadata, problem = _read_metadata(directory)
        if problem is not None:
            raise ModelUnavailable(f"model {model_id} is damaged: {problem}", model_id=model_id)
        try:
            data = (directory / WEIGHTS_FILE).read_bytes()
        except FileNotFoundError:
            raise ModelUnavailable(
                f"model {model_id} is damaged: weights are missing", model_id=model_id
            ) from None
        if hashlib.sha256(data).hexdigest() != metadata.get("weights_sha256"):
            raise ModelUnavailable(
                f"model {model_id} is damaged: weights fail their checksum", model_id=model_id
            )
        return data

    def load_tensors(self, model_id: str) -> dict[str, torch.Tensor]:
        """The model's tensors on the CPU, read only after the checksum passes.

        Raises
        ------
        InvalidParameter, NotFound, ModelUnavailable
            As for :meth:`weights_bytes`.
        """
        return safetensors.torch.load(self.weights_bytes(model_id))

    def delete(self, model_id: str) -> None:
        """Remove the model; it disappears from listings at once, whole.

        Raises
        ------
        InvalidParameter, NotFound
            As for :meth:`get`.
        """
        directory = self._existing_dir(model_id)
        trash = self.root / f"{_TRASH_PREFIX}{model_id}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(directory, trash)
        except FileNotFoundError:
            raise NotFound(f"model {model_id} not found", kind="model", name=model_id) from None
        _fsync_dir(self.root)
        shutil.rmtree(trash, ignore_errors=True)

    def exists(self, model_id: str) -> bool:
        return (self.root / validate_model_id(model_id)).is_dir()

    def cleanup(self, older_than_s: float = 0.0) -> int:
        """Remove what interrupted saves and deletes left behind; return how many.

        Only entries older than ``older_than_s`` go, so a store shared with other
        processes can pass the longest time a save may take.
        """
        removed = 0
        now = time.time()
        for entry in self.root.iterdir():
            if not entry.name.startswith((_TEMP_PREFIX, _TRASH_PREFIX)):
                continue
            with contextlib.suppress(FileNotFoundError):
                if now - entry.stat().st_mtime >= older_than_s:
                    shutil.rmtree(entry)
                    removed += 1
        return removed

    def _write(self, model_id: str, weights: bytes, metadata: dict[str, Any]) -> ModelInfo:
        validate_model_id(model_id)
        final = self.root / model_id
        if final.exists():
            raise Conflict(f"model {model_id} already exists", kind="model", name=model_id)
        record = dict(metadata)
        record.update(
            id=model_id,
            weights_file=WEIGHTS_FILE,
            weights_sha256=hashlib.sha256(weights).hexdigest(),
            weights_bytes=len(weights),
        )
        record.setdefault("created_at", datetime.now(UTC).isoformat())
        try:
            encoded = json.dumps(record, indent=2, sort_keys=True, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"model metadata is not JSON: {exc}") from None

        temp = self.root / f"{_TEMP_PREFIX}{model_id}-{uuid.uuid4().hex[:8]}"
        temp.mkdir()
        try:
            _write_durably(temp / WEIGHTS_FILE, weights)
            _write_durably(temp / METADATA_FILE, encoded)
            _fsync_dir(temp)
            # rename(2) would replace an empty directory at `final`; a non-empty one
            # (another save of the same id that won the race) makes it fail.
            if final.exists():
                raise Conflict(f"model {model_id} already exists", kind="model", name=model_id)
            try:
                os.rename(temp, final)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                raise Conflict(
                    f"model {model_id} already exists", kind="model", name=model_id
                ) from None
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        _fsync_dir(self.root)
        return self._info(final)

    def _existing_dir(self, model_id: str) -> Path:
        directory = self.root / validate_model_id(model_id)
        if not directory.is_dir():
            raise NotFound(f"model {model_id} not found", kind="model", name=model_id)
        return directory

    def _info(self, directory: Path) -> ModelInfo:
        model_id = directory.name
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
            id=model_id,
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
