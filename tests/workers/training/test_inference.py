import asyncio
import threading
import time

import numpy as np
import pytest
import torch

from workers.errors import InvalidParameter, ModelUnavailable
from workers.training.checkpoints import ModelStore
from workers.training.configs import validate_training
from workers.training.inference import DynamicBatcher, LoadedModel, ModelCache
from workers.training.trainer import build_metadata, train

SPIRAL = {"task": "spiral", "data": {"points_per_class": 50}, "epochs": 5, "device": "cpu"}
ENSEMBLE = {"task": "regression", "model": {"ensemble_size": 4}, "epochs": 5, "device": "cpu"}


def trained(raw):
    config = validate_training(raw)
    result = train(config)
    return result, build_metadata(config, result)


@pytest.fixture(scope="module")
def spiral():
    return trained(SPIRAL)


@pytest.fixture(scope="module")
def ensemble():
    return trained(ENSEMBLE)


def test_classifier_predicts_what_the_trained_module_does(spiral):
    result, metadata = spiral
    model = LoadedModel.from_tensors(metadata, result.tensors)
    points = np.array([[0.0, 0.5], [-0.3, 0.2], [0.9, -0.9]], dtype=np.float32)
    prediction = model.predict(points)
    with torch.no_grad():
        expected = torch.softmax(result.model(torch.from_numpy(points)), dim=1).numpy()
    np.testing.assert_allclose(prediction["probabilities"], expected, rtol=1e-6)
    np.testing.assert_array_equal(prediction["classes"], expected.argmax(axis=1))
    np.testing.assert_allclose(prediction["probabilities"].sum(axis=1), 1.0, rtol=1e-6)


