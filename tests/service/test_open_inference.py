"""The Open Inference Protocol v2 as its clients speak it: tritonclient (sync and aio),
unchanged, against a live `python -m service`, and the spec's own JSON.

On the local backend by default; `pytest --executor=ray` runs the server on the
session's Ray cluster (the Makefile's Ray pass does).
"""

import gzip
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import pytest
import tritonclient.http as triton
import tritonclient.http.aio as triton_aio
import yaml
from numpy.testing import assert_allclose, assert_array_equal
from tritonclient.utils import InferenceServerException

from tensorlens import Client, NotFound
from tests._support import live_service
from tests.service._api import SMALL

#: The protocol's REST description, a verbatim copy of kserve/open-inference-protocol's
#: specification/protocol/open_inference_rest.yaml (Apache 2.0).
SPEC = yaml.safe_load((Path(__file__).parent / "open_inference_rest.yaml").read_text())
ENSEMBLE = {
    "task": "regression",
    "model_name": "fit",
    "model": {"hidden": [16], "activation": "tanh", "ensemble_size": 3},
    "optimizer": {"name": "adam", "lr": 1e-2},
    "epochs": 50,
    "report_every": 10,
}
#: Rows the spiral models are asked about, each exactly an FP32 (and FP16) value.
ROWS = np.array([[0.5, -0.25], [-1.0, 0.75], [0.0, 2.0]])


@dataclass(frozen=True)
class Live:
    url: str
    http: httpx.Client

    @property
    def host(self) -> str:  # what tritonclient takes: host:port, no scheme
        return self.url.removeprefix("http://")

    def predict(self, name: str, rows: np.ndarray, version: int | None = None) -> dict:
        """The /v1 prediction, the reference every protocol answer is held to."""
        params = {"version": version} if version else {}
        response = self.http.post(
            f"/v1/models/{name}/predict", params=params, json={"inputs": rows.tolist()}
        )
        assert response.status_code == 200, response.text
        return response.json()


def train(http: httpx.Client, config: dict[str, Any]) -> None:
    job = http.post("/v1/trainings", json=config)
    assert job.status_code == 202, job.text
    for _ in range(1200):
        status = http.get(f"/v1/trainings/{job.json()['id']}").json()
        if status["status"] not in ("queued", "running"):
            assert status["status"] == "succeeded", status
            return
        time.sleep(0.1)
    pytest.fail("the training did not finish")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, executor: str) -> Iterator[Live]:
    """A live server with `spiral` (versions 1 and 2) and `fit` (a regression ensemble);
    two models fit in its cache."""
    settings = {"TENSORLENS_IMAGE_WORKERS": "1", "TENSORLENS_MODEL_CACHE_SIZE": "2"}
    if executor == "ray":
        import ray

        address = ray.get_runtime_context().gcs_address
        settings |= {"TENSORLENS_EXECUTOR": "ray", "TENSORLENS_RAY_ADDRESS": address}
    with live_service(tmp_path_factory.mktemp("open-inference"), settings) as server:
        with httpx.Client(base_url=server.base_url, timeout=60) as http:
            for seed in (7, 8):
                train(
                    http, {**SMALL, "model_name": "spiral", "data": {**SMALL["data"], "seed": seed}}
                )
            train(http, ENSEMBLE)
            yield Live(server.base_url, http)
        assert "Traceback" not in server.log_text()


@pytest.fixture
def client(live: Live) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(live.host) as c:
        yield c


def spiral_inputs(datatype: str = "FP32", binary: bool = True) -> list[triton.InferInput]:
    from tritonclient.utils import triton_to_np_dtype

    tensor = triton.InferInput("input", list(ROWS.shape), datatype)
    tensor.set_data_from_numpy(ROWS.astype(triton_to_np_dtype(datatype)), binary_data=binary)
    return [tensor]


def assert_spiral(result: Any, expected: dict, version: str) -> None:
    assert result.get_response()["model_version"] == version
    assert result.get_output("classes")["datatype"] == "INT64"
    assert result.get_output("probabilities")["datatype"] == "FP32"
    assert_array_equal(result.as_numpy("classes"), expected["classes"])
    assert_allclose(result.as_numpy("probabilities"), expected["probabilities"], rtol=1e-6)


