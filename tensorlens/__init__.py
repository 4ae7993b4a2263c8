"""A typed Python client of the tensorlens API, sync and async, over httpx.

>>> from tensorlens import Client
>>> with Client("http://127.0.0.1:8000") as client:  # doctest: +SKIP
...     edges = client.canny(sample="camera", sigma=2, accept="png")

Importing it imports no web framework, torch or scikit-image: it only speaks HTTP.
"""

from tensorlens._async import AsyncClient
from tensorlens._core import Accept, ImageInput, PlotKind
from tensorlens._sync import Client
from tensorlens.errors import (
    ApiError,
    Conflict,
    ImageTooLarge,
    IncompatibleImage,
    InternalError,
    InvalidImage,
    InvalidInput,
    InvalidParameter,
    ModelUnavailable,
    NotFound,
    PayloadTooLarge,
    PoolUnavailable,
    QueueFull,
    ServiceUnavailable,
    StreamDropped,
    TensorlensError,
    TooManySteps,
    UnsupportedMediaType,
    WorkerDied,
    WorkTimeout,
)
from tensorlens.types import (
    SGD,
    Adam,
    ImageResult,
    InferRequest,
    InferResponse,
    InferTensor,
    Model,
    ModelSpec,
    Prediction,
    Problem,
    Progress,
    RegressionConfig,
    RegressionData,
    RegressionModelSpec,
    SpiralConfig,
    SpiralData,
    Training,
)

__all__ = [
    "SGD",
    "Accept",
    "Adam",
    "ApiError",
    "AsyncClient",
    "Client",
    "Conflict",
    "ImageInput",
    "ImageResult",
    "ImageTooLarge",
    "IncompatibleImage",
    "InferRequest",
    "InferResponse",
    "InferTensor",
    "InternalError",
    "InvalidImage",
    "InvalidInput",
    "InvalidParameter",
    "Model",
    "ModelSpec",
    "ModelUnavailable",
    "NotFound",
    "PayloadTooLarge",
    "PlotKind",
    "PoolUnavailable",
    "Prediction",
    "Problem",
    "Progress",
    "QueueFull",
    "RegressionConfig",
    "RegressionData",
    "RegressionModelSpec",
    "ServiceUnavailable",
    "SpiralConfig",
    "SpiralData",
    "StreamDropped",
    "TensorlensError",
    "TooManySteps",
    "Training",
    "UnsupportedMediaType",
    "WorkTimeout",
    "WorkerDied",
]
