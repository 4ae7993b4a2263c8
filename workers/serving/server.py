"""Predictions from stored models: one :class:`ServedModel` per model version, in an LRU cache.

The cache is keyed by :class:`~workers.training.checkpoints.ModelRef` (name and
version): a request names a model and, optionally, a version or an alias, and
:meth:`ModelServer.resolve` (the store's resolution: the ``default`` alias, else the
latest version) turns that into the ref it is served from. Moving an alias changes what
resolves, never what is cached, so a version already loaded is not loaded again.

A served model is the cache's only value: the model as loaded here (metadata, input
validation, and the local backend's forward pass), the :class:`Engine` that runs its
forward passes, its batcher, its requests in flight and its state. Its lifetime is its
own: :meth:`ServedModel._move` is the one place its state changes, and eviction,
draining and unloading are its moves. A backend supplies a :class:`ModelFactory` (this
module's :class:`LocalFactory`: weights in this process; Ray's: a model actor, see
:mod:`workers.ray_backend.serving`), never a subclass of the server.

States (:class:`Served`)::

    loading ─▶ serving ─▶ evicted ─▶ unloaded       (evicted: its requests finish first)
       │        ▲  │         │
       │        │  │         └──▶ serving           (asked for again before it unloads)
       │        │  └─▶ unloading ─▶ unloaded         (unload, or its engine was lost)
       └────────┴─────────────────▶ unloaded         (the load failed; close)

The server and its models belong to the event loop that first uses them: the cache is
only touched from that loop, so the prediction path takes no lock and awaits nothing
but the prediction; only a load leaves the loop (for a thread).
"""

from __future__ import annotations

import asyncio
import enum
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from workers.errors import InvalidParameter, ModelUnavailable, NotFound
from workers.serving.batching import DynamicBatcher, Prediction
from workers.serving.loaded import LoadedModel
from workers.training.checkpoints import ModelRef, ModelStore

__all__ = [
    "BatchingPolicy",
    "Engine",
    "LocalEngine",
    "LocalFactory",
    "ModelCache",
    "ModelFactory",
    "ModelServer",
    "Served",
    "ServedModel",
]


class Engine(Protocol):
    """Where one served model's forward passes run: what a backend adds to a loaded model."""

    #: Most batches of this model sent to :meth:`run` at once.
    concurrency: int

    def run(
        self, forward: Callable[[np.ndarray], Prediction], rows: np.ndarray
    ) -> Awaitable[Prediction]:
        """One forward pass of validated ``rows``; ``forward`` is the pass as computed
        here (what the local backend runs; a remote engine runs its own copy)."""
        ...

    async def forward_calls(self, batcher: DynamicBatcher) -> int:
        """Forward passes run for this model so far (``batcher`` counts those run here)."""
        ...

    def close(self) -> None:
        """Free what the engine holds (an actor, a device); requests still using it fail."""
        ...


class ModelFactory(Protocol):
    """How a backend loads a model: the one thing it supplies to :class:`ModelServer`."""

    def load(
        self, store: ModelStore, ref: ModelRef, batching: BatchingPolicy, lost: Callable[[], None]
    ) -> tuple[LoadedModel, Engine]:
        """The model as loaded here, and its engine. Blocking: called in a thread.

        ``batching`` is the server's (a remote engine may batch there too); ``lost`` is
        for the engine to call when its weights are gone (its process died):
        the model is then unloaded and the next request loads it afresh.

        Raises
        ------
        NotFound
            No such model version in ``store``.
        ModelUnavailable
            Its files are damaged, or the engine cannot start.
        """
        ...


class LocalEngine:
    """Forward passes in this process, each in a thread (:func:`asyncio.to_thread`)."""

    # The batcher's own default runner: no wrapper on the prediction path.
    run = staticmethod(asyncio.to_thread)

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency

    async def forward_calls(self, batcher: DynamicBatcher) -> int:
        return batcher.forward_calls

    def close(self) -> None:
        """Nothing to free: the served model releases its weights itself."""


