"""What the model export tests share (tests/workers/training/test_export.py and
tests/service/test_exports.py): running an ONNX file, reading a Triton config."""

from __future__ import annotations

import numpy as np
import onnxruntime
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2


def run_onnx(model: bytes, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of the ONNX ``model`` for ``inputs``, by name, through onnxruntime."""
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, {"input": inputs}), strict=True))


def parse_config(text: str) -> model_config_pb2.ModelConfig:
    """A ``config.pbtxt`` read as Triton reads it: text format of its ``ModelConfig``."""
    return text_format.Parse(text, model_config_pb2.ModelConfig())