def test_ensemble_predicts_mean_and_spread(ensemble):
    result, metadata = ensemble
    model = LoadedModel.from_tensors(metadata, result.tensors)
    xs = np.linspace(-2, 2, 9)
    prediction = model.predict(xs)
    with torch.no_grad():
        members = result.model(torch.from_numpy(xs).float().unsqueeze(1)).squeeze(-1)
    np.testing.assert_allclose(prediction["mean"], members.mean(0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(prediction["std"], members.std(0).numpy(), rtol=1e-6)
    assert prediction["mean"].shape == prediction["std"].shape == (9,)


def test_single_regressor_has_no_spread():
    result, metadata = trained({**ENSEMBLE, "model": {"ensemble_size": 1}})
    prediction = LoadedModel.from_tensors(metadata, result.tensors).predict([[0.5], [1.0]])
    assert set(prediction) == {"mean"} and prediction["mean"].shape == (2,)


@pytest.mark.parametrize(
    "inputs",
    [[[0.0]], [[0.0, 1.0, 2.0]], [0.0, 1.0], [], [["a", "b"]], [[np.nan, 0.0]], [[1e39, 0.0]]],
)
def test_bad_inputs_name_the_parameter(spiral, inputs):
    result, metadata = spiral
    with pytest.raises(InvalidParameter) as caught:
        LoadedModel.from_tensors(metadata, result.tensors).predict(inputs)
    assert caught.value.parameter == "inputs"


def test_store_round_trip_and_tampering(spiral, tmp_path):
    result, metadata = spiral
    store = ModelStore(tmp_path)
    store.save("spiral-1", result.tensors, metadata)
    model = LoadedModel.from_store(store, "spiral-1")
    assert model.task == "spiral" and model.in_features == 2 and model.out_features == 3
    weights = tmp_path / "spiral-1" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ModelUnavailable):
        LoadedModel.from_store(store, "spiral-1")


def test_unusable_metadata_or_weights_are_unavailable(spiral):
    result, metadata = spiral
    with pytest.raises(ModelUnavailable):
        LoadedModel.from_tensors({}, result.tensors)
    with pytest.raises(ModelUnavailable):
        LoadedModel.from_tensors({"config": {"task": "nope"}}, result.tensors)
    with pytest.raises(ModelUnavailable):
        LoadedModel.from_tensors(metadata, {"0.weight": torch.zeros(1, 1)})


def test_a_released_model_refuses_to_predict(spiral):
    result, metadata = spiral
    model = LoadedModel.from_tensors(metadata, result.tensors)
    model.release()
    with pytest.raises(ModelUnavailable):
        model.predict([[0.0, 0.0]])


class CountingRunner:
    """Runs the forward inline and records the size of every pass."""

    def __init__(self):
        self.batches = []

    async def __call__(self, forward, batch):
        self.batches.append(len(batch))
        await asyncio.sleep(0)
        return forward(batch)


def test_batcher_gathers_concurrent_requests(spiral):
    result, metadata = spiral
    model = LoadedModel.from_tensors(metadata, result.tensors)
    runner = CountingRunner()
    rng = np.random.default_rng(0)
    requests = [rng.uniform(-1, 1, size=(rows, 2)) for rows in (1, 3, 2, 5, 1, 4, 2, 2, 1, 3)]

    async def main():
        batcher = DynamicBatcher(
            model.forward,
            max_batch_size=64,
            max_queue_delay_ms=50,
            runner=runner,
            prepare=model.validate_inputs,
        )
        answers = await asyncio.gather(*(batcher.submit(r) for r in requests))
        await batcher.aclose()
        return batcher, answers

    batcher, answers = asyncio.run(main())
    assert runner.batches == [sum(len(r) for r in requests)]
    assert batcher.forward_calls == 1 and batcher.requests == len(requests)
    for request, answer in zip(requests, answers, strict=True):
        alone = model.predict(request)
        np.testing.assert_array_equal(answer["classes"], alone["classes"])
        np.testing.assert_allclose(answer["probabilities"], alone["probabilities"], rtol=1e-6)


def test_batches_hold_at_most_max_batch_size_rows():
    runner = CountingRunner()

    def forward(batch):
        return {"double": batch * 2}

    async def main():
        batcher = DynamicBatcher(forward, max_batch_size=8, max_queue_delay_ms=20, runner=runner)
        small = [np.full((3, 1), float(n)) for n in range(6)]
        answers = await asyncio.gather(
            *(batcher.submit(x) for x in small), batcher.submit(np.ones((20, 1)))
        )
        await batcher.aclose()
        return small, answers

    small, answers = asyncio.run(main())
    assert all(size <= 8 for size in runner.batches[:-1])
    assert sum(runner.batches) == 18 + 20
    for x, answer in zip(small, answers, strict=False):
        np.testing.assert_array_equal(answer["double"], x * 2)
    np.testing.assert_array_equal(answers[-1]["double"], np.full((20, 1), 2.0))


def test_a_lone_request_waits_at_most_the_queue_delay():
    async def main():
        batcher = DynamicBatcher(lambda b: {"y": b}, max_queue_delay_ms=30)
        started = time.perf_counter()
        await batcher.submit(np.zeros((1, 1)))
        waited = time.perf_counter() - started
        await batcher.aclose()
        return waited

    assert 0.025 <= asyncio.run(main()) < 1.0


def test_a_bad_request_fails_alone_and_a_failed_pass_fails_its_batch(spiral):
    result, metadata = spiral
    model = LoadedModel.from_tensors(metadata, result.tensors)

    async def main():
        batcher = DynamicBatcher(model.forward, prepare=model.validate_inputs)
        good, bad = await asyncio.gather(
            batcher.submit([[0.1, 0.2]]), batcher.submit([[1.0]]), return_exceptions=True
        )
        await batcher.aclose()

        def broken(batch):
            raise RuntimeError("device lost")

        failing = DynamicBatcher(broken, max_queue_delay_ms=10)
        errors = await asyncio.gather(
            failing.submit(np.zeros((1, 2))),
            failing.submit(np.zeros((2, 2))),
            return_exceptions=True,
        )
        await failing.aclose()
        return good, bad, errors

    good, bad, errors = asyncio.run(main())
    assert good["classes"].shape == (1,)
    assert isinstance(bad, InvalidParameter)
    assert [str(error) for error in errors] == ["device lost", "device lost"]


def test_closing_fails_waiting_requests():
    gate = threading.Event()

    def slow(batch):
        gate.wait(5)
        return {"y": batch}

    async def main():
        batcher = DynamicBatcher(slow, max_queue_delay_ms=0)
        first = asyncio.ensure_future(batcher.submit(np.zeros((1, 1))))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(batcher.submit(np.zeros((1, 1))))
        await asyncio.sleep(0.01)
        await batcher.aclose()
        gate.set()
        outcomes = await asyncio.gather(first, second, return_exceptions=True)
        with pytest.raises(ModelUnavailable):
            await batcher.submit(np.zeros((1, 1)))
        return outcomes

    outcomes = asyncio.run(main())
    assert all(isinstance(outcome, ModelUnavailable) for outcome in outcomes)


class FakeModel:
    def __init__(self, name):
        self.name = name
        self.released = False

    def release(self):
        self.released = True


def test_cache_evicts_the_least_recently_used_and_releases_it():
    cache = ModelCache(capacity=2)
    loads = []

    def loader(name):
        def load():
            loads.append(name)
            return FakeModel(name)

        return load

    a = cache.get_or_load("a", loader("a"))
    b = cache.get_or_load("b", loader("b"))
    assert cache.get_or_load("a", loader("a")) is a
    c = cache.get_or_load("c", loader("c"))
    assert loads == ["a", "b", "c"]
    assert b.released and not a.released and not c.released
    assert cache.ids() == ["a", "c"] and "b" not in cache and len(cache) == 2
    assert cache.evict("a") and a.released and not cache.evict("a")
    cache.clear()
    assert c.released and len(cache) == 0


def test_cache_loads_once_under_concurrent_misses():
    cache = ModelCache(capacity=4)
    calls = []

    def load():
        calls.append(1)
        time.sleep(0.05)
        return FakeModel("m")

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_load("m", load)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len({id(model) for model in results}) == 1


def test_a_failed_load_is_not_cached():
    cache = ModelCache(capacity=1)

    def broken():
        raise ModelUnavailable("checksum")

    with pytest.raises(ModelUnavailable):
        cache.get_or_load("m", broken)
    assert "m" not in cache
    assert cache.get_or_load("m", lambda: FakeModel("m")).name == "m"


def test_release_empties_the_cuda_cache_for_cuda_models(spiral, monkeypatch):
    result, metadata = spiral
    model = LoadedModel.from_tensors(metadata, result.tensors)
    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    model.release()
    assert emptied == []
    model = LoadedModel.from_tensors(metadata, result.tensors)
    model.device = "cuda"  # as if loaded there; release must hand the memory back
    cache = ModelCache(capacity=1)
    cache.get_or_load("x", lambda: model)
    cache.get_or_load("y", lambda: FakeModel("y"))
    assert emptied == [True]
