import io
import statistics
import struct
import time
import tracemalloc
import warnings
import zlib
from collections.abc import Iterator

import numpy as np
import pytest
from isal import isal_zlib
from numpy.testing import assert_allclose, assert_array_equal
from PIL import Image
from skimage import data, util

from workers.errors import (
    ImageTooLarge,
    IncompatibleImage,
    InvalidImage,
    InvalidParameter,
    UnsupportedMediaType,
)
from workers.images import SUPPORTED_FORMATS, codec, decode_image, encode_png, summarize

MAX_PIXELS = 10_000_000

GRAY = data.camera()[100:164, 200:280]  # 64x80 keeps every format fast
RGB = data.chelsea()[100:164, 200:280]


def pil_encode(image: Image.Image | np.ndarray, image_format: str, **options) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def decode(payload: bytes) -> np.ndarray:
    return decode_image(payload, max_pixels=MAX_PIXELS)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def png_chunks(payload: bytes) -> Iterator[tuple[bytes, bytes]]:
    assert payload[:8] == b"\x89PNG\r\n\x1a\n"
    position = 8
    while position < len(payload):
        (length,) = struct.unpack(">I", payload[position : position + 4])
        kind = payload[position + 4 : position + 8]
        body = payload[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", payload[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        yield kind, body
        position += 12 + length


def read_png(payload: bytes) -> tuple[dict[str, int], np.ndarray]:
    """Independent reader for the PNGs encode_png writes (8 or 16 bits, filter 0)."""
    chunks: dict[bytes, bytes] = {}
    for kind, body in png_chunks(payload):
        chunks[kind] = chunks.get(kind, b"") + body
    width, height, depth, color_type, *_ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    channels = {0: 1, 4: 2, 2: 3, 6: 4}[color_type]
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), dtype=np.uint8).reshape(height, -1)
    assert (raw[:, 0] == 0).all()
    samples = raw[:, 1:].copy()
    if depth == 16:
        samples = samples.view(">u2").astype(np.uint16)
    pixels = samples.reshape(height, width, channels)
    header = {"width": width, "height": height, "depth": depth, "color_type": color_type}
    return header, pixels


# --------------------------------------------------------------------------- decoding


LOSSLESS = [
    ("PNG", {}),
    ("TIFF", {}),
    ("BMP", {}),
    ("WEBP", {"lossless": True}),
]


@pytest.mark.parametrize(("image_format", "options"), LOSSLESS, ids=[f for f, _ in LOSSLESS])
@pytest.mark.parametrize("image", [GRAY, RGB], ids=["gray", "rgb"])
def test_lossless_formats_round_trip(image, image_format, options):
    payload = pil_encode(image, image_format, **options)
    decoded = decode(payload)
    if image_format == "WEBP" and image.ndim == 2:
        # WebP has no grayscale: Pillow writes it as RGB.
        image = np.repeat(image[:, :, np.newaxis], 3, axis=2)
    assert decoded.dtype == np.uint8
    assert_array_equal(decoded, image)


def test_gif_round_trips_grayscale_exactly():
    assert_array_equal(decode(pil_encode(GRAY, "GIF")), GRAY)


def test_gif_with_few_colors_round_trips_as_rgb():
    palette = np.array([[255, 0, 0], [0, 128, 0], [0, 0, 255], [250, 250, 250]], np.uint8)
    image = palette[np.indices((32, 48)).sum(axis=0) % 4]
    assert_array_equal(decode(pil_encode(image, "GIF")), image)


def test_jpeg_round_trip_is_close():
    decoded = decode(pil_encode(RGB, "JPEG", quality=95))
    assert decoded.shape == RGB.shape
    assert np.abs(decoded.astype(int) - RGB).mean() < 3


def test_every_supported_format_is_tested():
    tested = {f for f, _ in LOSSLESS} | {"GIF", "JPEG"}
    assert tested == SUPPORTED_FORMATS


def test_outputs_are_c_contiguous_and_writeable():
    for payload in (pil_encode(GRAY, "PNG"), pil_encode(RGB, "JPEG"), pil_encode(GRAY, "GIF")):
        decoded = decode(payload)
        assert decoded.flags.c_contiguous
        assert decoded.flags.writeable


def test_bilevel_becomes_bool():
    bilevel = Image.fromarray(GRAY).convert("1", dither=Image.Dither.NONE)
    decoded = decode(pil_encode(bilevel, "PNG"))
    assert decoded.dtype == np.bool_
    assert_array_equal(decoded, GRAY >= 128)


