import io
import time

import numpy as np
import pytest
from PIL import Image

from workers.serving import LoadedModel
from workers.training.configs import validate_training
from workers.training.datasets import make_cubic, make_spiral
from workers.training.plots import (
    curves_png,
    dataset_png,
    decision_boundary_png,
    regression_fit_png,
)
from workers.training.trainer import build_metadata, train


@pytest.fixture(scope="module")
def spiral():
    config = validate_training({"task": "spiral", "epochs": 20, "device": "cpu"})
    X, Y = make_spiral(config.data)
    return train(config), X, Y


def image(png):
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    picture = Image.open(io.BytesIO(png))
    picture.load()
    return picture


def colours(picture):
    return len(np.unique(np.asarray(picture.convert("RGB")).reshape(-1, 3), axis=0))


def timed(draw):
    draw()  # the first figure pays for font loading
    started = time.perf_counter()
    png = draw()
    return png, time.perf_counter() - started


def test_dataset_scatter(spiral):
    _, X, Y = spiral
    png, seconds = timed(lambda: dataset_png(X, Y))
    picture = image(png)
    assert picture.size == (600, 600) and colours(picture) > 3
    assert seconds < 1.0  # about 0.1 s on a quiet machine


def test_decision_boundary(spiral):
    result, X, Y = spiral
    png, seconds = timed(lambda: decision_boundary_png(result.model, X, Y))
    assert image(png).size == (600, 600)
    assert seconds < 1.0
    # numpy inputs work as well as tensors
    image(decision_boundary_png(result.model, X.numpy(), Y.numpy()))


def test_curves_from_progress_or_json(spiral):
    result, _, _ = spiral
    png, seconds = timed(lambda: curves_png(result.history))
    assert image(png).size == (900, 400) and seconds < 1.0
    rows = build_metadata(validate_training({"task": "spiral"}), result)["history"]
    image(curves_png(rows))
    image(curves_png([{"epoch": 0, "loss": 1.0, "accuracy": None}]))


def test_regression_fit_with_spread():
    config = validate_training(
        {"task": "regression", "model": {"ensemble_size": 3}, "epochs": 20, "device": "cpu"}
    )
    result = train(config)
    model = LoadedModel.from_tensors(build_metadata(config, result), result.tensors)
    X, y = make_cubic(config.data)
    xs = np.linspace(config.data.eval_x_min, config.data.eval_x_max, 401)
    prediction = model.predict(xs)
    png, seconds = timed(
        lambda: regression_fit_png(X, y, xs, prediction["mean"], prediction["std"])
    )
    assert image(png).size == (600, 600) and seconds < 1.0
    image(regression_fit_png(X, y, xs, prediction["mean"]))
