"""Predictions from stored models: a cache of loaded models and a batcher per model."""

from __future__ import annotations

import asyncio
from typing import Any

from workers.training.checkpoints import ModelStore
from workers.training.inference import DynamicBatcher, LoadedModel, ModelCache, Prediction


class ModelServer:
    """Loads models from the store on first use and serves their predictions.

    With ``batching`` on, concurrent requests to one model share forward passes
    (bounded by ``max_batch_size`` rows and ``max_queue_delay_ms``); with it off,
    each request runs its own forward pass in a thread.
    """

    def __init__(
        self,
        store: ModelStore,
        *,
        device: str,
        cache_size: int,
        batching: bool,
        max_batch_size: int,
        max_queue_delay_ms: float,
    ) -> None:
        self.store = store
        self.device = device
        self.cache = ModelCache(cache_size)
        self.batching = batching
        self.max_batch_size = max_batch_size
        self.max_queue_delay_ms = max_queue_delay_ms
        self._batchers: dict[str, tuple[LoadedModel, DynamicBatcher]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    async def model(self, model_id: str) -> LoadedModel:
        """The loaded model; raises NotFound, or ModelUnavailable when its files are damaged.

        A cached model was verified when it was loaded, so a hit reads no files.
        """
        return await asyncio.to_thread(
            self.cache.get_or_load, model_id, lambda: self._load(model_id)
        )

    def _load(self, model_id: str) -> LoadedModel:
        # from_store verifies the checksum (ModelUnavailable when the files are damaged).
        return LoadedModel.from_store(self.store, model_id, self.device)

    async def predict(self, model_id: str, inputs: Any) -> tuple[LoadedModel, Prediction]:
        # The model is held from the cache lookup to the end of its forward pass, so an
        # eviction meanwhile frees it only afterwards.
        model = await asyncio.to_thread(self.cache.checkout, model_id, lambda: self._load(model_id))
        try:
            if not self.batching:
                rows = model.validate_inputs(inputs)
                return model, await asyncio.to_thread(model.forward, rows)
            return model, await self._batcher(model_id, model).submit(inputs)
        finally:
            model.checkin()

    async def unload(self, model_id: str) -> None:
        entry = self._batchers.pop(model_id, None)
        if entry is not None:
            await entry[1].aclose()
        self.cache.evict(model_id)

    async def close(self) -> None:
        for _, batcher in self._batchers.values():
            await batcher.aclose()
        self._batchers.clear()
        if self._closing:
            await asyncio.wait(list(self._closing))
        self.cache.clear()

    def _batcher(self, model_id: str, model: LoadedModel) -> DynamicBatcher:
        entry = self._batchers.get(model_id)
        if entry is not None and entry[0] is model:
            return entry[1]
        # A new or reloaded model: batchers of models no longer loaded go with them.
        stale = [k for k, (m, _) in self._batchers.items() if k == model_id or k not in self.cache]
        for key in stale:
            self._close_later(self._batchers.pop(key)[1])
        batcher = DynamicBatcher(
            model.forward,
            max_batch_size=self.max_batch_size,
            max_queue_delay_ms=self.max_queue_delay_ms,
            prepare=model.validate_inputs,
        )
        self._batchers[model_id] = (model, batcher)
        return batcher

    def _close_later(self, batcher: DynamicBatcher) -> None:
        task = asyncio.get_running_loop().create_task(batcher.aclose(drain=True))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
