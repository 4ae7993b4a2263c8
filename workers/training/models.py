"""Fully connected networks as the notes build them, and ensembles of them."""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import nn

from workers.training.configs import (
    ModelSpec,
    RegressionConfig,
    RegressionModelSpec,
    SpiralConfig,
)
from workers.training.datasets import SPIRAL_FEATURES

__all__ = ["Ensemble", "build_model", "build_network", "io_features", "parameter_count"]

_ACTIVATIONS: dict[str, type[nn.Module] | None] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    # No module at all, so that print(model) shows the notes' linear model verbatim.
    "identity": None,
}


class Ensemble(nn.Module):
    """Independently initialised networks of one architecture, applied side by side.

    ``forward`` returns the members' outputs stacked on a new leading dimension,
    ``(k, n, out_features)``.
    """

    def __init__(self, members: list[nn.Sequential]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members])


def _linear(
    in_features: int, out_features: int, generator: torch.Generator | None, initialize: bool
) -> nn.Linear:
    if generator is None and initialize:
        return nn.Linear(in_features, out_features)
    layer = torch.nn.utils.skip_init(nn.Linear, in_features, out_features)
    if initialize:
        # nn.Linear.reset_parameters, drawing from `generator` in the same order so
        # the weights are those the notes get from the seeded global generator.
        nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
        bound = 1 / math.sqrt(in_features) if in_features > 0 else 0
        nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
    return layer


def build_network(
    spec: ModelSpec,
    in_features: int,
    out_features: int,
    *,
    generator: torch.Generator | None = None,
    initialize: bool = True,
) -> nn.Sequential:
    """``Linear`` layers of widths ``in_features, *spec.hidden, out_features``.

    Parameters
    ----------
    spec : ModelSpec
        Hidden widths and the activation placed between consecutive layers.
    in_features, out_features : int
        Widths of the input and the output.
    generator : torch.Generator, optional
        Stream the initial weights are drawn from (default: the global one).
    initialize : bool
        False leaves the weights uninitialised, for a state dict to be loaded into.

    Returns
    -------
    torch.nn.Sequential
        On the CPU.
    """
    widths = [in_features, *spec.hidden, out_features]
    activation = _ACTIVATIONS[spec.activation]
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(pairwise(widths)):
        if index > 0 and activation is not None:
            layers.append(activation())
        layers.append(_linear(fan_in, fan_out, generator, initialize))
    return nn.Sequential(*layers)


def build_model(
    spec: ModelSpec,
    in_features: int,
    out_features: int,
    *,
    generator: torch.Generator | None = None,
    initialize: bool = True,
) -> nn.Sequential | Ensemble:
    """The network ``spec`` describes, or an :class:`Ensemble` when it asks for several.

    Ensemble members are initialised one after another from the same stream, as the
    notes build their networks in a loop. Parameters as for :func:`build_network`.
    """
    size = spec.ensemble_size if isinstance(spec, RegressionModelSpec) else 1
    if size == 1:
        return build_network(
            spec, in_features, out_features, generator=generator, initialize=initialize
        )
    return Ensemble(
        [
            build_network(
                spec, in_features, out_features, generator=generator, initialize=initialize
            )
            for _ in range(size)
        ]
    )


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def io_features(config: SpiralConfig | RegressionConfig) -> tuple[int, int]:
    """Input and output widths of the network a configuration trains."""
    if isinstance(config, SpiralConfig):
        return SPIRAL_FEATURES, config.data.classes
    return 1, 1