# Server and models ---------------------------------------------------------------------


def test_server_metadata_and_health(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "tensorlens"
    assert metadata["extensions"] == ["binary_tensor_data", "model_repository"]


def test_model_metadata_lists_every_version(client: triton.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("spiral")
    assert metadata["versions"] == ["1", "2"]
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 2]}]
    assert [(o["name"], o["datatype"]) for o in metadata["outputs"]] == [
        ("classes", "INT64"),
        ("probabilities", "FP32"),
    ]
    assert client.get_model_metadata("spiral", model_version="1")["name"] == "spiral"
    fit = client.get_model_metadata("fit", model_version="1")
    assert [o["name"] for o in fit["outputs"]] == ["mean", "std"]
    for name, version in (("spiral", "3"), ("nope", "")):
        with pytest.raises(InferenceServerException) as error:
            client.get_model_metadata(name, model_version=version)
        assert error.value.status() == "404" and name in error.value.message()


# Inference -----------------------------------------------------------------------------


@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
@pytest.mark.parametrize("binary_out", [True, False], ids=["binary-out", "json-out"])
@pytest.mark.parametrize("version", ["", "1", "2"])
def test_infer(
    live: Live,
    client: triton.InferenceServerClient,
    binary_in: bool,
    binary_out: bool,
    version: str,
) -> None:
    outputs = [triton.InferRequestedOutput(n, binary_out) for n in ("classes", "probabilities")]
    result = client.infer(
        "spiral",
        spiral_inputs(binary=binary_in),
        model_version=version,
        outputs=outputs,
        request_id="r-1",
    )
    assert result.get_response()["id"] == "r-1"
    assert ("parameters" in result.get_output("classes")) is binary_out
    expected = live.predict("spiral", ROWS, int(version) if version else None)
    assert_spiral(result, expected, version or "2")  # the latest, by the policy


def test_infer_defaults_to_binary_outputs(live: Live, client: triton.InferenceServerClient) -> None:
    result = client.infer("spiral", spiral_inputs())  # no outputs named: all, as binary
    assert result.get_output("probabilities")["parameters"] == {"binary_data_size": 3 * 3 * 4}
    assert_spiral(result, live.predict("spiral", ROWS), "2")
    ensemble = client.infer("fit", [_one_feature(np.array([[-1.0], [0.5]]))])
    expected = live.predict("fit", np.array([[-1.0], [0.5]]))
    assert_allclose(ensemble.as_numpy("mean"), expected["mean"], rtol=1e-6)
    assert_allclose(ensemble.as_numpy("std"), expected["std"], rtol=1e-6)


def _one_feature(rows: np.ndarray) -> triton.InferInput:
    tensor = triton.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows.astype(np.float32))
    return tensor


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(
    live: Live, client: triton.InferenceServerClient, algorithm: str
) -> None:
    result = client.infer(
        "spiral",
        spiral_inputs(),
        request_compression_algorithm=algorithm,
        response_compression_algorithm=algorithm,
    )
    assert_spiral(result, live.predict("spiral", ROWS), "2")


@pytest.mark.parametrize(
    ("body", "encoding", "status"),
    [
        (b"{}", "br", 415),
        (b"not gzip", "gzip", 400),
        (gzip.compress(b'{"inputs": []}')[:-4], "gzip", 400),  # truncated
        (gzip.compress(b" " * 20_000_000), "gzip", 413),  # 20 kB that inflate to 20 MB
    ],
)
def test_bad_compressed_requests(live: Live, body: bytes, encoding: str, status: int) -> None:
    response = live.http.post(
        "/v2/models/spiral/infer", content=body, headers={"Content-Encoding": encoding}
    )
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}


def test_outputs_selection_is_honoured(live: Live, client: triton.InferenceServerClient) -> None:
    only = [triton.InferRequestedOutput("probabilities", binary_data=False)]
    result = client.infer("spiral", spiral_inputs(), outputs=only)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["probabilities"]
    assert result.as_numpy("classes") is None
    with pytest.raises(InferenceServerException) as error:
        client.infer("spiral", spiral_inputs(), outputs=[triton.InferRequestedOutput("logits")])
    assert error.value.status() == "400" and "logits" in error.value.message()


