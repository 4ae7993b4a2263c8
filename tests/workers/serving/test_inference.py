import asyncio
import logging
import threading
import time

import numpy as np
import pytest
import torch

from workers.errors import InvalidParameter, ModelUnavailable
from workers.serving import DynamicBatcher, LoadedModel, batching
from workers.training.checkpoints import ModelStore
from workers.training.configs import validate_training
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
    weights = store.get("spiral-1").path / "weights.safetensors"
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


def run(main, timeout_s: float = 10.0):
    """``asyncio.run`` with a bound: a batcher that stops answering fails the test (every
    test here takes a second at most) rather than hanging it."""
    return asyncio.run(asyncio.wait_for(main, timeout_s))


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

    batcher, answers = run(main())
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

    small, answers = run(main())
    assert all(size <= 8 for size in runner.batches[:-1])
    assert sum(runner.batches) == 18 + 20
    for x, answer in zip(small, answers, strict=False):
        np.testing.assert_array_equal(answer["double"], x * 2)
    np.testing.assert_array_equal(answers[-1]["double"], np.full((20, 1), 2.0))


def _slow_forward(pass_s: float, passes: list[int]):
    def forward(batch):
        passes.append(len(batch))
        time.sleep(pass_s)
        return {"y": batch}

    return forward


def test_a_lone_client_is_never_delayed():
    passes: list[int] = []

    async def main():
        batcher = DynamicBatcher(_slow_forward(0.1, passes), max_queue_delay_ms=1000)
        waits = []
        for _ in range(4):
            started = time.perf_counter()
            await batcher.submit(np.zeros((1, 1)))
            waits.append(time.perf_counter() - started)
        await batcher.aclose()
        return waits

    waits = run(main())
    # One pass each (0.1 s); a batch that waited for company would add up to a pass more.
    assert passes == [1, 1, 1, 1]
    assert sorted(waits)[1] < 0.19, waits


def test_clients_that_come_back_one_by_one_are_gathered_into_one_pass_again():
    passes: list[int] = []
    clients, rounds = 8, 5

    async def main():
        batcher = DynamicBatcher(_slow_forward(0.1, passes), max_queue_delay_ms=1000)

        async def client(n: int) -> None:
            for _ in range(rounds):
                await batcher.submit(np.full((1, 1), float(n)))
                await asyncio.sleep(0.002 * n)  # answers go out, requests come back, in turn

        await asyncio.gather(*(client(n) for n in range(clients)))
        await batcher.aclose()

    run(main())
    # With no wait (or a wait for any company at all) the first client back would run
    # alone and the other seven in the next pass.
    assert passes == [clients] * rounds


def test_a_batch_waits_at_most_one_pass_and_forgets_the_crowd(monkeypatch):
    monkeypatch.setattr(batching, "PEAK_WINDOW_S", 0.5)
    passes: list[int] = []

    async def main():
        batcher = DynamicBatcher(_slow_forward(0.1, passes), max_queue_delay_ms=1000)
        await asyncio.gather(*(batcher.submit(np.zeros((1, 1))) for _ in range(6)))
        started = time.perf_counter()
        await batcher.submit(np.zeros((1, 1)))  # waits for five that do not come
        after_crowd = time.perf_counter() - started
        await asyncio.sleep(0.6)
        started = time.perf_counter()
        await batcher.submit(np.zeros((1, 1)))
        later = time.perf_counter() - started
        await batcher.aclose()
        return after_crowd, later

    after_crowd, later = run(main())
    assert passes == [6, 1, 1]
    assert 0.19 <= after_crowd < 0.6  # a pass of waiting (not the 1 s cap), then its pass
    assert later < 0.19  # the crowd is forgotten: no wait (a wait would make it >= 0.2)


def test_with_no_queue_delay_a_batch_never_waits():
    passes: list[int] = []

    async def main():
        batcher = DynamicBatcher(_slow_forward(0.1, passes), max_queue_delay_ms=0)
        await asyncio.gather(*(batcher.submit(np.zeros((1, 1))) for _ in range(6)))
        started = time.perf_counter()
        await batcher.submit(np.zeros((1, 1)))
        waited = time.perf_counter() - started
        await batcher.aclose()
        return waited

    assert run(main()) < 0.19
    assert passes == [6, 1]


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

    good, bad, errors = run(main())
    assert good["classes"].shape == (1,)
    assert isinstance(bad, InvalidParameter)
    assert [str(error) for error in errors] == ["device lost", "device lost"]