class LocalFactory:
    """Loads models into this process, on ``device``.

    ``batch_instances`` is how many of one model's batches may run at once, each in its
    own thread (Triton's model instances): with 1, once every waiting request is in the
    running batch, the event loop idles during its pass and the pass waits while the loop
    answers and parses; a second instance overlaps the two, at the price of smaller
    batches. ``cpu_threads``, when given, sets torch's intra-op threads for the whole
    process (:func:`torch.set_num_threads`); fewer than the CPU count leaves a core to the
    event loop that parses requests.
    """

    def __init__(
        self, device: str = "cpu", *, cpu_threads: int | None = None, batch_instances: int = 1
    ) -> None:
        if batch_instances < 1:
            raise InvalidParameter("batch_instances", "must be >= 1")
        if cpu_threads is not None:
            if cpu_threads < 1:
                raise InvalidParameter("cpu_threads", "must be >= 1")
            torch.set_num_threads(cpu_threads)
        self.device = device
        self.batch_instances = batch_instances

    def load(
        self, store: ModelStore, ref: ModelRef, batching: BatchingPolicy, lost: Callable[[], None]
    ) -> tuple[LoadedModel, Engine]:
        # from_store verifies the checksum (ModelUnavailable when the files are damaged).
        model = LoadedModel.from_store(store, ref, self.device)
        return model, LocalEngine(self.batch_instances)


class Served(enum.Enum):
    """A :class:`ServedModel`'s state; see this module's docstring for the moves."""

    LOADING = "loading"  # its factory is loading it; requests for it wait
    SERVING = "serving"  # in the cache, counted in its capacity
    EVICTED = "evicted"  # out of the capacity; its requests finish, then it unloads
    UNLOADING = "unloading"  # out of the cache; its requests finish, then it unloads
    UNLOADED = "unloaded"  # weights and engine released; every request refused


_MOVES: dict[Served, frozenset[Served]] = {
    Served.LOADING: frozenset({Served.SERVING, Served.UNLOADED}),
    Served.SERVING: frozenset({Served.EVICTED, Served.UNLOADING, Served.UNLOADED}),
    Served.EVICTED: frozenset({Served.SERVING, Served.UNLOADING, Served.UNLOADED}),
    Served.UNLOADING: frozenset({Served.UNLOADED}),
    Served.UNLOADED: frozenset(),
}