def test_16_bit_gray_png_stays_uint16():
    image = (GRAY.astype(np.uint16) * 257 + 3).astype(np.uint16)
    decoded = decode(pil_encode(image, "PNG"))
    assert decoded.dtype == np.uint16
    assert_array_equal(decoded, image)


def test_big_endian_16_bit_tiff_becomes_native_uint16():
    image = GRAY.astype(np.uint16) * 251
    big_endian = Image.frombytes("I;16B", image.shape[::-1], image.astype(">u2").tobytes())
    decoded = decode(pil_encode(big_endian, "TIFF"))
    assert decoded.dtype == np.dtype(np.uint16)
    assert decoded.dtype.isnative
    assert_array_equal(decoded, image)


def test_32_bit_integer_tiff_narrows_to_uint16_when_values_fit():
    image = GRAY.astype(np.int32) * 200
    decoded = decode(pil_encode(Image.fromarray(image), "TIFF"))
    assert decoded.dtype == np.uint16
    assert_array_equal(decoded, image)


def test_32_bit_integer_tiff_keeps_int32_when_values_do_not_fit():
    image = GRAY.astype(np.int32) * 1000 - 5000
    decoded = decode(pil_encode(Image.fromarray(image), "TIFF"))
    assert decoded.dtype == np.int32
    assert_array_equal(decoded, image)


def test_float_tiff_becomes_float32_unscaled():
    image = GRAY.astype(np.float32) * 3.5 - 10
    decoded = decode(pil_encode(Image.fromarray(image), "TIFF"))
    assert decoded.dtype == np.float32
    assert_array_equal(decoded, image)


def test_gray_alpha_keeps_two_channels():
    image = np.stack([GRAY, 255 - GRAY], axis=2)
    decoded = decode(pil_encode(Image.fromarray(image), "PNG"))
    assert decoded.shape == (*GRAY.shape, 2)
    assert_array_equal(decoded, image)


def test_rgba_keeps_alpha():
    image = np.dstack([RGB, GRAY])
    assert_array_equal(decode(pil_encode(image, "PNG")), image)


def test_palette_becomes_rgb():
    palette_image = Image.fromarray(RGB).quantize(16)
    decoded = decode(pil_encode(palette_image, "PNG"))
    assert decoded.shape == RGB.shape
    assert_array_equal(decoded, np.array(palette_image.convert("RGB")))


def test_palette_with_transparency_becomes_rgba():
    palette_image = Image.fromarray(RGB).quantize(16)
    transparent = int(np.array(palette_image)[0, 0])
    decoded = decode(pil_encode(palette_image, "PNG", transparency=transparent))
    assert decoded.shape == (*RGB.shape[:2], 4)
    alpha = decoded[:, :, 3]
    assert_array_equal(alpha == 0, np.array(palette_image) == transparent)
    opaque = alpha == 255
    assert_array_equal(decoded[opaque, :3], np.array(palette_image.convert("RGB"))[opaque])


@pytest.mark.parametrize(
    ("mode", "image_format"), [("CMYK", "TIFF"), ("YCbCr", "TIFF"), ("PA", "TIFF")]
)
def test_other_modes_convert_to_rgb_or_rgba(mode, image_format):
    source = Image.fromarray(RGB if mode != "PA" else GRAY).convert(mode)
    decoded = decode(pil_encode(source, image_format))
    expected = source.convert("RGBA" if mode == "PA" else "RGB")
    assert_array_equal(decoded, np.array(expected))


def test_cmyk_jpeg_becomes_rgb():
    decoded = decode(pil_encode(Image.fromarray(RGB).convert("CMYK"), "JPEG", quality=95))
    assert decoded.shape == RGB.shape
    assert np.abs(decoded.astype(int) - RGB).mean() < 4


