import json

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F

from workers.errors import InvalidParameter, TensorlensError
from workers.training.configs import ModelSpec, validate_training
from workers.training.datasets import make_cubic, seeded_generator
from workers.training.models import Ensemble, build_model, parameter_count
from workers.training.trainer import (
    Progress,
    TrainingCancelled,
    TrainingDiverged,
    build_metadata,
    resolve_device,
    train,
)

NOTES_LINEAR = {
    "task": "spiral",
    "model": {"hidden": [100], "activation": "identity"},
    "optimizer": {"name": "sgd", "lr": 1e-3, "weight_decay": 1e-5},
    "epochs": 1000,
    "device": "cpu",
}
NOTES_RELU = {
    **NOTES_LINEAR,
    "model": {"hidden": [100], "activation": "relu"},
    "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 1e-5},
}
SMALL_SPIRAL = {
    "task": "spiral",
    "data": {"points_per_class": 100},
    "model": {"hidden": [32, 32]},
    "epochs": 30,
    "report_every": 10,
    "device": "cpu",
}


def notes_line(progress: Progress) -> str:
    # The notes print with %-formatting; compare what they print.
    return "[EPOCH]: %i, [LOSS]: %.6f, [ACCURACY]: %.3f" % (  # noqa: UP031
        progress.epoch,
        progress.loss,
        progress.accuracy,
    )


def run(raw, **kwargs):
    return train(validate_training(raw), **kwargs)


@pytest.mark.slow
def test_reproduces_the_notes_linear_run_to_the_printed_digit():
    reports = []
    result = run({**NOTES_LINEAR, "report_every": 100}, report=reports.append)
    assert notes_line(reports[0]) == "[EPOCH]: 0, [LOSS]: 1.109827, [ACCURACY]: 0.333"
    assert reports[-1].epoch == 999
    assert "%.6f" % reports[-1].loss == "0.861541"  # noqa: UP031
    assert "%.3f" % reports[-1].accuracy == "0.504"  # noqa: UP031
    assert notes_line(reports[-1]) == "[EPOCH]: 999, [LOSS]: 0.861541, [ACCURACY]: 0.504"
    assert result.architecture == (
        "Sequential(\n"
        "  (0): Linear(in_features=2, out_features=100, bias=True)\n"
        "  (1): Linear(in_features=100, out_features=3, bias=True)\n"
        ")"
    )
    assert result.parameter_count == 2 * 100 + 100 + 100 * 3 + 3


def test_weights_are_the_notes_weights_bit_for_bit(notes):
    # The trainer's SGD and its denormal flush must not change a bit of the notes' run.
    lines, reference = notes.linear_run(40)
    reports = []
    result = run({**NOTES_LINEAR, "epochs": 40, "report_every": 1}, report=reports.append)
    assert [notes_line(progress) for progress in reports] == lines
    assert result.tensors.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(result.tensors[name], tensor), name


@pytest.mark.slow
def test_relu_network_under_adam_separates_the_spiral():
    result = run({**NOTES_RELU, "report_every": 1000})
    assert result.final.epoch == 999
    assert result.final.accuracy >= 0.92


@pytest.mark.parametrize(
    "raw",
    [
        SMALL_SPIRAL,
        {**SMALL_SPIRAL, "batch_size": 64, "optimizer": {"name": "sgd", "momentum": 0.9}},
        {"task": "regression", "model": {"ensemble_size": 3}, "epochs": 20, "device": "cpu"},
    ],
    ids=["full-batch", "mini-batch", "ensemble"],
)
def test_same_config_gives_the_same_checkpoint_bytes(raw):
    first = safetensors.torch.save(run(raw).tensors)
    second = safetensors.torch.save(run(raw).tensors)
    assert first == second


def test_reports_every_interval_and_at_the_last_epoch():
    reports = []
    result = run({**SMALL_SPIRAL, "epochs": 25, "report_every": 10}, report=reports.append)
    assert [progress.epoch for progress in reports] == [0, 10, 20, 24]
    assert result.history == reports
    assert all(0 <= progress.accuracy <= 1 for progress in reports)
    elapsed = [progress.elapsed_s for progress in reports]
    assert elapsed == sorted(elapsed)


def test_mini_batches_train():
    result = run({**SMALL_SPIRAL, "batch_size": 32, "epochs": 40})
    assert result.final.loss < result.history[0].loss
    assert result.final.accuracy > 0.5


@pytest.mark.parametrize(
    "raw",
    [
        {"task": "regression", "optimizer": {"name": "sgd", "lr": 10}, "epochs": 200},
        {
            "task": "regression",
            "optimizer": {"name": "sgd", "lr": 10},
            "model": {"ensemble_size": 2},
        },
    ],
)
def test_a_diverging_loss_fails_the_training(raw):
    reports = []
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf) by epoch \d+") as caught:
        run({**raw, "report_every": 10, "device": "cpu"}, report=reports.append)
    assert isinstance(caught.value, TensorlensError)
    assert caught.value.context["epoch"] == reports[-1].epoch + 10


