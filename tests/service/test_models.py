"""Stored models over HTTP: metadata, plots, predictions, OIP v2 inference, batching, cache."""

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi import FastAPI
from numpy.testing import assert_allclose
from PIL import Image

from service.errors import install_error_handlers
from service.routes.models import ModelId
from service.schemas.trainings import PredictRequest
from tests.service._api import SMALL, submit, wait_finished
from workers.serving import LoadedModel
from workers.training import ModelRef, ModelStore

pytestmark = pytest.mark.anyio

ENSEMBLE = {
    "task": "regression",
    "model": {"hidden": [32], "activation": "tanh", "ensemble_size": 3},
    "optimizer": {"name": "adam", "lr": 1e-2},
    "epochs": 300,
    "report_every": 50,
}


class Served:
    def __init__(self, client: httpx.AsyncClient, data_dir: Path, spiral: str, ensemble: str):
        self.client, self.data_dir, self.spiral, self.ensemble = client, data_dir, spiral, ensemble


@pytest.fixture(scope="module")
async def served(make_client, tmp_path_factory) -> AsyncIterator[Served]:
    data_dir = tmp_path_factory.mktemp("served")
    async with make_client(image_workers=1, data_dir=data_dir, model_cache_size=2) as c:
        jobs = []
        for config in (SMALL, ENSEMBLE):  # one after the other: the ensemble is the newest
            jobs.append(await submit(c, config))
            assert (await wait_finished(c, jobs[-1]["id"]))["status"] == "succeeded"
        yield Served(c, data_dir, jobs[0]["id"], jobs[1]["id"])


def reference(served: Served, model_id: str) -> LoadedModel:
    return LoadedModel.from_store(ModelStore(served.data_dir / "models"), model_id)


async def test_models_are_listed_and_described(served: Served) -> None:
    listing = (await served.client.get("/v1/models")).json()
    ids = [m["id"] for m in listing["items"]]
    assert ids[:2] == [served.ensemble, served.spiral]  # newest first
    model = (await served.client.get(f"/v1/models/{served.ensemble}")).json()
    assert model["valid"] and model["task"] == "regression"
    assert model["metadata"]["config"]["model"]["ensemble_size"] == 3
    assert model["links"]["infer"] == f"/v2/models/{served.ensemble}/infer"


