"""Serving trained models: rebuild from stored tensors, predict, batch, cache.

A model is rebuilt from the configuration in its metadata and the tensors the store
verified; nothing is unpickled. :class:`DynamicBatcher` merges concurrent requests
for one model into a single forward pass; :class:`ModelCache` keeps the most recently
used models loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from workers.errors import InvalidParameter, ModelUnavailable, TensorlensError
from workers.training.checkpoints import ModelStore
from workers.training.configs import RegressionConfig, SpiralConfig, validate_training
from workers.training.models import Ensemble, build_model, io_features

__all__ = ["DynamicBatcher", "LoadedModel", "ModelCache", "Prediction", "Runner"]

Prediction = dict[str, np.ndarray]
_FLOAT32_MAX = float(np.finfo(np.float32).max)
#: How long a batcher remembers the most rows it held at once (see DynamicBatcher).
PEAK_WINDOW_S = 1.0
Runner = Callable[[Callable[[np.ndarray], Prediction], np.ndarray], Awaitable[Prediction]]


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
        self._users = 0
        self._released = False
        self._users_lock = threading.Lock()

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
    def from_store(cls, store: ModelStore, model_id: str, device: str = "cpu") -> LoadedModel:
        """Load a stored model after its checksum passes (see :meth:`ModelStore.load_tensors`)."""
        tensors = store.load_tensors(model_id)
        return cls.from_tensors(store.get(model_id).metadata, tensors, device)

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

    def acquire(self) -> None:
        """Hold the model for one request: :meth:`release` waits for holders to finish.

        Raises
        ------
        ModelUnavailable
            When the model has already been released.
        """
        with self._users_lock:
            if self._released:
                raise ModelUnavailable("the model was unloaded; retry the request")
            self._users += 1

    def checkin(self) -> None:
        """End a hold taken with :meth:`acquire`."""
        with self._users_lock:
            self._users -= 1
            free = self._released and self._users == 0
        if free:
            self._free()

    def release(self) -> None:
        """Drop the module once no request holds it (see :meth:`in_use`); later calls fail."""
        with self._users_lock:
            self._released = True
            free = self._users == 0
        if free:
            self._free()

    def _free(self) -> None:
        module, self._module = self._module, None
        del module
        if torch.device(self.device).type == "cuda":
            torch.cuda.empty_cache()


@dataclass
class _Pending:
    inputs: np.ndarray
    future: asyncio.Future[Prediction]


class DynamicBatcher:
    """Gathers concurrent :meth:`submit` calls into shared forward passes.

    While fewer than ``max_concurrent_batches`` batches run, the first waiting
    request opens a batch. The batch runs once it holds the rows the batcher expects
    (the most rows it held at once, waiting and running, since that peak was set less
    than ``PEAK_WINDOW_S`` ago, less the rows running now; at most ``max_batch_size``),
    or after ``max_queue_delay_ms`` or the duration of the last forward pass, whichever
    is first. So a lone client is not delayed (after a crowd, for at most one pass per
    request until the peak is forgotten), while clients that all come back after their
    answers, sent one by one, are gathered into one pass again, not split into a pass
    for the first one back and a pass for the rest. While every runner is
    busy, arriving requests queue and form the next batch, which opens as soon as a
    running one finishes (like Triton's model instances: with 2, one batch's forward
    pass runs in a thread while the next one runs in another). A single request
    larger than ``max_batch_size`` runs on its own, in chunks of ``max_batch_size``
    rows. A batcher belongs to the event loop it is first used in.

    Parameters
    ----------
    forward : callable
        ``(rows, features)`` array to a dict of arrays with ``rows`` leading rows,
        e.g. :meth:`LoadedModel.forward`.
    max_batch_size : int
        Most rows per forward pass.
    max_queue_delay_ms : float
        Longest a batch waits for the rows it expects (never longer than the last
        forward pass); 0 runs what is waiting at once.
    runner : callable, optional
        ``await runner(forward, batch)`` runs the pass; defaults to
        :func:`asyncio.to_thread`, keeping the event loop free.
    prepare : callable, optional
        Applied to each submission before it queues, e.g.
        :meth:`LoadedModel.validate_inputs`, so a bad request fails alone.
    max_concurrent_batches : int
        Most batches running at once (each in its own ``runner`` call); 1 runs them
        one after another.
    """

    def __init__(
        self,
        forward: Callable[[np.ndarray], Prediction],
        *,
        max_batch_size: int = 256,
        max_queue_delay_ms: float = 50.0,
        runner: Runner | None = None,
        prepare: Callable[[Any], np.ndarray] | None = None,
        max_concurrent_batches: int = 1,
    ) -> None:
        if max_batch_size < 1:
            raise InvalidParameter("max_batch_size", "must be >= 1")
        if max_queue_delay_ms < 0:
            raise InvalidParameter("max_queue_delay_ms", "must be >= 0")
        if max_concurrent_batches < 1:
            raise InvalidParameter("max_concurrent_batches", "must be >= 1")
        self._forward = forward
        self.max_batch_size = max_batch_size
        self.max_queue_delay_ms = max_queue_delay_ms
        self.max_concurrent_batches = max_concurrent_batches
        self._runner: Runner = runner or asyncio.to_thread
        self._prepare = prepare
        self._pending: deque[_Pending] = deque()
        self._pending_rows = 0
        # What a batch waits for: the most rows in the batcher at once (waiting and
        # running) within the last PEAK_WINDOW_S, for at most one forward pass.
        self._peak_rows = 0
        self._peak_at = 0.0
        self._running_rows = 0
        self._last_pass_s = 0.0
        # Set on every submission and whenever a running batch finishes (a runner
        # is free): the dispatcher waits on it for either.
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._closed = False
        # Forward passes may run in several threads at once.
        self._calls_lock = threading.Lock()
        self.forward_calls = 0
        self.requests = 0

    async def submit(self, inputs: Any) -> Prediction:
        """Queue ``inputs`` for the next batch and wait for their rows of the result.

        Raises
        ------
        ModelUnavailable
            When the batcher has been closed.
        Exception
            Whatever ``prepare`` or the forward pass raised for this request's batch.
        """
        if self._closed:
            raise ModelUnavailable("the model was unloaded; retry the request")
        array = self._prepare(inputs) if self._prepare is not None else np.asarray(inputs)
        loop = asyncio.get_running_loop()
        pending = _Pending(array, loop.create_future())
        self._pending.append(pending)
        self._pending_rows += len(array)
        self.requests += 1
        in_batcher = self._pending_rows + self._running_rows
        now = loop.time()
        if in_batcher >= self._peak_rows or now - self._peak_at > PEAK_WINDOW_S:
            self._peak_rows, self._peak_at = in_batcher, now
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        self._wakeup.set()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._run())
        return await pending.future

    async def aclose(self, *, drain: bool = False) -> None:
        """Stop the batcher; queued requests fail with :class:`ModelUnavailable`.

        With ``drain``, new submissions are refused at once but queued and running
        batches finish first (a model replaced in the cache keeps its last requests).
        Without it, running batches' requests fail too (their threads finish alone).
        """
        self._closed = True
        while drain and (self._pending or self._running) and not self._worker_done():
            await asyncio.sleep(0.001)
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        running = list(self._running)
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        while self._pending:
            _fail(self._pending.popleft(), ModelUnavailable("the model was unloaded"))
        self._pending_rows = 0

    async def _run(self) -> None:
        assert self._wakeup is not None
        wakeup = self._wakeup
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending or len(self._running) >= self.max_concurrent_batches:
                wakeup.clear()
                await wakeup.wait()
            wait_s = min(self.max_queue_delay_ms / 1000, self._last_pass_s)
            deadline = loop.time() + wait_s
            wanted = min(self._peak_rows - self._running_rows, self.max_batch_size)
            while self._pending_rows < wanted and loop.time() < deadline:
                wakeup.clear()
                # Waiting on an Event loses nothing when the timeout cancels it.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(deadline):
                        await wakeup.wait()
            task = loop.create_task(self._run_batch(self._take_batch()))
            self._running.add(task)
            task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._wakeup is not None:
            self._wakeup.set()

    def _worker_done(self) -> bool:
        return self._worker is None or self._worker.done()

    def _take_batch(self) -> list[_Pending]:
        batch = [self._pending.popleft()]
        rows = len(batch[0].inputs)
        while self._pending and rows + len(self._pending[0].inputs) <= self.max_batch_size:
            rows += len(self._pending[0].inputs)
            batch.append(self._pending.popleft())
        self._pending_rows -= rows
        return batch

    async def _run_batch(self, batch: list[_Pending]) -> None:
        live = [pending for pending in batch if not pending.future.done()]
        if not live:
            return
        inputs = np.concatenate([pending.inputs for pending in live])
        rows = len(inputs)
        self._running_rows += rows
        started = time.perf_counter()
        try:
            result = await self._runner(self._forward_in_chunks, inputs)
        except asyncio.CancelledError:
            for pending in live:
                _fail(pending, ModelUnavailable("the model was unloaded"))
            raise
        except Exception as exc:
            for pending in live:
                _fail(pending, exc)
            return
        finally:
            self._running_rows -= rows
            self._last_pass_s = time.perf_counter() - started
        start = 0
        for pending in live:
            stop = start + len(pending.inputs)
            if not pending.future.done():
                pending.future.set_result({key: value[start:stop] for key, value in result.items()})
            start = stop

    def _forward_in_chunks(self, inputs: np.ndarray) -> Prediction:
        chunks = []
        for start in range(0, len(inputs), self.max_batch_size):
            with self._calls_lock:
                self.forward_calls += 1
            chunks.append(self._forward(inputs[start : start + self.max_batch_size]))
        if len(chunks) == 1:
            return chunks[0]
        return {key: np.concatenate([chunk[key] for chunk in chunks]) for key in chunks[0]}


def _fail(pending: _Pending, error: BaseException) -> None:
    if not pending.future.done():
        pending.future.set_exception(error)


class ModelCache:
    """The ``capacity`` most recently used models, loaded; thread-safe.

    Evicted models are released (their CUDA memory returned to the driver); a request
    already holding one finishes with it.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise InvalidParameter("capacity", "must be >= 1")
        self.capacity = capacity
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def checkout(self, model_id: str, loader: Callable[[], LoadedModel]) -> LoadedModel:
        """:meth:`get_or_load`, with the model held (:meth:`LoadedModel.acquire`) for the
        caller before any other thread can evict it; end with :meth:`LoadedModel.checkin`."""
        return self.get_or_load(model_id, loader, hold=True)

    def get(self, model_id: str, *, hold: bool = False) -> LoadedModel | None:
        """The cached model (now the most recently used), or None; never loads or waits
        for a load, so an event loop may call it. With ``hold``, as :meth:`checkout`."""
        with self._lock:
            model = self._hit(model_id)
            if model is not None and hold:
                model.acquire()
            return model

    def get_or_load(
        self, model_id: str, loader: Callable[[], LoadedModel], *, hold: bool = False
    ) -> LoadedModel:
        """The cached model, or ``loader()``'s, cached; concurrent misses load once.

        Blocks while loading: call it from a thread when in an event loop.
        """
        with self._lock:
            model = self._hit(model_id)
            if model is not None:
                if hold:
                    model.acquire()
                return model
            loading = self._loading.setdefault(model_id, threading.Lock())
        with loading:
            with self._lock:
                model = self._hit(model_id)
                if model is not None and hold:
                    model.acquire()
            if model is not None:
                return model
            try:
                model = loader()
            except BaseException:
                with self._lock:
                    self._loading.pop(model_id, None)
                raise
            with self._lock:
                if hold:
                    model.acquire()
                self._models[model_id] = model
                # Only now: a miss arriving before the model is in the cache must
                # find the lock and wait instead of loading a second copy.
                self._loading.pop(model_id, None)
                evicted = []
                while len(self._models) > self.capacity:
                    evicted.append(self._models.popitem(last=False)[1])
        for old in evicted:
            old.release()
        return model

    def evict(self, model_id: str) -> bool:
        """Drop and release ``model_id`` (e.g. after a delete); False if it was not cached."""
        with self._lock:
            model = self._models.pop(model_id, None)
        if model is None:
            return False
        model.release()
        return True

    def clear(self) -> None:
        with self._lock:
            models = list(self._models.values())
            self._models.clear()
        for model in models:
            model.release()

    def ids(self) -> list[str]:
        """Cached ids, least recently used first."""
        with self._lock:
            return list(self._models)

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)

    def __contains__(self, model_id: object) -> bool:
        with self._lock:
            return model_id in self._models

    def _hit(self, model_id: str) -> LoadedModel | None:
        model = self._models.get(model_id)
        if model is not None:
            self._models.move_to_end(model_id)
        return model
