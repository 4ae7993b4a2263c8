"""The Open Inference Protocol's tensors: inference requests in, inference responses out.

KServe's ``inference_rest.md`` with Triton's binary tensor data extension
(``extension_binary_data.md``): a request body is the JSON inference request, or, when
the ``Inference-Header-Content-Length`` header says how long that JSON is, the JSON
followed by the raw little-endian bytes of each input that has a ``binary_data_size``
parameter, in the order of the inputs (a length of 0: the body is the one input's bytes
alone). Outputs are answered the same way when ``binary_data`` (per output) or
``binary_data_output`` (the request's default) asks for them as bytes.

This module only parses and shapes; nothing here knows of models or of the web framework.
Whatever a request gets wrong raises :class:`~workers.errors.InvalidParameter` naming the
field, which the routes under ``/v2`` answer as the protocol's ``400 {"error": ...}``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, BaseModel, Field, StrictInt, StrictStr, WithJsonSchema
from pydantic import ValidationError as PydanticValidationError

from workers.errors import InvalidParameter, PayloadTooLarge, UnsupportedMediaType

#: The header giving the length of the JSON part of a body with binary tensor data.
HEADER_LENGTH = "Inference-Header-Content-Length"
OCTET_STREAM = "application/octet-stream"

#: The protocol's datatypes and their little-endian numpy dtypes (BYTES has none: it is
#: no number, and no model here takes it).
DATATYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(code)
    for name, code in {
        "BOOL": "?",
        "UINT8": "<u1",
        "UINT16": "<u2",
        "UINT32": "<u4",
        "UINT64": "<u8",
        "INT8": "<i1",
        "INT16": "<i2",
        "INT32": "<i4",
        "INT64": "<i8",
        "FP16": "<f2",
        "FP32": "<f4",
        "FP64": "<f8",
    }.items()
}
_DATATYPE_OF = {(dtype.kind, dtype.itemsize): name for name, dtype in DATATYPES.items()}
#: Every value of these converts exactly to FP32; other numeric types are checked value
#: by value (an INT64 tensor of small counts is as good as an FP32 one).
_EXACT_IN_FP32 = frozenset({"BOOL", "UINT8", "UINT16", "INT8", "INT16", "FP16", "FP32"})
_FP32_MANTISSA_BITS = 24
#: Parameters of Triton extensions this server does not implement: refused, not ignored,
#: so a client never gets an answer it did not ask for.
_UNSUPPORTED = {
    "shared_memory_region": "the shared memory extension is not supported",
    "shared_memory_byte_size": "the shared memory extension is not supported",
    "shared_memory_offset": "the shared memory extension is not supported",
    "classification": "the classification extension is not supported",
}


def _check_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    for name, value in parameters.items():
        if not isinstance(value, str | int | float):  # bool is an int
            raise ValueError(f"`{name}` must be a string, a number or a boolean")
    return parameters


#: The protocol's $parameters: names to a string, a number or a boolean.
Parameters = Annotated[
    dict[str, Any],
    AfterValidator(_check_parameters),
    WithJsonSchema(
        {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}
    ),
]
Dimension = Annotated[StrictInt, Field(ge=0, le=2**64 - 1)]


class RequestInput(BaseModel):
    """The protocol's `$request_input`: an input tensor, its data as JSON or as binary data."""

    name: StrictStr
    shape: list[Dimension] = Field(description="Each dimension; `[rows, features]` here.")
    datatype: StrictStr = Field(
        description="BOOL, UINT8-UINT64, INT8-INT64, FP16, FP32 or FP64: converted to the "
        "model's FP32 when every value converts exactly, else refused."
    )
    parameters: Parameters | None = Field(
        None, description="`binary_data_size`: the tensor's bytes follow the JSON."
    )
    data: list[Any] | None = Field(
        None, description="Row-major, flat or nested; left out when sent as binary data."
    )


class RequestOutput(BaseModel):
    """The protocol's `$request_output`: an output to return (every output when none is named)."""

    name: StrictStr
    parameters: Parameters | None = Field(
        None, description="`binary_data`: return this output as binary data."
    )


