"""The lossless formats of workers/images/codec.py: .npy in and out, TIFF out."""

import io

import numpy as np
import pytest
import tifffile
from numpy.testing import assert_array_equal

from workers.errors import ImageTooLarge, IncompatibleImage, InvalidImage
from workers.images.codec import ENCODERS, decode_image, encode_npy, encode_tiff

RNG = np.random.default_rng(0)
ARRAYS = [
    RNG.random((5, 7)),
    RNG.random((5, 7, 2)).astype(np.float32),
    RNG.random((5, 7, 3)).astype(np.float16),
    RNG.integers(0, 2**16, (5, 7, 4), dtype=np.uint16),
    RNG.integers(-(2**40), 2**40, (5, 7), dtype=np.int64),
    RNG.random((5, 7, 1)) > 0.5,
]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{a.shape}")
def test_npy_and_tiff_round_trip_exactly(array: np.ndarray) -> None:
    decoded = decode_image(encode_npy(array), max_pixels=35)
    assert decoded.dtype == array.dtype and decoded.flags.c_contiguous and decoded.flags.writeable
    assert_array_equal(decoded, array)
    assert_array_equal(np.load(io.BytesIO(encode_npy(array)), allow_pickle=False), array)
    assert_array_equal(tifffile.imread(io.BytesIO(encode_tiff(array))).reshape(array.shape), array)


def test_the_npy_header_is_checked_before_the_data() -> None:
    # A header that promises 10^10 pixels, with no data behind it: refused from the header.
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (100_000, 100_000)}
    )
    with pytest.raises(ImageTooLarge):
        decode_image(b"\x93NUMPY\x01\x00" + header.getvalue()[8:], max_pixels=10**6)


def test_pickles_are_never_loaded() -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.array([[print, 1]], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidImage, match="dtype object"):
        decode_image(buffer.getvalue(), max_pixels=100)
    with pytest.raises(IncompatibleImage):
        encode_npy(np.array([[None]], dtype=object))


def test_every_encoder_names_its_media_type() -> None:
    assert {name: e.media_type for name, e in ENCODERS.items()} == {
        "png": "image/png",
        "npy": "application/x-npy",
        "tiff": "image/tiff",
    }
