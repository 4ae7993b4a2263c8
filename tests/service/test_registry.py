"""Named models with versions and aliases: retrain, promote, roll back, restart.

Mostly /v1; the done-when test also predicts through /v2. The rest of the protocol's
versions (``/v2/models/{name}/versions/{version}``) is tested in
``test_open_inference*.py``.
"""

import asyncio
import hashlib
import json
import sqlite3
import time
import uuid
from contextlib import closing
from pathlib import Path

import httpx
import numpy as np
import pytest
import safetensors.torch
from numpy.testing import assert_allclose

from tensorlens import AsyncClient, Conflict, Model, ModelVersion, NotFound
from tensorlens.types import Alias
from tests.service._api import SMALL, submit, wait_finished
from workers.training import ModelRef
from workers.training.configs import validate_training
from workers.training.trainer import build_metadata, train

pytestmark = pytest.mark.anyio

NAME = "spiral-relu"
POINTS = [[0.1, 0.2], [-0.5, 0.3], [0.0, -0.9]]


def version_config(seed: int) -> dict:
    return {
        **SMALL,
        "epochs": 20,
        "data": {**SMALL["data"], "points_per_class": 50, "seed": seed},
        "model_name": NAME,
        "description": f"the notes' ReLU network, seed {seed}",
    }


async def predict(client, query: str = "", name: str = NAME) -> dict:
    response = await client.post(f"/v1/models/{name}/predict{query}", json={"inputs": POINTS})
    assert response.status_code == 200, response.text
    return response.json()


async def infer(client, path: str = "") -> dict:
    """A /v2 inference of POINTS at ``/v2/models/NAME{path}/infer``, in /v1's shape."""
    tensor = {"name": "input", "shape": [len(POINTS), 2], "datatype": "FP32", "data": POINTS}
    response = await client.post(f"/v2/models/{NAME}{path}/infer", json={"inputs": [tensor]})
    assert response.status_code == 200, response.text
    body = response.json()
    outputs = {output["name"]: output for output in body["outputs"]}
    return {
        "model_version": int(body["model_version"]),
        "classes": outputs["classes"]["data"],
        "probabilities": outputs["probabilities"]["data"],
    }


def assert_answer_of(answer: dict, expected: dict[int, dict]) -> None:
    """``answer`` is what the version it names answers, exactly."""
    reference = expected[answer["model_version"]]
    assert answer["classes"] == reference["classes"]
    assert_allclose(
        np.ravel(answer["probabilities"]), np.ravel(reference["probabilities"]), rtol=1e-6
    )


