"""v2 tensors on the wire: JSON tensors, Triton's binary tensor data extension, and the answer's encoding.

A REST request body is JSON, or (binary extension) a JSON header of `Inference-Header-Content-Length`
bytes followed by the raw data of each input that declares `"parameters": {"binary_data_size": n}`, in
input order. A BYTES element in raw data is a 4-byte little-endian length and its bytes; every other
datatype is the flat row-major array, little-endian. Parsing knows datatypes and shapes, not models:
whether a tensor suits the model is model.py's question. Everything malformed is a `V2Error` (400).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vitserve.service.flow.errors import ApiError
from vitserve.service.v2.errors import V2Error, bad_request

# v2 datatype -> little-endian NumPy dtype; BYTES has none (its elements are byte strings).
DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
DATATYPES = (*DTYPES, "BYTES")
Parameters = Mapping[str, Any]


@dataclass(frozen=True)
class InputTensor:
    """One input: `data` is a flat array of the datatype's dtype, or a tuple of byte strings (BYTES)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray | tuple[bytes, ...]
    parameters: Parameters


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    parameters: Parameters


@dataclass(frozen=True)
class InferRequest:
    """A parsed v2 inference request, from REST or gRPC alike."""

    id: str
    inputs: tuple[InputTensor, ...]
    outputs: tuple[RequestedOutput, ...]
    parameters: Parameters


@dataclass(frozen=True)
class OutputTensor:
    """One output: `data` is an (N, ...) array, or a flat list of byte strings for BYTES."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray | list[bytes]

    def raw(self) -> bytes:
        """The binary extension's (and gRPC's raw_output_contents') form of the data."""
        if isinstance(self.data, np.ndarray):
            return np.ascontiguousarray(self.data, dtype=DTYPES[self.datatype]).tobytes()
        return b"".join(struct.pack("<I", len(item)) + item for item in self.data)

    def json_data(self) -> list[Any]:
        if isinstance(self.data, np.ndarray):
            return self.data.ravel().tolist()  # type: ignore[no-any-return]
        return [item.decode("utf-8", errors="replace") for item in self.data]


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape)


