"""Predictions from stored models: a cache of loaded models and a batcher per model."""

from __future__ import annotations

import asyncio
from typing import Any

import torch

from workers.errors import InvalidParameter
from workers.training.checkpoints import ModelStore
from workers.training.inference import DynamicBatcher, LoadedModel, ModelCache, Prediction


class ModelServer:
    """Loads models from the store on first use and serves their predictions.

    With ``batching`` on, concurrent requests to one model share forward passes
    (bounded by ``max_batch_size`` rows and ``max_queue_delay_ms``); with it off,
    each request runs its own forward pass in a thread. ``batch_instances`` is how many
    of one model's batches may run at once, each in its own thread (Triton's model
    instances): with 1, once every waiting request is in the running batch, the event loop
    idles during its pass and the pass waits while the loop answers and parses; a second
    instance overlaps the two, at the price of smaller batches. ``cpu_threads``, when
    given, sets torch's intra-op threads for the whole process
    (:func:`torch.set_num_threads`); fewer than the CPU count leaves a core to the event
    loop that parses requests.
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
        cpu_threads: int | None = None,
        batch_instances: int = 1,
    ) -> None:
        if batch_instances < 1:
            raise InvalidParameter("batch_instances", "must be >= 1")
        if cpu_threads is not None:
            if cpu_threads < 1:
                raise InvalidParameter("cpu_threads", "must be >= 1")
            torch.set_num_threads(cpu_threads)
        self.store = store
        self.device = device
        self.cache = ModelCache(cache_size)
        self.batching = batching
        self.max_batch_size = max_batch_size
        self.max_queue_delay_ms = max_queue_delay_ms
        self.batch_instances = batch_instances
        self._batchers: dict[str, tuple[LoadedModel, DynamicBatcher]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    async def model(self, model_id: str) -> LoadedModel:
        """The loaded model; raises NotFound, or ModelUnavailable when its files are damaged.

        A cached model was verified when it was loaded, so a hit reads no files and is
        served without leaving the event loop; only a miss loads in a thread.
        """
        model = self.cache.get(model_id)
        if model is not None:
            return model
        return await asyncio.to_thread(
            self.cache.get_or_load, model_id, lambda: self._load(model_id)
        )

    def _load(self, model_id: str) -> LoadedModel:
        # from_store verifies the checksum (ModelUnavailable when the files are damaged).
        return LoadedModel.from_store(self.store, model_id, self.device)

    async def predict(self, model_id: str, inputs: Any) -> tuple[LoadedModel, Prediction]:
        # The model is held from the cache lookup to the end of its forward pass, so an
        # eviction meanwhile frees it only afterwards.
        model = self.cache.get(model_id, hold=True)
        if model is None:
            model = await asyncio.to_thread(
                self.cache.checkout, model_id, lambda: self._load(model_id)
            )
        try:
            if not self.batching:
                rows = model.validate_inputs(inputs)
                return model, await asyncio.to_thread(model.forward, rows)
            return model, await self._batcher(model_id, model).submit(inputs)
        finally:
            model.checkin()

    async def batch_stats(self, model_id: str) -> dict[str, int] | None:
        """Requests and forward passes of the model's batcher so far; None when it has none."""
        entry = self._batchers.get(model_id)
        if entry is None:
            return None
        return {"requests": entry[1].requests, "forward_calls": entry[1].forward_calls}

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
            max_concurrent_batches=self.batch_instances,
        )
        self._batchers[model_id] = (model, batcher)
        return batcher

    def _close_later(self, batcher: DynamicBatcher) -> None:
        task = asyncio.get_running_loop().create_task(batcher.aclose(drain=True))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
