"""Decode uploads into numpy arrays and encode arrays as PNG.

Decoding
--------
:func:`decode_image` accepts the formats in :data:`SUPPORTED_FORMATS` (MPO, the
multi-picture JPEG that phones write, counts as JPEG). It reads the header first,
rejects images over the pixel limit before any pixel data is decoded, applies the
EXIF orientation and keeps only the first frame of animations. Each Pillow mode
becomes a C-contiguous array as follows:

==============================  ===========  ======================================================
Pillow mode                     dtype        shape and meaning
==============================  ===========  ======================================================
``1`` (bilevel)                 ``bool``     ``(H, W)``
``L``                           ``uint8``    ``(H, W)``
``I;16``, ``I;16L/B/N``         ``uint16``   ``(H, W)``, native byte order
``I`` (32-bit signed)           ``uint16``   ``(H, W)`` when every value fits 0..65535 (16-bit
                                             data widened by the reader), else ``int32``
``F`` (32-bit float)            ``float32``  ``(H, W)``, values as stored, not rescaled
``LA``, ``La``                  ``uint8``    ``(H, W, 2)``: gray, alpha
``P`` (palette)                 ``uint8``    ``(H, W, 4)`` RGBA when the palette has
                                             transparency, else ``(H, W)`` when every
                                             entry is gray, else ``(H, W, 3)`` RGB
``PA``                          ``uint8``    ``(H, W, 4)`` RGBA
``RGB``                         ``uint8``    ``(H, W, 3)``
``RGBA``, ``RGBa``              ``uint8``    ``(H, W, 4)``, alpha kept (straight, not
                                             premultiplied)
``CMYK``, ``YCbCr``, ``LAB``,   ``uint8``    ``(H, W, 3)`` RGB
``HSV``, ``RGBX``, any other
==============================  ===========  ======================================================

Pillow reads 16-bit color PNGs as 8-bit ``RGB``/``RGBA``, so only 16-bit grayscale
survives a round trip through :func:`decode_image` at full depth.

NumPy ``.npy`` files (``numpy.lib.format``, recognised by their magic bytes) decode to
the array they hold, dtype and shape kept: ``bool``, signed and unsigned integers up to
64 bits and ``float16/32/64``, shaped ``(H, W)`` or ``(H, W, C)`` with ``C`` in 1..4.
Their header is read first, so the pixel limit is checked before the data is; object
arrays (pickles), structured and complex dtypes are refused, nothing is unpickled.

Encoding
--------
:data:`ENCODERS` maps each output format to its media type and encoder: ``png``
(below), ``npy`` (:func:`encode_npy`: the array exactly, as ``numpy.save`` writes it)
and ``tiff`` (:func:`encode_tiff`: written by tifffile, every dtype above kept, float
samples as IEEE floats; Pillow reads only single-channel float32 TIFFs, tifffile,
ImageJ/Fiji and GDAL read them all).

:func:`encode_png` writes PNGs with a small zlib writer of its own rather than
Pillow's, which is slower and cannot write 16-bit color. Rows are stored unfiltered
(filter type 0) in as many IDAT chunks as the size needs. At ``compress_level=1``
(the service's default) the deflate stream comes from ISA-L (the ``isal`` package),
several times faster than zlib's level 1 for output of about the same size; the
other levels are zlib's own.

==============================  ====================================================
dtype                           PNG samples
==============================  ====================================================
``bool``                        8-bit, ``False`` -> 0, ``True`` -> 255
``uint8``                       8-bit, as is
``uint16``                      16-bit, as is (any channel count)
``int16`` (``img_as_int``)      16-bit, shifted by +32768 so -32768 -> 0, 0 -> 32768
``float16/32/64``               8-bit: ``[0, 1]`` -> 0..255 when the minimum is >= 0,
                                else ``[-1, 1]`` -> 0..255; rounded, out-of-range
                                values clipped, NaN -> 0
other integers (``int8``,       8-bit, values clipped to 0..255 (not rescaled)
``int32``, ``uint32``, ...)
==============================  ====================================================

=================  ==========================
shape              PNG color type
=================  ==========================
``(H, W)``         grayscale (``L``)
``(H, W, 1)``      grayscale (``L``)
``(H, W, 2)``      grayscale + alpha (``LA``)
``(H, W, 3)``      ``RGB``
``(H, W, 4)``      ``RGBA``
=================  ==========================
"""

from __future__ import annotations

