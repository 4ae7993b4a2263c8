"""The lossless formats of workers/images/codec.py: .npy in and out, TIFF out."""

import io

import numpy as np
import pytest
import tifffile
from numpy.testing import assert_array_equal
from PIL import Image

from workers.errors import ImageTooLarge, IncompatibleImage, InvalidImage
from workers.images import codec
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


# --------------------------------------------------------------------------- .npy in


def npy_file(array: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    """`array` as numpy.lib.format writes it (numpy.save's format)."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, version=version, allow_pickle=False)
    return buffer.getvalue()


def npy_header(header: dict, version: tuple[int, int] = (1, 0)) -> bytes:
    """Only the magic and the header of an .npy file, as numpy.lib.format writes them."""
    buffer = io.BytesIO()
    write = {
        (1, 0): np.lib.format.write_array_header_1_0,
        (2, 0): np.lib.format.write_array_header_2_0,
    }
    write[version](buffer, header)
    return buffer.getvalue()


def decode_npy(payload: bytes, max_pixels: int = 10_000) -> np.ndarray:
    return decode_image(payload, max_pixels=max_pixels)


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_every_npy_version_numpy_writes_is_read(version: tuple[int, int]) -> None:
    array = RNG.random((4, 6, 3))
    payload = npy_file(array, version)
    assert payload[6:8] == bytes(version)  # the file really is of that version
    assert_array_equal(decode_npy(payload), array)


def test_an_npy_header_over_numpys_safe_size_is_refused() -> None:
    # numpy.load refuses headers over 10,000 bytes unless told otherwise; so does the decoder.
    header = {"descr": "<u1", "fortran_order": False, "shape": (2, 3)}
    small = npy_header(header, (2, 0)) + bytes(6)
    assert_array_equal(decode_npy(small), np.zeros((2, 3), np.uint8))
    body = repr(header).encode("latin1") + b" " * 20_000 + b"\n"
    large = b"\x93NUMPY\x02\x00" + len(body).to_bytes(4, "little") + body + bytes(6)
    with pytest.raises(ValueError, match="large"):
        np.load(io.BytesIO(large))
    with pytest.raises(InvalidImage) as caught:
        decode_npy(large)
    assert caught.value.detail.startswith("the .npy header is corrupt: ")
    assert caught.value.context == {"format": "NPY"}


@pytest.mark.parametrize(
    "payload",
    [
        b"\x93NUMPY\x01\x00",  # no header length
        npy_header({"descr": "<f8", "fortran_order": False, "shape": (2, 2)})[:20],
        b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f8'}",  # keys missing
    ],
    ids=["no-header", "cut-header", "missing-keys"],
)
def test_a_broken_npy_header_is_an_invalid_image(payload: bytes) -> None:
    with pytest.raises(ValueError):
        np.load(io.BytesIO(payload))
    with pytest.raises(InvalidImage) as caught:
        decode_npy(payload)
    assert caught.value.detail.startswith("the .npy header is corrupt: ")
    assert caught.value.context == {"format": "NPY"}


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((3, 3), np.complex128),
        np.zeros((3, 3), "<U2"),
        np.zeros((3, 3), [("r", "u1"), ("g", "u1")]),
        np.zeros((3, 3), "M8[s]"),
    ],
    ids=["complex", "unicode", "structured", "datetime"],
)
def test_npy_dtypes_that_are_not_images_are_refused(array: np.ndarray) -> None:
    assert_array_equal(np.load(io.BytesIO(npy_file(array))), array)  # numpy reads them
    with pytest.raises(InvalidImage) as caught:
        decode_npy(npy_file(array))
    assert caught.value.detail == (
        f"an .npy of dtype {array.dtype} is not an image: expected bool, integers or floats"
    )
    assert caught.value.context == {"format": "NPY", "dtype": str(array.dtype)}


@pytest.mark.parametrize("shape", [(7,), (5, 7, 0), (5, 7, 5), (2, 5, 7, 1), ()], ids=str)
def test_npy_shapes_that_are_not_images_are_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidImage) as caught:
        decode_npy(npy_file(np.zeros(shape, np.uint8)))
    assert caught.value.detail == (
        f"an .npy of shape {shape} is not an image: expected (H, W) or (H, W, C) "
        "with 1 to 4 channels"
    )
    assert caught.value.context == {"format": "NPY", "shape": list(shape)}


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_npy_with_one_to_four_channels_is_read(channels: int) -> None:
    array = RNG.integers(0, 256, (3, 2, channels), dtype=np.uint8)
    assert_array_equal(decode_npy(npy_file(array)), array)


def test_the_npy_pixel_limit_is_inclusive_and_counts_height_times_width() -> None:
    payload = npy_file(np.zeros((5, 7, 3), np.uint8))  # 35 pixels, 105 samples
    assert decode_npy(payload, max_pixels=35).shape == (5, 7, 3)
    with pytest.raises(ImageTooLarge) as caught:
        decode_npy(payload, max_pixels=34)
    assert caught.value.detail == "image has 7x5 = 35 pixels, more than the limit of 34"
    assert caught.value.context == {"pixels": 35, "limit": 34}


@pytest.mark.parametrize("change", [-1, 1, -12], ids=["short", "long", "no-data"])
def test_npy_data_of_the_wrong_length_is_refused(change: int) -> None:
    payload = npy_file(np.arange(6, dtype="<u2").reshape(2, 3))
    data_bytes = 12
    broken = payload[:change] if change < 0 else payload + bytes(change)
    with pytest.raises(InvalidImage) as caught:
        decode_npy(broken)
    got = len(broken) - (len(payload) - data_bytes)
    assert caught.value.detail == f"the .npy data is {got} bytes, its header says {data_bytes}"
    assert caught.value.context == {"format": "NPY"}


def test_an_npy_whose_data_cannot_take_its_shape_is_an_invalid_image() -> None:
    # numpy.lib.format accepts negative sizes in a header; numpy.load then fails to reshape.
    payload = npy_header({"descr": "<f8", "fortran_order": False, "shape": (-1, -5)}) + bytes(40)
    with pytest.raises(ValueError):
        np.load(io.BytesIO(payload))
    with pytest.raises(InvalidImage) as caught:
        decode_npy(payload)
    assert caught.value.detail.startswith("the NPY file is truncated or corrupt: ")
    assert caught.value.context == {"format": "NPY"}


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 3)], ids=str)
def test_fortran_ordered_npy_decodes_to_the_same_c_ordered_array(shape) -> None:
    array = np.asfortranarray(RNG.integers(0, 2**16, shape, dtype=np.uint16))
    payload = npy_file(array)
    assert np.lib.format.read_array_header_1_0(io.BytesIO(payload[8:]))[1] is True
    decoded = decode_npy(payload)
    assert decoded.flags.c_contiguous and decoded.flags.writeable
    assert_array_equal(decoded, np.load(io.BytesIO(payload)))
    assert_array_equal(decoded, array)


@pytest.mark.parametrize("dtype", [">u2", ">f4", ">i8", "<f8"])
def test_npy_of_either_byte_order_decodes_to_native_order(dtype: str) -> None:
    array = (RNG.random((4, 5)) * 1000).astype(dtype)
    decoded = decode_npy(npy_file(array))
    assert decoded.dtype.isnative and decoded.dtype == np.dtype(dtype).newbyteorder("=")
    assert_array_equal(decoded, array)


# --------------------------------------------------------------------------- .npy out


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{a.shape}")
def test_encode_npy_writes_what_numpy_save_writes(array: np.ndarray) -> None:
    expected = io.BytesIO()
    np.save(expected, array, allow_pickle=False)
    assert encode_npy(array) == expected.getvalue()
    view = array[::-1, ::2]  # not contiguous: written as its values
    assert_array_equal(np.load(io.BytesIO(encode_npy(view))), view)


def test_encode_npy_refuses_object_arrays_with_their_dtype() -> None:
    for array in (np.array([[None]], dtype=object), np.zeros((1, 1), [("a", "O")])):
        with pytest.raises(IncompatibleImage) as caught:
            encode_npy(array)
        assert caught.value.detail == f"cannot encode a {array.dtype} image as .npy"
        assert caught.value.context == {"dtype": str(array.dtype)}


# --------------------------------------------------------------------------- TIFF out


def tiff_page(payload: bytes) -> tuple[int, tifffile.TiffPage, np.ndarray]:
    with tifffile.TiffFile(io.BytesIO(payload)) as tif:
        page = tif.pages[0]
        return len(tif.pages), page, page.asarray()


@pytest.mark.parametrize(
    ("shape", "photometric", "samples", "extrasamples"),
    [
        ((5, 7), tifffile.PHOTOMETRIC.MINISBLACK, 1, ()),
        ((5, 7, 1), tifffile.PHOTOMETRIC.MINISBLACK, 1, ()),
        ((5, 7, 2), tifffile.PHOTOMETRIC.MINISBLACK, 2, (tifffile.EXTRASAMPLE.UNSPECIFIED,)),
        ((5, 7, 3), tifffile.PHOTOMETRIC.RGB, 3, ()),
        ((5, 7, 4), tifffile.PHOTOMETRIC.RGB, 4, (tifffile.EXTRASAMPLE.UNASSALPHA,)),
    ],
    ids=["gray", "hw1", "2-channels", "rgb", "rgba"],
)
def test_tiff_layout_follows_the_channel_count(shape, photometric, samples, extrasamples):
    array = RNG.integers(0, 2**16, shape, dtype=np.uint16)
    pages, page, pixels = tiff_page(encode_tiff(array))
    assert pages == 1
    assert page.photometric == photometric
    assert page.samplesperpixel == samples
    assert page.extrasamples == extrasamples
    assert page.compression == tifffile.COMPRESSION.NONE
    if samples > 1:
        assert page.planarconfig == tifffile.PLANARCONFIG.CONTIG
    assert pixels.shape == shape[:2] + ((samples,) if samples > 1 else ())
    assert_array_equal(pixels, array.reshape(pixels.shape))


@pytest.mark.parametrize(
    ("shape", "mode"), [((5, 7), "L"), ((5, 7, 1), "L"), ((5, 7, 3), "RGB"), ((5, 7, 4), "RGBA")]
)
def test_pillow_reads_8_bit_tiffs_in_the_mode_of_their_channels(shape, mode) -> None:
    # RGBA, not Pillow's RGBa: the alpha is written as straight (unassociated) alpha.
    array = RNG.integers(0, 256, shape, dtype=np.uint8)
    with Image.open(io.BytesIO(encode_tiff(array))) as image:
        assert (image.format, image.mode) == ("TIFF", mode)
        assert_array_equal(np.array(image), array.reshape(np.array(image).shape))


@pytest.mark.parametrize(
    ("image", "detail", "context"),
    [
        (
            np.zeros((3, 3), np.complex64),
            "cannot encode a complex64 image as PNG",
            {"dtype": "complex64"},
        ),
        (
            np.zeros((3, 3, 5), np.uint8),
            "cannot encode an image of shape (3, 3, 5) as PNG: "
            "expected (H, W) or (H, W, C) with 1 to 4 channels",
            {"shape": [3, 3, 5]},
        ),
        (
            np.zeros((0, 3), np.uint8),
            "cannot encode an empty image of shape (0, 3)",
            {"shape": [0, 3]},
        ),
    ],
    ids=["complex", "5-channels", "empty"],
)
def test_png_and_tiff_refuse_the_same_layouts_with_the_same_details(image, detail, context):
    for encode in (codec.encode_png, encode_tiff):
        with pytest.raises(IncompatibleImage) as caught:
            encode(image)
        assert caught.value.detail == detail
        assert caught.value.context == context


def test_encode_npy_writes_format_2_when_the_header_outgrows_format_1():
    # Format 1.0 counts its header in 16 bits; numpy.save moves to 2.0 past 65,535 bytes.
    array = np.zeros((2, 3), [(f"field{n}", "u1") for n in range(5000)])
    expected = io.BytesIO()
    with pytest.warns(UserWarning, match="format 2.0"):
        np.save(expected, array, allow_pickle=False)
    payload = encode_npy(array)
    assert payload[6:8] == b"\x02\x00"
    assert payload == expected.getvalue()
