import asyncio

import numpy as np
import pytest
import torch

from workers.errors import InvalidParameter, NotFound
from workers.training.checkpoints import ModelStore
from workers.training.configs import validate_training
from workers.training.inference import LoadedModel, ModelCache
from workers.training.serving import ModelServer
from workers.training.trainer import build_metadata, train

SPIRAL = {"task": "spiral", "data": {"points_per_class": 50}, "epochs": 5, "device": "cpu"}
POINTS = [[0.1, 0.2], [-0.5, 0.3]]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    config = validate_training(SPIRAL)
    result = train(config)
    store = ModelStore(tmp_path_factory.mktemp("models"))
    store.save("spiral-1", result.tensors, build_metadata(config, result))
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
def test_a_cached_model_is_served_without_a_thread_hop_to_the_cache(store, batching, monkeypatch):
    async def main():
        server = server_for(store, batching=batching)
        try:
            first = await server.model("spiral-1")  # a miss: loaded in a thread

            def no_blocking_lookup(*args, **kwargs):
                raise AssertionError("a cache hit went through the blocking lookup")

            monkeypatch.setattr(ModelCache, "checkout", no_blocking_lookup)
            monkeypatch.setattr(ModelCache, "get_or_load", no_blocking_lookup)
            assert await server.model("spiral-1") is first
            model, prediction = await server.predict("spiral-1", POINTS)
            assert model is first and prediction["classes"].shape == (2,)
        finally:
            await server.close()

    asyncio.run(main())


def test_unknown_models_are_not_found(store):
    async def main():
        server = server_for(store)
        try:
            with pytest.raises(NotFound):
                await server.predict("nope", POINTS)
            with pytest.raises(NotFound):
                await server.model("nope")
        finally:
            await server.close()

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
            ((_, batcher),) = server._batchers.values()
            return batcher.max_concurrent_batches
        finally:
            await server.close()

    assert asyncio.run(main()) == 3
    assert server_for(store).batch_instances == 1
    with pytest.raises(InvalidParameter, match="batch_instances"):
        server_for(store, batch_instances=0)
