import sqlite3
import threading
from contextlib import closing

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


@pytest.mark.parametrize(
    ("setup", "call"),
    [
        ([], lambda s, j: s.set_succeeded(j, "m", {})),
        ([], lambda s, j: s.add_progress(j, **progress(0))),
        (["set_running"], lambda s, j: s.set_running(j)),
        (["set_running", "set_cancelled"], lambda s, j: s.set_failed(j, "late")),
        (["set_cancelled"], lambda s, j: s.set_running(j)),
    ],
)
def test_illegal_transitions_conflict(store, setup, call):
    job = store.create(CONFIG)
    for step in setup:
        getattr(store, step)(job.id)
    before = store.get(job.id)
    with pytest.raises(Conflict):
        call(store, job.id)
    assert store.get(job.id) == before


def test_unknown_jobs_are_not_found(store):
    for call in (
        store.get,
        store.set_running,
        store.set_cancelled,
        store.request_cancel,
        store.events,
    ):
        with pytest.raises(NotFound):
            call("nope")


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