async def test_retrain_promote_roll_back_and_restart(make_client, tmp_path) -> None:
    data_dir = tmp_path / "data"
    async with make_client(data_dir=data_dir, image_workers=1, model_cache_size=4) as client:
        jobs = []
        for seed in (1, 2, 3):
            job = await submit(client, version_config(seed))
            jobs.append(await wait_finished(client, job["id"]))
        assert [j["status"] for j in jobs] == ["succeeded"] * 3
        assert [(j["model_id"], j["model_version"]) for j in jobs] == [(NAME, v) for v in (1, 2, 3)]
        assert jobs[1]["links"]["model_version"] == f"/v1/models/{NAME}/versions/2"

        model = (await client.get(f"/v1/models/{NAME}")).json()
        assert [v["version"] for v in model["versions"]] == [1, 2, 3]
        assert [v["job_id"] for v in model["versions"]] == [j["id"] for j in jobs]
        assert model["default_version"] == model["latest_version"] == 3
        assert model["description"] == "the notes' ReLU network, seed 3"
        assert all(v["final_metrics"] and v["created_at"] for v in model["versions"])
        listing = (await client.get("/v1/models")).json()
        assert [m["name"] for m in listing["items"]] == [NAME] and listing["total"] == 1

        expected = {v: await predict(client, f"?version={v}") for v in (1, 2, 3)}
        assert [expected[v]["model_version"] for v in (1, 2, 3)] == [1, 2, 3]
        assert (await predict(client))["model_version"] == 3  # the latest, with no alias

        moved = await client.put(f"/v1/models/{NAME}/aliases/production", json={"version": 2})
        assert moved.status_code == 200, moved.text
        assert moved.json()["version"] == 2
        assert_answer_of(await predict(client, "?alias=production"), expected)
        assert (await predict(client, "?alias=production"))["model_version"] == 2
        assert (await predict(client))["model_version"] == 3
        version = (await client.get(f"/v1/models/{NAME}/versions/2")).json()
        assert version["aliases"] == ["production"] and version["job_id"] == jobs[1]["id"]
        # The inference protocol serves the same versions.
        for path, served_version in (("", 3), ("/versions/2", 2), ("/versions/production", 2)):
            answer = await infer(client, path)
            assert answer["model_version"] == served_version
            assert_answer_of(answer, expected)
        metadata = (await client.get(f"/v2/models/{NAME}")).json()
        assert metadata["versions"] == ["1", "2", "3"]

        # Move the alias back and forth under 64 concurrent clients: every prediction is
        # answered, by the old version or the new, and neither is loaded again.
        server = client.app.state.model_server
        loaded = {v: server.served(ModelRef(NAME, v)) for v in (2, 3)}
        stop = asyncio.Event()

        async def one_client() -> list[dict]:
            answers = []
            while not stop.is_set() or not answers:
                answers.append(await predict(client, "?alias=production"))
            return answers

        async def mover() -> None:
            for index in range(20):
                target = 3 if index % 2 == 0 else 2
                response = await client.put(
                    f"/v1/models/{NAME}/aliases/production", json={"version": target}
                )
                assert response.status_code == 200
                await asyncio.sleep(0.01)
            stop.set()

        results = await asyncio.gather(*(one_client() for _ in range(64)), mover())
        answers = [answer for batch in results[:64] for answer in batch]
        assert {a["model_version"] for a in answers} == {2, 3}
        for answer in answers:
            assert_answer_of(answer, expected)
        assert all(server.served(ModelRef(NAME, v)) is loaded[v] for v in (2, 3))

        # Roll back: production is version 2 again.
        await client.put(f"/v1/models/{NAME}/aliases/production", json={"version": 2})
        assert (await predict(client, "?alias=production"))["model_version"] == 2

        # A version an alias points at stays; version 1 goes.
        refused = await client.delete(f"/v1/models/{NAME}/versions/2")
        assert refused.status_code == 409 and "production" in refused.json()["detail"]
        assert (await client.delete(f"/v1/models/{NAME}/versions/1")).status_code == 204
        gone = await client.post(f"/v1/models/{NAME}/predict?version=1", json={"inputs": POINTS})
        assert gone.status_code == 404 and "version 1" in gone.json()["detail"]

    # The same data dir, a new process's worth of state: everything as it was.
    async with make_client(data_dir=data_dir, image_workers=1) as client:
        model = (await client.get(f"/v1/models/{NAME}")).json()
        assert [v["version"] for v in model["versions"]] == [2, 3]
        assert model["aliases"] == {"production": 2} and model["default_version"] == 3
        assert_answer_of(await predict(client, "?alias=production"), expected)
        assert_answer_of(await predict(client), expected)
        assert (await predict(client, "?version=3"))["model_version"] == 3
        assert (await infer(client, "/versions/production"))["model_version"] == 2
        assert (await client.get(f"/v2/models/{NAME}")).json()["versions"] == ["2", "3"]
        job = (await client.get(f"/v1/trainings/{jobs[1]['id']}")).json()
        assert (job["model_id"], job["model_version"]) == (NAME, 2)
        # The next training is version 4: numbers are never reused.
        fourth = await wait_finished(client, (await submit(client, version_config(4)))["id"])
        assert fourth["model_version"] == 4


@pytest.fixture(scope="module")
async def registry_client(make_client):
    """A service with versions 1 and 2 of NAME, version 1 aliased `production`."""
    async with make_client(image_workers=1) as client:
        for seed in (1, 2):
            await wait_finished(client, (await submit(client, version_config(seed)))["id"])
        await client.put(f"/v1/models/{NAME}/aliases/production", json={"version": 1})
        yield client