def exif_with_orientation(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def test_jpeg_exif_orientation_6_transposes_the_shape():
    wide = np.zeros((20, 40, 3), np.uint8)
    decoded = decode(pil_encode(wide, "JPEG", exif=exif_with_orientation(6)))
    assert decoded.shape == (40, 20, 3)


def test_exif_orientation_6_rotates_clockwise():
    # Orientation 6 means the stored image must be turned 90 degrees clockwise to view.
    payload = pil_encode(RGB, "PNG", exif=exif_with_orientation(6))
    assert_array_equal(decode(payload), np.rot90(RGB, k=-1))


def test_animated_gif_yields_the_first_frame():
    frames = [Image.fromarray(np.full((16, 24), value, np.uint8)) for value in (10, 120, 240)]
    payload = pil_encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert Image.open(io.BytesIO(payload)).n_frames == 3
    assert_array_equal(decode(payload), np.full((16, 24), 10, np.uint8))


def test_empty_upload_is_invalid():
    with pytest.raises(InvalidImage, match="empty"):
        decode(b"")


def test_garbage_is_not_a_recognized_image():
    with pytest.raises(UnsupportedMediaType, match="not a recognized image") as caught:
        decode(b"this is definitely not an image" * 10)
    assert "format" not in caught.value.context


@pytest.mark.parametrize(
    ("image_format", "options"),
    [
        ("PNG", {}),
        ("JPEG", {}),
        ("TIFF", {}),
        ("TIFF", {"compression": "tiff_deflate"}),
        ("BMP", {}),
        ("WEBP", {}),
        ("GIF", {}),
    ],
)
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_truncated_files_are_invalid(image_format, options, fraction):
    payload = pil_encode(RGB, image_format, **options)
    with pytest.raises(InvalidImage) as caught:
        decode(payload[: int(len(payload) * fraction)])
    assert caught.value.context["format"] == image_format


def test_corrupt_pixel_data_is_invalid():
    payload = bytearray(pil_encode(RGB, "PNG"))
    payload[100:140] = b"\xff" * 40  # inside IDAT: the CRC and the zlib stream break
    with pytest.raises(InvalidImage):
        decode(bytes(payload))


@pytest.mark.parametrize("image_format", ["PPM", "ICO", "PCX", "TGA"])
def test_recognized_but_unsupported_formats(image_format):
    with pytest.raises(UnsupportedMediaType) as caught:
        decode(pil_encode(GRAY, image_format))
    assert caught.value.context["format"] == image_format


def test_pdf_is_not_an_image():
    # Pillow writes PDFs but cannot read them, so there is no format to name.
    with pytest.raises(UnsupportedMediaType, match="not a recognized image"):
        decode(pil_encode(GRAY, "PDF"))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring width x height 8-bit gray pixels but holding a few bytes of data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            png_chunk(b"IHDR", header),
            png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)),
            png_chunk(b"IEND", b""),
        )
    )


@pytest.mark.parametrize(
    ("side", "max_pixels"),
    [
        (30_000, 10**9),  # over twice Pillow's limit: Image.open would raise
        (10_000, 10**9),  # between Pillow's limits: Image.open would warn
        (30_000, MAX_PIXELS),
    ],
)
def test_decompression_bomb_is_rejected_from_the_header(side, max_pixels):
    payload = png_header_only(side, side)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ImageTooLarge) as caught:
            decode_image(payload, max_pixels=max_pixels)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.context["pixels"] == side * side
    assert caught.value.context["limit"] == min(max_pixels, Image.MAX_IMAGE_PIXELS)
    assert elapsed < 0.5
    assert peak < 5_000_000


def test_bmp_bomb_is_rejected_from_the_header():
    payload = bytearray(pil_encode(GRAY, "BMP"))
    payload[18:26] = struct.pack("<ii", 40_000, 40_000)
    with pytest.raises(ImageTooLarge) as caught:
        decode(bytes(payload))
    assert caught.value.context["pixels"] == 40_000 * 40_000


def test_pixel_limit_is_inclusive():
    payload = pil_encode(GRAY, "PNG")
    pixels = GRAY.shape[0] * GRAY.shape[1]
    assert decode_image(payload, max_pixels=pixels).shape == GRAY.shape
    with pytest.raises(ImageTooLarge) as caught:
        decode_image(payload, max_pixels=pixels - 1)
    assert caught.value.context == {"pixels": pixels, "limit": pixels - 1}


def test_decoding_leaves_pillow_and_warning_state_alone():
    max_image_pixels = Image.MAX_IMAGE_PIXELS
    filters = list(warnings.filters)
    with pytest.raises(ImageTooLarge):
        decode(png_header_only(30_000, 30_000))
    decode(pil_encode(GRAY, "PNG"))
    assert max_image_pixels == Image.MAX_IMAGE_PIXELS
    assert warnings.filters == filters