class GatedForward:
    """A forward pass that waits for ``gate`` (5 s at most) and returns its batch."""

    def __init__(self):
        self.gate = threading.Event()

    def __call__(self, batch):
        self.gate.wait(5)
        return {"y": batch}


def test_closing_fails_waiting_requests():
    slow = GatedForward()
    gate = slow.gate

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

    outcomes = run(main())
    assert all(isinstance(outcome, ModelUnavailable) for outcome in outcomes)


class OverlapProbe:
    """A slow forward that records how many passes run at once, and when."""

    def __init__(self, delay_s=0.15):
        self.delay_s = delay_s
        self.lock = threading.Lock()
        self.active = 0
        self.most_active = 0
        self.spans = []

    def __call__(self, batch):
        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        started = time.perf_counter()
        time.sleep(self.delay_s)
        with self.lock:
            self.active -= 1
            self.spans.append((started, time.perf_counter(), len(batch)))
        return {"y": batch * 10}


def test_max_concurrent_batches_must_be_at_least_one():
    with pytest.raises(InvalidParameter, match="max_concurrent_batches"):
        DynamicBatcher(lambda b: {"y": b}, max_concurrent_batches=0)


@pytest.mark.parametrize("concurrency", [1, 2])
def test_concurrent_batches_overlap_and_answer_their_own_requests(concurrency):
    probe = OverlapProbe()

    async def main():
        batcher = DynamicBatcher(
            probe, max_batch_size=4, max_queue_delay_ms=0, max_concurrent_batches=concurrency
        )
        # 12 one-row requests, at most 4 rows a batch: 3 batches of 4.
        inputs = [np.full((1, 1), float(n)) for n in range(12)]
        started = time.perf_counter()
        answers = await asyncio.gather(*(batcher.submit(x) for x in inputs))
        elapsed = time.perf_counter() - started
        await batcher.aclose()
        return batcher, inputs, answers, elapsed

    batcher, inputs, answers, elapsed = run(main())
    for x, answer in zip(inputs, answers, strict=True):
        np.testing.assert_array_equal(answer["y"], x * 10)
    assert sorted(rows for _, _, rows in probe.spans) == [4, 4, 4]
    assert batcher.forward_calls == 3 and batcher.requests == 12
    assert probe.most_active == concurrency
    if concurrency == 2:
        (_, first_stop, _), (second_start, _, _) = sorted(probe.spans)[:2]
        assert second_start < first_stop  # the first two batches ran at the same time
    else:
        assert elapsed >= 3 * probe.delay_s  # one after another


def test_a_free_runner_takes_what_queued_while_both_were_busy():
    probe = OverlapProbe(delay_s=0.1)

    async def main():
        batcher = DynamicBatcher(
            probe, max_batch_size=64, max_queue_delay_ms=0, max_concurrent_batches=2
        )
        first = asyncio.ensure_future(batcher.submit(np.zeros((1, 1))))
        await asyncio.sleep(0.02)
        second = asyncio.ensure_future(batcher.submit(np.ones((1, 1))))
        await asyncio.sleep(0.02)
        # Both runners busy: these five queue and run together in the next free one.
        later = [asyncio.ensure_future(batcher.submit(np.full((1, 1), n))) for n in range(2, 7)]
        answers = await asyncio.gather(first, second, *later)
        await batcher.aclose()
        return answers

    answers = run(main())
    assert [float(a["y"][0, 0]) for a in answers] == [n * 10.0 for n in range(7)]
    assert [rows for _, _, rows in sorted(probe.spans)] == [1, 1, 5]
    assert probe.most_active == 2


def test_a_failed_pass_fails_only_its_own_batch_when_batches_run_concurrently():
    def forward(batch):
        time.sleep(0.05)
        if (batch < 0).any():
            raise RuntimeError("bad batch")
        return {"y": batch}

    async def main():
        batcher = DynamicBatcher(
            forward, max_batch_size=1, max_queue_delay_ms=0, max_concurrent_batches=2
        )
        outcomes = await asyncio.gather(
            batcher.submit(np.full((1, 1), -1.0)),
            batcher.submit(np.full((1, 1), 2.0)),
            batcher.submit(np.full((1, 1), 3.0)),
            return_exceptions=True,
        )
        await batcher.aclose()
        return outcomes

    bad, two, three = run(main())
    assert isinstance(bad, RuntimeError) and str(bad) == "bad batch"
    assert float(two["y"][0, 0]) == 2.0 and float(three["y"][0, 0]) == 3.0


