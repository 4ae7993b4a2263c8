"""PNG plots of datasets, trained models and training curves.

Figures are built with :class:`matplotlib.figure.Figure` on the Agg canvas, never
through pyplot: pyplot keeps global state that is not safe to share between threads
and leaks figures that nobody closes. The look follows the notes' ``plot_lib``:
dark background, the Spectral colour map, axes off for the plane.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike
from torch import nn

from workers.errors import InvalidParameter
from workers.training.configs import SpiralConfig
from workers.training.datasets import make_cubic, make_spiral

if TYPE_CHECKING:
    from workers.serving import LoadedModel

__all__ = [
    "MODEL_PLOTS",
    "curves_png",
    "dataset_png",
    "decision_boundary_png",
    "model_plot_png",
    "regression_fit_png",
]

_BACKGROUND = "black"
_FOREGROUND = "0.85"
_CMAP = "Spectral"
_DPI = 100
_MESH_STEPS = 220  # the notes' 0.01 step over [-1.1, 1.1]


def dataset_png(X: ArrayLike, Y: ArrayLike, *, size_in: float = 6.0) -> bytes:
    """The spiral's points coloured by class (the notes' ``plot_data``)."""
    figure, axes = _plane(size_in)
    _scatter_classes(axes, _numpy(X), _numpy(Y))
    return _png(figure)


def decision_boundary_png(
    model: nn.Module, X: ArrayLike, Y: ArrayLike, *, size_in: float = 6.0
) -> bytes:
    """The class the model predicts over the plane, under the data (the notes' ``plot_model``).

    The mesh covers the data's range plus a 10% margin, so a spiral with more noise
    than the notes' is still all on the picture.
    """
    points, labels = _numpy(X), _numpy(Y)
    low, high = points.min(axis=0), points.max(axis=0)
    margin = 0.1 * np.maximum(high - low, 1e-6)
    xs = np.linspace(low[0] - margin[0], high[0] + margin[0], _MESH_STEPS)
    ys = np.linspace(low[1] - margin[1], high[1] + margin[1], _MESH_STEPS)
    xx, yy = np.meshgrid(xs, ys)
    grid = torch.from_numpy(np.column_stack((xx.ravel(), yy.ravel()))).float()
    device = next(model.parameters()).device
    with torch.inference_mode():
        predicted = model(grid.to(device)).argmax(dim=1).cpu().numpy().reshape(xx.shape)
    figure, axes = _plane(size_in)
    classes = int(max(labels.max(), predicted.max())) + 1
    axes.contourf(xx, yy, predicted, levels=np.arange(classes + 1) - 0.5, cmap=_CMAP, alpha=0.3)
    _scatter_classes(axes, points, labels, classes=classes)
    return _png(figure)


def curves_png(history: Sequence[Any], *, size_in: tuple[float, float] = (9.0, 4.0)) -> bytes:
    """Loss, and accuracy when there is one, against the epoch.

    Parameters
    ----------
    history : sequence
        Progress reports: objects or mappings with ``epoch``, ``loss`` and ``accuracy``
        (``None`` for regression), e.g. :class:`~workers.training.trainer.Progress`,
        the ``history`` in a model's metadata, or a job's events.
    """
    epochs = np.array([_field(row, "epoch") for row in history], dtype=float)
    losses = np.array([_field(row, "loss") for row in history], dtype=float)
    accuracies = [_field(row, "accuracy") for row in history]
    has_accuracy = bool(accuracies) and all(value is not None for value in accuracies)
    figure = _figure(size_in)
    panels = figure.subplots(1, 2 if has_accuracy else 1, squeeze=False)[0]
    _curve(panels[0], epochs, losses, "loss", "tab:orange")
    if losses.size and np.all(losses > 0) and losses.max() / losses.min() > 100:
        panels[0].set_yscale("log")
    if has_accuracy:
        _curve(panels[1], epochs, np.array(accuracies, dtype=float), "accuracy", "tab:cyan")
        panels[1].set_ylim(0, 1.02)
    figure.tight_layout()
    return _png(figure)


def regression_fit_png(
    X: ArrayLike,
    y: ArrayLike,
    xs: ArrayLike,
    mean: ArrayLike,
    std: ArrayLike | None = None,
    *,
    size_in: float = 6.0,
) -> bytes:
    """The data, the (ensemble's mean) prediction over ``xs``, and a ±1 and ±2 std band."""
    grid, centre = _numpy(xs).ravel(), _numpy(mean).ravel()
    figure = _figure((size_in, size_in))
    axes = figure.subplots()
    _style(axes)
    if std is not None:
        spread = _numpy(std).ravel()
        for k, alpha in ((2, 0.15), (1, 0.3)):
            axes.fill_between(
                grid,
                centre - k * spread,
                centre + k * spread,
                color="tab:green",
                alpha=alpha,
                linewidth=0,
                label=f"mean ± {k} std",
            )
    axes.plot(grid, centre, color="tab:orange", linewidth=2, label="prediction")
    axes.scatter(_numpy(X).ravel(), _numpy(y).ravel(), s=12, color=_FOREGROUND, label="data")
    axes.legend(loc="upper left", facecolor=_BACKGROUND, labelcolor=_FOREGROUND)
    return _png(figure)


def _numpy(values: ArrayLike) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _field(row: Any, name: str) -> Any:
    return row[name] if isinstance(row, Mapping) else getattr(row, name)


def _figure(size_in: tuple[float, float]) -> Figure:
    figure = Figure(figsize=size_in, dpi=_DPI, facecolor=_BACKGROUND)
    FigureCanvasAgg(figure)
    return figure


def _plane(size_in: float) -> tuple[Figure, Any]:
    figure = _figure((size_in, size_in))
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_facecolor(_BACKGROUND)
    axes.set_aspect("equal")
    axes.axis("off")
    return figure, axes


def _scatter_classes(axes: Any, X: np.ndarray, Y: np.ndarray, classes: int | None = None) -> None:
    classes = classes or int(Y.max()) + 1
    axes.axvline(0, color="0.15", linewidth=1, zorder=0)
    axes.axhline(0, color="0.15", linewidth=1, zorder=0)
    axes.scatter(X[:, 0], X[:, 1], c=Y, s=20, cmap=_CMAP, vmin=0, vmax=max(classes - 1, 1))


def _style(axes: Any) -> None:
    axes.set_facecolor(_BACKGROUND)
    axes.tick_params(colors=_FOREGROUND)
    for spine in axes.spines.values():
        spine.set_color("0.4")
    axes.grid(color="0.25", linewidth=0.5)


def _curve(axes: Any, epochs: np.ndarray, values: np.ndarray, name: str, colour: str) -> None:
    _style(axes)
    axes.plot(epochs, values, color=colour, linewidth=1.5)
    axes.set_xlabel("epoch", color=_FOREGROUND)
    axes.set_title(name, color=_FOREGROUND)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor=figure.get_facecolor())
    return buffer.getvalue()


MODEL_PLOTS = ("dataset", "decision-boundary", "curves", "fit")


def model_plot_png(model: LoadedModel, kind: str) -> bytes:
    """One of :data:`MODEL_PLOTS` for a loaded model, its data regenerated from its config.

    Raises
    ------
    InvalidParameter
        For ``kind`` when it does not apply to the model's task.
    """
    config = model.config
    if kind == "curves":
        return curves_png(model.metadata.get("history", []))
    if isinstance(config, SpiralConfig):
        X, Y = make_spiral(config.data)
        if kind == "dataset":
            return dataset_png(X, Y)
        if kind == "decision-boundary":
            return decision_boundary_png(model.module, X, Y)
        raise InvalidParameter("kind", f"`{kind}` is for regression models; try decision-boundary")
    if kind == "fit" or kind == "dataset":
        X, y = make_cubic(config.data)
        xs = np.linspace(config.data.eval_x_min, config.data.eval_x_max, 200, dtype=np.float32)
        prediction = model.forward(xs.reshape(-1, 1))
        return regression_fit_png(X, y, xs, prediction["mean"], prediction.get("std"))
    raise InvalidParameter("kind", f"`{kind}` is for spiral models; try fit")
