"""`GET /v1/models/{name}/export`: onnxruntime runs each export and answers what the
service's predict route answers; the Triton repository unzips to what Triton reads."""

import io
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import numpy as np
import onnx
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal

from tensorlens import AsyncClient, NotFound
from tests._exports import parse_config, run_onnx
from tests.service._api import assert_problem, submit, wait_finished
from workers.training import ModelStore
from workers.training.export import ONNX_OPSET

pytestmark = pytest.mark.anyio

# A few epochs on a few points: the weights only need to be trained ones, not good ones.
TINY = {"epochs": 3, "report_every": 1, "optimizer": {"name": "adam", "lr": 1e-2}}
SPIRAL_DATA = {"points_per_class": 20, "classes": 3, "seed": 5}
#: Every activation the configs allow, as versions of one name; `identity` is the notes'
#: linear model. The regression ensemble is a name of its own.
TRAININGS = {
    **{
        activation: {
            **TINY,
            "task": "spiral",
            "model_name": "arms",
            "data": SPIRAL_DATA,
            "model": {"hidden": [8] if activation == "identity" else [8, 8], "activation": act},
        }
        for activation, act in (
            ("identity", "identity"),
            ("relu", "relu"),
            ("tanh", "tanh"),
            ("sigmoid", "sigmoid"),
        )
    },
    "ensemble": {
        **TINY,
        "task": "regression",
        "model_name": "cubic",
        "data": {"n_points": 20},
        "model": {"hidden": [8], "activation": "tanh", "ensemble_size": 3},
    },
}
SPIRAL_INPUTS = np.random.default_rng(0).uniform(-1.5, 1.5, size=(64, 2)).astype(np.float32)
CUBIC_INPUTS = np.linspace(-2, 2, 41, dtype=np.float32).reshape(-1, 1)


@dataclass(frozen=True)
class Trained:
    name: str
    version: int
    inputs: np.ndarray


@pytest.fixture(scope="module")
async def trained(
    make_client, tmp_path_factory
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, Trained]]]:
    data_dir = tmp_path_factory.mktemp("exports")
    async with make_client(image_workers=1, data_dir=data_dir, lanes_per_device=2) as client:
        jobs = {key: await submit(client, config) for key, config in TRAININGS.items()}
        models = {}
        for key, job in jobs.items():
            finished = await wait_finished(client, job["id"])
            assert finished["status"] == "succeeded", finished
            inputs = CUBIC_INPUTS if key == "ensemble" else SPIRAL_INPUTS
            models[key] = Trained(finished["model_id"], finished["model_version"], inputs)
        yield client, models