# --------------------------------------------------------------------------- encoding


def png_mode(payload: bytes) -> str:
    with Image.open(io.BytesIO(payload)) as image:
        assert image.format == "PNG"
        return image.mode


@pytest.mark.parametrize(
    ("image", "mode"),
    [
        (GRAY, "L"),
        (GRAY[:, :, np.newaxis], "L"),
        (np.stack([GRAY, 255 - GRAY], axis=2), "LA"),
        (RGB, "RGB"),
        (np.dstack([RGB, GRAY]), "RGBA"),
    ],
    ids=["2d", "hw1", "la", "rgb", "rgba"],
)
def test_uint8_is_written_as_is(image, mode):
    payload = encode_png(image)
    assert png_mode(payload) == mode
    assert_array_equal(decode(payload), image.reshape(image.shape[:2]) if mode == "L" else image)


def test_bool_is_written_as_0_and_255():
    mask = GRAY > 100
    decoded = decode(encode_png(mask))
    assert decoded.dtype == np.uint8
    assert_array_equal(decoded, np.where(mask, 255, 0))


def test_uint16_gray_round_trips_through_pillow():
    image = util.img_as_uint(GRAY)
    assert_array_equal(decode(encode_png(image)), image)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_uint16_any_channel_count_is_a_16_bit_png(channels):
    rng = np.random.default_rng(channels)
    image = rng.integers(0, 65536, size=(9, 13, channels), dtype=np.uint16)
    payload = encode_png(image)
    header, pixels = read_png(payload)
    assert header == {
        "width": 13,
        "height": 9,
        "depth": 16,
        "color_type": {1: 0, 2: 4, 3: 2, 4: 6}[channels],
    }
    assert_array_equal(pixels, image)
    with Image.open(io.BytesIO(payload)) as opened:  # a second, independent reader
        opened.load()
        assert opened.size == (13, 9)


def test_int16_is_shifted_into_uint16():
    image = np.array([[-32768, -1, 0], [1, 1000, 32767]], dtype=np.int16)
    decoded = decode(encode_png(image))
    assert decoded.dtype == np.uint16
    assert_array_equal(decoded, image.astype(np.int32) + 32768)


def test_int16_color_is_shifted_into_uint16():
    image = util.img_as_int(RGB)
    _, pixels = read_png(encode_png(image))
    assert_array_equal(pixels, image.astype(np.int32) + 32768)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_float_in_unit_range_matches_img_as_ubyte(dtype):
    image = util.img_as_float(RGB).astype(dtype) ** 1.7
    assert_array_equal(decode(encode_png(image)), util.img_as_ubyte(image))


def test_signed_float_maps_minus_one_to_one():
    image = np.array([[-1.0, -0.5, 0.0], [0.5, 1.0, 0.25]])
    expected = np.rint((image + 1) * 127.5).astype(np.uint8)
    assert_array_equal(decode(encode_png(image)), expected)


def test_float_out_of_range_is_clipped_and_nan_is_zero():
    image = np.array([[np.nan, 0.5, 1.5], [2.0, 0.0, np.inf]])
    assert_array_equal(decode(encode_png(image)), [[0, 128, 255], [255, 0, 255]])


def test_signed_float_out_of_range_is_clipped():
    image = np.array([[-3.0, -np.inf, 3.0]])
    assert_array_equal(decode(encode_png(image)), [[0, 0, 255]])


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint32, np.uint64])
def test_other_integers_are_clipped_to_8_bits(dtype):
    values = np.array([[0, 7, 255, 300]], dtype=np.int64)
    if np.dtype(dtype).kind == "i":
        values = np.array([[-5, 7, 100, 127]], dtype=np.int64)
    decoded = decode(encode_png(values.astype(dtype)))
    assert_array_equal(decoded, np.clip(values, 0, 255))


@pytest.mark.parametrize(
    "image",
    [
        np.zeros(5, np.uint8),
        np.zeros((4, 4, 5), np.uint8),
        np.zeros((2, 2, 2, 2), np.uint8),
        np.zeros((0, 4), np.uint8),
        np.zeros((3, 3), np.complex128),
    ],
    ids=["1d", "5-channels", "4d", "empty", "complex"],
)
def test_images_without_a_png_form_are_incompatible(image):
    with pytest.raises(IncompatibleImage):
        encode_png(image)


