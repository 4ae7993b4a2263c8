"""The notes' two datasets, generated bit for bit as the notes generate them.

The notes seed the global generator (``random.seed(seed); torch.manual_seed(seed)``)
and draw from it. Here each dataset draws from a private :class:`torch.Generator`
seeded the same way: the CPU generator is the same Mersenne Twister either way, so
the numbers are identical, and two trainings in the same process cannot disturb each
other's stream. The generator is returned so the caller can go on drawing from it
(the notes build the model right after the data, and its initialisation consumes the
stream). Python's ``random`` is seeded in the notes but never drawn from.
"""

from __future__ import annotations

import math

import torch

from workers.training.configs import RegressionData, SpiralData

__all__ = ["SPIRAL_FEATURES", "make_cubic", "make_spiral", "seeded_generator"]

SPIRAL_FEATURES = 2


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator in the state ``torch.manual_seed(seed)`` leaves the global one."""
    return torch.Generator(device="cpu").manual_seed(seed)


def make_spiral(
    spec: SpiralData, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Points on ``spec.classes`` spiral arms, and the arm each one is on.

    Parameters
    ----------
    spec : SpiralData
        N points per class, C classes, the noise on the angle, and the seed.
    generator : torch.Generator, optional
        Stream to draw the noise from; by default a fresh one seeded with
        ``spec.seed``. Pass one to keep drawing from it afterwards.

    Returns
    -------
    X : torch.Tensor
        ``(N * C, 2)`` float32 coordinates on the CPU.
    Y : torch.Tensor
        ``(N * C,)`` int64 class labels, ``N`` of each in order.
    """
    if generator is None:
        generator = seeded_generator(spec.seed)
    n, c_total = spec.points_per_class, spec.classes
    xs, ys = [], []
    for c in range(c_total):
        t = torch.linspace(0, 1, n)
        inner_var = (
            torch.linspace((2 * math.pi / c_total) * c, (2 * math.pi / c_total) * (2 + c), n)
            + torch.randn(n, generator=generator) * spec.noise
        )
        # The notes take math.sin/cos of each float32 angle in double precision and
        # round the pair to float32 (torch.FloatTensor); doing the same on a list keeps
        # every bit, where torch.sin on a double tensor could differ in the last ulp.
        pairs = torch.tensor(
            [(math.sin(v), math.cos(v)) for v in inner_var.tolist()], dtype=torch.float32
        )
        xs.append(t.unsqueeze(1) * pairs)
        ys.append(torch.full((n,), c, dtype=torch.long))
    return torch.cat(xs), torch.cat(ys)


def make_cubic(
    spec: RegressionData, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``y = x**3 + noise * U(0, 1)`` on evenly spaced ``x``, as ``(n, 1)`` float32 columns.

    Parameters
    ----------
    spec : RegressionData
        Number of points, x range, noise scale and seed.
    generator : torch.Generator, optional
        Stream to draw the noise from; by default a fresh one seeded with ``spec.seed``.

    Returns
    -------
    X, y : torch.Tensor
        ``(n_points, 1)`` float32 tensors on the CPU.
    """
    if generator is None:
        generator = seeded_generator(spec.seed)
    X = torch.unsqueeze(torch.linspace(spec.x_min, spec.x_max, spec.n_points), dim=1)
    y = X.pow(3) + spec.noise * torch.rand(X.size(), generator=generator)
    return X, y