class ServedModel:
    """One model version as served: its loaded copy, engine, batcher, requests and state.

    Requests hold it from lookup to answer (:meth:`checkout`, :meth:`checkin`), so a
    model evicted or unloaded meanwhile is released only once its last request ends.
    """

    def __init__(self, ref: ModelRef, cache: ModelCache) -> None:
        self.ref = ref
        self.state = Served.LOADING
        # Set by load, before it serves:
        self.model: LoadedModel | None = None
        self.engine: Engine | None = None
        self.batcher: DynamicBatcher | None = None
        self.users = 0
        self._cache = cache
        self._ready = asyncio.Event()  # set when it leaves LOADING
        self._unloaded = asyncio.Event()

    async def load(
        self, store: ModelStore, factory: ModelFactory, batching: BatchingPolicy
    ) -> None:
        """Load through ``factory`` (in a thread), then serve; on failure, unload.

        Concurrent requests for the model wait on it (:meth:`ready`) meanwhile.
        """
        try:
            model, engine = await asyncio.to_thread(
                factory.load, store, self.ref, batching, self.lost
            )
        except BaseException:
            self._move(Served.UNLOADED)
            raise
        self.model, self.engine = model, engine
        if self.state is not Served.LOADING:  # closed while loading
            self._release()
            raise ModelUnavailable("the model was unloaded; retry the request")
        if batching.enabled:
            self.batcher = DynamicBatcher(
                model.forward,
                max_batch_size=batching.max_batch_size,
                max_queue_delay_ms=batching.max_queue_delay_ms,
                runner=engine.run,
                prepare=model.validate_inputs,
                max_concurrent_batches=engine.concurrency,
            )
        self._move(Served.SERVING)

    async def ready(self) -> None:
        """Wait until it is loaded, or its load failed."""
        await self._ready.wait()

    async def unloaded(self) -> None:
        """Wait until it is unloaded: after its last request, once evicted or unloading."""
        await self._unloaded.wait()

    def checkout(self) -> None:
        """Hold it for one request; end with :meth:`checkin`."""
        self.users += 1

    def checkin(self) -> None:
        """End a hold; the last request of an evicted or unloading model unloads it."""
        self.users -= 1
        if not self.users and self.state in (Served.EVICTED, Served.UNLOADING):
            self._move(Served.UNLOADED)

    def predict(self, inputs: Any) -> Awaitable[Prediction]:
        """The model's prediction for ``inputs``, through its batcher when it has one.

        The caller holds the model (:meth:`checkout`) until the prediction is awaited.
        Not a coroutine, so the batcher's is awaited directly: no frame on the hot path.

        Raises
        ------
        InvalidParameter
            At once, for ``inputs`` the model cannot take.
        """
        if self.batcher is not None:
            return self.batcher.submit(inputs)
        assert self.model is not None and self.engine is not None
        return self.engine.run(self.model.forward, self.model.validate_inputs(inputs))

    def revive(self) -> bool:
        """Serve an evicted model again (asked for before its requests finished)."""
        return self._move(Served.SERVING)

    def evict(self) -> bool:
        """Out of the cache's capacity: unloaded once its requests finish (:meth:`unloaded`)."""
        return self._move(Served.EVICTED)

    def unload(self) -> bool:
        """Out of the cache for good: unloaded once its requests finish; never revived."""
        return self._move(Served.UNLOADING)

    def lost(self) -> None:
        """Its engine's weights are gone: never handed out again (requests in flight end)."""
        self._move(Served.UNLOADING)

    def close(self) -> None:
        """Unload now: requests still queued in its batcher fail with ModelUnavailable."""
        self._move(Served.UNLOADED)

    def _move(self, to: Served) -> bool:
        # The one place the state changes, and with it the cache, the batcher, the engine
        # and the weights; False (and nothing done) for a move _MOVES does not allow.
        if to not in _MOVES[self.state]:
            return False
        self.state = to
        if to is Served.SERVING:
            self._ready.set()
            for victim in self._cache.admit(self):
                victim.evict()
        elif to is Served.UNLOADED:
            self._cache.discard(self)
            self._release()
            self._ready.set()
            self._unloaded.set()
        elif not self.users:  # EVICTED or UNLOADING, with no request to finish
            self._move(Served.UNLOADED)
        elif to is Served.UNLOADING:
            self._cache.discard(self)
        return True

    def _release(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        if self.engine is not None:
            self.engine.close()
        if self.model is not None:
            self.model.release()


class ModelCache:
    """Served model versions by ref, least recently used first.

    At most ``capacity`` of them are serving; evicted ones stay until their requests
    finish (so a request for one revives it rather than loading a copy), and a loading
    one is here so that concurrent misses load it once. Used from one event loop.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise InvalidParameter("capacity", "must be >= 1")
        self.capacity = capacity
        self._models: OrderedDict[ModelRef, ServedModel] = OrderedDict()

    def get(self, ref: ModelRef) -> ServedModel | None:
        """The version's entry in any state (now the most recently used), or None."""
        served = self._models.get(ref)
        if served is not None:
            self._models.move_to_end(ref)
        return served

    def peek(self, ref: ModelRef) -> ServedModel | None:
        """The version's entry in any state, leaving the order alone."""
        return self._models.get(ref)

    def add(self, served: ServedModel) -> None:
        self._models[served.ref] = served

    def admit(self, served: ServedModel) -> list[ServedModel]:
        """``served`` is serving again: the serving models now beyond capacity, LRU first."""
        self._models[served.ref] = served
        self._models.move_to_end(served.ref)
        serving = [m for m in self._models.values() if m.state is Served.SERVING]
        return serving[: max(0, len(serving) - self.capacity)]

    def discard(self, served: ServedModel) -> None:
        """Drop ``served`` (not a newer entry for the same version)."""
        if self._models.get(served.ref) is served:
            del self._models[served.ref]

    def entries(self) -> list[ServedModel]:
        """Every entry, least recently used first."""
        return list(self._models.values())

    def ids(self) -> list[ModelRef]:
        """Serving versions, least recently used first."""
        return [m.ref for m in self._models.values() if m.state is Served.SERVING]

    def __len__(self) -> int:
        return len(self.ids())

    def __contains__(self, ref: object) -> bool:
        served = self._models.get(ref) if isinstance(ref, ModelRef) else None
        return served is not None and served.state is Served.SERVING


@dataclass(frozen=True)
class BatchingPolicy:
    """Whether and how a model's concurrent requests share forward passes."""

    enabled: bool
    max_batch_size: int
    max_queue_delay_ms: float


class ModelServer:
    """Loads model versions from the store on first use and serves their predictions.

    With ``batching`` on, concurrent requests to one version share forward passes
    (bounded by ``max_batch_size`` rows and ``max_queue_delay_ms``); with it off,
    each request runs its own forward pass. Up to ``cache_size`` versions stay loaded,
    least recently used first out. Models are loaded by ``factory``; without one, by a
    :class:`LocalFactory` on ``device`` with ``cpu_threads`` and ``batch_instances``
    (see there).

    Every method that takes a ``target`` takes a :class:`ModelRef` or a bare name, which
    is resolved by the version policy (:meth:`resolve`).
    """

    def __init__(
        self,
        store: ModelStore,
        *,
        device: str = "cpu",
        cache_size: int,
        batching: bool,
        max_batch_size: int,
        max_queue_delay_ms: float,
        cpu_threads: int | None = None,
        batch_instances: int = 1,
        factory: ModelFactory | None = None,
    ) -> None:
        self.store = store
        self.factory: ModelFactory = factory or LocalFactory(
            device, cpu_threads=cpu_threads, batch_instances=batch_instances
        )
        self.cache = ModelCache(cache_size)
        self.batching = BatchingPolicy(batching, max_batch_size, max_queue_delay_ms)

    def resolve(self, name: str, version: int | None = None, alias: str | None = None) -> ModelRef:
        """The version a request means: :meth:`ModelStore.resolve` (its errors too)."""
        return self.store.resolve(name, version, alias)

    async def model(self, target: ModelRef | str) -> LoadedModel:
        """The loaded model; raises NotFound, or ModelUnavailable when its files are damaged.

        A cached version was verified when it was loaded, so a hit reads no weights and
        is served without leaving the event loop; only a miss loads in a thread.
        """
        ref = self._ref(target)
        served = self.cache.get(ref)
        if served is None or served.state is not Served.SERVING:
            served = await self._serving(ref)
        assert served.model is not None
        return served.model

    async def predict(self, target: ModelRef | str, inputs: Any) -> tuple[LoadedModel, Prediction]:
        # The model is held from the cache lookup to the end of its forward pass, so an
        # eviction meanwhile releases it only afterwards.
        ref = self._ref(target)
        served = self.cache.get(ref)
        if served is None or served.state is not Served.SERVING:
            served = await self._serving(ref)
        model = served.model
        assert model is not None
        served.checkout()
        try:
            return model, await served.predict(inputs)
        finally:
            served.checkin()

    def served(self, target: ModelRef | str) -> ServedModel | None:
        """The version's entry (any state), or None; for inspection, e.g. in tests."""
        try:
            return self.cache.peek(self._ref(target))
        except NotFound:
            return None

    async def batch_stats(self, target: ModelRef | str) -> dict[str, int] | None:
        """Requests and forward passes of the version's batcher so far; None when it has none.

        Requests are those this process sent; forward passes those its engine ran (for a
        remote engine, for any process).
        """
        served = self.cache.peek(self._ref(target))
        if served is None or served.batcher is None or served.engine is None:
            return None
        forward_calls = await served.engine.forward_calls(served.batcher)
        return {"requests": served.batcher.requests, "forward_calls": forward_calls}

    async def unload(self, target: ModelRef | str) -> None:
        """Take a version (a :class:`ModelRef`) or every version of a name (a ``str``) out
        of the cache; return once their last requests have finished."""
        refs = (
            [target]
            if isinstance(target, ModelRef)
            else [s.ref for s in self.cache.entries() if s.ref.name == target]
        )
        for ref in refs:
            served = self.cache.peek(ref)
            while served is not None and served.state is Served.LOADING:
                await served.ready()
                served = self.cache.peek(ref)
            if served is not None:
                served.unload()
                await served.unloaded()

    async def close(self) -> None:
        """Unload every model now; requests still queued for one fail."""
        batchers = []
        for served in self.cache.entries():
            if served.batcher is not None:
                batchers.append(served.batcher)
            served.close()
        for batcher in batchers:
            await batcher.aclose()

    def _ref(self, target: ModelRef | str) -> ModelRef:
        return target if isinstance(target, ModelRef) else self.store.resolve(target)

    async def _serving(self, ref: ModelRef) -> ServedModel:
        # The slow path: a miss loads (once, however many requests want it), an evicted
        # model still finishing its requests is revived.
        while True:
            served = self.cache.get(ref)
            if served is None:
                served = ServedModel(ref, self.cache)
                self.cache.add(served)
                await served.load(self.store, self.factory, self.batching)
            elif served.state is Served.LOADING:
                await served.ready()
            elif served.state is Served.EVICTED:
                served.revive()
            if served.state is Served.SERVING:
                return served
