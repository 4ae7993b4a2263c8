"""Trained models in standard formats: an ONNX file, or a Triton model repository.

The exported graph computes what the service answers, not only the network: a spiral
classifier gives ``classes`` (int64, ``(batch,)``) and ``probabilities`` (float32,
``(batch, classes)``, the softmax); a regressor gives ``mean`` (float32, ``(batch,)``)
and, for an ensemble, ``std`` (the members' sample std). The input is ``input``,
float32 ``(batch, in_features)`` with a dynamic batch axis: the tensor names of the
service's Open Inference Protocol metadata, so a client of ``/v2`` can talk to Triton
serving the export unchanged.

The exporter is torch's TorchScript-based one (``torch.onnx.export(dynamo=False)``):
it needs only the ``onnx`` package, exports these networks in milliseconds and gives
the same bytes for the same weights. The ``torch.export``-based default needs
``onnxscript``, takes seconds and logs on every call, for graphs that are a few
``Gemm`` and activations either way.
"""

from __future__ import annotations

import copy
import io
import threading
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import onnx
import torch
from torch import nn

from workers.training.configs import RegressionConfig, SpiralConfig
from workers.training.models import Ensemble, io_features

__all__ = [
    "ONNX_OPSET",
    "Export",
    "ExportFormat",
    "export_model",
    "to_onnx",
    "triton_config",
    "triton_repository",
]

#: The ONNX operator set of every export: onnxruntime 1.14+ and Triton 23.02+ run it.
ONNX_OPSET = 17
ExportFormat = Literal["onnx", "triton"]
INPUT_NAME = "input"

# torch.onnx's exporter keeps its state in module globals, and warnings.catch_warnings
# swaps the process's filters: one export at a time, or two would restore each other's.
_EXPORT_LOCK = threading.Lock()
# Zip entries get a fixed time, so an export's bytes depend on the model alone.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class _Tensor:
    name: str
    onnx_type: int
    #: Triton's name for the element type.
    triton_type: str
    #: The shape after the batch axis.
    dims: tuple[int, ...]


@dataclass(frozen=True)
class Export:
    """An exported model: its bytes, media type and a file name for them."""

    content: bytes
    media_type: str
    filename: str


class _Classifier(nn.Module):
    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities = torch.softmax(self.network(x), dim=1)
        return probabilities.argmax(dim=1), probabilities


class _Regressor(nn.Module):
    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x).squeeze(-1)


class _EnsembleRegressor(nn.Module):
    def __init__(self, network: Ensemble) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        members = self.network(x).squeeze(-1)
        return members.mean(dim=0), members.std(dim=0)


def _signature(
    module: nn.Module, config: SpiralConfig | RegressionConfig
) -> tuple[nn.Module, _Tensor, list[_Tensor]]:
    """The module the export traces, its input and its outputs."""
    in_features, out_features = io_features(config)
    float32 = (onnx.TensorProto.FLOAT, "TYPE_FP32")
    inputs = _Tensor(INPUT_NAME, *float32, (in_features,))
    if isinstance(config, SpiralConfig):
        outputs = [
            _Tensor("classes", onnx.TensorProto.INT64, "TYPE_INT64", ()),
            _Tensor("probabilities", *float32, (out_features,)),
        ]
        return _Classifier(module), inputs, outputs
    if isinstance(module, Ensemble):
        outputs = [_Tensor("mean", *float32, ()), _Tensor("std", *float32, ())]
        return _EnsembleRegressor(module), inputs, outputs
    return _Regressor(module), inputs, [_Tensor("mean", *float32, ())]