async def test_classifier_predictions_equal_the_model_run_directly(served: Served) -> None:
    inputs = [[0.1, 0.2], [-0.5, 0.3], [0.0, -0.9]]
    response = await served.client.post(
        f"/v1/models/{served.spiral}/predict", json={"inputs": inputs}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    with torch.inference_mode():
        logits = reference(served, served.spiral).module(torch.tensor(inputs))
    assert body["classes"] == logits.argmax(dim=1).tolist()
    assert_allclose(body["probabilities"], torch.softmax(logits, dim=1).numpy(), rtol=1e-6)
    assert "mean" not in body


async def test_ensemble_predictions_give_mean_and_spread(served: Served) -> None:
    xs = np.linspace(-2, 2, 9).tolist()
    body = (
        await served.client.post(f"/v1/models/{served.ensemble}/predict", json={"inputs": xs})
    ).json()
    with torch.inference_mode():
        members = reference(served, served.ensemble).module(torch.tensor(xs).reshape(-1, 1))
    assert_allclose(body["mean"], members.squeeze(-1).mean(dim=0).numpy(), rtol=1e-5)
    assert_allclose(body["std"], members.squeeze(-1).std(dim=0).numpy(), rtol=1e-5, atol=1e-7)
    # Away from the data ([-1, 1]) the members disagree more.
    assert body["std"][0] > body["std"][4] and body["std"][-1] > body["std"][4]


@pytest.mark.parametrize(
    ("inputs", "mentions"),
    [
        ([[1.0, 2.0, 3.0]], "shape"),
        ([[1.0]], "shape"),
        ([], "shape"),
        ([[1.0, 1e39]], "float32"),
    ],
)
async def test_bad_inputs_are_422_naming_inputs(served: Served, inputs, mentions: str) -> None:
    response = await served.client.post(
        f"/v1/models/{served.spiral}/predict", json={"inputs": inputs}
    )
    assert response.status_code == 422
    assert response.json()["parameter"] == "inputs" and mentions in response.json()["detail"]


async def test_non_finite_inputs_are_422(served: Served) -> None:
    response = await served.client.post(
        f"/v1/models/{served.spiral}/predict",
        content=b'{"inputs": [[NaN, 1.0]]}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert "inputs" in response.json()["parameter"]


def fastapi_body_parameter_app() -> FastAPI:
    """The predict route as FastAPI's own body parameter would read it: the reference."""
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/v1/models/{name}/predict")
    async def predict(name: ModelId, body: PredictRequest) -> dict:
        return {}

    return app


MALFORMED = [
    (b"nope", "application/json"),
    (b"", "application/json"),
    (b"[]", "application/json"),
    (b"null", "application/json"),
    (b"{}", "application/json"),
    (b'{"inputs": "x"}', "application/json"),
    (b'{"inputs": [[1, null]]}', "application/json"),
    (b'{"inputs": [[1, "a"]]}', "application/json"),
    (b'{"inputs": [[1, 2]]', "application/json"),
    (b'{"inputs": [[1, 2]]} x', "application/json"),
    (b"\x80", "application/json"),
    (b'{"inputs": [[1, 2]]}', "text/plain"),
    (b'{"inputs": [[1, 2]]}', "application/jsonx"),
    (b'{"inputs": [[1, 2]]}', None),
]


@pytest.mark.parametrize(("body", "content_type"), MALFORMED)
async def test_malformed_predict_bodies_fail_as_a_fastapi_body_parameter_would(
    served: Served, body: bytes, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    path = f"/v1/models/{served.spiral}/predict"
    transport = httpx.ASGITransport(app=fastapi_body_parameter_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://reference") as reference:
        expected = await reference.post(path, content=body, headers=headers)
    got = await served.client.post(path, content=body, headers=headers)
    assert got.status_code == expected.status_code in (400, 422)
    assert got.headers["content-type"] == expected.headers["content-type"]
    got_problem, expected_problem = got.json(), expected.json()
    got_problem.pop("request_id"), expected_problem.pop("request_id")
    assert got_problem == expected_problem


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'\xef\xbb\xbf{"inputs": [[0.1, 0.2]]}', "application/json"),  # a UTF-8 BOM
        ('{"inputs": [[0.1, 0.2]]}'.encode("utf-16"), "application/json"),
        (b'{"inputs": [["0.1", 0.2]]}', "application/json"),
        (b'{"inputs": [[0.1, 0.2]]}', "application/vnd.example+json; charset=utf-8"),
    ],
)
async def test_what_fastapi_accepted_is_still_accepted(
    served: Served, body: bytes, content_type: str
) -> None:
    response = await served.client.post(
        f"/v1/models/{served.spiral}/predict", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 200, response.text
    assert response.json()["classes"] and response.headers["content-type"] == "application/json"


async def test_the_predict_request_body_is_documented(served: Served) -> None:
    document = served.client.app.openapi()  # type: ignore[attr-defined]
    operation = document["paths"]["/v1/models/{name}/predict"]["post"]
    body = operation["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PredictRequest"
    }
    assert document["components"]["schemas"]["PredictRequest"] == (
        PredictRequest.model_json_schema()
    )
    response = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert response == {"$ref": "#/components/schemas/PredictionPublic"}


async def test_unknown_and_hostile_model_ids(served: Served) -> None:
    client = served.client
    assert (
        await client.post("/v1/models/nope/predict", json={"inputs": [[0, 0]]})
    ).status_code == 404
    assert (await client.get("/v1/models/nope")).status_code == 404
    for hostile in ("..%2F..%2Fetc", "%2E%2E", "A" * 70, "a" * 65):
        response = await client.get(f"/v1/models/{hostile}")
        assert response.status_code in (404, 422), hostile
    # The lean route validates its path too (/v2's own errors: test_open_inference*.py).
    response = await client.post(f"/v1/models/{'A' * 70}/predict", json={"inputs": [[0, 0]]})
    assert response.status_code == 422, response.text
    assert response.json()["parameter"] == "name"
    assert not (served.data_dir.parent / "etc").exists()


async def test_plots(served: Served) -> None:
    for model_id, kind in [
        (served.spiral, "dataset"),
        (served.spiral, "decision-boundary"),
        (served.spiral, "curves"),
        (served.ensemble, "fit"),
        (served.ensemble, "curves"),
    ]:
        response = await served.client.get(f"/v1/models/{model_id}/plots/{kind}")
        assert response.status_code == 200, (kind, response.text)
        image = Image.open(io.BytesIO(response.content))
        assert image.format == "PNG" and np.asarray(image.convert("L")).std() > 5
    wrong = await served.client.get(f"/v1/models/{served.spiral}/plots/fit")
    assert wrong.status_code == 422 and wrong.json()["parameter"] == "kind"
    unknown = await served.client.get(f"/v1/models/{served.spiral}/plots/pie")
    assert unknown.status_code == 422


async def test_concurrent_predictions_share_forward_passes(served: Served) -> None:
    server = served.client.app.state.model_server  # type: ignore[attr-defined]
    await served.client.post(f"/v1/models/{served.spiral}/predict", json={"inputs": [[0, 0]]})
    before = await server.batch_stats(served.spiral)  # where the model's batcher runs
    rng = np.random.default_rng(0)
    payloads = [rng.uniform(-1, 1, (3, 2)).tolist() for _ in range(64)]
    responses = await asyncio.gather(
        *(
            served.client.post(f"/v1/models/{served.spiral}/predict", json={"inputs": p})
            for p in payloads
        )
    )
    assert all(r.status_code == 200 for r in responses)
    after = await server.batch_stats(served.spiral)
    assert after["requests"] - before["requests"] == 64
    # gathered, not one pass per request
    assert after["forward_calls"] - before["forward_calls"] < 32
    alone = [
        (await served.client.post(f"/v1/models/{served.spiral}/predict", json={"inputs": p})).json()
        for p in payloads[:4]
    ]
    for together, single in zip(responses[:4], alone, strict=True):
        assert_allclose(together.json()["probabilities"], single["probabilities"], rtol=1e-6)


async def test_loaded_models_are_evicted_least_recently_used(served: Served) -> None:
    client = served.client
    server = client.app.state.model_server  # type: ignore[attr-defined]
    third = await submit(client, {**SMALL, "data": {"seed": 99}})
    await wait_finished(client, third["id"])
    for model_id in (served.spiral, served.ensemble, third["id"]):
        inputs = [[0.0]] if model_id == served.ensemble else [[0.0, 0.0]]
        response = await client.post(f"/v1/models/{model_id}/predict", json={"inputs": inputs})
        assert response.status_code == 200
    # Capacity 2, spiral evicted; each model is version 1 of its job's id.
    assert server.cache.ids() == [ModelRef(served.ensemble, 1), ModelRef(third["id"], 1)]


async def test_predictions_survive_eviction_under_concurrency(make_client, tmp_path) -> None:
    async with make_client(image_workers=1, data_dir=tmp_path, model_cache_size=1) as c:
        jobs = [await submit(c, {**SMALL, "data": {"seed": s}}) for s in (1, 2)]
        for job in jobs:
            await wait_finished(c, job["id"])
        responses = await asyncio.gather(
            *(
                c.post(f"/v1/models/{jobs[i % 2]['id']}/predict", json={"inputs": [[0.1, 0.2]]})
                for i in range(40)
            )
        )
        assert [r.status_code for r in responses] == [200] * 40


async def test_a_damaged_model_is_reported_not_served(served: Served) -> None:
    client = served.client
    job = await submit(client, {**SMALL, "data": {"seed": 5}})
    await wait_finished(client, job["id"])
    weights = served.data_dir / "models" / job["id"] / "1" / "weights.safetensors"
    assert weights.exists()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    model = (await client.get(f"/v1/models/{job['id']}")).json()
    assert model["valid"] is False and "checksum" in model["reason"]
    response = await client.post(f"/v1/models/{job['id']}/predict", json={"inputs": [[0, 0]]})
    assert response.status_code == 409 and response.json()["type"] == "/problems/model-unavailable"
    assert (await client.get(f"/v2/models/{job['id']}/ready")).status_code == 409


async def test_deleting_a_model_unloads_it_and_removes_its_files(served: Served) -> None:
    client = served.client
    job = await submit(client, {**SMALL, "data": {"seed": 6}})
    await wait_finished(client, job["id"])
    await client.post(f"/v1/models/{job['id']}/predict", json={"inputs": [[0, 0]]})
    assert (await client.delete(f"/v1/models/{job['id']}")).status_code == 204
    assert not (served.data_dir / "models" / job["id"]).exists()
    assert (await client.get(f"/v1/models/{job['id']}")).status_code == 404
    gone = await client.post(f"/v1/models/{job['id']}/predict", json={"inputs": [[0, 0]]})
    assert gone.status_code == 404
    assert (await client.delete(f"/v1/models/{job['id']}")).status_code == 404