def test_compress_level_is_validated_and_used():
    with pytest.raises(InvalidParameter) as caught:
        encode_png(GRAY, compress_level=10)
    assert caught.value.parameter == "compress_level"
    image = data.camera()
    assert len(encode_png(image, compress_level=0)) > len(encode_png(image, compress_level=9))
    assert_array_equal(decode(encode_png(image, compress_level=0)), image)


def test_encode_accepts_non_contiguous_views():
    view = RGB[::2, ::-1, ::-1]
    assert_array_equal(decode(encode_png(view)), view)
    _, pixels = read_png(encode_png(util.img_as_uint(RGB)[:, ::-1]))
    assert_array_equal(pixels, util.img_as_uint(RGB)[:, ::-1])


def pillow_decode(payload: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(payload)) as image:
        assert image.format == "PNG"
        return np.array(image)


def as_pillow_reads_it(image: np.ndarray) -> np.ndarray:
    """The array Pillow's PNG reader returns for `image` written by encode_png."""
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.dtype == np.uint16 and image.ndim == 3:
        # Pillow reads 16-bit color at 8 bits (the high byte), and gray + alpha as RGBA.
        high = (image >> 8).astype(np.uint8)
        return high[:, :, [0, 0, 0, 1]] if image.shape[2] == 2 else high
    return image


def assert_png_holds(payload: bytes, image: np.ndarray) -> None:
    """Check `payload` against `image` with our reader (every bit) and with Pillow's."""
    height, width = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    header, pixels = read_png(payload)
    assert header == {
        "width": width,
        "height": height,
        "depth": 8 * image.dtype.itemsize,
        "color_type": {1: 0, 2: 4, 3: 2, 4: 6}[channels],
    }
    assert_array_equal(pixels, image.reshape(height, width, channels))
    decoded = pillow_decode(payload)
    expected = as_pillow_reads_it(image)
    assert decoded.dtype == expected.dtype
    assert_array_equal(decoded, expected)


SHAPES = {
    "gray": (9, 13),
    "hw1": (9, 13, 1),
    "la": (9, 13, 2),
    "rgb": (9, 13, 3),
    "rgba": (9, 13, 4),
    "1x1": (1, 1),
    "1x1-rgba": (1, 1, 4),
    "wide": (1, 3001),
    "tall": (3001, 1),
    "wide-rgb": (1, 777, 3),
    "tall-la": (777, 1, 2),
}


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_png_round_trips_exactly(shape, dtype):
    rng = np.random.default_rng(len(shape) * 10_000 + shape[0] + shape[1])
    image = rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype, endpoint=True)
    assert_png_holds(encode_png(image), image)


@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.uint16, np.int16, np.float64])
def test_single_black_pixel(dtype):
    payload = encode_png(np.zeros((1, 1), dtype))
    expected = np.array([[32768 if dtype == np.int16 else 0]])
    assert_array_equal(read_png(payload)[1][:, :, 0], expected)
    assert_array_equal(pillow_decode(payload), expected)


@pytest.mark.parametrize("compress_level", [0, 9])
@pytest.mark.parametrize("image", [RGB, util.img_as_uint(RGB)], ids=["uint8", "uint16"])
def test_lowest_and_highest_compress_levels_round_trip(image, compress_level):
    assert_png_holds(encode_png(image, compress_level=compress_level), image)


@pytest.mark.parametrize(
    "image",
    [RGB, util.img_as_uint(GRAY), RGB[:63, ::-1]],
    ids=["uint8-rgb", "uint16-gray", "partial-last-block"],
)
def test_images_larger_than_a_block_span_several_idat_chunks(image, monkeypatch):
    monkeypatch.setattr(codec, "_BLOCK_BYTES", 1000)
    payload = encode_png(image, compress_level=9)
    assert sum(kind == b"IDAT" for kind, _ in png_chunks(payload)) > 1
    assert_png_holds(payload, image)


def test_float_scale_is_chosen_from_the_whole_image_not_each_block(monkeypatch):
    monkeypatch.setattr(codec, "_BLOCK_BYTES", 100)
    image = np.linspace(0, 1, 40 * 30).reshape(40, 30)
    image[-1, -1] = -1  # only the last block is negative; every row uses the [-1, 1] scale
    expected = np.rint((image + 1) * 127.5).astype(np.uint8)
    assert_array_equal(pillow_decode(encode_png(image)), expected)


