"""The ``skimage.data`` images that ship inside the scikit-image wheel.

Only images that load without a network download are listed: the others need
``pooch`` and a connection, which a worker must never wait on. ``cat`` is left out
as a duplicate of ``chelsea``, and generated images (``binary_blobs``,
``checkerboard``) are not samples of anything.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from skimage import data

from workers.errors import NotFound

__all__ = ["SAMPLE_NAMES", "SampleInfo", "list_samples", "load_sample"]

_LOADERS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": data.astronaut,
    "brick": data.brick,
    "camera": data.camera,
    "cell": data.cell,
    "chelsea": data.chelsea,
    "clock": data.clock,
    "coffee": data.coffee,
    "coins": data.coins,
    "colorwheel": data.colorwheel,
    "grass": data.grass,
    "gravel": data.gravel,
    "horse": data.horse,
    "hubble_deep_field": data.hubble_deep_field,
    "immunohistochemistry": data.immunohistochemistry,
    "logo": data.logo,
    "microaneurysms": data.microaneurysms,
    "moon": data.moon,
    "page": data.page,
    "retina": data.retina,
    "rocket": data.rocket,
    "shepp_logan_phantom": data.shepp_logan_phantom,
    "text": data.text,
}

SAMPLE_NAMES: tuple[str, ...] = tuple(_LOADERS)


@dataclass(frozen=True)
class SampleInfo:
    """What a sample looks like before loading it: its name, array shape and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    description: str


def list_samples() -> list[SampleInfo]:
    """Describe every bundled sample, in name order.

    Returns
    -------
    list of SampleInfo
        One entry per sample; ``description`` is the first line of the
        ``skimage.data`` docstring.
    """
    return [_info(name) for name in SAMPLE_NAMES]


def load_sample(name: str) -> np.ndarray:
    """Load a bundled sample image.

    Parameters
    ----------
    name : str
        One of :data:`SAMPLE_NAMES`.

    Returns
    -------
    numpy.ndarray
        A fresh, writeable copy: callers may modify it without touching the cache.

    Raises
    ------
    NotFound
        `name` is not a bundled sample.
    """
    return _cached(name).copy()


@functools.cache
def _info(name: str) -> SampleInfo:
    image = _cached(name)
    doc = (_LOADERS[name].__doc__ or "").strip()
    return SampleInfo(
        name=name,
        shape=tuple(image.shape),
        dtype=str(image.dtype),
        description=doc.splitlines()[0] if doc else "",
    )


@functools.cache
def _cached(name: str) -> np.ndarray:
    loader = _LOADERS.get(name)
    if loader is None:
        raise NotFound(f"no sample image named `{name}`", kind="sample", name=name)
    image = np.ascontiguousarray(loader())
    # Read-only, so a bug that writes into the cached array fails loudly instead of
    # corrupting every later request.
    image.flags.writeable = False
    return image
