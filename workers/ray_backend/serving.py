"""Predictions from Ray actors: one actor per loaded model version, batching where the weights are.

The Ray backend's part of model serving is a :class:`~workers.serving.ModelFactory`:
:class:`ActorFactory` loads a model by starting a :class:`ModelActor` with its weights,
and :class:`ActorEngine` sends the model's forward passes there. The cache, the batching
in this process and the model's lifetime are :class:`~workers.serving.ModelServer`'s,
as on the local backend.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import ray
import torch

from workers.errors import WorkerDied, WorkTimeout
from workers.ray_backend._errors import map_ray_errors
from workers.ray_backend.runtime import ray_device
from workers.serving import BatchingPolicy, DynamicBatcher, LoadedModel, ModelServer, Prediction
from workers.training.checkpoints import ModelRef, ModelStore

__all__ = ["ActorEngine", "ActorFactory", "ModelActor", "RayModelServer", "actor_for"]

#: Batches of one model in flight to its actor from one API process: the actor has the
#: next one at hand when a pass ends.
CALLS_IN_FLIGHT = 2


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

    def forward_calls(self) -> int:
        return 0 if self.batcher is None else self.batcher.forward_calls


class ActorEngine:
    """A model's forward passes, run by its :class:`ModelActor`.

    With batching on, this process's concurrent requests reach the actor together, one
    call per batch (at most :data:`CALLS_IN_FLIGHT`), gathered as the local batcher
    gathers them; the actor batches the calls of every API process into its passes.
    """

    concurrency = CALLS_IN_FLIGHT

    def __init__(self, actor: Any, timeout_s: float, lost: Callable[[], None]) -> None:
        self.actor = actor
        self.timeout_s = timeout_s
        self._lost = lost

    async def run(
        self, forward: Callable[[np.ndarray], Prediction], rows: np.ndarray
    ) -> Prediction:
        # ``forward`` is what the actor computes, there.
        try:
            with map_ray_errors("the prediction", then="; retry the request"):
                return await asyncio.wait_for(self.actor.predict.remote(rows), self.timeout_s)
        except TimeoutError:
            raise WorkTimeout(
                f"the model did not answer within {self.timeout_s:g} s", timeout_s=self.timeout_s
            ) from None
        except WorkerDied:
            self._lost()  # the next request starts a new actor
            raise

    async def forward_calls(self, batcher: DynamicBatcher) -> int:
        with map_ray_errors("the model's statistics"):
            return int(await self.actor.forward_calls.remote())

    def close(self) -> None:
        with contextlib.suppress(Exception):  # best effort: it may be gone already
            ray.kill(self.actor)


class ActorFactory:
    """Loads a model by starting an actor with its weights (read and verified here).

    The API node keeps its own CPU copy of each model for what needs no forward pass
    of the served weights' device: metadata, input validation and plots.

    Parameters
    ----------
    actor_cpus, actor_gpus : float
        What each model actor asks Ray for; fractions of a GPU let models share one.
    timeout_s : float
        Longest a prediction waits for its actor (504 past it).
    """

    def __init__(self, *, actor_cpus: float, actor_gpus: float, timeout_s: float) -> None:
        self.actor_cpus = actor_cpus
        self.actor_gpus = actor_gpus
        self.timeout_s = timeout_s
        self._actor_class = ray.remote(ModelActor)

    def load(
        self, store: ModelStore, ref: ModelRef, batching: BatchingPolicy, lost: Callable[[], None]
    ) -> tuple[LoadedModel, ActorEngine]:
        model = LoadedModel.from_store(store, ref, "cpu")
        with map_ray_errors("the model actor's start"):
            actor = self._actor_class.options(
                num_cpus=self.actor_cpus, num_gpus=self.actor_gpus, max_restarts=0
            ).remote(
                model.metadata,
                {name: t.detach().cpu() for name, t in model.module.state_dict().items()},
                batching=batching.enabled,
                max_batch_size=batching.max_batch_size,
            )
        return model, ActorEngine(actor, self.timeout_s, lost)


# Named as the class it replaced, for its callers: a function, since Ray is a factory.
def RayModelServer(
    store: ModelStore,
    *,
    cache_size: int,
    batching: bool,
    max_batch_size: int,
    max_queue_delay_ms: float,
    actor_cpus: float,
    actor_gpus: float,
    timeout_s: float,
) -> ModelServer:
    """A :class:`~workers.serving.ModelServer` whose forward passes run in Ray actors.

    Actors are kept for up to ``cache_size`` models, least recently used first out; an
    evicted actor is killed once its requests end, which frees its memory on its device
    (GPU memory too). See :class:`ActorFactory` for the rest.
    """
    return ModelServer(
        store,
        cache_size=cache_size,
        batching=batching,
        max_batch_size=max_batch_size,
        max_queue_delay_ms=max_queue_delay_ms,
        factory=ActorFactory(actor_cpus=actor_cpus, actor_gpus=actor_gpus, timeout_s=timeout_s),
    )


def actor_for(server: ModelServer, target: ModelRef | str) -> Any:
    """The actor serving ``target`` (a version, or a name's served version), or None when
    it is not loaded on the cluster."""
    served = server.served(target)
    engine = None if served is None else served.engine
    return engine.actor if isinstance(engine, ActorEngine) else None