def test_draining_waits_for_every_running_batch_and_the_queue():
    probe = OverlapProbe(delay_s=0.1)

    async def main():
        batcher = DynamicBatcher(
            probe, max_batch_size=1, max_queue_delay_ms=0, max_concurrent_batches=2
        )
        futures = [asyncio.ensure_future(batcher.submit(np.full((1, 1), n))) for n in range(3)]
        await asyncio.sleep(0.02)  # two passes running, one request queued
        assert probe.active == 2
        await batcher.aclose(drain=True)
        with pytest.raises(ModelUnavailable):
            await batcher.submit(np.zeros((1, 1)))
        return await asyncio.gather(*futures)

    answers = run(main())
    assert [float(a["y"][0, 0]) for a in answers] == [0.0, 10.0, 20.0]
    assert len(probe.spans) == 3


def test_draining_is_woken_by_the_last_batch_not_by_polling(monkeypatch):
    gated = GatedForward()

    async def main():
        batcher = DynamicBatcher(gated, max_batch_size=1, max_queue_delay_ms=0)
        futures = [asyncio.ensure_future(batcher.submit(np.full((1, 1), n))) for n in range(2)]
        await asyncio.sleep(0.02)  # one pass running (held at the gate), one queued

        async def no_polling(*args, **kwargs):
            raise AssertionError("draining polled")

        monkeypatch.setattr(asyncio, "sleep", no_polling)
        asyncio.get_running_loop().call_soon(gated.gate.set)
        await batcher.aclose(drain=True)
        monkeypatch.undo()
        return await asyncio.gather(*futures)

    answers = run(main())
    assert [float(a["y"][0, 0]) for a in answers] == [0.0, 1.0]


def test_close_from_synchronous_code_fails_the_queue_at_once():
    gated = GatedForward()

    async def main():
        batcher = DynamicBatcher(gated, max_batch_size=1, max_queue_delay_ms=0)
        futures = [asyncio.ensure_future(batcher.submit(np.zeros((1, 1)))) for _ in range(2)]
        await asyncio.sleep(0.02)
        batcher.close()
        gated.gate.set()
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        await batcher.aclose()  # closing twice is harmless
        return outcomes

    outcomes = run(main())
    assert all(isinstance(outcome, ModelUnavailable) for outcome in outcomes)


def test_closing_fails_every_running_batch_and_the_queue():
    gate = threading.Event()
    started = []

    def slow(batch):
        started.append(len(batch))
        gate.wait(5)
        return {"y": batch}

    async def main():
        batcher = DynamicBatcher(
            slow, max_batch_size=1, max_queue_delay_ms=0, max_concurrent_batches=2
        )
        futures = [asyncio.ensure_future(batcher.submit(np.zeros((1, 1)))) for _ in range(3)]
        await asyncio.sleep(0.05)
        await batcher.aclose()
        gate.set()
        return await asyncio.gather(*futures, return_exceptions=True)

    outcomes = run(main())
    assert started == [1, 1]  # the third never ran
    assert all(isinstance(outcome, ModelUnavailable) for outcome in outcomes)


def test_release_empties_the_cuda_cache_for_cuda_models(spiral, monkeypatch):
    result, metadata = spiral
    model = LoadedModel.from_tensors(metadata, result.tensors)
    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    model.release()
    assert emptied == []
    model = LoadedModel.from_tensors(metadata, result.tensors)
    model.device = "cuda"  # as if loaded there; release must hand the memory back
    model.release()
    assert emptied == [True]


def test_refusals_after_closing_say_the_model_was_unloaded():
    gated = GatedForward()

    async def main():
        batcher = DynamicBatcher(gated, max_batch_size=1, max_queue_delay_ms=0)
        running = asyncio.ensure_future(batcher.submit(np.zeros((1, 1))))
        queued = asyncio.ensure_future(batcher.submit(np.zeros((1, 1))))
        await asyncio.sleep(0.02)
        batcher.close()
        gated.gate.set()
        outcomes = await asyncio.gather(running, queued, return_exceptions=True)
        with pytest.raises(ModelUnavailable) as refused:
            await batcher.submit(np.zeros((1, 1)))
        return outcomes, refused.value

    outcomes, refused = run(main())
    assert [error.detail for error in outcomes] == ["the model was unloaded"] * 2
    assert refused.detail == "the model was unloaded; retry the request"