async def predicted(client: httpx.AsyncClient, model: Trained) -> dict[str, np.ndarray]:
    response = await client.post(
        f"/v1/models/{model.name}/predict",
        params={"version": model.version},
        json={"inputs": model.inputs.tolist()},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return {
        name: np.asarray(body[name])
        for name in ("classes", "probabilities", "mean", "std")
        if name in body
    }


async def exported(client: httpx.AsyncClient, model: Trained, export_format: str) -> bytes:
    response = await client.get(
        f"/v1/models/{model.name}/export",
        params={"format": export_format, "version": model.version},
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-onnx-opset"] == str(ONNX_OPSET)
    assert response.headers["x-model-version"] == str(model.version)
    return response.content


@pytest.mark.parametrize("key", sorted(TRAININGS))
async def test_onnxruntime_answers_what_the_predict_route_does(trained, key: str) -> None:
    client, models = trained
    model = models[key]
    response_bytes = await exported(client, model, "onnx")
    got = run_onnx(response_bytes, model.inputs)
    expected = await predicted(client, model)
    assert sorted(got) == sorted(expected)
    for name, values in expected.items():
        assert got[name].shape == values.shape, name
        if name == "classes":
            assert_array_equal(got[name], values)
        else:
            assert_allclose(got[name], values, rtol=1e-5, atol=1e-5, err_msg=name)


async def test_the_onnx_file_says_what_it_holds(trained) -> None:
    client, models = trained
    model = models["ensemble"]
    response = await client.get(f"/v1/models/{model.name}/export")  # onnx by default
    assert response.headers["content-type"] == "application/octet-stream"
    disposition = response.headers["content-disposition"]
    assert disposition == f'attachment; filename="{model.name}.onnx"'
    proto = onnx.load_from_string(response.content)
    props = {prop.key: prop.value for prop in proto.metadata_props}
    stored = (await client.get(f"/v1/models/{model.name}/versions/{model.version}")).json()
    assert props == {
        "tensorlens.model_name": model.name,
        "tensorlens.model_version": str(model.version),
        "tensorlens.task": "regression",
        "tensorlens.weights_sha256": stored["metadata"]["weights_sha256"],
    }


async def test_the_triton_repository_serves_the_same_model(trained) -> None:
    client, models = trained
    model = models["relu"]
    response = await client.get(
        f"/v1/models/{model.name}/export", params={"format": "triton", "version": model.version}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"] == f'attachment; filename="{model.name}.zip"'
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert sorted(archive.namelist()) == [
            f"{model.name}/{model.version}/model.onnx",
            f"{model.name}/config.pbtxt",
        ]
        config = parse_config(archive.read(f"{model.name}/config.pbtxt").decode())
        onnx_file = archive.read(f"{model.name}/{model.version}/model.onnx")
    settings = client.app.state.settings  # type: ignore[attr-defined]
    assert (config.name, config.max_batch_size) == (model.name, settings.max_predict_rows)
    assert config.HasField("dynamic_batching")
    assert [tensor.name for tensor in config.input] == ["input"]
    assert [tensor.name for tensor in config.output] == ["classes", "probabilities"]
    assert onnx_file == await exported(client, model, "onnx")


async def test_version_and_alias_choose_what_is_exported(trained) -> None:
    client, models = trained
    tanh, sigmoid = models["tanh"], models["sigmoid"]
    response = await client.put("/v1/models/arms/aliases/production", json={"version": 1})
    assert response.status_code == 200, response.text
    by_alias = await client.get("/v1/models/arms/export", params={"alias": "production"})
    assert by_alias.headers["x-model-version"] == "1"
    by_version = await client.get("/v1/models/arms/export", params={"version": 1})
    assert by_alias.content == by_version.content
    latest = await client.get("/v1/models/arms/export")
    assert latest.headers["x-model-version"] == str(
        max(m.version for m in models.values() if m.name == "arms")
    )
    assert await exported(client, tanh, "onnx") != await exported(client, sigmoid, "onnx")


async def test_unknown_format_model_version_and_alias(trained) -> None:
    client, _ = trained
    body = assert_problem(await client.get("/v1/models/arms/export?format=pickle"), 422)
    assert "format" in body["detail"]
    for query in ("", "?version=99", "?alias=staging"):
        assert_problem(await client.get(f"/v1/models/nope/export{query}"), 404, "not-found")
    assert_problem(await client.get("/v1/models/arms/export?version=99"), 404, "not-found")
    assert_problem(await client.get("/v1/models/arms/export?alias=staging"), 404, "not-found")
    assert_problem(await client.get("/v1/models/arms/export?version=1&alias=production"), 422)
    assert_problem(await client.get(f"/v1/models/{'A' * 70}/export"), 422, "invalid-parameter")
    assert_problem(await client.get("/v1/models/..%2Fetc/export"), 404)  # no route


async def test_models_over_the_export_limit_are_refused(make_client, tmp_path) -> None:
    weights = {"weight": torch.zeros(64)}  # 256 bytes of float32, and a header
    ModelStore(tmp_path / "models").save("big", weights, {"config": TRAININGS["relu"]})
    async with make_client(image_workers=1, data_dir=tmp_path, max_export_bytes=256) as client:
        body = assert_problem(await client.get("/v1/models/big/export"), 422, "invalid-input")
        assert "limit of 256" in body["detail"]
        assert "TENSORLENS_MAX_EXPORT_BYTES" in body["detail"]


async def test_the_python_client_exports(trained) -> None:
    client, models = trained
    model = models["ensemble"]
    transport = httpx.ASGITransport(app=client.app)  # type: ignore[attr-defined]
    async with AsyncClient("http://tensorlens", transport=transport) as api:
        onnx_file = await api.export_model(model.name, version=model.version)
        assert onnx_file == await exported(client, model, "onnx")
        repository = await api.export_model(model.name, "triton", alias=None)
        assert zipfile.ZipFile(io.BytesIO(repository)).namelist()
        with pytest.raises(NotFound):
            await api.export_model("nope")
