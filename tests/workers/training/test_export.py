"""Model export: the ONNX file computes the service's predictions; the Triton repository
is what Triton reads (its config parsed with Triton's own message type)."""

import io
import zipfile

import numpy as np
import onnx
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from tritonclient.grpc import model_config_pb2

from tests._exports import parse_config, run_onnx
from workers.serving import LoadedModel
from workers.training import build_model, io_features, validate_training
from workers.training.export import ONNX_OPSET, export_model, to_onnx, triton_config

CONFIGS = {
    "spiral-linear": {"task": "spiral", "model": {"hidden": [8], "activation": "identity"}},
    "spiral-one-layer": {"task": "spiral", "model": {"hidden": [], "activation": "relu"}},
    **{
        f"spiral-{activation}": {
            "task": "spiral",
            "data": {"classes": 4},
            "model": {"hidden": [8, 6], "activation": activation},
        }
        for activation in ("relu", "tanh", "sigmoid")
    },
    "regression": {"task": "regression", "model": {"hidden": [8], "activation": "relu"}},
    "regression-ensemble": {
        "task": "regression",
        "model": {"hidden": [8, 4], "activation": "tanh", "ensemble_size": 3},
    },
}


def loaded(name: str, seed: int = 0) -> LoadedModel:
    """A freshly initialised model as the service serves it."""
    config = validate_training(CONFIGS[name])
    torch.manual_seed(seed)
    module = build_model(config.model, *io_features(config))
    tensors = {key: value.clone() for key, value in module.state_dict().items()}
    return LoadedModel.from_tensors({"config": config.model_dump()}, tensors)


def rows(model: LoadedModel, count: int) -> np.ndarray:
    generator = np.random.default_rng(count)
    return generator.uniform(-2, 2, size=(count, model.in_features)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("count", [1, 7, 300])  # the batch axis is dynamic
def test_the_onnx_file_predicts_what_the_service_does(name: str, count: int) -> None:
    model = loaded(name)
    inputs = rows(model, count)
    expected = model.forward(inputs)
    got = run_onnx(to_onnx(model.module, model.config), inputs)
    assert sorted(got) == sorted(expected)
    for output, values in expected.items():
        assert got[output].dtype == values.dtype, output
        assert got[output].shape == values.shape, output
        if values.dtype.kind == "i":
            assert_array_equal(got[output], values, err_msg=output)
        else:
            assert_allclose(got[output], values, rtol=1e-5, atol=1e-5, err_msg=output)


def test_the_file_states_its_opset_names_and_metadata() -> None:
    model = loaded("regression-ensemble")
    proto = onnx.load_from_string(
        to_onnx(model.module, model.config, metadata={"tensorlens.model_name": "cubic"})
    )
    onnx.checker.check_model(proto, full_check=True)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", ONNX_OPSET)]
    assert {p.key: p.value for p in proto.metadata_props} == {"tensorlens.model_name": "cubic"}
    (graph_input,) = proto.graph.input
    assert graph_input.name == "input"
    assert [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim] == [
        "batch",
        1,
    ]
    assert [o.name for o in proto.graph.output] == ["mean", "std"]


def test_the_same_weights_give_the_same_bytes() -> None:
    first, second = loaded("spiral-tanh", seed=3), loaded("spiral-tanh", seed=3)
    assert to_onnx(first.module, first.config) == to_onnx(second.module, second.config)
    other = loaded("spiral-tanh", seed=4)
    assert to_onnx(first.module, first.config) != to_onnx(other.module, other.config)


def test_the_triton_config_declares_every_tensor_and_dynamic_batching() -> None:
    model = loaded("spiral-relu")
    config = parse_config(triton_config("arms", model.module, model.config, max_batch_size=64))
    assert (config.name, config.platform, config.max_batch_size) == (
        "arms",
        "onnxruntime_onnx",
        64,
    )
    assert config.HasField("dynamic_batching")
    (tensor,) = config.input
    assert (tensor.name, tensor.data_type, list(tensor.dims)) == (
        "input",
        model_config_pb2.TYPE_FP32,
        [2],
    )
    outputs = {o.name: (o.data_type, list(o.dims), o.HasField("reshape")) for o in config.output}
    assert outputs == {
        # (batch,) is served as [batch, 1] reshaped to the model's [batch].
        "classes": (model_config_pb2.TYPE_INT64, [1], True),
        "probabilities": (model_config_pb2.TYPE_FP32, [4], False),
    }
    ensemble = loaded("regression-ensemble")
    config = parse_config(triton_config("c", ensemble.module, ensemble.config, max_batch_size=8))
    assert [(o.name, list(o.reshape.shape)) for o in config.output] == [("mean", []), ("std", [])]


def test_the_triton_repository_holds_the_config_and_the_onnx_file() -> None:
    model = loaded("regression-ensemble")
    exported = export_model(
        model.module, model.config, "triton", name="cubic", version=3, max_batch_size=100
    )
    assert (exported.media_type, exported.filename) == ("application/zip", "cubic.zip")
    with zipfile.ZipFile(io.BytesIO(exported.content)) as archive:
        assert archive.testzip() is None
        assert sorted(archive.namelist()) == ["cubic/3/model.onnx", "cubic/config.pbtxt"]
        config = parse_config(archive.read("cubic/config.pbtxt").decode())
        onnx_file = archive.read("cubic/3/model.onnx")
    assert (config.name, config.max_batch_size) == ("cubic", 100)
    assert onnx_file == to_onnx(model.module, model.config)
    inputs = rows(model, 5)
    assert_allclose(run_onnx(onnx_file, inputs)["std"], model.forward(inputs)["std"], rtol=1e-5)
