import asyncio

import numpy as np
import pytest
import torch

from workers.errors import InvalidParameter, ModelUnavailable, NotFound
from workers.serving import LoadedModel, LocalEngine, LocalFactory, ModelServer, Served
from workers.training.checkpoints import ModelStore
from workers.training.configs import validate_training
from workers.training.trainer import build_metadata, train

SPIRAL = {"task": "spiral", "data": {"points_per_class": 50}, "epochs": 5, "device": "cpu"}
POINTS = [[0.1, 0.2], [-0.5, 0.3]]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    config = validate_training(SPIRAL)
    result = train(config)
    store = ModelStore(tmp_path_factory.mktemp("models"))
    for model_id in ("spiral-1", "spiral-2"):
        store.save(model_id, result.tensors, build_metadata(config, result))
    return store


def server_for(store, **overrides):
    options = {
        "device": "cpu",
        "cache_size": 2,
        "batching": True,
        "max_batch_size": 64,
        "max_queue_delay_ms": 0.0,
    }
    return ModelServer(store, **{**options, **overrides})


class GatedEngine(LocalEngine):
    """The local engine, with its forward passes held until the test opens ``gate``."""

    def __init__(self, gate: asyncio.Event | None) -> None:
        super().__init__(concurrency=1)
        self.gate = gate
        self.entered = asyncio.Event()

    async def run(self, forward, rows):
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        return await asyncio.to_thread(forward, rows)


class TestFactory(LocalFactory):
    """A backend for the tests: loads as the local one does, counts its loads, and holds
    the forward passes of the models in ``gates`` until their gate opens."""

    __test__ = False

    def __init__(self, gates=None):
        super().__init__("cpu")
        self.gates = gates or {}
        self.loads = []
        self.engines = {}

    def load(self, store, ref, batching, lost):
        self.loads.append(ref.name)
        model, _ = super().load(store, ref, batching, lost)
        engine = self.engines[ref.name] = GatedEngine(self.gates.get(ref.name))
        return model, engine


async def hold_a_request(store, **overrides):
    """A server whose first request, for spiral-1, is in its forward pass until the gate
    opens: returns the server, the gate, the request's task and the factory."""
    gate = asyncio.Event()
    factory = TestFactory({"spiral-1": gate})
    server = server_for(store, factory=factory, **overrides)
    held = asyncio.ensure_future(server.predict("spiral-1", POINTS))
    await server.model("spiral-1")
    await factory.engines["spiral-1"].entered.wait()
    return server, gate, held, factory


@pytest.mark.parametrize("batching", [False, True])
def test_predictions_are_the_models_own(store, batching):
    reference = LoadedModel.from_store(store, "spiral-1")

    async def main():
        server = server_for(store, batching=batching)
        try:
            return await server.predict("spiral-1", POINTS)
        finally:
            await server.close()

    model, prediction = asyncio.run(main())
    expected = reference.predict(POINTS)
    assert model.task == "spiral"
    np.testing.assert_allclose(prediction["probabilities"], expected["probabilities"], rtol=1e-6)
    np.testing.assert_array_equal(prediction["classes"], expected["classes"])


@pytest.mark.parametrize("batching", [False, True])
def test_a_cached_model_is_served_without_leaving_the_event_loop(store, batching):
    factory = TestFactory()

    async def main():
        server = server_for(store, batching=batching, factory=factory)
        try:
            first = await server.model("spiral-1")  # a miss: loaded in a thread
            hit = server.model("spiral-1")
            with pytest.raises(StopIteration) as done:  # answered without suspending
                hit.send(None)
            assert done.value.value is first
            model, prediction = await server.predict("spiral-1", POINTS)
            assert model is first and prediction["classes"].shape == (2,)
        finally:
            await server.close()

    asyncio.run(main())
    assert factory.loads == ["spiral-1"]


def test_concurrent_misses_load_once(store):
    factory = TestFactory()

    async def main():
        server = server_for(store, factory=factory)
        try:
            answers = await asyncio.gather(
                *(server.predict("spiral-1", POINTS) for _ in range(8)),
                *(server.model("spiral-1") for _ in range(4)),
            )
            assert len({id(answer[0]) for answer in answers[:8]} | {id(answers[8])}) == 1
        finally:
            await server.close()

    asyncio.run(main())
    assert factory.loads == ["spiral-1"]