def check_shape(name: str, shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise bad_request(f"input '{name}': shape must be a list of integers, got {shape!r}")
    if any(d < 0 for d in shape):
        raise bad_request(f"input '{name}': shape {list(shape)} has a negative dimension")
    return tuple(shape)


def check_datatype(name: str, datatype: Any) -> str:
    if datatype not in DATATYPES:
        raise bad_request(
            f"input '{name}': unknown datatype {datatype!r}; v2 datatypes are {list(DATATYPES)}"
        )
    return str(datatype)


def split_bytes_elements(name: str, raw: bytes, count: int) -> tuple[bytes, ...]:
    """BYTES raw data: `count` elements, each a 4-byte little-endian length and its bytes, nothing more."""
    items: list[bytes] = []
    offset = 0
    view = memoryview(raw)
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise bad_request(f"input '{name}': BYTES element {len(items)} has a truncated length prefix")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise bad_request(
                f"input '{name}': BYTES element {len(items)} claims {size} bytes; {len(raw) - offset} remain"
            )
        items.append(bytes(view[offset : offset + size]))
        offset += size
        if len(items) > count:
            break
    if len(items) != count:
        raise bad_request(
            f"input '{name}': shape needs {count} BYTES element(s), the data holds {len(items)}"
        )
    return tuple(items)


def typed_from_raw(
    name: str, datatype: str, shape: tuple[int, ...], raw: bytes
) -> np.ndarray | tuple[bytes, ...]:
    """Raw (binary) data of one tensor -> its flat elements, checked against the shape's element count."""
    count = element_count(shape)
    if datatype == "BYTES":
        return split_bytes_elements(name, raw, count)
    dtype = DTYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise bad_request(
            f"input '{name}': {datatype} {list(shape)} takes {count * dtype.itemsize} bytes, got {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype)


def _flat_strings(name: str, data: Any) -> list[str]:
    flat: list[str] = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, str):
            flat.append(item)
        else:
            raise bad_request(f"input '{name}': BYTES data must hold strings, found {type(item).__name__}")
    return flat


def typed_from_json(
    name: str, datatype: str, shape: tuple[int, ...], data: Any, parameters: Parameters
) -> np.ndarray | tuple[bytes, ...]:
    """JSON `data` (flat or nested, row-major) -> flat elements. A BYTES string is its UTF-8 bytes, or
    its base64 decoding when the tensor's parameters say `"content_type": "base64"`."""
    count = element_count(shape)
    if datatype == "BYTES":
        strings = _flat_strings(name, data)
        if len(strings) != count:
            raise bad_request(
                f"input '{name}': shape needs {count} BYTES element(s), the data holds {len(strings)}"
            )
        if parameters.get("content_type") == "base64":
            items = []
            for i, s in enumerate(strings):
                try:
                    items.append(base64.b64decode(s, validate=True))
                except (binascii.Error, ValueError) as exc:
                    raise bad_request(f"input '{name}': element {i} is not valid base64 ({exc})") from exc
            return tuple(items)
        return tuple(s.encode("utf-8", errors="surrogatepass") for s in strings)
    try:
        array = np.array(data)
    except (ValueError, TypeError, OverflowError) as exc:
        raise bad_request(f"input '{name}': data must be a (nested) list of numbers ({exc})") from exc
    dtype = DTYPES[datatype]
    # bools only for BOOL, integers for the integer types, any number for the float types: "1" or 1.5
    # where a UINT8 belongs is refused, never cast.
    allowed = {"b": "b", "u": "biu", "i": "biu", "f": "biuf"}[dtype.kind]
    if array.dtype.kind not in allowed:
        raise bad_request(f"input '{name}': {datatype} data must hold {_kind_words(dtype.kind)}")
    if array.size != count:
        raise bad_request(
            f"input '{name}': shape {list(shape)} needs {count} element(s), the data holds {array.size}"
        )
    flat = array.ravel()
    check_integer_range(name, datatype, flat)
    with np.errstate(over="ignore"):
        return flat.astype(dtype)


def check_integer_range(name: str, datatype: str, values: np.ndarray) -> None:
    """Integers sent for an integer datatype must fit it: 300 for a UINT8 is refused, never wrapped."""
    dtype = DTYPES[datatype]
    if dtype.kind in "iu" and values.size:
        info = np.iinfo(dtype)
        low, high = int(values.min()), int(values.max())
        if low < info.min or high > info.max:
            raise bad_request(
                f"input '{name}': {datatype} values lie in [{info.min}, {info.max}], got {low}..{high}"
            )


def _kind_words(kind: str) -> str:
    return {"b": "true/false", "u": "integers", "i": "integers", "f": "numbers"}[kind]


def _object(what: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_request(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _parameters(what: str, value: Any) -> dict[str, Any]:
    return {} if value is None else _object(f"{what} parameters", value)


def _binary_size(name: str, parameters: Parameters) -> int | None:
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise bad_request(f"input '{name}': binary_data_size must be a non-negative integer, got {size!r}")
    return size


def parse_rest_request(body: bytes, header_length: str | None) -> InferRequest:
    """A REST infer body: all JSON, or (header_length given) a JSON header and the inputs' binary data."""
    binary = b""
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError as exc:
            raise bad_request(
                f"Inference-Header-Content-Length must be an integer, not {header_length!r}"
            ) from exc
        if not 0 <= length <= len(body):
            raise bad_request(
                f"Inference-Header-Content-Length {length} lies outside the body of {len(body)} bytes"
            )
        body, binary = body[:length], body[length:]
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise bad_request(f"the request is not valid JSON: {exc}") from exc
    request = _object("the request", document)
    raw_inputs = request.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise bad_request("the request needs 'inputs', a non-empty list of tensors")
    inputs = []
    offset = 0
    for i, raw in enumerate(raw_inputs):
        tensor = _object(f"input {i}", raw)
        name = tensor.get("name")
        if not isinstance(name, str):
            raise bad_request(f"input {i} needs a 'name' string")
        datatype = check_datatype(name, tensor.get("datatype"))
        shape = check_shape(name, tensor.get("shape"))
        parameters = _parameters(f"input '{name}'", tensor.get("parameters"))
        size = _binary_size(name, parameters)
        if size is None:
            if "data" not in tensor:
                raise bad_request(f"input '{name}' has neither 'data' nor a binary_data_size parameter")
            data = typed_from_json(name, datatype, shape, tensor["data"], parameters)
        else:
            if header_length is None:
                raise bad_request(
                    f"input '{name}' has binary_data_size but the request has no "
                    "Inference-Header-Content-Length"
                )
            if "data" in tensor:
                raise bad_request(f"input '{name}' has both 'data' and binary_data_size")
            if offset + size > len(binary):
                raise bad_request(
                    f"input '{name}': binary_data_size {size} runs past the binary data "
                    f"({len(binary) - offset} bytes left)"
                )
            data = typed_from_raw(name, datatype, shape, binary[offset : offset + size])
            offset += size
        inputs.append(InputTensor(name, datatype, shape, data, parameters))
    if offset != len(binary):
        raise bad_request(f"{len(binary) - offset} byte(s) of binary data follow the last input's")
    return InferRequest(
        id=_request_id(request.get("id")),
        inputs=tuple(inputs),
        outputs=_requested_outputs(request.get("outputs")),
        parameters=_parameters("the request", request.get("parameters")),
    )


def _request_id(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise bad_request(f"'id' must be a string, got {type(value).__name__}")
    return value


def _requested_outputs(value: Any) -> tuple[RequestedOutput, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise bad_request("'outputs' must be a list")
    outputs = []
    for i, raw in enumerate(value):
        output = _object(f"output {i}", raw)
        name = output.get("name")
        if not isinstance(name, str):
            raise bad_request(f"output {i} needs a 'name' string")
        outputs.append(RequestedOutput(name, _parameters(f"output '{name}'", output.get("parameters"))))
    return tuple(outputs)


def _flag(parameters: Parameters, key: str, default: bool) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise bad_request(f"parameter {key} must be true or false, got {value!r}")
    return value


def binary_outputs(request: InferRequest) -> dict[str, bool]:
    """Which outputs go as binary data: each output's `binary_data`, else the request's
    `binary_data_output` (under the key "")."""
    default = _flag(request.parameters, "binary_data_output", False)
    return {o.name: _flag(o.parameters, "binary_data", default) for o in request.outputs} | {"": default}


def encode_rest_response(
    model_name: str,
    model_version: str,
    request_id: str,
    outputs: Sequence[OutputTensor],
    binary: Mapping[str, bool],
) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers: JSON, or a JSON header then the binary outputs' data."""
    tensors = []
    blobs = []
    for output in outputs:
        tensor: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": list(output.shape),
        }
        if binary.get(output.name, binary.get("", False)):
            raw = output.raw()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            tensor["data"] = output.json_data()
        tensors.append(tensor)
    document: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id:
        document["id"] = request_id
    document["outputs"] = tensors
    header = json.dumps(document, separators=(",", ":")).encode()
    if not blobs:
        return header, {"content-type": "application/json"}
    return header + b"".join(blobs), {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }


def error_body(error: V2Error) -> bytes:
    return json.dumps(error.body(), separators=(",", ":")).encode()


def v2_refusal_body(error: ApiError) -> dict[str, str]:
    """The v2 body of the front door's refusal (429) of an infer request: the message alone."""
    return {"error": error.message}