def test_should_stop_cancels_at_the_next_report():
    reports = []
    with pytest.raises(TrainingCancelled) as caught:
        run(
            {**SMALL_SPIRAL, "epochs": 1000, "report_every": 5},
            report=reports.append,
            should_stop=lambda: len(reports) >= 3,
        )
    assert caught.value.context == {"epoch": 10}
    assert [progress.epoch for progress in reports] == [0, 5, 10]


def test_errors_survive_pickling():
    import pickle

    error = pickle.loads(pickle.dumps(TrainingDiverged("loss became nan by epoch 3", epoch=3)))
    assert isinstance(error, TrainingDiverged) and error.context == {"epoch": 3}


def test_training_leaves_denormals_enabled_afterwards():
    run({**SMALL_SPIRAL, "epochs": 1})
    assert (torch.tensor([1e-39]) * 1.0).item() != 0.0


def test_state_is_contiguous_on_the_cpu_and_the_model_in_eval_mode():
    result = run(SMALL_SPIRAL)
    assert all(t.device.type == "cpu" and t.is_contiguous() for t in result.tensors.values())
    assert not result.model.training
    assert (
        result.parameter_count
        == parameter_count(result.model)
        == 2 * 32 + 32 + 32 * 32 + 32 + 32 * 3 + 3
    )


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_vectorised_ensemble_matches_training_members_one_by_one(activation):
    raw = {
        "task": "regression",
        "model": {"hidden": [64], "activation": activation, "ensemble_size": 3},
        "epochs": 300,
        "report_every": 300,
        "device": "cpu",
    }
    config = validate_training(raw)
    result = train(config)
    assert isinstance(result.model, Ensemble)

    # The notes' way: build the networks in a loop from the seeded stream, train each.
    generator = seeded_generator(config.data.seed)
    X, y = make_cubic(config.data, generator)
    reference = build_model(config.model, 1, 1, generator=generator)
    losses = []  # each member's loss at each epoch
    for member in reference.members:
        optimizer = torch.optim.Adam(member.parameters(), lr=1e-3, weight_decay=1e-5)
        losses.append([])
        for _ in range(config.epochs):
            loss = F.mse_loss(member(X), y)
            losses[-1].append(loss.item())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    # The ensemble reports its members' mean loss, as the notes would average them.
    assert [progress.epoch for progress in result.history] == [0, 299]
    mean_losses = [sum(member[epoch] for member in losses) / len(losses) for epoch in (0, 299)]
    assert [progress.loss for progress in result.history] == pytest.approx(mean_losses, rel=1e-4)
    # Batched matmuls round differently from one-by-one ones: close, not equal.
    torch.testing.assert_close(result.tensors, dict(reference.state_dict()))
    xs = torch.linspace(-2, 2, 101).unsqueeze(1)
    with torch.no_grad():
        torch.testing.assert_close(result.model(xs), reference(xs))
    assert result.final.accuracy is None


def test_architecture_and_metadata():
    config = validate_training(
        {"task": "regression", "model": {"ensemble_size": 2, "activation": "tanh"}, "epochs": 3}
    )
    result = train(config)
    assert "2 x Sequential" in result.architecture and "Tanh()" in result.architecture
    metadata = build_metadata(config, result)
    assert json.loads(json.dumps(metadata, allow_nan=False)) == metadata
    assert metadata["config"] == config.model_dump(mode="json")
    assert metadata["dataset"] == config.data.model_dump(mode="json")
    assert metadata["parameter_count"] == result.parameter_count
    assert metadata["torch_version"] == torch.__version__
    assert metadata["final_metrics"]["epoch"] == 2
    assert [row["epoch"] for row in metadata["history"]] == [0, 2]


def test_build_model_prints_like_the_notes():
    assert str(build_model(ModelSpec(hidden=[100], activation="identity"), 2, 3)) == (
        "Sequential(\n"
        "  (0): Linear(in_features=2, out_features=100, bias=True)\n"
        "  (1): Linear(in_features=100, out_features=3, bias=True)\n"
        ")"
    )
    deep = build_model(ModelSpec(hidden=[8, 4], activation="sigmoid"), 2, 5)
    assert [type(layer).__name__ for layer in deep] == [
        "Linear",
        "Sigmoid",
        "Linear",
        "Sigmoid",
        "Linear",
    ]
    assert str(build_model(ModelSpec(hidden=[]), 2, 3)) == (
        "Sequential(\n  (0): Linear(in_features=2, out_features=3, bias=True)\n)"
    )


def test_device_resolution():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InvalidParameter):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda_is_refused():
    with pytest.raises(InvalidParameter, match="CUDA is not available"):
        run({**SMALL_SPIRAL, "device": "cuda"})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_trains_on_cuda_and_returns_cpu_tensors():
    cpu = run({**SMALL_SPIRAL, "device": "cpu"})
    cuda = run({**SMALL_SPIRAL, "device": "cuda"})
    assert cuda.device == "cuda"
    assert all(t.device.type == "cpu" for t in cuda.tensors.values())
    torch.testing.assert_close(cuda.tensors, cpu.tensors, rtol=1e-3, atol=1e-4)
    assert [p.epoch for p in cuda.history] == [p.epoch for p in cpu.history]