def test_aclose_returns_once_the_batchers_own_tasks_have_ended():
    gated = GatedForward()

    async def main():
        before = asyncio.all_tasks()
        batcher = DynamicBatcher(gated, max_batch_size=1, max_queue_delay_ms=0)
        futures = [asyncio.ensure_future(batcher.submit(np.zeros((1, 1)))) for _ in range(2)]
        await asyncio.sleep(0.02)  # one pass running, one request queued
        await batcher.aclose()
        left = asyncio.all_tasks() - before - set(futures)  # the worker and the batch tasks
        gated.gate.set()
        await asyncio.gather(*futures, return_exceptions=True)
        return left

    assert run(main()) == set()


def test_draining_refuses_new_requests_while_it_waits():
    gated = GatedForward()

    async def main():
        batcher = DynamicBatcher(gated, max_batch_size=1, max_queue_delay_ms=0)
        running = asyncio.ensure_future(batcher.submit(np.ones((1, 1))))
        await asyncio.sleep(0.02)
        draining = asyncio.ensure_future(batcher.aclose(drain=True))
        await asyncio.sleep(0.02)
        assert not draining.done()  # the pass is still held at the gate
        with pytest.raises(ModelUnavailable):
            await batcher.submit(np.zeros((1, 1)))
        gated.gate.set()
        await draining
        return await running

    assert float(run(main())["y"][0, 0]) == 1.0


def test_draining_lets_a_lone_running_batch_finish():
    gated = GatedForward()

    async def main():
        batcher = DynamicBatcher(gated, max_queue_delay_ms=0)
        running = asyncio.ensure_future(batcher.submit(np.full((1, 1), 7.0)))
        await asyncio.sleep(0.02)  # running, nothing queued
        asyncio.get_running_loop().call_later(0.05, gated.gate.set)
        await batcher.aclose(drain=True)
        return await running

    assert float(run(main())["y"][0, 0]) == 7.0


def test_draining_runs_a_gathering_batch_at_once():
    starts: list[float] = []

    def forward(batch):
        starts.append(time.perf_counter())
        time.sleep(0.3)
        return {"y": batch}

    async def main():
        batcher = DynamicBatcher(forward, max_queue_delay_ms=1000)
        await asyncio.gather(*(batcher.submit(np.zeros((1, 1))) for _ in range(4)))
        # The crowd of 4 is remembered: a lone request waits up to a pass (0.3 s) for 3 more.
        lone = asyncio.ensure_future(batcher.submit(np.full((1, 1), 5.0)))
        await asyncio.sleep(0.02)
        closing = time.perf_counter()
        await batcher.aclose(drain=True)
        return closing, await lone

    closing, answer = run(main())
    assert float(answer["y"][0, 0]) == 5.0
    assert len(starts) == 2
    assert starts[1] - closing < 0.15  # not the rest of the 0.3 s wait


def test_rows_queued_while_a_pass_runs_count_toward_the_peak_with_the_running_ones():
    passes: list[int] = []

    async def main():
        batcher = DynamicBatcher(_slow_forward(0.2, passes), max_queue_delay_ms=1000)
        first = asyncio.ensure_future(batcher.submit(np.zeros((1, 1))))  # runs at once
        await asyncio.sleep(0.05)
        # 1 running + 2 waiting: 3 rows held at once, so the next batch expects 3.
        queued = [asyncio.ensure_future(batcher.submit(np.zeros((1, 1)))) for _ in range(2)]
        await asyncio.sleep(0.2)  # the first pass is over; the batch of 2 waits for one more
        late = asyncio.ensure_future(batcher.submit(np.zeros((1, 1))))
        await asyncio.gather(first, *queued, late)
        await batcher.aclose()

    run(main())
    assert passes == [1, 3]


