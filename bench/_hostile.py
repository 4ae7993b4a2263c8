"""Hostile uploads: valid files of every supported image format and seeded mutants of them
(truncated, bit-flipped, spliced, overwritten), for the decoder's fuzz test
(tests/service/test_image_fuzz.py) and the soak (bench/soak.py).

The same seed gives the same files, so a failure found once is found again.
"""

from __future__ import annotations

import functools
import io
import random
from collections.abc import Iterator

import numpy as np
from PIL import Image

#: Every upload format the service decodes, as named in :func:`valid_files`.
FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP", "GIF", "NPY")

#: How each format is written: one entry per variant (mode, compression) worth mutating.
_VARIANTS: tuple[tuple[str, str, dict[str, object]], ...] = (
    ("PNG", "RGB", {}),
    ("PNG", "L", {}),
    ("PNG", "P", {}),
    ("JPEG", "RGB", {}),
    ("JPEG", "RGB", {"progressive": True}),
    ("TIFF", "RGB", {}),
    ("TIFF", "RGB", {"compression": "tiff_lzw"}),
    ("TIFF", "L", {"compression": "tiff_deflate"}),
    ("BMP", "RGB", {}),
    ("BMP", "P", {}),
    ("WEBP", "RGB", {}),
    ("WEBP", "RGBA", {"lossless": True}),
    ("GIF", "P", {}),
)


def _picture() -> np.ndarray:
    """A small RGB picture with edges, gradients and noise (48 x 64)."""
    rows, cols = np.mgrid[0:48, 0:64]
    rng = np.random.default_rng(0)
    red = (rows * 5) % 256
    green = (cols * 4) % 256
    blue = np.where((rows // 8 + cols // 8) % 2 == 0, 200, 30) + rng.integers(0, 40, (48, 64))
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


@functools.cache
def valid_files() -> dict[str, tuple[bytes, ...]]:
    """Valid files by format: several variants each."""
    picture = Image.fromarray(_picture())
    files: dict[str, list[bytes]] = {name: [] for name in FORMATS}
    for fmt, mode, options in _VARIANTS:
        buffer = io.BytesIO()
        image = picture.convert(mode)
        image.save(buffer, format=fmt, **options)
        files[fmt].append(buffer.getvalue())
    for array in (_picture(), _picture()[:, :, 0].astype(np.float32) / 255):
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        files["NPY"].append(buffer.getvalue())
    return {name: tuple(variants) for name, variants in files.items()}


def mutate(rng: random.Random, data: bytes, donors: tuple[bytes, ...]) -> bytes:
    """One random damage to ``data``: a truncation (to as little as 1 byte), bit flips, a
    splice of another file's bytes, or a run of random bytes written over it."""
    out = bytearray(data)
    kind = rng.randrange(4)
    if kind == 0:
        # Short files most often: the header parsers are where a few bytes hurt.
        cut = rng.randrange(1, 64) if rng.random() < 0.5 else rng.randrange(1, len(out))
        del out[cut:]
    elif kind == 1:
        for _ in range(rng.randrange(1, 9)):
            where = rng.randrange(len(out))
            out[where] ^= 1 << rng.randrange(8)
    elif kind == 2:
        donor = rng.choice(donors)
        start = rng.randrange(len(donor))
        where = rng.randrange(len(out))
        out[where:where] = donor[start : start + rng.randrange(1, 256)]
    else:
        where = rng.randrange(len(out))
        length = rng.randrange(1, 17)
        out[where : where + length] = rng.randbytes(length)
    return bytes(out)


def mutants(seed: int, per_format: int) -> Iterator[tuple[str, bytes]]:
    """``per_format`` damaged files of each format, as (format, bytes); one in three is
    damaged twice."""
    rng = random.Random(seed)
    files = valid_files()
    donors = tuple(variant for variants in files.values() for variant in variants)
    for _ in range(per_format):
        for fmt in FORMATS:
            data = mutate(rng, rng.choice(files[fmt]), donors)
            if rng.random() < 1 / 3:
                data = mutate(rng, data, donors)
            yield fmt, data