def to_onnx(
    module: nn.Module,
    config: SpiralConfig | RegressionConfig,
    *,
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """The model as an ONNX file (opset :data:`ONNX_OPSET`, dynamic batch axis).

    Parameters
    ----------
    module : torch.nn.Module
        The trained network (or :class:`~workers.training.models.Ensemble`) that
        ``config`` describes, in eval mode, on any device; exported from a CPU copy.
    config : SpiralConfig or RegressionConfig
        Its training configuration: the task decides the outputs.
    metadata : mapping of str to str, optional
        Written into the file's ``metadata_props`` (e.g. the model's name).

    Returns
    -------
    bytes
        A serialised ``onnx.ModelProto``; the same weights give the same bytes.
    """
    # A copy: the caller's module keeps its device (a served model's may be a GPU).
    traced, inputs, outputs = _signature(copy.deepcopy(module).to("cpu"), config)
    example = torch.zeros(2, *inputs.dims)
    batch = {0: "batch"}
    buffer = io.BytesIO()
    with _EXPORT_LOCK, warnings.catch_warnings():
        # The TorchScript exporter and its helpers warn that they are deprecated on every
        # call: it is the exporter chosen here (module docstring), nothing a caller acts on.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            traced,
            (example,),
            buffer,
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=[inputs.name],
            output_names=[output.name for output in outputs],
            dynamic_axes={tensor.name: batch for tensor in (inputs, *outputs)},
        )
    model = onnx.load_from_string(buffer.getvalue())
    for key, value in sorted((metadata or {}).items()):
        model.metadata_props.add(key=key, value=value)
    return model.SerializeToString()


def triton_config(
    name: str,
    module: nn.Module,
    config: SpiralConfig | RegressionConfig,
    *,
    max_batch_size: int,
) -> str:
    """Triton's ``config.pbtxt`` for :func:`to_onnx`'s file of this model.

    ``max_batch_size`` is the most rows one request (and one dynamically gathered batch)
    may hold. Outputs without a dimension past the batch (``classes``, ``mean``,
    ``std``) are declared ``dims: [ 1 ]`` with ``reshape: { shape: [ ] }``, Triton's
    way of serving a ``(batch,)`` tensor.
    """
    _, inputs, outputs = _signature(module, config)
    lines = [
        f'name: "{name}"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {max_batch_size}",
        "input [",
        _triton_tensor(inputs),
        "]",
        "output [",
        ",\n".join(_triton_tensor(output) for output in outputs),
        "]",
        # Batches whatever waits when an instance frees up: no added latency at low load.
        "dynamic_batching {",
        "  max_queue_delay_microseconds: 0",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _triton_tensor(tensor: _Tensor) -> str:
    fields = [
        f'    name: "{tensor.name}"',
        f"    data_type: {tensor.triton_type}",
        f"    dims: [ {', '.join(map(str, tensor.dims or (1,)))} ]",
    ]
    if not tensor.dims:
        fields.append("    reshape: { shape: [ ] }")
    return "  {\n" + "\n".join(fields) + "\n  }"


def triton_repository(name: str, version: int, onnx_model: bytes, config_pbtxt: str) -> bytes:
    """A zip of a Triton model repository holding one model version: ``<name>/config.pbtxt``
    and ``<name>/<version>/model.onnx``; unzipped, it is a ``--model-repository`` as it is.

    The version directory is the model's own version number, so Triton's
    ``model_version`` names the same version as the service's."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, data in (
            (f"{name}/config.pbtxt", config_pbtxt.encode()),
            (f"{name}/{version}/model.onnx", onnx_model),
        ):
            entry = zipfile.ZipInfo(path, date_time=_ZIP_EPOCH)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            archive.writestr(entry, data)
    return buffer.getvalue()


def export_model(
    module: nn.Module,
    config: SpiralConfig | RegressionConfig,
    export_format: ExportFormat,
    *,
    name: str,
    version: int,
    max_batch_size: int,
    metadata: Mapping[str, str] | None = None,
) -> Export:
    """Version ``version`` of the model ``name`` in ``export_format``: ``onnx``
    (:func:`to_onnx`) or ``triton`` (:func:`triton_repository`, ``max_batch_size`` as for
    :func:`triton_config`). Blocking, for as long as the weights take to serialise: run it
    in a thread."""
    onnx_model = to_onnx(module, config, metadata=metadata)
    if export_format == "onnx":
        return Export(onnx_model, "application/octet-stream", f"{name}.onnx")
    pbtxt = triton_config(name, module, config, max_batch_size=max_batch_size)
    repository = triton_repository(name, version, onnx_model, pbtxt)
    return Export(repository, "application/zip", f"{name}.zip")
