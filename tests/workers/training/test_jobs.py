import sqlite3
import threading
from contextlib import closing
from datetime import UTC, datetime, timedelta

import pytest

from workers.errors import Conflict, InvalidParameter, NotFound
from workers.training.jobs import INTERRUPTED, JobEvent, JobStore

CONFIG = {"task": "spiral", "epochs": 10}


@pytest.fixture
def store(tmp_path):
    jobs = JobStore(tmp_path / "data" / "jobs.sqlite3")
    yield jobs
    jobs.close()


def progress(epoch):
    return {"epoch": epoch, "loss": 1.0 / (epoch + 1), "accuracy": 0.5, "elapsed_s": 0.1 * epoch}


def test_a_job_runs_to_success(store):
    job = store.create(CONFIG)
    assert job.status == "queued" and job.config == CONFIG and job.progress is None
    assert len(job.id) == 32 and job.created_at.tzinfo is not None
    running = store.set_running(job.id)
    assert running.status == "running" and running.started_at is not None
    assert store.add_progress(job.id, **progress(0)) == 1
    assert store.add_progress(job.id, **progress(5)) == 2
    assert store.get(job.id).progress == JobEvent(2, 5, 1 / 6, 0.5, 0.5)
    done = store.set_succeeded(job.id, "model-1", {"loss": 0.1, "accuracy": 0.9})
    assert done.status == "succeeded" and done.finished
    assert done.model_id == "model-1" and done.metrics == {"loss": 0.1, "accuracy": 0.9}


def test_events_replay_after_a_sequence_number(store):
    job = store.create(CONFIG)
    store.set_running(job.id)
    for epoch in range(5):
        store.add_progress(job.id, **progress(epoch))
    assert [event.seq for event in store.events(job.id)] == [1, 2, 3, 4, 5]
    assert [event.epoch for event in store.events(job.id, after_seq=3)] == [3, 4]
    assert [event.seq for event in store.events(job.id, after_seq=1, limit=2)] == [2, 3]
    assert store.events(job.id, after_seq=5) == []


#: Every move the store offers, and the status it leads to.
MOVES = {
    "set_running": (lambda s, j: s.set_running(j), "running"),
    "add_progress": (lambda s, j: s.add_progress(j, **progress(0)), "running"),
    "set_succeeded": (lambda s, j: s.set_succeeded(j, "m", {}), "succeeded"),
    "set_failed": (lambda s, j: s.set_failed(j, "late"), "failed"),
    "set_cancelled": (lambda s, j: s.set_cancelled(j), "cancelled"),
}
#: The moves that bring a new job to each status.
REACH = {
    "queued": [],
    "running": ["set_running"],
    "succeeded": ["set_running", "set_succeeded"],
    "failed": ["set_running", "set_failed"],
    "cancelled": ["set_cancelled"],
}
#: The statuses each move starts from, as a refusal names them.
FROM = {
    "set_running": "queued",
    "add_progress": "running",
    "set_succeeded": "running",
    "set_failed": "queued or running",
    "set_cancelled": "queued or running",
}
#: The state machine: the moves allowed out of each status; nothing leaves a finished job.
LEGAL = {
    "queued": {"set_running", "set_failed", "set_cancelled"},
    "running": {"add_progress", "set_succeeded", "set_failed", "set_cancelled"},
    "succeeded": set(),
    "failed": set(),
    "cancelled": set(),
}


@pytest.mark.parametrize("move", MOVES)
@pytest.mark.parametrize("status", REACH)
def test_every_move_out_of_every_status(store, status, move):
    job = store.create(CONFIG)
    for step in REACH[status]:
        MOVES[step][0](store, job.id)
    before = store.get(job.id)
    assert before.status == status
    call, target = MOVES[move]
    if move in LEGAL[status]:
        call(store, job.id)
        after = store.get(job.id)
        assert after.status == target
        stamp = after.finished_at if after.finished else after.started_at
        assert stamp is not None and abs(datetime.now(UTC) - stamp) < timedelta(minutes=1)
        assert after.cancel_requested == (target == "cancelled")
    else:
        with pytest.raises(Conflict) as caught:
            call(store, job.id)
        assert caught.value.detail == f"job {job.id} is {status}, not {FROM[move]}"
        assert caught.value.context == {"job_id": job.id, "status": status}
        assert store.get(job.id) == before


def test_unknown_jobs_are_not_found(store):
    for call in (
        store.get,
        store.set_running,
        store.set_cancelled,
        store.request_cancel,
        store.events,
    ):
        with pytest.raises(NotFound) as caught:
            call("nope")
        assert caught.value.detail == "job nope not found"
        assert caught.value.context == {"kind": "job", "name": "nope"}


def test_listing_is_paged_newest_first(store):
    ids = [store.create({"n": n}).id for n in range(7)]
    store.set_running(ids[2])
    page = store.list(limit=3, offset=0)
    assert page.total == 7 and [job.id for job in page.items] == ids[::-1][:3]
    assert [job.id for job in store.list(limit=3, offset=6).items] == [ids[0]]
    running = store.list(status="running")
    assert running.total == 1 and running.items[0].id == ids[2]
    with pytest.raises(InvalidParameter):
        store.list(limit=0)
    with pytest.raises(InvalidParameter):
        store.list(offset=-1)


def test_cancel_requests(store):
    queued = store.create(CONFIG)
    assert store.request_cancel(queued.id).status == "cancelled"
    running = store.create(CONFIG)
    store.set_running(running.id)
    assert not store.get(running.id).cancel_requested
    flagged = store.request_cancel(running.id)
    assert flagged.status == "running" and flagged.cancel_requested
    assert store.get(running.id).cancel_requested
    assert store.set_cancelled(running.id).status == "cancelled"
    assert store.request_cancel(running.id).status == "cancelled"


