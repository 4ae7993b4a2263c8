"""The training job store: SQLite in the data dir, so jobs outlive the process.

A job goes ``queued -> running -> succeeded | failed | cancelled`` (a queued job can
also be failed or cancelled directly). Progress reports are appended to an events
table with a per-job sequence number, which a stream replays from any point.

On startup, :meth:`JobStore.recover_interrupted` fails every job that was ``running``
*or* ``queued`` with reason ``interrupted``: the queue lived in the dead process's
memory, so nothing would ever pick those jobs up, and a client polling them must not
wait forever. Clients resubmit.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from workers.errors import Conflict, InvalidParameter, NotFound

__all__ = [
    "INTERRUPTED",
    "Job",
    "JobEvent",
    "JobStatus",
    "JobStore",
    "JobsPage",
]

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
INTERRUPTED = "interrupted"
_FINISHED = ("succeeded", "failed", "cancelled")
_MAX_PAGE = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    config TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    model_id TEXT,
    metrics TEXT,
    reason TEXT,
    model_version INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    loss REAL NOT NULL,
    accuracy REAL,
    elapsed_s REAL NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
"""


# Idempotency keys of submissions (`Idempotency-Key`), kept as long as their job.
_IDEMPOTENCY_SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class JobEvent:
    """One progress report; ``seq`` counts from 1 within the job."""

    seq: int
    epoch: int
    loss: float
    accuracy: float | None
    elapsed_s: float


@dataclass(frozen=True)
class Job:
    """A training job as stored; ``progress`` is its latest report, if any."""

    id: str
    status: JobStatus
    config: dict[str, Any]
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cancel_requested: bool = False
    model_id: str | None = None
    metrics: dict[str, Any] | None = None
    reason: str | None = None
    progress: JobEvent | None = None
    model_version: int | None = None

    @property
    def finished(self) -> bool:
        return self.status in _FINISHED


@dataclass(frozen=True)
class JobsPage:
    """One page of a listing, newest first, and the number of jobs in all."""

    items: list[Job]
    total: int
    limit: int
    offset: int


_JOB_COLUMNS = """
    j.id, j.status, j.config, j.created_at, j.started_at, j.finished_at,
    j.cancel_requested, j.model_id, j.metrics, j.reason,
    e.seq, e.epoch, e.loss, e.accuracy, e.elapsed_s, j.model_version
"""
_JOB_FROM = """
    FROM jobs AS j LEFT JOIN events AS e
      ON e.job_id = j.id AND e.seq = (SELECT MAX(seq) FROM events WHERE job_id = j.id)
"""


