import pytest
import torch
from torch import nn

from workers.training.configs import ModelSpec, RegressionData, SpiralData
from workers.training.datasets import make_cubic, make_spiral, seeded_generator
from workers.training.models import build_model


@pytest.mark.parametrize(
    ("seed", "n", "c", "noise"),
    [(12345, 1000, 3, 0.2), (0, 50, 2, 0.0), (7, 200, 5, 0.5), (2**32 - 1, 33, 4, 1.7)],
)
def test_spiral_is_bit_identical_to_the_notes(notes, seed, n, c, noise):
    X_ref, Y_ref = notes.spiral(seed=seed, N=n, C=c, noise=noise)
    X, Y = make_spiral(SpiralData(points_per_class=n, classes=c, noise=noise, seed=seed))
    assert X.dtype == torch.float32 and Y.dtype == torch.int64
    assert X.shape == (n * c, 2) and Y.shape == (n * c,)
    assert torch.equal(X, X_ref)
    assert torch.equal(Y, Y_ref)


def test_generator_continues_where_the_notes_global_stream_does(notes):
    # The notes build the model right after the data, from the same stream.
    notes.spiral()
    reference = nn.Sequential(nn.Linear(2, 100), nn.Linear(100, 3))
    generator = seeded_generator(12345)
    make_spiral(SpiralData(), generator)
    model = build_model(ModelSpec(hidden=[100], activation="identity"), 2, 3, generator=generator)
    for (name, expected), actual in zip(
        reference.state_dict().items(), model.state_dict().values(), strict=True
    ):
        assert torch.equal(actual, expected), name


def test_cubic_is_bit_identical_to_the_notes(notes):
    X_ref, y_ref = notes.cubic()
    X, y = make_cubic(RegressionData())
    assert X.shape == y.shape == (100, 1)
    assert torch.equal(X, X_ref)
    assert torch.equal(y, y_ref)


def test_cubic_follows_its_spec():
    X, y = make_cubic(RegressionData(n_points=11, x_min=0, x_max=2, noise=0.0, seed=3))
    torch.testing.assert_close(X.squeeze(1), torch.linspace(0, 2, 11))
    torch.testing.assert_close(y, X.pow(3))


def test_datasets_leave_the_global_generator_alone():
    torch.manual_seed(99)
    expected = torch.rand(3)
    torch.manual_seed(99)
    make_spiral(SpiralData(points_per_class=10))
    make_cubic(RegressionData())
    assert torch.equal(torch.rand(3), expected)