async def test_the_default_alias_decides_what_a_bare_name_serves(registry_client) -> None:
    client = registry_client
    assert (await predict(client))["model_version"] == 2
    await client.put(f"/v1/models/{NAME}/aliases/default", json={"version": 1})
    try:
        assert (await predict(client))["model_version"] == 1
        assert (await client.get(f"/v1/models/{NAME}")).json()["default_version"] == 1
        plot = await client.get(f"/v1/models/{NAME}/plots/decision-boundary?alias=default")
        assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"
    finally:
        assert (await client.delete(f"/v1/models/{NAME}/aliases/default")).status_code == 204
    assert (await predict(client))["model_version"] == 2


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "mentions"),
    [
        ("POST", f"/v1/models/{NAME}/predict?version=9", {"inputs": POINTS}, 404, "version 9"),
        ("POST", f"/v1/models/{NAME}/predict?alias=staging", {"inputs": POINTS}, 404, "staging"),
        ("POST", "/v1/models/nope/predict", {"inputs": POINTS}, 404, "model nope"),
        ("GET", f"/v1/models/{NAME}/versions/9", None, 404, "version 9"),
        ("DELETE", f"/v1/models/{NAME}/versions/9", None, 404, "version 9"),
        ("DELETE", f"/v1/models/{NAME}/aliases/staging", None, 404, "staging"),
        ("PUT", f"/v1/models/{NAME}/aliases/staging", {"version": 9}, 404, "version 9"),
        ("PUT", "/v1/models/nope/aliases/staging", {"version": 1}, 404, "model nope"),
        ("PUT", f"/v1/models/{NAME}/aliases/3", {"version": 1}, 422, "version number"),
        ("PUT", f"/v1/models/{NAME}/aliases/v2", {"version": 1}, 422, "version number"),
        ("PUT", f"/v1/models/{NAME}/aliases/Prod", {"version": 1}, 422, "alias"),
        ("PUT", f"/v1/models/{NAME}/aliases/staging", {"version": 0}, 422, "version"),
        ("PUT", f"/v1/models/{NAME}/aliases/staging", {}, 422, "version"),
        (
            "POST",
            f"/v1/models/{NAME}/predict?version=1&alias=production",
            {"inputs": POINTS},
            422,
            "not both",
        ),
        ("GET", f"/v1/models/{NAME}/versions/0", None, 422, "version"),
        ("GET", f"/v1/models/{NAME}/plots/curves?version=9", None, 404, "version 9"),
    ],
)
async def test_bad_names_versions_and_aliases(
    registry_client, method, path, body, status, mentions
) -> None:
    response = await registry_client.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert mentions in response.text


async def test_a_model_name_that_is_a_job_id_is_refused(registry_client) -> None:
    job_id = (await registry_client.get(f"/v1/models/{NAME}")).json()["versions"][0]["job_id"]
    response = await registry_client.post("/v1/trainings", json={**SMALL, "model_name": job_id})
    assert response.status_code == 422 and response.json()["parameter"] == "model_name"
    bad = await registry_client.post("/v1/trainings", json={**SMALL, "model_name": "../x"})
    assert bad.status_code == 422 and "model_name" in bad.json()["parameter"]


async def test_the_python_client_speaks_versions_and_aliases(registry_client) -> None:
    transport = httpx.ASGITransport(app=registry_client.app)
    async with AsyncClient("http://tensorlens", transport=transport) as client:
        model = await client.get_model(NAME)
        assert isinstance(model, Model) and model.aliases["production"] == 1
        assert [v.version for v in model.versions] == [1, 2]
        version = await client.get_model_version(NAME, 1)
        assert isinstance(version, ModelVersion) and version.aliases == ["production"]
        alias = await client.set_alias(NAME, "staging", 2)
        assert isinstance(alias, Alias) and alias.version == 2
        try:
            staged = await client.predict(NAME, POINTS, alias="staging")
            assert staged.model_version == 2
            assert (await client.predict(NAME, POINTS, version=1)).model_version == 1
            png = await client.model_plot(NAME, "curves", version=1)
            assert png.startswith(b"\x89PNG")
            with pytest.raises(Conflict):
                await client.delete_model_version(NAME, 2)
        finally:
            await client.delete_alias(NAME, "staging")
        with pytest.raises(NotFound, match="staging"):
            await client.predict(NAME, POINTS, alias="staging")