@pytest.mark.anyio
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("version", ["", "1"])
async def test_infer_with_the_aio_client(live: Live, binary: bool, version: str) -> None:
    async with triton_aio.InferenceServerClient(live.host) as client:
        assert await client.is_server_live()
        assert (await client.get_server_metadata())["name"] == "tensorlens"
        assert (await client.get_model_metadata("spiral", model_version=version))["versions"]
        outputs = [triton.InferRequestedOutput(n, binary) for n in ("classes", "probabilities")]
        result = await client.infer(
            "spiral", spiral_inputs(binary=binary), model_version=version, outputs=outputs
        )
        expected = live.predict("spiral", ROWS, int(version) if version else None)
        assert_spiral(result, expected, version or "2")
        await client.load_model("spiral")
        assert await client.is_model_ready("spiral")
        index = await client.get_model_repository_index()
        assert {"name": "spiral", "version": "2", "state": "READY", "reason": ""} in index
        with pytest.raises(InferenceServerException) as error:
            await client.infer("spiral", spiral_inputs(), model_version="9")
        assert error.value.status() == "404"


#: Datatypes whose every value converts exactly to the models' FP32, and others whose
#: values here do (small integers, and FP64 values FP32 holds).
EXACT = ["FP32", "FP16", "BOOL", "UINT8", "UINT16", "INT8", "INT16"]
CHECKED = ["UINT32", "UINT64", "INT32", "INT64", "FP64"]


@pytest.mark.parametrize("datatype", EXACT + CHECKED)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_every_datatype_that_converts_exactly_is_accepted(
    live: Live, client: triton.InferenceServerClient, datatype: str, binary: bool
) -> None:
    rows = np.array([[1, 0], [0, 1], [1, 1]]) if datatype == "BOOL" else np.array([[3, -2], [0, 7]])
    if datatype.startswith("UINT"):
        rows = np.abs(rows)
    from tritonclient.utils import triton_to_np_dtype

    tensor = triton.InferInput("input", list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows.astype(triton_to_np_dtype(datatype)), binary_data=binary)
    result = client.infer("spiral", [tensor])
    assert_allclose(
        result.as_numpy("probabilities"), live.predict("spiral", rows)["probabilities"], rtol=1e-6
    )


@pytest.mark.parametrize(
    ("datatype", "values", "message"),
    [
        ("INT64", [2**24 + 1, 0], "INT64 value 16777217 is not exactly representable in FP32"),
        ("UINT32", [2**24 + 1, 0], "UINT32 value 16777217 is not exactly representable in FP32"),
        ("INT32", [-(2**25) - 2, 1], "INT32 value -33554434 is not exactly representable"),
        ("FP64", [0.1, 0.5], "FP64 value 0.1 is not exactly representable in FP32"),
        ("FP64", [1e300, 0.5], "FP64 value 1e+300 is not exactly representable in FP32"),
    ],
)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_values_that_would_change_are_refused(
    client: triton.InferenceServerClient, datatype: str, values: list, message: str, binary: bool
) -> None:
    from tritonclient.utils import triton_to_np_dtype

    tensor = triton.InferInput("input", [1, 2], datatype)
    tensor.set_data_from_numpy(
        np.array([values], dtype=triton_to_np_dtype(datatype)), binary_data=binary
    )
    with pytest.raises(InferenceServerException) as error:
        client.infer("spiral", [tensor])
    assert error.value.status() == "400" and message in error.value.message()


def test_bytes_is_refused(client: triton.InferenceServerClient) -> None:
    tensor = triton.InferInput("input", [1, 2], "BYTES")
    tensor.set_data_from_numpy(np.array([[b"1", b"2"]], dtype=np.object_))
    with pytest.raises(InferenceServerException) as error:
        client.infer("spiral", [tensor])
    assert error.value.status() == "400" and "BYTES is no number" in error.value.message()


# Readiness and the model repository ------------------------------------------------------