class JobStore:
    """Training jobs in a SQLite file; one connection, shared by threads under a lock.

    Parameters
    ----------
    path : Path
        The database file; created with its parent directory if missing. Several
        processes may open the same file (WAL mode).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # Autocommit; writes that read first take BEGIN IMMEDIATE in _transaction.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode cannot corrupt the database; a power cut may lose the
        # last commits, a process crash loses nothing.
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute("PRAGMA busy_timeout = 5000")
        self._db.execute("PRAGMA foreign_keys = ON")
        with self._lock:
            self._db.executescript(_SCHEMA)
            # A database from before model versions: add the column; every model then
            # registered became version 1 of its name (ModelStore.migrate).
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
            if "model_version" not in columns:
                self._db.executescript(
                    "BEGIN; ALTER TABLE jobs ADD COLUMN model_version INTEGER;"
                    " UPDATE jobs SET model_version = 1 WHERE model_id IS NOT NULL; COMMIT;"
                )
            self._db.executescript(_IDEMPOTENCY_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(self, config: dict[str, Any], job_id: str | None = None) -> Job:
        """Add a queued job for ``config`` (JSON-ready); the id is a fresh uuid4 hex by default."""
        job_id = job_id or uuid.uuid4().hex
        with self._transaction() as db:
            try:
                db.execute(
                    "INSERT INTO jobs (id, status, config, created_at) VALUES (?, 'queued', ?, ?)",
                    (job_id, json.dumps(config), time.time()),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"job {job_id} already exists", kind="job", name=job_id) from None
            return self._get(db, job_id)

    def remember_key(self, key: str, fingerprint: str, job_id: str) -> None:
        """Record that the submission ``key``, of a body with ``fingerprint``, made ``job_id``.

        Raises
        ------
        Conflict
            When ``key`` is already taken.
        """
        with self._transaction() as db:
            try:
                db.execute(
                    "INSERT INTO idempotency_keys (key, fingerprint, job_id) VALUES (?, ?, ?)",
                    (key, fingerprint, job_id),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"idempotency key {key!r} is taken", key=key) from None

    def find_key(self, key: str) -> tuple[Job, str] | None:
        """The job the submission ``key`` made and its body's fingerprint, if the key is known."""
        with self._lock:
            row = self._db.execute(
                "SELECT job_id, fingerprint FROM idempotency_keys WHERE key = ?", (key,)
            ).fetchone()
            return None if row is None else (self._get(self._db, row[0]), row[1])

    def get(self, job_id: str) -> Job:
        """The job, with its latest progress.

        Raises
        ------
        NotFound
            When there is no such job.
        """
        with self._lock:
            return self._get(self._db, job_id)

    def list(self, limit: int = 50, offset: int = 0, status: JobStatus | None = None) -> JobsPage:
        """A page of jobs, newest first.

        Raises
        ------
        InvalidParameter
            For ``limit`` outside 1..1000 or a negative ``offset``.
        """
        if not 1 <= limit <= _MAX_PAGE:
            raise InvalidParameter("limit", f"must be in [1, {_MAX_PAGE}]")
        if offset < 0:
            raise InvalidParameter("offset", "must be >= 0")
        where, args = ("WHERE j.status = ?", (status,)) if status else ("", ())
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM jobs AS j {where}", args).fetchone()[0]
            rows = self._db.execute(
                f"SELECT {_JOB_COLUMNS} {_JOB_FROM} {where} ORDER BY j.n DESC LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
        return JobsPage([_job(row) for row in rows], total, limit, offset)

    def set_running(self, job_id: str) -> Job:
        """Mark a queued job running.

        Raises
        ------
        NotFound
            When there is no such job.
        Conflict
            When the job is not queued (e.g. cancelled while waiting).
        """
        return self._move(job_id, ("queued",), status="running", started_at=time.time())

    def add_progress(
        self,
        job_id: str,
        *,
        epoch: int,
        loss: float,
        accuracy: float | None,
        elapsed_s: float,
    ) -> int:
        """Append a progress report to a running job; return its sequence number.

        Raises
        ------
        NotFound
            When there is no such job.
        Conflict
            When the job is not running.
        """
        with self._transaction() as db:
            self._require(db, job_id, ("running",))
            seq = db.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job_id = ?", (job_id,)
            ).fetchone()[0]
            db.execute(
                "INSERT INTO events (job_id, seq, epoch, loss, accuracy, elapsed_s)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, seq, epoch, loss, accuracy, elapsed_s),
            )
            return int(seq)

    def set_succeeded(
        self,
        job_id: str,
        model_id: str,
        metrics: dict[str, Any],
        model_version: int | None = None,
    ) -> Job:
        """Mark a running job succeeded, with the model (name and version) it registered
        and its final metrics."""
        return self._move(
            job_id,
            ("running",),
            status="succeeded",
            finished_at=time.time(),
            model_id=model_id,
            model_version=model_version,
            metrics=json.dumps(metrics),
        )

    def set_failed(self, job_id: str, reason: str) -> Job:
        """Mark a queued or running job failed, saying why (e.g. the loss became NaN)."""
        return self._move(
            job_id, ("queued", "running"), status="failed", finished_at=time.time(), reason=reason
        )

    def set_cancelled(self, job_id: str) -> Job:
        """Mark a queued or running job cancelled."""
        return self._move(
            job_id,
            ("queued", "running"),
            status="cancelled",
            finished_at=time.time(),
            cancel_requested=1,
        )

    def request_cancel(self, job_id: str) -> Job:
        """Ask for a job to stop: a queued one is cancelled now, a running one is flagged.

        The lanes tell the running training to stop at its next report, then the job
        is set cancelled (:meth:`set_cancelled`). A finished job is returned unchanged.

        Raises
        ------
        NotFound
            When there is no such job.
        """
        with self._transaction() as db:
            job = self._get(db, job_id)
            if job.status == "queued":
                db.execute(
                    "UPDATE jobs SET status = 'cancelled', cancel_requested = 1, finished_at = ?"
                    " WHERE id = ?",
                    (time.time(), job_id),
                )
            elif job.status == "running":
                db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            return self._get(db, job_id)

    def events(self, job_id: str, after_seq: int = 0, limit: int | None = None) -> list[JobEvent]:
        """The job's progress reports with ``seq > after_seq``, oldest first.

        Raises
        ------
        NotFound
            When there is no such job.
        """
        with self._lock:
            self._require(self._db, job_id, None)
            rows = self._db.execute(
                "SELECT seq, epoch, loss, accuracy, elapsed_s FROM events"
                " WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (job_id, after_seq, -1 if limit is None else limit),
            ).fetchall()
        return [JobEvent(*row) for row in rows]

    def recover_interrupted(self) -> list[str]:
        """Fail every queued or running job with reason ``interrupted``; return their ids.

        Call once at startup, before the worker pool takes jobs: whatever was queued or
        running belonged to a process that is gone.
        """
        with self._transaction() as db:
            ids = [
                row[0]
                for row in db.execute(
                    "SELECT id FROM jobs WHERE status IN ('queued', 'running') ORDER BY n"
                )
            ]
            db.execute(
                "UPDATE jobs SET status = 'failed', reason = ?, finished_at = ?"
                " WHERE status IN ('queued', 'running')",
                (INTERRUPTED, time.time()),
            )
        return ids

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _move(self, job_id: str, allowed: tuple[str, ...], **changes: Any) -> Job:
        with self._transaction() as db:
            self._require(db, job_id, allowed)
            assignments = ", ".join(f"{column} = ?" for column in changes)
            db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*changes.values(), job_id))
            return self._get(db, job_id)

    @staticmethod
    def _require(db: sqlite3.Connection, job_id: str, allowed: tuple[str, ...] | None) -> None:
        row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"job {job_id} not found", kind="job", name=job_id)
        if allowed is not None and row[0] not in allowed:
            raise Conflict(
                f"job {job_id} is {row[0]}, not {' or '.join(allowed)}",
                job_id=job_id,
                status=row[0],
            )

    @staticmethod
    def _get(db: sqlite3.Connection, job_id: str) -> Job:
        row = db.execute(f"SELECT {_JOB_COLUMNS} {_JOB_FROM} WHERE j.id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"job {job_id} not found", kind="job", name=job_id)
        return _job(row)


def _time(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _job(row: tuple[Any, ...]) -> Job:
    (job_id, status, config, created, started, finished, cancel, model_id, metrics, reason) = row[
        :10
    ]
    seq = row[10]
    return Job(
        id=job_id,
        status=status,
        config=json.loads(config),
        created_at=datetime.fromtimestamp(created, UTC),
        started_at=_time(started),
        finished_at=_time(finished),
        cancel_requested=bool(cancel),
        model_id=model_id,
        metrics=None if metrics is None else json.loads(metrics),
        reason=reason,
        progress=None if seq is None else JobEvent(*row[10:15]),
        model_version=row[15],
    )