# --------------------------------------------------------------------------- summaries


@pytest.mark.parametrize(
    "image",
    [GRAY, RGB, GRAY > 90, util.img_as_float(RGB), util.img_as_uint(GRAY), util.img_as_int(GRAY)],
    ids=["uint8", "rgb", "bool", "float64", "uint16", "int16"],
)
def test_summarize_matches_numpy(image):
    summary = summarize(image)
    assert summary["shape"] == list(image.shape)
    assert summary["dtype"] == str(image.dtype)
    assert summary["min"] == float(image.min())
    assert summary["max"] == float(image.max())
    assert_allclose(summary["mean"], image.mean(), rtol=1e-12)
    assert all(type(summary[key]) is float for key in ("min", "max", "mean"))


def test_summarize_ignores_non_finite_values():
    summary = summarize(np.array([[np.nan, 1.0], [3.0, np.inf]], dtype=np.float32))
    assert (summary["min"], summary["max"], summary["mean"]) == (1.0, 3.0, 2.0)


def test_summarize_without_finite_values_gives_none():
    summary = summarize(np.full((2, 2), np.nan))
    assert (summary["min"], summary["max"], summary["mean"]) == (None, None, None)


def test_gray_palette_becomes_2d():
    gray_palette = Image.fromarray(GRAY).quantize(32).convert("RGB").convert("L").convert("P")
    decoded = decode(pil_encode(gray_palette, "PNG"))
    assert decoded.ndim == 2
    assert_array_equal(decoded, np.array(gray_palette.convert("L")))


# --------------------------------------------------------------------------- details


def test_refusals_say_what_was_refused():
    with pytest.raises(InvalidImage) as caught:
        decode(b"")
    assert caught.value.detail == "the upload is empty"
    with pytest.raises(UnsupportedMediaType) as caught:
        decode(b"\x00" * 40)
    assert caught.value.detail == "the upload is not a recognized image"
    with pytest.raises(UnsupportedMediaType) as caught:
        decode(pil_encode(GRAY, "PPM"))
    assert caught.value.detail == (
        "image format PPM is not supported; use one of BMP, GIF, JPEG, PNG, TIFF, WEBP"
    )
    with pytest.raises(ImageTooLarge) as caught:
        decode_image(pil_encode(GRAY, "PNG"), max_pixels=5119)
    assert caught.value.detail == "image has 80x64 = 5120 pixels, more than the limit of 5119"


def test_corrupt_pixel_data_names_the_format_in_the_detail():
    payload = bytearray(pil_encode(RGB, "PNG"))
    payload[100:140] = b"\xff" * 40
    with pytest.raises(InvalidImage) as caught:
        decode(bytes(payload))
    assert caught.value.detail.startswith("the PNG image is truncated or corrupt: ")
    assert caught.value.context == {"format": "PNG"}


def test_multi_picture_jpeg_is_a_jpeg_and_yields_its_first_picture():
    frames = [Image.fromarray(np.full((8, 12, 3), value, np.uint8)) for value in (40, 200)]
    payload = pil_encode(frames[0], "MPO", save_all=True, append_images=frames[1:])
    with Image.open(io.BytesIO(payload)) as opened:
        assert (opened.format, opened.n_frames) == ("MPO", 2)
    decoded = decode(payload)
    assert decoded.shape == (8, 12, 3)
    assert np.abs(decoded.astype(int) - 40).max() <= 2


def gif_with_first_frame(screen: int, frame: int) -> bytes:
    """A GIF whose logical screen is screen x screen, its one frame frame x frame."""
    header = b"GIF89a" + struct.pack("<HHBBB", screen, screen, 0, 0, 0)
    descriptor = b"," + struct.pack("<HHHHB", 0, 0, frame, frame, 0)
    return header + descriptor + b"\x02\x02\x44\x01\x00;"


def test_gif_frame_far_past_its_screen_is_rejected_while_opening():
    # Pillow's GIF reader grows the image to its first frame's extent and refuses one
    # over twice Pillow's limit as it opens the file: that is a too-large image too.
    with pytest.raises(ImageTooLarge) as caught:
        decode_image(gif_with_first_frame(1, 30_000), max_pixels=10**6)
    assert caught.value.context == {"pixels": None, "limit": 10**6}
    assert caught.value.detail.startswith("Image size (900000000 pixels) exceeds limit")


