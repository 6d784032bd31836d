"""service/v2/tensors.py reads what Triton's own HTTP client writes, writes what it reads, and refuses
everything else with a 400 naming the problem: fuzzed JSON and binary bodies never raise anything else."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput

from vitserve.service.v2.errors import V2Error
from vitserve.service.v2.tensors import (
    InferRequest,
    OutputTensor,
    binary_outputs,
    encode_rest_response,
    parse_rest_request,
)

IMAGES = [b"\x89PNG first", b"", b"\xff\xd8 third \x00 with nul"]


def triton_body(
    inputs: list[InferInput], outputs: list[InferRequestedOutput] | None = None, **kw: Any
) -> InferRequest:
    """Encoded by tritonclient, parsed by us."""
    body, header_length = InferenceServerClient.generate_request_body(inputs, outputs=outputs, **kw)
    return parse_rest_request(body, None if header_length is None else str(header_length))


@pytest.mark.parametrize("binary", [True, False])
def test_bytes_input_from_tritonclient(binary: bool) -> None:
    tensor = InferInput("image", [len(IMAGES)], "BYTES")
    data = np.array(IMAGES if binary else [b"plain", b"text"], dtype=np.object_)
    if not binary:
        tensor = InferInput("image", [2], "BYTES")
    tensor.set_data_from_numpy(data, binary_data=binary)
    request = triton_body([tensor], request_id="req-7")
    (parsed,) = request.inputs
    assert (parsed.name, parsed.datatype, parsed.shape) == ("image", "BYTES", (len(data),))
    assert parsed.data == tuple(data)
    assert request.id == "req-7"


@pytest.mark.parametrize("binary", [True, False])
def test_uint8_input_from_tritonclient(binary: bool) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(2, 4, 4, 3), dtype=np.uint8)
    tensor = InferInput("pixels", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels, binary_data=binary)
    request = triton_body([tensor], [InferRequestedOutput("probabilities", binary_data=False, class_count=3)])
    (parsed,) = request.inputs
    assert parsed.shape == pixels.shape
    assert isinstance(parsed.data, np.ndarray) and parsed.data.dtype == np.uint8
    np.testing.assert_array_equal(parsed.data.reshape(pixels.shape), pixels)
    (output,) = request.outputs
    assert output.parameters == {"classification": 3, "binary_data": False}
    assert binary_outputs(request) == {"probabilities": False, "": False}


def test_no_outputs_asks_for_binary_outputs() -> None:
    tensor = InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"x"], dtype=np.object_))
    assert binary_outputs(triton_body([tensor]))[""] is True


def test_json_nested_data_and_base64() -> None:
    body = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [2],
                "parameters": {"content_type": "base64"},
                "data": ["aGVsbG8=", "AAEC"],
            }
        ]
    }
    assert parse_rest_request(json.dumps(body).encode(), None).inputs[0].data == (b"hello", b"\x00\x01\x02")
    nested = {
        "inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 2, 2], "data": [[[0, 1], [2, 255]]]}]
    }
    parsed = parse_rest_request(json.dumps(nested).encode(), None).inputs[0].data
    assert isinstance(parsed, np.ndarray)
    assert parsed.tolist() == [0, 1, 2, 255]


@pytest.mark.parametrize("binary", [True, False])
def test_responses_read_by_tritonclient(binary: bool) -> None:
    probabilities = np.array([[0.25, 0.75], [1.0, 0.0]], dtype=np.float32)
    classes = [b"0.75:1:one", b"1.0:0:zero"]
    outputs = [
        OutputTensor("probabilities", "FP32", probabilities.shape, probabilities),
        OutputTensor("classes", "BYTES", (2, 1), classes),
    ]
    body, headers = encode_rest_response("m", "3", "abc", outputs, {"": binary})
    header_length = headers.get("inference-header-content-length")
    assert (header_length is not None) == binary
    result = InferenceServerClient.parse_response_body(
        body, header_length=None if header_length is None else int(header_length)
    )
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == ("m", "3", "abc")
    np.testing.assert_array_equal(result.as_numpy("probabilities"), probabilities)
    # tritonclient gives JSON BYTES elements as str, binary ones as bytes
    assert [c if isinstance(c, bytes) else c.encode() for c in result.as_numpy("classes").ravel()] == classes


def request_json(**tensor: Any) -> bytes:
    return json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], **tensor}]}).encode()


def bytes_element(data: bytes) -> bytes:
    return struct.pack("<I", len(data)) + data


def binary_request(size: int, shape: list[int], datatype: str, blob: bytes) -> tuple[bytes, str]:
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": size}}
            ]
        }
    ).encode()
    return header + blob, str(len(header))


BAD_REQUESTS: list[tuple[bytes, str | None, str]] = [
    (b"{not json", None, "not valid JSON"),
    (b"[]", None, "must be a JSON object"),
    (b'{"inputs": []}', None, "non-empty list"),
    (request_json(data=["a"], datatype="TEXT"), None, "unknown datatype 'TEXT'"),
    (request_json(data=["a"], shape=[-1]), None, "negative dimension"),
    (request_json(data=["a"], shape="1"), None, "shape must be a list of integers"),
    (request_json(data=["a", "b"]), None, "needs 1 BYTES element(s), the data holds 2"),
    (request_json(data=[1]), None, "must hold strings"),
    (request_json(), None, "neither 'data' nor a binary_data_size"),
    (request_json(data=["!!"], parameters={"content_type": "base64"}), None, "not valid base64"),
    (request_json(parameters={"binary_data_size": 4}), None, "no Inference-Header-Content-Length"),
    (request_json(data=["a"]), "x", "must be an integer"),
    (request_json(data=["a"]), "99999", "outside the body"),
    (
        json.dumps({"inputs": [{"name": "p", "datatype": "UINT8", "shape": [2], "data": [1, 256]}]}).encode(),
        None,
        "values lie in [0, 255], got 1..256",
    ),
    (
        json.dumps({"inputs": [{"name": "p", "datatype": "UINT8", "shape": [2], "data": ["1", 2]}]}).encode(),
        None,
        "UINT8 data must hold integers",
    ),
    (
        json.dumps({"inputs": [{"name": "p", "datatype": "UINT8", "shape": [1], "data": [1.5]}]}).encode(),
        None,
        "UINT8 data must hold integers",
    ),
    (*binary_request(5, [2, 2], "UINT8", b"12345"), "UINT8 [2, 2] takes 4 bytes, got 5"),
    (*binary_request(6, [1], "UINT8", b"123456"), "takes 1 bytes, got 6"),
    (*binary_request(9, [1], "BYTES", b"1234"), "runs past the binary data (4 bytes left)"),
    (
        binary_request(4, [1], "BYTES", bytes_element(b"") + b"xy")[0],
        binary_request(4, [1], "BYTES", b"")[1],
        "2 byte(s) of binary data follow the last input's",
    ),
    (*binary_request(3, [1], "BYTES", b"123"), "truncated length prefix"),
    (*binary_request(7, [2], "BYTES", bytes_element(b"abc")), "needs 2 BYTES element(s), the data holds 1"),
    (*binary_request(7, [1], "BYTES", struct.pack("<I", 9) + b"abc"), "claims 9 bytes; 3 remain"),
    (*binary_request(2, [1], "UINT8", b"12"), "takes 1 bytes, got 2"),
]


@pytest.mark.parametrize(("body", "header_length", "expected"), BAD_REQUESTS)
def test_malformed_requests_are_400_saying_why(body: bytes, header_length: str | None, expected: str) -> None:
    with pytest.raises(V2Error) as caught:
        parse_rest_request(body, header_length)
    assert caught.value.status == 400
    assert expected in caught.value.message
    assert caught.value.body() == {"error": caught.value.message}


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)
TENSOR_KEYS = st.sampled_from(["name", "datatype", "shape", "data", "parameters"])
TENSORS = st.dictionaries(TENSOR_KEYS, JSON_VALUES, max_size=5) | st.fixed_dictionaries(
    {
        "name": st.text(max_size=5),
        "datatype": st.sampled_from(["BYTES", "UINT8", "FP32", "INT64", "BOOL", "FP16", "X"]),
        "shape": st.lists(st.integers(-2, 4), max_size=4),
        "data": JSON_VALUES,
        "parameters": st.dictionaries(
            st.sampled_from(["binary_data_size", "content_type"]), st.integers(-1, 8) | st.just("base64")
        ),
    }
)
REQUESTS = st.fixed_dictionaries(
    {"inputs": st.lists(TENSORS, max_size=3)},
    optional={"id": JSON_VALUES, "outputs": JSON_VALUES, "parameters": JSON_VALUES},
)


def parses_or_refuses(body: bytes, header_length: str | None) -> None:
    try:
        parsed = parse_rest_request(body, header_length)
    except V2Error as exc:
        assert exc.status == 400 and exc.message
        return
    assert parsed.inputs


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(REQUESTS)
def test_fuzzed_json_requests_parse_or_get_400(request: dict[str, Any]) -> None:
    parses_or_refuses(json.dumps(request).encode(), None)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(REQUESTS, st.binary(max_size=40), st.integers(-3, 400) | st.text(max_size=4))
def test_fuzzed_binary_requests_parse_or_get_400(
    request: dict[str, Any], blob: bytes, length: int | str
) -> None:
    header = json.dumps(request).encode()
    parses_or_refuses(header + blob, str(len(header)))  # the header's true length, random binary data
    parses_or_refuses(header + blob, str(length))  # a wrong length: the JSON is cut or runs into the data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.one_of(st.none(), st.integers(-2, 250).map(str)))
def test_fuzzed_bytes_parse_or_get_400(body: bytes, header_length: str | None) -> None:
    parses_or_refuses(body, header_length)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_tritonclient_bodies_parse_or_get_400(data: st.DataObject) -> None:
    """A real client's binary body with bytes cut, flipped or added anywhere."""
    tensor = InferInput("image", [2], "BYTES")
    tensor.set_data_from_numpy(np.array([b"abc", b"defgh"], dtype=np.object_))
    body, header_length = InferenceServerClient.generate_request_body([tensor])
    position = data.draw(st.integers(0, len(body)))
    mutation = data.draw(st.sampled_from(["cut", "flip", "insert"]))
    if mutation == "cut":
        body = body[:position]
    elif mutation == "flip" and position < len(body):
        body = (
            body[:position] + bytes([body[position] ^ data.draw(st.integers(1, 255))]) + body[position + 1 :]
        )
    else:
        body = body[:position] + data.draw(st.binary(min_size=1, max_size=6)) + body[position:]
    parses_or_refuses(body, str(header_length))