def test_ready_never_loads_or_evicts(live: Live, client: triton.InferenceServerClient) -> None:
    for name in ("spiral", "fit"):
        client.unload_model(name)
    assert not client.is_model_ready("spiral")
    assert {m["state"] for m in client.get_model_repository_index()} == {"UNAVAILABLE"}
    client.load_model("spiral")  # version 2, the policy's
    client.load_model("fit")  # the cache (2 models) is full
    assert client.is_model_ready("spiral") and client.is_model_ready("spiral", "2")
    assert not client.is_model_ready("spiral", "1")  # asked, not loaded...
    ready = client.get_model_repository_index()
    assert {(m["name"], m["version"]) for m in ready if m["state"] == "READY"} == {
        ("spiral", "2"),
        ("fit", "1"),
    }  # ...and nothing evicted
    only_ready = live.http.post("/v2/repository/index", json={"ready": True}).json()
    assert {(m["name"], m["version"]) for m in only_ready} == {("fit", "1"), ("spiral", "2")}
    client.infer("spiral", spiral_inputs(), model_version="1")  # inference loads it
    assert client.is_model_ready("spiral", "1")
    assert not client.is_model_ready("spiral", "2")  # the least recently used went out


def test_unload_keeps_the_files(live: Live, client: triton.InferenceServerClient) -> None:
    client.load_model("fit")
    assert client.is_model_ready("fit")
    client.unload_model("fit", unload_dependents=True)
    assert not client.is_model_ready("fit")
    index = {(m["name"], m["version"]): m for m in client.get_model_repository_index()}
    assert index["fit", "1"]["state"] == "UNAVAILABLE" and index["fit", "1"]["reason"]
    result = client.infer("fit", [_one_feature(np.array([[0.25]]))])
    assert result.as_numpy("mean").shape == (1,)
    for call in (client.load_model, client.unload_model):
        with pytest.raises(InferenceServerException) as error:
            call("nope")
        assert error.value.status() == "404"
    with pytest.raises(InferenceServerException) as error:
        client.load_model("fit", config='{"backend": "onnxruntime"}')
    assert error.value.status() == "400" and "config" in error.value.message()


# The protocol's JSON and errors --------------------------------------------------------


def assert_matches(document: Any, component: str) -> None:
    """``document`` is valid as the spec's ``component`` schema."""
    schema = {"$ref": f"#/components/schemas/{component}", "components": SPEC["components"]}
    jsonschema.validate(document, schema)


def test_answers_have_the_specs_shape(live: Live, client: triton.InferenceServerClient) -> None:
    http = live.http
    assert_matches(http.get("/v2").json(), "metadata_server_response")
    assert_matches(http.get("/v2/models/spiral").json(), "metadata_model_response")
    assert_matches(http.get("/v2/models/spiral/versions/1").json(), "metadata_model_response")
    assert set(http.get("/v2/models/spiral/ready").json()) == {"name", "ready"}
    assert http.get("/v2/health/live").json() == {"live": True}
    request = {"id": "42", "inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32",
                                       "data": [1, 2]}]}  # fmt: skip
    answer = http.post("/v2/models/spiral/infer", json=request).json()
    assert_matches(answer, "inference_response")
    assert answer["id"] == "42" and answer["model_version"] == "2"
    for status, response in (
        (404, http.get("/v2/models/nope")),
        (404, http.get("/v2/models/spiral/versions/3")),
        (404, http.get("/v2/no/such/route")),
        (404, http.get("/v2/models/nope/ready")),
        (400, http.get("/v2/models/Not-A-Name/ready")),
        (405, http.post("/v2")),
        (400, http.post("/v2/models/spiral/infer", content=b"{")),
    ):
        assert response.status_code == status, response.text
        assert_matches(response.json(), "inference_error_response")
        assert set(response.json()) == {"error"}