import io
import struct
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import tifffile
from isal import isal_zlib
from PIL import Image, ImageFile, ImageOps

from workers.errors import (
    ImageTooLarge,
    IncompatibleImage,
    InvalidImage,
    InvalidParameter,
    TensorlensError,
    UnsupportedMediaType,
)

__all__ = [
    "ENCODERS",
    "SUPPORTED_FORMATS",
    "Encoder",
    "OutputFormat",
    "decode_image",
    "encode_npy",
    "encode_png",
    "encode_tiff",
    "summarize",
]

SUPPORTED_FORMATS: frozenset[str] = frozenset({"PNG", "JPEG", "TIFF", "BMP", "WEBP", "GIF"})

# Pillow names multi-picture JPEGs "MPO"; to a client they are JPEGs.
_FORMAT_ALIASES = {"MPO": "JPEG"}

_AS_IS_MODES = frozenset({"1", "L", "LA", "RGB", "RGBA", "F", "I;16", "I;16L", "I;16B", "I;16N"})
_CONVERSIONS = {"La": "LA", "RGBa": "RGBA", "PA": "RGBA"}


def decode_image(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Decode an uploaded image into a numpy array.

    Parameters
    ----------
    data : bytes
        The encoded file.
    max_pixels : int
        Largest ``width * height`` accepted, checked against the header before any
        pixel data is decoded. Pillow's own ``PIL.Image.MAX_IMAGE_PIXELS`` caps it,
        so Pillow never refuses an image that passed this check.

    Returns
    -------
    numpy.ndarray
        C-contiguous, writeable array; see the module docstring for dtype and shape.

    Raises
    ------
    InvalidImage
        `data` is empty, truncated or corrupt.
    UnsupportedMediaType
        `data` is not an image, or its format is not in :data:`SUPPORTED_FORMATS`.
    ImageTooLarge
        The image has more pixels than allowed.
    """
    if not data:
        raise InvalidImage("the upload is empty")
    if data.startswith(_NPY_MAGIC):
        with _failures_as_invalid_image("NPY"):
            return _decode_npy(data, max_pixels)
    limit = (
        max_pixels if Image.MAX_IMAGE_PIXELS is None else min(max_pixels, Image.MAX_IMAGE_PIXELS)
    )
    with _pillow_warnings_ignored(), _identify(data, limit) as image:
        image_format = _FORMAT_ALIASES.get(str(image.format), str(image.format))
        if image_format not in SUPPORTED_FORMATS:
            raise UnsupportedMediaType(
                f"image format {image_format} is not supported; use one of "
                f"{', '.join(sorted(SUPPORTED_FORMATS))}",
                format=image_format,
            )
        width, height = image.size
        if width * height > limit:
            raise ImageTooLarge(
                f"image has {width}x{height} = {width * height} pixels, more than the "
                f"limit of {limit}",
                pixels=width * height,
                limit=limit,
            )
        try:
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            return _to_array(image)
        except Image.DecompressionBombError as exc:
            # GIF frames may extend past the declared screen size; Pillow checks those.
            raise ImageTooLarge(str(exc), pixels=None, limit=limit) from exc
        except Exception as exc:  # whatever a damaged file makes a decoder raise
            raise InvalidImage(
                f"the {image_format} image is truncated or corrupt: {exc}", format=image_format
            ) from exc


@contextmanager
def _failures_as_invalid_image(image_format: str) -> Iterator[None]:
    """Any exception but our own while reading a file means the file is broken."""
    try:
        yield
    except TensorlensError:
        raise
    except Exception as exc:
        raise InvalidImage(
            f"the {image_format} file is truncated or corrupt: {exc}", format=image_format
        ) from exc


# catch_warnings swaps process-wide state; the lock keeps two decoding threads from
# restoring each other's filters (workers decode on one thread, so it is uncontended).
_WARNINGS_LOCK = threading.Lock()


@contextmanager
def _pillow_warnings_ignored() -> Iterator[None]:
    """Silence Pillow's UserWarnings about the upload's metadata (e.g. "Corrupt EXIF data").

    They describe the client's file, not a defect here: the image decodes or is
    rejected as InvalidImage either way. Pillow's deprecation warnings, which are
    about our code, still show.
    """
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        yield


def _identify(data: bytes, limit: int) -> ImageFile.ImageFile:
    """Open `data` lazily, like ``Image.open`` minus its decompression-bomb check.

    ``Image.open`` warns (or raises) about large images from the header alone,
    before we see the size, and changing ``MAX_IMAGE_PIXELS`` around it would race
    with other threads. Walking Pillow's plugin registry the way ``Image.open``
    does lets our own check, with the service's limit, be the first and only one.
    """
    Image.init()
    prefix = data[:16]
    stream = io.BytesIO(data)
    corrupt: tuple[str, Exception] | None = None
    for name in Image.ID:
        factory, accept = Image.OPEN[name]
        try:
            accepted = True if accept is None else accept(prefix)
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue  # a prefix too short for the plugin's test (Image.open skips it too)
        # A string means "this format, but unreadable here" (e.g. a missing codec).
        if not accepted or isinstance(accepted, str):
            continue
        stream.seek(0)
        try:
            return factory(stream, "")
        except (SyntaxError, IndexError, TypeError, struct.error) as exc:
            # Not this format after all, as Image.open reasons; but if the plugin claimed
            # the magic bytes, the file is most likely a damaged one of its kind.
            if accept is not None and corrupt is None:
                corrupt = (name, exc)
        except Image.DecompressionBombError as exc:
            raise ImageTooLarge(str(exc), pixels=None, limit=limit) from exc
        except Exception as exc:  # any other failure of a plugin's parser: a broken file
            raise InvalidImage(f"the {name} image header is corrupt: {exc}", format=name) from exc
    if corrupt is not None:
        name, exc = corrupt
        raise InvalidImage(f"the {name} image header is corrupt: {exc}", format=name) from exc
    raise UnsupportedMediaType("the upload is not a recognized image")


def _to_array(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode == "P":
        image = image.convert(_palette_target(image))
    elif mode == "I":
        return _narrow_int32(np.array(image))
    elif mode in _CONVERSIONS:
        image = image.convert(_CONVERSIONS[mode])
    elif mode not in _AS_IS_MODES:
        image = image.convert("RGB")
    # np.array copies from Pillow's read-only buffer, giving a writeable C-contiguous array.
    array = np.array(image)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array


def _palette_target(image: Image.Image) -> str:
    if image.has_transparency_data:
        return "RGBA"
    # A gray palette (GIFs and PNGs of grayscale images) holds no color to keep.
    palette = np.asarray(image.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
    is_gray = (palette == palette[:, :1]).all()
    return "L" if is_gray else "RGB"


def _narrow_int32(array: np.ndarray) -> np.ndarray:
    # Readers widen 16-bit data to mode I; uint16 keeps it usable by skimage's dtype rules.
    if array.size and array.min() >= 0 and array.max() <= np.iinfo(np.uint16).max:
        return array.astype(np.uint16)
    return np.ascontiguousarray(array, dtype=np.int32)


def encode_png(image: np.ndarray, *, compress_level: int = 1) -> bytes:
    """Encode an array as PNG following the rules in the module docstring.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` or ``(H, W, C)`` with ``C`` in 1..4, of any real dtype.
    compress_level : int, optional
        zlib level, 0 (none) to 9 (smallest). The default, 1, favours speed and
        compresses with ISA-L rather than zlib.

    Returns
    -------
    bytes
        The PNG file.

    Raises
    ------
    IncompatibleImage
        The shape or dtype has no PNG representation.
    InvalidParameter
        `compress_level` is outside 0..9.
    """
    if not 0 <= compress_level <= 9:
        raise InvalidParameter("compress_level", f"must be in 0..9, got {compress_level}")
    array = _as_png_layout(np.asarray(image))
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    return _write_png(array, compress_level)


def _as_png_layout(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind not in "biuf":
        raise IncompatibleImage(
            f"cannot encode a {array.dtype} image as PNG", dtype=str(array.dtype)
        )
    channels_ok = array.ndim == 2 or (array.ndim == 3 and 1 <= array.shape[2] <= 4)
    if not channels_ok:
        raise IncompatibleImage(
            f"cannot encode an image of shape {array.shape} as PNG: "
            "expected (H, W) or (H, W, C) with 1 to 4 channels",
            shape=list(array.shape),
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise IncompatibleImage(
            f"cannot encode an empty image of shape {array.shape}", shape=list(array.shape)
        )
    return array


def _sample_converter(array: np.ndarray) -> tuple[np.dtype, Callable[[np.ndarray], np.ndarray]]:
    """Return the PNG sample dtype for `array` and a function turning its rows into samples."""
    if array.dtype == np.uint16:
        return np.dtype(">u2"), lambda rows: rows
    if array.dtype == np.int16:
        # Flipping the sign bit is the +32768 shift, without a wider temporary.
        return np.dtype(">u2"), lambda rows: rows.view(np.uint16) ^ np.uint16(0x8000)
    if array.dtype.kind == "f":
        # The scale is chosen from the whole image, so it is fixed before any rows are converted.
        # fmin ignores NaN without the "All-NaN slice" warning np.nanmin gives.
        signed = bool(np.fmin.reduce(array, axis=None) < 0)
        return np.dtype(np.uint8), lambda rows: _float_to_uint8(rows, signed=signed)
    return np.dtype(np.uint8), _int_to_uint8


def _int_to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind == "b":
        return np.multiply(array, 255, dtype=np.uint8)
    if array.dtype == np.uint8:
        return array
    return np.clip(array, 0, 255).astype(np.uint8)


def _float_to_uint8(array: np.ndarray, *, signed: bool) -> np.ndarray:
    scaled = array.astype(np.float64 if array.dtype.itemsize > 4 else np.float32)
    if signed:
        scaled += 1
        scaled *= 127.5
    else:
        scaled *= 255
    np.nan_to_num(scaled, copy=False, nan=0.0)
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> gray, gray+alpha, RGB, RGBA
# Rows are converted and compressed this many bytes at a time, so a large image needs
# only the PNG itself beyond the input, not whole-image temporaries.
_BLOCK_BYTES = 1 << 20


def _write_png(array: np.ndarray, compress_level: int) -> bytes:
    """Write an ``(H, W, C)`` array as a PNG with filter type 0 ("None") on every row.

    Adaptive per-row filtering, as Pillow does it, makes natural photos 10-30% smaller
    but takes most of the encoding time; at the low zlib levels the service uses, speed
    wins, and masks and equalized images come out no larger unfiltered. Each block of
    rows becomes one IDAT chunk, which keeps every chunk far below PNG's 2**31 - 1 bytes.
    """
    height, width, channels = array.shape
    sample_dtype, to_samples = _sample_converter(array)
    header = struct.pack(
        ">IIBBBBB", width, height, sample_dtype.itemsize * 8, _PNG_COLOR_TYPES[channels], 0, 0, 0
    )
    row_bytes = width * channels * sample_dtype.itemsize
    rows_per_block = max(1, _BLOCK_BYTES // (1 + row_bytes))
    filtered = np.empty((min(rows_per_block, height), 1 + row_bytes), dtype=np.uint8)
    filtered[:, 0] = 0  # the filter type byte that starts each row
    compressor = _compressor(compress_level)
    # BytesIO.getvalue hands over its buffer without copying it.
    out = io.BytesIO()
    out.write(_PNG_SIGNATURE)
    out.write(_png_chunk(b"IHDR", header))
    for start in range(0, height, rows_per_block):
        stop = min(start + rows_per_block, height)
        block = filtered[: stop - start]
        samples = to_samples(array[start:stop]).reshape(stop - start, -1)
        block[:, 1:].view(sample_dtype)[...] = samples
        compressed = compressor.compress(block)
        if stop == height:
            compressed += compressor.flush()
        if compressed:
            out.write(_png_chunk(b"IDAT", compressed))
    out.write(_png_chunk(b"IEND", b""))
    return out.getvalue()


def _compressor(compress_level: int) -> Any:
    """A zlib-format compressor: ISA-L for level 1, zlib for the others."""
    if compress_level == 1:
        return isal_zlib.compressobj(1)
    return zlib.compressobj(compress_level)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(kind))
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def summarize(image: np.ndarray) -> dict[str, Any]:
    """Describe an array in JSON-able terms.

    Parameters
    ----------
    image : numpy.ndarray
        Any image.

    Returns
    -------
    dict
        ``shape`` (list of int), ``dtype`` (str), and ``min``, ``max``, ``mean`` as
        Python floats over the finite values; each is ``None`` when there is none
        (an empty or all-NaN image), since JSON has no NaN.
    """
    values = image
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        values = image[np.isfinite(image)]
    if values.size == 0:
        low = high = mean = None
    else:
        low = float(values.min())
        high = float(values.max())
        mean = float(values.mean(dtype=np.float64))
    return {
        "shape": list(image.shape),
        "dtype": str(image.dtype),
        "min": low,
        "max": high,
        "mean": mean,
    }


# NumPy arrays ------------------------------------------------------------------

_NPY_MAGIC = b"\x93NUMPY"
#: dtype kinds an .npy upload may hold: bool, signed and unsigned integers, floats.
_NPY_KINDS = "biuf"
#: NumPy's own limit on an .npy header (``numpy.lib.format``), so a huge one is refused.
_NPY_MAX_HEADER_BYTES = 10_000


def _decode_npy(data: bytes, max_pixels: int) -> np.ndarray:
    """The array an ``.npy`` file holds; its header is checked before any data is read."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran_order, dtype = read_header(stream, max_header_size=_NPY_MAX_HEADER_BYTES)
    except ValueError as exc:  # a bad magic, version or header dictionary
        raise InvalidImage(f"the .npy header is corrupt: {exc}", format="NPY") from exc
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in _NPY_KINDS:
        raise InvalidImage(
            f"an .npy of dtype {dtype} is not an image: expected bool, integers or floats",
            format="NPY",
            dtype=str(dtype),
        )
    if not (len(shape) == 2 or (len(shape) == 3 and 1 <= shape[2] <= 4)):
        raise InvalidImage(
            f"an .npy of shape {tuple(shape)} is not an image: expected (H, W) or (H, W, C) "
            "with 1 to 4 channels",
            format="NPY",
            shape=list(shape),
        )
    pixels = shape[0] * shape[1]
    if pixels > max_pixels:
        raise ImageTooLarge(
            f"image has {shape[1]}x{shape[0]} = {pixels} pixels, more than the limit of "
            f"{max_pixels}",
            pixels=pixels,
            limit=max_pixels,
        )
    count = int(np.prod(shape))
    offset = stream.tell()
    if len(data) - offset != count * dtype.itemsize:
        raise InvalidImage(
            f"the .npy data is {len(data) - offset} bytes, its header says "
            f"{count * dtype.itemsize}",
            format="NPY",
        )
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    array = flat.reshape(shape[::-1]).T if fortran_order else flat.reshape(shape)
    # A copy: writeable, C-contiguous and in native byte order, as every decoded image.
    return np.array(array, dtype=dtype.newbyteorder("="), order="C")


def encode_npy(image: np.ndarray) -> bytearray:
    """The array as an ``.npy`` file (``numpy.save``'s format): dtype and shape kept.

    A ``bytearray``: it crosses from a worker to the API process out of band and is
    received into a buffer the API process then sends as it is (:mod:`workers._channel`).
    """
    array = np.asarray(image)
    if array.dtype.hasobject:
        raise IncompatibleImage(
            f"cannot encode a {array.dtype} image as .npy", dtype=str(array.dtype)
        )
    # numpy.save's bytes, in one copy: the header, then the C-ordered data as it lies in
    # memory (write_array would go through a growing buffer, ~25x slower for 2 MB).
    array = np.ascontiguousarray(array)
    fields = np.lib.format.header_data_from_array_1_0(array)
    header = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(header, fields)
    except ValueError:  # a header too long for format 1.0 (e.g. a very long shape)
        header = io.BytesIO()
        np.lib.format.write_array_header_2_0(header, fields)
    return bytearray().join([header.getvalue(), array.reshape(-1).view(np.uint8)])


def encode_tiff(image: np.ndarray) -> bytes:
    """The array as an uncompressed TIFF written by tifffile, dtype kept.

    ``(H, W, 3)`` and ``(H, W, 4)`` are RGB (the fourth channel unassociated alpha);
    other shapes are grayscale with the extra channels as samples.
    """
    array = _as_png_layout(np.asarray(image))
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    rgb = array.ndim == 3 and array.shape[2] in (3, 4)
    out = io.BytesIO()
    tifffile.imwrite(
        out,
        array,
        photometric="rgb" if rgb else "minisblack",
        planarconfig="contig" if array.ndim == 3 else None,
        extrasamples=("unassalpha",) if rgb and array.shape[2] == 4 else None,
    )
    return out.getvalue()


OutputFormat = Literal["png", "npy", "tiff"]


@dataclass(frozen=True)
class Encoder:
    """An output format: its media type and how an array becomes a file of it."""

    media_type: str
    encode: Callable[[np.ndarray, int], bytes | bytearray]


#: Every output format of the image routes, by name.
ENCODERS: dict[str, Encoder] = {
    "png": Encoder("image/png", lambda image, level: encode_png(image, compress_level=level)),
    "npy": Encoder("application/x-npy", lambda image, _level: encode_npy(image)),
    "tiff": Encoder("image/tiff", lambda image, _level: encode_tiff(image)),
}