def test_a_file_too_short_for_some_readers_is_still_identified_by_the_others():
    # Three bytes: Pillow's DIB test cannot read them; its PPM reader claims them.
    with pytest.raises(InvalidImage) as caught:
        decode(b"P6\n")
    assert caught.value.context == {"format": "PPM"}
    assert caught.value.detail.startswith("the PPM image header is corrupt: ")


@pytest.mark.parametrize(
    "payload",
    [b"BM\x00", b"BM" + bytes(12) + struct.pack("<I", 99) + bytes(40)],
    ids=["header-cut", "unknown-header-size"],
)
def test_a_broken_header_of_a_known_format_is_an_invalid_image(payload):
    with pytest.raises(InvalidImage) as caught:
        decode(payload)
    assert caught.value.context == {"format": "BMP"}
    assert caught.value.detail.startswith("the BMP image header is corrupt: ")
    assert len(caught.value.detail) > len("the BMP image header is corrupt: ")


def test_pixel_limit_applies_when_pillow_has_none(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    payload = pil_encode(GRAY, "PNG")
    assert_array_equal(decode_image(payload, max_pixels=5120), GRAY)
    with pytest.raises(ImageTooLarge) as caught:
        decode_image(payload, max_pixels=5119)
    assert caught.value.context == {"pixels": 5120, "limit": 5119}


@pytest.mark.parametrize(
    ("values", "dtype"),
    [
        ([[0, 65535], [1, 2]], np.uint16),
        ([[0, 65536], [1, 2]], np.int32),
        ([[-1, 65535], [1, 2]], np.int32),
    ],
    ids=["0-and-65535", "one-over", "one-under"],
)
def test_32_bit_integer_tiff_narrows_exactly_at_the_uint16_bounds(values, dtype):
    image = np.array(values, np.int32)
    decoded = decode(pil_encode(Image.fromarray(image), "TIFF"))
    assert decoded.dtype == dtype
    assert_array_equal(decoded, image)


def half_way_points(dtype) -> np.ndarray:
    """The values that float * 255 puts on or next to a rounding boundary."""
    middles = ((np.arange(255) + 0.5) / 255).astype(dtype)
    return np.stack([middles, np.nextafter(middles, dtype(2)), np.nextafter(middles, dtype(-1))])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_float_rounding_boundaries_match_img_as_ubyte(dtype):
    # skimage scales in the input's precision (float32 stays float32); so does encode_png.
    image = half_way_points(dtype)
    assert_array_equal(read_png(encode_png(image))[1][:, :, 0], util.img_as_ubyte(image))


def test_png_header_fields_and_end_follow_the_png_specification():
    payload = encode_png(np.zeros((3, 5, 3), np.uint16))
    chunks = list(png_chunks(payload))
    assert chunks[0] == (b"IHDR", struct.pack(">IIBBBBB", 5, 3, 16, 2, 0, 0, 0))
    assert chunks[-1] == (b"IEND", b"")
    assert payload.endswith(b"\x00\x00\x00\x00IEND\xae\x42\x60\x82")


def idat_stream(payload: bytes) -> bytes:
    return b"".join(body for kind, body in png_chunks(payload) if kind == b"IDAT")


@pytest.mark.parametrize("compress_level", range(1, 10))
def test_the_deflate_stream_is_isal_at_level_1_and_zlib_otherwise(compress_level):
    # Level 0 is left out: its stored blocks split where the writer's calls split them.
    image = data.camera()[:64]
    stream = idat_stream(encode_png(image, compress_level=compress_level))
    raw = zlib.decompress(stream)
    compress = isal_zlib.compress if compress_level == 1 else zlib.compress
    assert stream == compress(raw, compress_level)
    if compress_level == 1:
        assert stream == idat_stream(encode_png(image))  # the default level


def test_compress_level_refusal_says_why():
    with pytest.raises(InvalidParameter) as caught:
        encode_png(GRAY, compress_level=-1)
    assert caught.value.detail == "invalid `compress_level`: must be in 0..9, got -1"


def test_summarize_means_float32_in_double_precision():
    # In float32, 2**24 + 1 is 2**24 again: a float32 accumulator would lose the ones.
    image = np.array([[2.0**24, 1.0], [1.0, 1.0]], dtype=np.float32)
    assert summarize(image)["mean"] == statistics.fmean([2.0**24, 1.0, 1.0, 1.0])