def test_the_specs_request_examples_get_its_error_answer(live: Live) -> None:
    # The spec's two examples of an inference request (for a model of two inputs, one
    # of them three BOOLs given one value), sent verbatim: a 400 with the error object.
    examples = SPEC["components"]["schemas"]["inference_request"]["x-examples"]
    for example in examples.values():
        for url in ("/v2/models/spiral/infer", "/v2/models/spiral/versions/2/infer"):
            response = live.http.post(url, json=example)
            assert response.status_code == 400, response.text
            assert_matches(response.json(), "inference_error_response")
    assert live.http.post("/v2/models/mymodel/infer", json=examples["Example 1"]).status_code == 404


def test_the_binary_extensions_example(live: Live) -> None:
    # Triton's extension_binary_data.md example, with the one input these models take:
    # the JSON, then 3 rows x 2 features of little-endian FP32.
    header = json.dumps(
        {
            "model_name": "spiral",
            "inputs": [
                {"name": "input", "shape": [3, 2], "datatype": "FP32",
                 "parameters": {"binary_data_size": 24}}
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    ).encode()  # fmt: skip
    response = live.http.post(
        "/v2/models/spiral/infer",
        content=header + ROWS.astype("<f4").tobytes(),
        headers={"Content-Type": "application/octet-stream",
                 "Inference-Header-Content-Length": str(len(header))},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    (output,) = json.loads(response.content[:length])["outputs"]  # as the example shows:
    assert output == {
        "name": "probabilities",
        "shape": [3, 3],
        "datatype": "FP32",
        "parameters": {"binary_data_size": 36},
    }  # and no `data`
    probabilities = np.frombuffer(response.content[length:], "<f4").reshape(output["shape"])
    assert_allclose(probabilities, live.predict("spiral", ROWS)["probabilities"], rtol=1e-6)
    raw = live.http.post(  # a raw binary request: no JSON at all, every output as binary
        "/v2/models/spiral/infer",
        content=ROWS.astype("<f4").tobytes(),
        headers={"Inference-Header-Content-Length": "0"},
    )
    assert raw.status_code == 200, raw.text
    length = int(raw.headers["inference-header-content-length"])
    sizes = [
        o["parameters"]["binary_data_size"] for o in json.loads(raw.content[:length])["outputs"]
    ]
    assert sizes == [3 * 8, 3 * 3 * 4] and len(raw.content) == length + sum(sizes)


def _binary_request(parameters: dict, tail: bytes, **headers: str) -> tuple[bytes, dict]:
    header = json.dumps(
        {"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", **parameters}]}
    ).encode()
    return header + tail, {"Inference-Header-Content-Length": str(len(header)), **headers}


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        (b'{"inputs": [', {}, "not JSON"),
        (b"\xff\xfe", {}, "not JSON"),
        (b"{}", {}, "inputs"),
        (b'{"inputs": []}', {}, "inputs"),
        (b'{"inputs": "x"}', {}, "inputs"),
        (b'{"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32"}]}', {}, "data"),
        (b'{"inputs": [{"name": "input", "datatype": "FP32", "data": [1, 2]}]}', {}, "shape"),
        (b'{"inputs": [{"name": "x", "shape": [100000000000000000000, 0], "datatype": "FP32",'
         b' "data": []}]}', {}, "shape"),
        (b'{"inputs": [{"name": "x", "shape": [200000, 2], "datatype": "FP32", "data": []}]}',
         {}, "over the limit"),
        (b'{"inputs": [{"name": "x", "shape": [0, 2], "datatype": "FP32", "data": []}]}',
         {}, "at least one row"),
        (b'{"inputs": [{"name": "x", "shape": [3, 2], "datatype": "FP32", "data": [1, 2]}]}',
         {}, "shape"),
        (b'{"inputs": [{"name": "x", "shape": [-1, 2], "datatype": "FP32", "data": [1, 2]}]}',
         {}, "shape"),
        (b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": ["1", 2]}]}',
         {}, "numbers"),
        (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [[1, 2], [3]]}]}',
         {}, "regular"),
        (b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP8", "data": [1, 2]}]}',
         {}, "FP8"),
        (b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "INT8", "data": [1, 300]}]}',
         {}, "300 is out of range for INT8"),
        (b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP16", "data": [1, 1e6]}]}',
         {}, "out of range for FP16"),
        (b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "INT8", "data": [1, 2.5]}]}',
         {}, "integers"),
        (b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "BOOL", "data": [1, 0]}]}',
         {}, "true or false"),
        (b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2],'
         b' "parameters": {"shared_memory_region": "r"}}]}', {}, "shared memory"),
        (b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}],'
         b' "outputs": [{"name": "classes", "parameters": {"classification": 2}}]}',
         {}, "classification"),
        (b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}],'
         b' "parameters": {"binary_data_output": "yes"}}', {}, "binary_data_output"),
        (b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}],'
         b' "parameters": {"nested": {"a": 1}}}', {}, "parameters"),
        (b"{}", {"Inference-Header-Content-Length": "99"}, "Inference-Header-Content-Length"),
        (b"{}", {"Inference-Header-Content-Length": "-1"}, "Inference-Header-Content-Length"),
        (b"abc", {"Inference-Header-Content-Length": "0"}, "whole FP32 rows"),
        (*_binary_request({"parameters": {"binary_data_size": 8}}, b"\0" * 4), "ends before"),
        (*_binary_request({"parameters": {"binary_data_size": 4}}, b"\0" * 4), "8 bytes"),
        (*_binary_request({"parameters": {"binary_data_size": 8}}, b"\0" * 12), "4 bytes after"),
        (*_binary_request({"data": [1, 2], "parameters": {"binary_data_size": 8}}, b"\0" * 8),
         "both"),
    ],
)  # fmt: skip
def test_malformed_requests_are_400_with_the_error_object(
    live: Live, body: bytes, headers: dict, message: str
) -> None:
    response = live.http.post("/v2/models/spiral/infer", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"} and message in response.json()["error"]


@pytest.mark.parametrize("content_type", [None, "application/octet-stream", "application/json"])
def test_json_is_read_whatever_the_content_type(live: Live, content_type: str | None) -> None:
    body = json.dumps({"inputs": [{"name": "input", "shape": [3, 2], "datatype": "FP32",
                                   "data": ROWS.tolist()}]})  # fmt: skip
    headers = {"Content-Type": content_type} if content_type else {}
    response = live.http.post("/v2/models/spiral/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    expected = live.predict("spiral", ROWS)
    assert_allclose(
        outputs["probabilities"]["data"], np.ravel(expected["probabilities"]), rtol=1e-6
    )


def test_versions_take_an_alias(live: Live, client: triton.InferenceServerClient) -> None:
    alias = live.http.put("/v1/models/spiral/aliases/production", json={"version": 1})
    assert alias.status_code == 200, alias.text
    try:
        result = client.infer("spiral", spiral_inputs(), model_version="production")
        assert_spiral(result, live.predict("spiral", ROWS, 1), "1")
        assert client.get_model_metadata("spiral", "production")["versions"] == ["1", "2"]
    finally:
        live.http.delete("/v1/models/spiral/aliases/production")
    assert not client.is_model_ready("spiral", "production")
    with pytest.raises(InferenceServerException) as error:
        client.get_model_metadata("spiral", "production")
    assert error.value.status() == "404" and "production" in error.value.message()


def test_the_python_client(live: Live) -> None:
    with Client(live.url) as client:
        assert client.server_metadata().extensions == ["binary_tensor_data", "model_repository"]
        assert client.model_metadata("spiral", version=1).versions == ["1", "2"]
        client.unload_model("spiral")
        assert not client.model_ready("spiral").ready
        client.load_model("spiral")
        assert client.model_ready("spiral", version=2).ready
        assert any(m.state == "READY" for m in client.repository_index(ready=True))
        request = {"inputs": [{"name": "input", "shape": [3, 2], "datatype": "FP32",
                               "data": ROWS.ravel().tolist()}]}  # fmt: skip
        answer = client.infer("spiral", request, version=1)
        assert answer.model_version == "1"
        probabilities = next(o for o in answer.outputs if o.name == "probabilities")
        expected = live.predict("spiral", ROWS, 1)["probabilities"]
        assert_allclose(np.reshape(probabilities.data, (3, 3)), expected, rtol=1e-6)
        with pytest.raises(NotFound):
            client.infer("spiral", request, version=3)
