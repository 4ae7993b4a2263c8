"""Predictions from Ray actors: one actor per loaded model, batching where the weights are."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from typing import Any

import numpy as np
import ray
import torch
from ray import exceptions as rex

from workers.errors import TensorlensError, WorkerDied, WorkTimeout
from workers.ray_backend.pool import WORKER_LOST
from workers.ray_backend.runtime import ray_device
from workers.training.checkpoints import ModelStore
from workers.training.inference import DynamicBatcher, LoadedModel, Prediction
from workers.training.serving import ModelServer


class ModelActor:
    """Holds one model's weights on its device and batches the predictions sent to it.

    The actor is handed the weights (verified by the API node), never a path, so no
    node but the API's needs the model store. It runs one batch at a time: requests reach
    it one call at a time, and overlapping batches (``TENSORLENS_BATCH_INSTANCES``, which
    overlap the API process's HTTP work with a pass) would only split them here. Its
    batcher never waits: the calls come from API processes that gathered their clients'
    requests (and waited for them, ``TENSORLENS_MAX_QUEUE_DELAY_MS``) themselves, and the
    rows it would wait for are held back there by the calls in flight.
    """

    def __init__(
        self,
        metadata: dict[str, Any],
        tensors: dict[str, torch.Tensor],
        *,
        batching: bool,
        max_batch_size: int,
    ) -> None:
        self.model = LoadedModel.from_tensors(metadata, tensors, ray_device())
        self.batcher = (
            DynamicBatcher(self.model.forward, max_batch_size=max_batch_size, max_queue_delay_ms=0)
            if batching
            else None
        )

    async def predict(self, rows: np.ndarray) -> Prediction:
        if self.batcher is None:
            return await asyncio.to_thread(self.model.forward, rows)
        return await self.batcher.submit(rows)

    def device(self) -> str:
        return self.model.device

    def batch_stats(self) -> dict[str, int] | None:
        if self.batcher is None:
            return None
        return {"requests": self.batcher.requests, "forward_calls": self.batcher.forward_calls}


class RayModelServer(ModelServer):
    """A :class:`ModelServer` whose forward passes run in Ray actors.

    The API node keeps its own CPU copy of each model for what needs no forward pass
    of the served weights' device: metadata, input validation and plots. Actors are
    kept for up to ``cache_size`` models, least recently used first out; an evicted
    actor is killed, which frees its memory on its device (GPU memory too).

    Parameters
    ----------
    actor_cpus, actor_gpus : float
        What each model actor asks Ray for; fractions of a GPU let models share one.
    timeout_s : float
        Longest a prediction waits for its actor (504 past it).
    """

    def __init__(
        self,
        store: ModelStore,
        *,
        cache_size: int,
        batching: bool,
        max_batch_size: int,
        max_queue_delay_ms: float,
        actor_cpus: float,
        actor_gpus: float,
        timeout_s: float,
    ) -> None:
        super().__init__(
            store,
            device="cpu",
            cache_size=cache_size,
            batching=batching,
            max_batch_size=max_batch_size,
            max_queue_delay_ms=max_queue_delay_ms,
        )
        self.actor_cpus = actor_cpus
        self.actor_gpus = actor_gpus
        self.timeout_s = timeout_s
        self._actor_class = ray.remote(ModelActor)
        self._actors: OrderedDict[str, _ActorEntry] = OrderedDict()
        self._draining: dict[str, _ActorEntry] = {}

    async def predict(self, model_id: str, inputs: Any) -> tuple[LoadedModel, Prediction]:
        # The API's copy is held (not released by an eviction) while the actor is made from it.
        model = await asyncio.to_thread(self.cache.checkout, model_id, lambda: self._load(model_id))
        try:
            rows = model.validate_inputs(inputs)
            entry = self._checkout_actor(model_id, model)
        finally:
            model.checkin()
        try:
            if entry.calls is None:
                prediction = await self._call(model_id, entry, rows)
            else:
                prediction = await entry.calls.submit(rows)
        finally:
            entry.checkin(self, model_id)
        return model, prediction

    async def _call(self, model_id: str, entry: _ActorEntry, rows: np.ndarray) -> Prediction:
        try:
            return await asyncio.wait_for(entry.actor.predict.remote(rows), self.timeout_s)
        except TimeoutError:
            raise WorkTimeout(
                f"the model did not answer within {self.timeout_s:g} s", timeout_s=self.timeout_s
            ) from None
        except TensorlensError:
            raise  # the actor's own answer, e.g. a batcher closed by an unload
        except WORKER_LOST as exc:
            self._forget(model_id, entry)
            raise WorkerDied(
                f"the Ray actor serving the model died ({type(exc).__name__}); a new one "
                "starts with the next request"
            ) from None
        except rex.RayError as exc:
            raise WorkerDied(f"Ray failed the prediction ({type(exc).__name__}); retry") from None

    def actor_for(self, model_id: str) -> Any:
        """The actor serving ``model_id``, or None when the model is not loaded on the cluster."""
        entry = self._actors.get(model_id)
        return None if entry is None else entry.actor

    async def batch_stats(self, model_id: str) -> dict[str, int] | None:
        # The requests this process sent; the forward passes the actor ran for them (and
        # for any other API process).
        entry = self._actors.get(model_id)
        if entry is None:
            return None
        stats = await entry.actor.batch_stats.remote()
        if stats is not None and entry.calls is not None:
            stats["requests"] = entry.calls.requests
        return stats

    async def unload(self, model_id: str) -> None:
        self._evict(model_id)
        await super().unload(model_id)

    async def close(self) -> None:
        for model_id in list(self._actors):
            self._evict(model_id)
        await super().close()

    def _checkout_actor(self, model_id: str, model: LoadedModel) -> _ActorEntry:
        entry = self._actors.get(model_id)
        if entry is None and model_id in self._draining:
            # Evicted but still answering requests: take it back rather than start another.
            entry = self._actors[model_id] = self._draining.pop(model_id)
            entry.evicted = False
        if entry is None:
            while len(self._actors) >= self.cache.capacity:
                self._evict(next(iter(self._actors)))
            actor = self._actor_class.options(
                num_cpus=self.actor_cpus, num_gpus=self.actor_gpus, max_restarts=0
            ).remote(
                model.metadata,
                {name: t.detach().cpu() for name, t in model.module.state_dict().items()},
                batching=self.batching,
                max_batch_size=self.max_batch_size,
            )
            entry = self._actors[model_id] = _ActorEntry(actor)
            if self.batching:
                # This process's concurrent requests reach the actor together, one call per
                # batch (at most two in flight, so the actor has the next one at hand),
                # gathered as the local batcher gathers them; the actor batches the calls of
                # every API process into its forward passes.
                entry.calls = DynamicBatcher(
                    model.forward,  # what the actor computes; the runner sends it there
                    max_batch_size=self.max_batch_size,
                    max_queue_delay_ms=self.max_queue_delay_ms,
                    runner=lambda _, rows: self._call(model_id, entry, rows),
                    max_concurrent_batches=2,
                )
        self._actors.move_to_end(model_id)
        entry.users += 1
        return entry

    def _forget(self, model_id: str, entry: _ActorEntry) -> None:
        # A dead actor is never handed out again, whoever still holds it.
        entry.dead = True
        if self._actors.get(model_id) is entry:
            del self._actors[model_id]
        if self._draining.get(model_id) is entry:
            del self._draining[model_id]

    def _evict(self, model_id: str) -> None:
        entry = self._actors.pop(model_id, None)
        if entry is not None:
            entry.evicted = True
            if entry.users:
                self._draining[model_id] = entry
            entry.kill_if_idle()


class _ActorEntry:
    """An actor and the requests using it: an evicted actor is killed when the last ends."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self.calls: DynamicBatcher | None = None
        self.users = 0
        self.evicted = False
        self.dead = False

    def checkin(self, server: RayModelServer, model_id: str) -> None:
        self.users -= 1
        if self.evicted and self.users == 0 and server._draining.get(model_id) is self:
            del server._draining[model_id]
        self.kill_if_idle()

    def kill_if_idle(self) -> None:
        if self.evicted and self.users == 0 and not self.dead:
            with contextlib.suppress(Exception):  # best effort: it may be gone already
                ray.kill(self.actor)