def test_failure_keeps_its_reason(store):
    job = store.create(CONFIG)
    store.set_running(job.id)
    failed = store.set_failed(job.id, "loss became nan by epoch 20")
    assert failed.status == "failed" and failed.reason == "loss became nan by epoch 20"


def test_a_restart_fails_what_was_running_or_queued(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    before = JobStore(path)
    running = before.create(CONFIG).id
    before.set_running(running)
    before.add_progress(running, **progress(0))
    queued = before.create(CONFIG).id
    finished = before.create(CONFIG).id
    before.set_running(finished)
    before.set_succeeded(finished, "m", {"loss": 0.1})
    before.close()  # what the process dying leaves: a file on disk

    after = JobStore(path)
    assert after.get(running).status == "running"
    assert sorted(after.recover_interrupted()) == sorted([running, queued])
    for job_id in (running, queued):
        job = after.get(job_id)
        assert job.status == "failed" and job.reason == INTERRUPTED and job.finished_at
    assert after.get(finished).status == "succeeded"
    assert [event.epoch for event in after.events(running)] == [0]
    assert after.list().total == 3
    assert after.recover_interrupted() == []
    after.close()


def test_the_file_is_a_wal_database(store):
    with closing(sqlite3.connect(store.path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_threads_share_a_store(store):
    job = store.create(CONFIG)
    store.set_running(job.id)
    errors = []

    def report(start):
        try:
            for epoch in range(start, start + 25):
                store.add_progress(job.id, **progress(epoch))
                store.get(job.id)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=report, args=(n * 100,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [event.seq for event in store.events(job.id)] == list(range(1, 101))


def test_two_processes_worth_of_connections_see_each_other(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    api, worker = JobStore(path), JobStore(path)
    job = api.create(CONFIG)
    worker.set_running(job.id)
    api.request_cancel(job.id)
    assert worker.get(job.id).cancel_requested
    api.close()
    worker.close()


def test_an_idempotency_key_finds_its_job_and_is_taken_once(store):
    assert store.find_key("key-1") is None
    job = store.create(CONFIG)
    store.remember_key("key-1", "sha-of-body", job.id)
    found, fingerprint = store.find_key("key-1")
    assert (found, fingerprint) == (store.get(job.id), "sha-of-body")
    other = store.create(CONFIG)
    with pytest.raises(Conflict) as caught:
        store.remember_key("key-1", "another-body", other.id)
    assert caught.value.detail == "idempotency key 'key-1' is taken"
    assert caught.value.context == {"key": "key-1"}
    assert store.find_key("key-1") == (store.get(job.id), "sha-of-body")
    assert store.find_key("key-2") is None


def test_a_page_holds_50_jobs_by_default_and_1_to_1000_on_request(store):
    for n in range(51):
        store.create({"n": n})
    assert len(store.list().items) == 50
    assert len(store.list(limit=1).items) == 1
    assert len(store.list(limit=1000).items) == 51
    assert len(store.list(offset=0).items) == 50
    for kwargs, parameter, reason in [
        ({"limit": 0}, "limit", "must be in [1, 1000]"),
        ({"limit": 1001}, "limit", "must be in [1, 1000]"),
        ({"offset": -1}, "offset", "must be >= 0"),
    ]:
        with pytest.raises(InvalidParameter) as caught:
            store.list(**kwargs)
        assert (caught.value.parameter, caught.value.reason) == (parameter, reason)


def test_a_job_id_is_taken_once(store):
    store.create(CONFIG, job_id="job-1")
    with pytest.raises(Conflict) as caught:
        store.create({"other": True}, job_id="job-1")
    assert caught.value.detail == "job job-1 already exists"
    assert caught.value.context == {"kind": "job", "name": "job-1"}
    assert store.get("job-1").config == CONFIG


def test_a_page_says_which_page_it_is(store):
    for n in range(3):
        store.create({"n": n})
    page = store.list(limit=2, offset=1)
    assert (page.limit, page.offset, page.total, len(page.items)) == (2, 1, 3, 2)


def test_a_succeeded_job_keeps_its_model_version(store):
    job = store.create(CONFIG)
    store.set_running(job.id)
    done = store.set_succeeded(job.id, "spirals", {"loss": 0.1}, model_version=3)
    assert (done.model_id, done.model_version) == ("spirals", 3)
    assert store.get(job.id).model_version == 3


def test_a_store_makes_its_folders(tmp_path):
    path = tmp_path / "a" / "b" / "jobs.sqlite3"
    with closing(JobStore(path)) as jobs:
        assert jobs.get(jobs.create(CONFIG).id).status == "queued"
    assert path.is_file()


def test_a_database_from_before_model_versions_gets_version_1_models(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    with closing(sqlite3.connect(path)) as db:  # the jobs table as the first release made it
        db.executescript(
            """
            CREATE TABLE jobs (
                n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
                status TEXT NOT NULL, config TEXT NOT NULL, created_at REAL NOT NULL,
                started_at REAL, finished_at REAL,
                cancel_requested INTEGER NOT NULL DEFAULT 0,
                model_id TEXT, metrics TEXT, reason TEXT
            );
            INSERT INTO jobs (id, status, config, created_at, model_id)
                VALUES ('old-model', 'succeeded', '{}', 1.0, 'old-model');
            INSERT INTO jobs (id, status, config, created_at)
                VALUES ('old-failure', 'failed', '{}', 2.0);
            """
        )
    with closing(JobStore(path)) as jobs:
        assert jobs.get("old-model").model_version == 1
        assert jobs.get("old-failure").model_version is None
        assert jobs.create(CONFIG).model_version is None