def test_unknown_models_are_not_found_and_a_failed_load_leaves_no_entry(store):
    async def main():
        server = server_for(store)
        try:
            outcomes = await asyncio.gather(
                *(server.predict("nope", POINTS) for _ in range(3)), return_exceptions=True
            )
            assert all(isinstance(outcome, NotFound) for outcome in outcomes)
            with pytest.raises(NotFound):
                await server.model("nope")
            assert server.served("nope") is None and len(server.cache) == 0
            await server.unload("nope")  # nothing to unload: no error
        finally:
            await server.close()

    asyncio.run(main())


@pytest.mark.parametrize("batching", [False, True])
def test_a_model_evicted_while_in_use_drains_then_unloads(store, batching):
    async def main():
        server, gate, held, _ = await hold_a_request(store, cache_size=1, batching=batching)
        try:
            first = server.served("spiral-1")
            await server.predict("spiral-2", POINTS)  # capacity 1: spiral-1 is evicted...
            assert first.state is Served.EVICTED and [ref.name for ref in server.cache.ids()] == [
                "spiral-2"
            ]
            assert first.model.module is not None  # ... but not unloaded under its request
            gate.set()
            model, prediction = await held
            assert model is first.model and prediction["classes"].shape == (2,)
            assert first.state is Served.UNLOADED and server.served("spiral-1") is None
            with pytest.raises(ModelUnavailable):
                first.model.predict(POINTS)  # its weights are released
        finally:
            await server.close()

    asyncio.run(main())


def test_an_evicted_model_asked_for_again_before_it_drains_is_revived(store):
    async def main():
        server, gate, held, factory = await hold_a_request(store, cache_size=1)
        try:
            await server.predict("spiral-2", POINTS)
            first = server.served("spiral-1")
            assert first.state is Served.EVICTED
            assert await server.model("spiral-1") is first.model  # not loaded again
            assert first.state is Served.SERVING and [ref.name for ref in server.cache.ids()] == [
                "spiral-1"
            ]
            gate.set()
            await held
            assert first.state is Served.SERVING  # its last request ended while serving
        finally:
            await server.close()
        return factory.loads

    assert asyncio.run(main()) == ["spiral-1", "spiral-2"]


def test_unload_waits_for_the_models_requests_without_polling(store, monkeypatch):
    async def main():
        server, gate, held, _ = await hold_a_request(store)
        try:
            served = server.served("spiral-1")

            async def no_polling(*args, **kwargs):
                raise AssertionError("polled")

            monkeypatch.setattr(asyncio, "sleep", no_polling)
            unloading = asyncio.ensure_future(server.unload("spiral-1"))
            done, _ = await asyncio.wait({unloading}, timeout=0.05)
            assert not done and served.state is Served.UNLOADING
            assert server.served("spiral-1") is None  # out of the cache at once
            gate.set()
            await held  # the request in flight finishes...
            await unloading  # ... and then the unload returns
            monkeypatch.undo()
            assert served.state is Served.UNLOADED
        finally:
            await server.close()

    asyncio.run(main())


def test_close_unloads_every_model_and_fails_what_is_queued(store):
    async def main():
        server, _, held, _ = await hold_a_request(store)
        served = server.served("spiral-1")
        await server.close()
        with pytest.raises(ModelUnavailable):
            await held
        assert served.state is Served.UNLOADED and len(server.cache) == 0

    asyncio.run(main())


def test_cpu_threads_sets_torchs_intra_op_threads(store):
    before = torch.get_num_threads()
    try:
        server_for(store, cpu_threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    server_for(store)  # None leaves torch's setting alone
    assert torch.get_num_threads() == before
    with pytest.raises(InvalidParameter, match="cpu_threads"):
        server_for(store, cpu_threads=0)


def test_batch_instances_reach_the_models_batcher(store):
    async def main():
        server = server_for(store, batch_instances=3)
        try:
            await server.predict("spiral-1", POINTS)
            return server.served("spiral-1").batcher.max_concurrent_batches
        finally:
            await server.close()

    assert asyncio.run(main()) == 3
    assert server_for(store).factory.batch_instances == 1
    with pytest.raises(InvalidParameter, match="batch_instances"):
        server_for(store, batch_instances=0)
    with pytest.raises(InvalidParameter, match="capacity"):
        server_for(store, cache_size=0)
