"""Dynamic batching: concurrent requests for one model merged into shared forward passes.

As in Ray Serve's ``batching.py``, the queue and the batching policy live apart from
the handler they wrap: :class:`DynamicBatcher` knows nothing of models, only of a
``forward`` callable and a ``runner`` that runs it (a thread here, a Ray actor there).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from workers.errors import InvalidParameter, ModelUnavailable

__all__ = ["PEAK_WINDOW_S", "DynamicBatcher", "Prediction", "Runner"]

Prediction = dict[str, np.ndarray]
#: How long a batcher remembers the most rows it held at once (see DynamicBatcher).
PEAK_WINDOW_S = 1.0
Runner = Callable[[Callable[[np.ndarray], Prediction], np.ndarray], Awaitable[Prediction]]


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
        # Set by the last batch to finish once a draining aclose waits for it.
        self._drained: asyncio.Event | None = None
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
        batches finish first: the last batch to finish wakes this call (no polling).
        Without it, as :meth:`close`, then the batcher's tasks are awaited.
        """
        self._closed = True
        if drain and (self._pending or self._running) and not self._worker_done():
            self._drained = asyncio.Event()
            if self._wakeup is not None:
                self._wakeup.set()  # a gathering batch stops waiting for rows now
            await self._drained.wait()
        tasks = [task for task in (self._worker, *self._running) if task is not None]
        self.close()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        """Stop the batcher now, from synchronous code: queued requests and running
        batches' requests fail with :class:`ModelUnavailable` (their threads finish alone)."""
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
        for task in self._running:
            task.cancel()
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
            while self._pending_rows < wanted and loop.time() < deadline and not self._closed:
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
        if self._drained is not None and not self._pending and not self._running:
            self._drained.set()

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
