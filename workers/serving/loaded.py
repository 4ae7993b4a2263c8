"""A trained model rebuilt for serving: from stored tensors to predictions.

A model is rebuilt from the configuration in its metadata and the tensors the store
verified; nothing is unpickled.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from workers.errors import InvalidParameter, ModelUnavailable, TensorlensError
from workers.serving.batching import Prediction
from workers.training.checkpoints import ModelRef, ModelStore
from workers.training.configs import RegressionConfig, SpiralConfig, validate_training
from workers.training.models import Ensemble, build_model, io_features

__all__ = ["LoadedModel"]

_FLOAT32_MAX = float(np.finfo(np.float32).max)


class LoadedModel:
    """A trained model in eval mode on ``device``, ready to predict.

    Use :meth:`from_tensors` or :meth:`from_store` rather than the constructor.
    """

    def __init__(
        self,
        module: nn.Module,
        config: SpiralConfig | RegressionConfig,
        metadata: dict[str, Any],
        device: str,
    ) -> None:
        self._module: nn.Module | None = module.to(device).eval()
        self.config = config
        self.metadata = metadata
        self.device = device
        self.in_features, self.out_features = io_features(config)
        self.is_ensemble = isinstance(module, Ensemble)

    @classmethod
    def from_tensors(
        cls, metadata: dict[str, Any], tensors: dict[str, torch.Tensor], device: str = "cpu"
    ) -> LoadedModel:
        """Rebuild the module that ``metadata["config"]`` describes and load ``tensors`` into it.

        Raises
        ------
        ModelUnavailable
            When the configuration is unusable or the tensors do not fit the architecture.
        """
        try:
            config = validate_training(metadata["config"])
        except (KeyError, TypeError, TensorlensError) as exc:
            raise ModelUnavailable(f"model metadata has no usable config: {exc}") from None
        in_features, out_features = io_features(config)
        module = build_model(config.model, in_features, out_features, initialize=False)
        try:
            module.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise ModelUnavailable(f"weights do not fit the architecture: {exc}") from None
        return cls(module, config, metadata, device)

    @classmethod
    def from_store(
        cls, store: ModelStore, target: ModelRef | str, device: str = "cpu"
    ) -> LoadedModel:
        """Load a stored version after its checksum passes (see :meth:`ModelStore.load_tensors`).

        A bare name loads the version the store's policy serves (:meth:`ModelStore.resolve`).
        """
        ref = target if isinstance(target, ModelRef) else store.resolve(target)
        tensors = store.load_tensors(ref)
        return cls.from_tensors(store.get(ref).metadata, tensors, device)

    @property
    def module(self) -> nn.Module:
        """The network, on ``device``; refused once released."""
        if self._module is None:
            raise ModelUnavailable("the model was unloaded; retry the request")
        return self._module

    @property
    def task(self) -> str:
        return self.config.task

    def validate_inputs(self, inputs: Any) -> np.ndarray:
        """``inputs`` as a ``(rows, in_features)`` float32 array, or raise.

        One-feature models also take a flat list of values.

        Raises
        ------
        InvalidParameter
            For ``inputs`` that are not numeric, empty, of the wrong width or not finite.
        """
        try:
            array = np.asarray(inputs, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidParameter("inputs", "must be a numeric array") from None
        if array.ndim == 1 and self.in_features == 1:
            array = array.reshape(-1, 1)
        if array.ndim != 2 or array.shape[1] != self.in_features:
            raise InvalidParameter(
                "inputs", f"must have shape (rows, {self.in_features}), got {array.shape}"
            )
        if array.shape[0] == 0:
            raise InvalidParameter("inputs", "must have at least one row")
        if not np.isfinite(array).all():
            raise InvalidParameter("inputs", "must be finite")
        if np.abs(array).max() > _FLOAT32_MAX:
            raise InvalidParameter("inputs", "must fit in float32")
        return array.astype(np.float32)

    def forward(self, inputs: np.ndarray) -> Prediction:
        """Predict for inputs already through :meth:`validate_inputs`.

        Returns
        -------
        dict of numpy.ndarray
            A classifier gives ``classes`` ``(rows,)`` and ``probabilities``
            ``(rows, classes)``; a regressor ``mean`` ``(rows,)``, and ``std`` ``(rows,)``
            (sample std over members) when it is an ensemble.
        """
        module = self._module
        if module is None:
            raise ModelUnavailable("the model was unloaded; retry the request")
        with torch.inference_mode():
            output = module(torch.from_numpy(inputs).to(self.device))
            if isinstance(self.config, SpiralConfig):
                probabilities = torch.softmax(output, dim=1)
                return {
                    "classes": probabilities.argmax(dim=1).cpu().numpy(),
                    "probabilities": probabilities.cpu().numpy(),
                }
            if self.is_ensemble:
                members = output.squeeze(-1)
                return {
                    "mean": members.mean(dim=0).cpu().numpy(),
                    "std": members.std(dim=0).cpu().numpy(),
                }
            return {"mean": output.squeeze(-1).cpu().numpy()}

    def predict(self, inputs: Any) -> Prediction:
        """Validate ``inputs`` and predict; see :meth:`validate_inputs` and :meth:`forward`."""
        return self.forward(self.validate_inputs(inputs))

    def release(self) -> None:
        """Drop the module (CUDA memory back to the driver); later predictions fail.

        A forward pass already running keeps the module until it ends. The model's
        :class:`~workers.serving.server.ServedModel` calls this once no request uses it.
        """
        module, self._module = self._module, None
        del module
        if torch.device(self.device).type == "cuda":
            torch.cuda.empty_cache()
