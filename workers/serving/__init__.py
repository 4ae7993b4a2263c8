"""Serving trained models: the loaded model, its batcher and the model server.

What serves (:mod:`.loaded`, :mod:`.batching`, :mod:`.server`) is apart from what
learns (:mod:`workers.training`); both use the model definitions and the model store.
A request travels server → served model → batcher → engine → loaded model.
"""

from workers.serving.batching import DynamicBatcher, Prediction
from workers.serving.loaded import LoadedModel
from workers.serving.server import (
    BatchingPolicy,
    Engine,
    LocalEngine,
    LocalFactory,
    ModelFactory,
    ModelServer,
    Served,
    ServedModel,
)

__all__ = [
    "BatchingPolicy",
    "DynamicBatcher",
    "Engine",
    "LoadedModel",
    "LocalEngine",
    "LocalFactory",
    "ModelFactory",
    "ModelServer",
    "Prediction",
    "Served",
    "ServedModel",
]