class InferRequest(BaseModel):
    """The protocol's `$inference_request`."""

    id: StrictStr | None = None
    parameters: Parameters | None = Field(
        None, description="`binary_data_output`: every output as binary data by default."
    )
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    """The protocol's `$response_output`: `data`, or `binary_data_size` bytes after the JSON."""

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferResponse(BaseModel):
    """The protocol's `$inference_response`."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


@dataclass(frozen=True)
class Body:
    """A request body split as the binary data extension says: JSON, then tensor bytes."""

    json: bytes
    binary: bytes
    #: The body was one input's bytes and no JSON (``Inference-Header-Content-Length: 0``).
    raw: bool = False


#: ``Content-Encoding`` values tritonclient compresses requests with, and their zlib wbits.
_ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS, "identity": 0}


def inflate(body: bytes, encoding: str | None, limit_bytes: int) -> bytes:
    """``body`` as it was before its ``Content-Encoding`` (gzip or deflate), refused once
    it inflates past ``limit_bytes`` (so a small bomb costs no more than the limit).

    Raises
    ------
    UnsupportedMediaType
        Another encoding.
    PayloadTooLarge
        Over ``limit_bytes`` inflated.
    InvalidParameter
        A body that is not what its encoding says.
    """
    wbits = _ENCODINGS.get((encoding or "identity").strip().lower())
    if wbits is None:
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r}: only gzip and deflate")
    if not wbits:
        return body
    inflater = zlib.decompressobj(wbits)
    try:
        data = inflater.decompress(body, limit_bytes + 1)
    except zlib.error as exc:
        raise InvalidParameter("body", f"not {encoding} data: {exc}") from None
    if len(data) > limit_bytes:
        raise PayloadTooLarge(
            f"the request body is over the limit of {limit_bytes} bytes inflated",
            limit_bytes=limit_bytes,
        )
    if not inflater.eof or inflater.unused_data:
        raise InvalidParameter("body", f"not one whole {encoding} stream")
    return data


def split_body(body: bytes, header_length: str | None) -> Body:
    if header_length is None:
        return Body(body, b"")
    if not header_length.isdecimal() or int(header_length) > len(body):
        raise InvalidParameter(
            HEADER_LENGTH, f"{header_length!r} is not a length within the {len(body)}-byte body"
        )
    length = int(header_length)
    return Body(body[:length], body[length:], raw=length == 0)


def parse(schema: type[BaseModel], body: bytes, what: str) -> Any:
    """``body`` as ``schema``, or :class:`InvalidParameter` naming the first bad field."""
    try:
        return schema.model_validate_json(body)
    except PydanticValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
        if error["type"] == "json_invalid":
            raise InvalidParameter(what, f"not JSON: {error['msg']}") from None
        raise InvalidParameter(f"{what}{where}", error["msg"]) from None


def raw_request(body: Body, features: int) -> InferRequest:
    """The inference request a raw binary body stands for: one FP32 input of ``features``
    columns, its rows as many as the bytes hold; every output as binary data."""
    row_bytes = features * DATATYPES["FP32"].itemsize
    if not body.binary or len(body.binary) % row_bytes:
        raise InvalidParameter(
            "body", f"{len(body.binary)} bytes are not whole FP32 rows of {features} features"
        )
    size = len(body.binary)
    tensor = RequestInput(
        name="input",
        shape=[size // row_bytes, features],
        datatype="FP32",
        parameters={"binary_data_size": size},
    )
    return InferRequest(inputs=[tensor], parameters={"binary_data_output": True})


def decode_inputs(request: InferRequest, binary: bytes) -> list[np.ndarray]:
    """Each input as an array of its datatype and shape, from its JSON data or its bytes."""
    arrays, offset = [], 0
    for index, tensor in enumerate(request.inputs):
        where = f"inputs[{index}]"
        _refuse_unsupported(tensor.parameters, where)
        dtype = DATATYPES.get(tensor.datatype)
        if dtype is None:
            reason = "is no number" if tensor.datatype == "BYTES" else "is not a protocol datatype"
            raise InvalidParameter(f"{where}.datatype", f"{tensor.datatype} {reason}")
        count = math.prod(tensor.shape)
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is None:
            if tensor.data is None:
                raise InvalidParameter(f"{where}.data", "missing (nor is `binary_data_size` set)")
            array = _from_json(tensor.data, tensor.datatype, dtype, f"{where}.data")
        else:
            if tensor.data is not None:
                raise InvalidParameter(where, "has both `data` and `binary_data_size`")
            if not _is_int(size) or size != count * dtype.itemsize:
                raise InvalidParameter(
                    f"{where}.parameters.binary_data_size",
                    f"{size!r} is not the {count * dtype.itemsize} bytes of {count} "
                    f"{tensor.datatype} values",
                )
            if offset + size > len(binary):
                raise InvalidParameter(
                    where, f"the body ends before its {size} bytes of binary data"
                )
            array = np.frombuffer(binary, np.uint8, size, offset).view(dtype)
            offset += size
            if dtype.kind == "b" and array.view(np.uint8).max(initial=0) > 1:
                raise InvalidParameter(where, "BOOL bytes must be 0 or 1")
        if array.size != count:
            raise InvalidParameter(
                f"{where}.shape", f"{tensor.shape} does not hold the {array.size} values given"
            )
        arrays.append(array.reshape(tensor.shape))
    if offset != len(binary):
        raise InvalidParameter(
            "body", f"{len(binary) - offset} bytes after the inputs' binary data are not for any"
        )
    return arrays


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _refuse_unsupported(parameters: Parameters | None, where: str) -> None:
    for name in parameters or ():
        if name in _UNSUPPORTED:
            raise InvalidParameter(f"{where}.parameters.{name}", _UNSUPPORTED[name])


def _from_json(data: list[Any], datatype: str, dtype: np.dtype[Any], where: str) -> np.ndarray:
    try:
        values = np.asarray(data)
    except ValueError:
        raise InvalidParameter(where, "must be a flat or regular nested list") from None
    if values.size == 0:
        return np.zeros(0, dtype)
    kind = values.dtype.kind
    if dtype.kind == "b":
        if kind != "b":
            raise InvalidParameter(where, "must be true or false for BOOL")
        return values
    if dtype.kind in "iu":
        if kind not in "iu":  # also Python ints beyond 64 bits (an object array)
            raise InvalidParameter(where, f"must be integers in {datatype}'s range")
        limits = np.iinfo(dtype)
        low, high = values.min(), values.max()
        if low < limits.min or high > limits.max:
            bad = low if low < limits.min else high
            raise InvalidParameter(where, f"{bad} is out of range for {datatype}")
        return values.astype(dtype)
    if kind not in "iuf":
        raise InvalidParameter(where, f"must be numbers for {datatype}")
    with np.errstate(over="ignore", invalid="ignore"):
        converted = values.astype(dtype)
    overflow = np.isfinite(values) & ~np.isfinite(converted)
    if overflow.any():
        raise InvalidParameter(where, f"{values[overflow][0]} is out of range for {datatype}")
    return converted


def to_fp32(array: np.ndarray, datatype: str, where: str) -> np.ndarray:
    """``array`` as FP32, the models' input type, when no value changes on the way.

    Raises
    ------
    InvalidParameter
        Naming the first value FP32 cannot hold exactly.
    """
    if datatype in _EXACT_IN_FP32:
        return array.astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        converted = array.astype(np.float32)
    if array.dtype.kind == "f":
        # Non-finite values pass: the model refuses them with its own message.
        exact = (converted.astype(array.dtype) == array) | ~np.isfinite(array)
    else:
        exact = _integers_exact_in_fp32(array)
    if not exact.all():
        value = array[~exact].flat[0]
        raise InvalidParameter(
            where,
            f"{datatype} value {value} is not exactly representable in FP32, the model's "
            "input datatype: send FP32, or values FP32 holds exactly",
        )
    return converted


def _integers_exact_in_fp32(array: np.ndarray) -> np.ndarray:
    # An integer is exact in FP32 when, its trailing zero bits dropped, it fits FP32's
    # 24-bit significand (FP32's exponent reaches far beyond 64 bits).
    magnitude = np.abs(array.astype(np.int64)).view(np.uint64) if array.dtype.kind == "i" else array
    magnitude = magnitude.astype(np.uint64)
    lowest_bit = magnitude & (~magnitude + np.uint64(1))
    odd_part = magnitude // np.maximum(lowest_bit, np.uint64(1))
    return odd_part < np.uint64(1 << _FP32_MANTISSA_BITS)


def output_parameters(request: InferRequest, available: Sequence[str]) -> list[tuple[str, bool]]:
    """The outputs to return, in order, and whether each goes as binary data."""
    default = (request.parameters or {}).get("binary_data_output", False)
    if not isinstance(default, bool):
        raise InvalidParameter("parameters.binary_data_output", "must be true or false")
    if request.outputs is None:
        return [(name, default) for name in available]
    chosen: list[tuple[str, bool]] = []
    for index, output in enumerate(request.outputs):
        where = f"outputs[{index}]"
        if output.name not in available:
            raise InvalidParameter(
                f"{where}.name", f"{output.name!r} is not an output of the model: {list(available)}"
            )
        if any(output.name == name for name, _ in chosen):
            raise InvalidParameter(f"{where}.name", f"{output.name!r} is asked for twice")
        _refuse_unsupported(output.parameters, where)
        binary = (output.parameters or {}).get("binary_data", default)
        if not isinstance(binary, bool):
            raise InvalidParameter(f"{where}.parameters.binary_data", "must be true or false")
        chosen.append((output.name, binary))
    return chosen


def datatype_of(array: np.ndarray) -> str:
    return _DATATYPE_OF[array.dtype.kind, array.dtype.itemsize]


def encode_response(
    response: InferResponse, arrays: Mapping[str, np.ndarray], binary: Mapping[str, bool]
) -> tuple[bytes, int | None]:
    """The response body, and the length of its JSON part when binary data follows it.

    ``response.outputs`` are filled here from ``arrays``: as JSON ``data``, or as
    ``binary_data_size`` bytes after the JSON for those ``binary`` says.
    """
    chunks: list[bytes] = []
    outputs = []
    for name, array in arrays.items():
        output = ResponseOutput.model_construct(
            name=name, shape=list(array.shape), datatype=datatype_of(array)
        )
        if binary[name]:
            data = np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()
            output.parameters = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            output.data = array.ravel().tolist()
        outputs.append(output)
    response.outputs = outputs
    header = response.model_dump_json(exclude_none=True).encode()
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)