def test_reaching_the_peak_again_renews_it(monkeypatch):
    monkeypatch.setattr(batching, "PEAK_WINDOW_S", 0.5)
    passes: list[int] = []

    async def main():
        batcher = DynamicBatcher(_slow_forward(0.1, passes), max_queue_delay_ms=1000)
        await asyncio.gather(*(batcher.submit(np.zeros((1, 1))) for _ in range(3)))
        await asyncio.sleep(0.3)
        # 0.4 s after the first crowd of 3, a second crowd of 3 sets the peak anew.
        await asyncio.gather(*(batcher.submit(np.zeros((1, 1))) for _ in range(3)))
        await asyncio.sleep(0.15)
        # 0.65 s after the first crowd, 0.25 s after the second: the peak is still 3.
        started = time.perf_counter()
        await batcher.submit(np.zeros((1, 1)))
        waited = time.perf_counter() - started
        await batcher.aclose()
        return waited

    waited = run(main())
    assert passes == [3, 3, 1]
    assert waited >= 0.19  # a pass of waiting for the crowd, then its own pass


@pytest.mark.parametrize(
    ("option", "value", "reason"),
    [
        ("max_batch_size", 0, "must be >= 1"),
        ("max_queue_delay_ms", -1, "must be >= 0"),
        ("max_concurrent_batches", 0, "must be >= 1"),
    ],
)
def test_bad_batcher_options_name_the_option(option, value, reason):
    with pytest.raises(InvalidParameter) as caught:
        DynamicBatcher(lambda b: {"y": b}, **{option: value})
    assert caught.value.parameter == option
    assert caught.value.detail == f"invalid `{option}`: {reason}"


def test_by_default_a_pass_holds_at_most_256_rows_and_the_answer_is_whole():
    passes: list[int] = []

    async def main():
        batcher = DynamicBatcher(_slow_forward(0, passes))
        answer = await batcher.submit(np.arange(300.0).reshape(300, 1))
        await batcher.aclose()
        return answer

    np.testing.assert_array_equal(run(main())["y"], np.arange(300.0).reshape(300, 1))
    assert passes == [256, 44]


def test_a_batch_waits_at_most_max_queue_delay_ms_when_passes_are_longer():
    passes: list[int] = []

    async def main():
        batcher = DynamicBatcher(_slow_forward(0.3, passes), max_queue_delay_ms=50)
        await asyncio.gather(*(batcher.submit(np.zeros((1, 1))) for _ in range(4)))
        started = time.perf_counter()
        await batcher.submit(np.zeros((1, 1)))  # waits for three that do not come
        waited = time.perf_counter() - started
        await batcher.aclose()
        return waited

    waited = run(main())
    assert passes == [4, 1]
    assert waited < 0.5  # 50 ms of waiting and its pass, not a pass (0.3 s) of waiting


def test_rows_running_in_overlapping_batches_all_count():
    starts: list[tuple[float, int]] = []

    def forward(batch):
        starts.append((time.perf_counter(), len(batch)))
        time.sleep(0.3)
        return {"y": batch}

    def rows(n):
        return np.zeros((n, 1))

    async def main():
        batcher = DynamicBatcher(forward, max_queue_delay_ms=1000, max_concurrent_batches=2)
        await batcher.submit(rows(1))  # a pass to measure: batches now wait up to 0.3 s
        a = asyncio.ensure_future(batcher.submit(rows(2)))
        await asyncio.sleep(0.05)
        b = asyncio.ensure_future(batcher.submit(rows(3)))  # runs beside a
        await asyncio.sleep(0.05)
        c = asyncio.ensure_future(batcher.submit(rows(1)))  # both runners busy: queues
        await a
        # 6 rows were held at once, 3 still run (b): c's batch expects 3 rows, not more.
        await asyncio.sleep(0.1)
        sent = time.perf_counter()
        d = asyncio.ensure_future(batcher.submit(rows(2)))
        await asyncio.gather(b, c, d)
        await batcher.aclose()
        return sent

    sent = run(main())
    assert [size for _, size in starts] == [1, 2, 3, 3]
    assert starts[-1][0] - sent < 0.1  # it ran as soon as d came, not at the end of its wait


def test_a_batcher_leaves_no_error_in_the_event_loops_log(caplog):
    async def main():
        batcher = DynamicBatcher(lambda b: {"y": b}, max_batch_size=2, max_queue_delay_ms=0)
        await asyncio.gather(*(batcher.submit(np.zeros((1, 1))) for _ in range(5)))
        pending = asyncio.ensure_future(batcher.submit(np.zeros((1, 1))))
        await asyncio.sleep(0)  # queued: the drain waits for it
        await batcher.aclose(drain=True)
        await pending

    with caplog.at_level(logging.WARNING):
        run(main())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
