import pytest
from pydantic import TypeAdapter

from workers.errors import InvalidParameter
from workers.training.configs import (
    DEFAULT_LIMITS,
    AdamSpec,
    RegressionConfig,
    SGDSpec,
    SpiralConfig,
    TrainingConfig,
    TrainingLimits,
    validate_training,
)


def test_defaults_are_the_notes():
    config = validate_training({"task": "spiral"})
    assert isinstance(config, SpiralConfig)
    assert (config.data.points_per_class, config.data.classes, config.data.noise) == (1000, 3, 0.2)
    assert config.data.seed == 12345
    assert config.model.hidden == [100] and config.batch_size is None
    assert config.optimizer == AdamSpec(lr=1e-3, weight_decay=1e-5)
    regression = validate_training({"task": "regression"})
    assert isinstance(regression, RegressionConfig)
    assert (regression.data.n_points, regression.data.noise, regression.data.seed) == (100, 0.3, 1)
    assert (regression.data.eval_x_min, regression.data.eval_x_max) == (-2.0, 2.0)
    assert regression.model.ensemble_size == 1 and regression.loss == "mse"


def test_round_trips_through_json():
    config = validate_training(
        {"task": "spiral", "optimizer": {"name": "sgd", "momentum": 0.9}, "batch_size": 64}
    )
    assert isinstance(config.optimizer, SGDSpec)
    assert validate_training(config.model_dump(mode="json")) == config


@pytest.mark.parametrize(
    ("raw", "parameter"),
    [
        ({}, "task"),
        ({"task": "circles"}, "task"),
        ({"task": "spiral", "epochs": 0}, "epochs"),
        ({"task": "spiral", "extra": 1}, "extra"),
        ({"task": "spiral", "model": {"hidden": [100, 0]}}, "model.hidden.1"),
        ({"task": "spiral", "model": {"activation": "gelu"}}, "model.activation"),
        ({"task": "spiral", "model": {"ensemble_size": 3}}, "model.ensemble_size"),
        ({"task": "spiral", "optimizer": {"lr": 0.1}}, "optimizer.name"),
        ({"task": "spiral", "optimizer": {"name": "adam", "momentum": 0.9}}, "optimizer.momentum"),
        ({"task": "spiral", "optimizer": {"name": "sgd", "lr": float("nan")}}, "optimizer.lr"),
        ({"task": "spiral", "data": {"classes": 1}}, "data.classes"),
        ({"task": "spiral", "data": {"seed": -1}}, "data.seed"),
        ({"task": "regression", "loss": "cross_entropy"}, "loss"),
        ({"task": "regression", "data": {"x_min": 1, "x_max": 1}}, "data"),
        ({"task": "regression", "device": "tpu"}, "device"),
    ],
)
def test_errors_name_the_dotted_field(raw, parameter):
    with pytest.raises(InvalidParameter) as caught:
        validate_training(raw)
    assert caught.value.parameter == parameter


@pytest.mark.parametrize(
    ("raw", "parameter"),
    [
        ({"task": "spiral", "epochs": 11}, "epochs"),
        ({"task": "spiral", "data": {"points_per_class": 40}}, "data.points_per_class"),
        ({"task": "regression", "data": {"n_points": 101}}, "data.n_points"),
        ({"task": "regression", "model": {"hidden": [8, 8, 8]}}, "model.hidden"),
        ({"task": "regression", "model": {"hidden": [8, 17]}}, "model.hidden.1"),
        ({"task": "regression", "model": {"ensemble_size": 4}}, "model.ensemble_size"),
    ],
)
def test_limits_tighten_the_schema(raw, parameter):
    limits = TrainingLimits(
        max_epochs=10, max_points=100, max_hidden_units=16, max_layers=2, max_ensemble=3
    )
    with pytest.raises(InvalidParameter, match="over the limit") as caught:
        validate_training({"epochs": 10, "report_every": 1, **raw}, limits)
    assert caught.value.parameter == parameter


def test_limits_cannot_exceed_the_schema_ceilings():
    with pytest.raises(ValueError, match="max_epochs"):
        TrainingLimits(max_epochs=DEFAULT_LIMITS.max_epochs + 1)


def test_json_schema_shows_bounds_and_the_discriminator():
    schema = TypeAdapter(TrainingConfig).json_schema()
    assert schema["discriminator"]["propertyName"] == "task"
    spiral = schema["$defs"]["SpiralConfig"]
    assert spiral["additionalProperties"] is False
    assert spiral["properties"]["epochs"]["maximum"] == DEFAULT_LIMITS.max_epochs
    hidden = schema["$defs"]["ModelSpec"]["properties"]["hidden"]
    assert hidden["maxItems"] == DEFAULT_LIMITS.max_layers
    assert hidden["items"]["maximum"] == DEFAULT_LIMITS.max_hidden_units