# A data dir as the service wrote it before names and versions ------------------------

_OLD_SCHEMA = """
CREATE TABLE jobs (
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
    reason TEXT
);
CREATE INDEX jobs_status ON jobs (status);
CREATE TABLE events (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    loss REAL NOT NULL,
    accuracy REAL,
    elapsed_s REAL NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
"""


def write_old_data_dir(data_dir: Path, seeds: tuple[int, ...]) -> list[str]:
    """Trained models under ``models/<id>/`` and their succeeded jobs, as the old code wrote
    them; returns the ids."""
    (data_dir / "models").mkdir(parents=True)
    ids = []
    with closing(sqlite3.connect(data_dir / "jobs.sqlite3")) as db:
        db.executescript(_OLD_SCHEMA)
        for seed in seeds:
            job_id = uuid.uuid4().hex
            config = validate_training({**SMALL, "epochs": 10, "data": {"seed": seed}})
            result = train(config)
            weights = safetensors.torch.save(result.tensors)
            metadata = {
                **build_metadata(config, result),
                "job_id": job_id,
                "id": job_id,
                "weights_file": "weights.safetensors",
                "weights_sha256": hashlib.sha256(weights).hexdigest(),
                "weights_bytes": len(weights),
                "created_at": f"2024-01-0{seed}T00:00:00+00:00",
            }
            directory = data_dir / "models" / job_id
            directory.mkdir()
            (directory / "weights.safetensors").write_bytes(weights)
            (directory / "metadata.json").write_text(json.dumps(metadata))
            now = time.time()
            db.execute(
                "INSERT INTO jobs (id, status, config, created_at, started_at, finished_at,"
                " model_id, metrics) VALUES (?, 'succeeded', ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    json.dumps(config.model_dump(mode="json")),
                    now,
                    now,
                    now,
                    job_id,
                    json.dumps(metadata["final_metrics"]),
                ),
            )
            ids.append(job_id)
        db.commit()
    return ids


async def test_a_data_dir_from_before_versions_is_migrated(make_client, tmp_path) -> None:
    data_dir = tmp_path / "old"
    ids = write_old_data_dir(data_dir, (1, 2))
    async with make_client(data_dir=data_dir, image_workers=1) as client:
        listing = (await client.get("/v1/models")).json()
        assert [m["id"] for m in listing["items"]] == ids[::-1]  # newest first, as before
        for job_id in ids:
            model = (await client.get(f"/v1/models/{job_id}")).json()
            assert model["valid"] and [v["version"] for v in model["versions"]] == [1]
            assert model["versions"][0]["job_id"] == job_id
            answer = await predict(client, name=job_id)  # today's URL, unchanged
            assert answer["model_id"] == job_id and answer["model_version"] == 1
            assert (await predict(client, "?version=1", name=job_id)) == answer
            job = (await client.get(f"/v1/trainings/{job_id}")).json()
            assert (job["model_id"], job["model_version"]) == (job_id, 1)
        assert (await client.delete(f"/v1/models/{ids[0]}")).status_code == 204
        assert (await client.get(f"/v1/models/{ids[0]}")).status_code == 404
        assert (
            await client.post(f"/v1/models/{ids[0]}/predict", json={"inputs": POINTS})
        ).status_code == 404
    assert sorted(p.name for p in (data_dir / "models").iterdir() if p.name != ".lock") == ids[1:]
    assert sorted(p.name for p in (data_dir / "models" / ids[1]).iterdir()) == ["1"]
