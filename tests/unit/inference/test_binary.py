"""The binary tensor data extension: every datatype, mixed inputs, exact framing, binary outputs."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import numpy as np
import pytest
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from services.inference.binary import split_body, write_bytes
from services.inference.predict_routes import decompress
from services.inference.protocol import InputSchema, decode_v2, encode_v2_outputs
from shared.errors import InvalidInput, MalformedRequest, PayloadTooLarge, UnsupportedEncoding

SCHEMA = InputSchema(features=("a", "b", "c"), optional=frozenset({"c"}))
EXPECTED = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)


def frame(inputs: list[tuple[dict[str, Any], bytes | None]], **extra: Any) -> tuple[bytes, bytes]:
    """A request as tritonclient builds it: the JSON header, then each binary input's bytes in order."""
    tensors = []
    tail = b""
    for tensor, raw in inputs:
        if raw is not None:
            tensor = {**tensor, "parameters": {"binary_data_size": len(raw)}}
            tail += raw
        tensors.append(tensor)
    header = json.dumps({"inputs": tensors, **extra}).encode()
    return header + tail, str(len(header)).encode()


def decode(body: bytes, header_length: bytes | None, schema: InputSchema = SCHEMA) -> Any:
    header, tail = split_body(body, header_length)
    return decode_v2(header, schema, tail)


def serialized_text(values: list[str]) -> bytes:
    return bytes(serialize_byte_tensor(np.array(values, dtype=np.object_)).item())


@pytest.mark.parametrize(
    "datatype",
    ["UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"],
)
def test_every_fixed_size_datatype_reads_as_numpy_wrote_it(datatype: str) -> None:
    from tritonclient.utils import triton_to_np_dtype

    raw = EXPECTED.astype(triton_to_np_dtype(datatype)).tobytes()
    body, length = frame([({"name": "input", "shape": [2, 3], "datatype": datatype}, raw)])
    request = decode(body, length)
    assert request.inputs.dtype == np.float32 and np.array_equal(request.inputs, EXPECTED)


def test_bool_bf16_and_bytes() -> None:
    flags = np.array([[True, False, True]])
    body, length = frame([({"name": "input", "shape": [1, 3], "datatype": "BOOL"}, flags.tobytes())])
    assert decode(body, length).inputs.tolist() == [[1.0, 0.0, 1.0]]
    with pytest.raises(InvalidInput, match="BOOL bytes must be 0 or 1"):
        decode(*frame([({"name": "input", "shape": [1, 3], "datatype": "BOOL"}, bytes([1, 2, 0]))]))

    bf16 = (EXPECTED.view(np.uint32) >> 16).astype("<u2").tobytes()  # exact for small integers
    assert np.array_equal(decode(*frame([({"name": "i", "shape": [2, 3], "datatype": "BF16"}, bf16)])).inputs, EXPECTED)

    text = serialized_text(["1", "2.0", "3e0", "4", " 5 ", "6"])
    assert np.array_equal(
        decode(*frame([({"name": "i", "shape": [2, 3], "datatype": "BYTES"}, text)])).inputs, EXPECTED
    )
    holes = serialized_text(["1", "2", ""])  # an empty element is a missing value, allowed for 'c' only
    assert np.isnan(decode(*frame([({"name": "i", "shape": [1, 3], "datatype": "BYTES"}, holes)])).inputs[0, 2])
    with pytest.raises(InvalidInput, match="feature 'a'"):
        decode(*frame([({"name": "i", "shape": [1, 3], "datatype": "BYTES"}, serialized_text(["", "2", "3"]))]))
    with pytest.raises(InvalidInput, match="'red' is not a number"):
        decode(*frame([({"name": "i", "shape": [1, 3], "datatype": "BYTES"}, serialized_text(["1", "red", "3"]))]))


def test_json_data_of_the_new_datatypes() -> None:
    for datatype, data in (
        ("BOOL", [[True, False, True]]),
        ("UINT8", [[1, 0, 1]]),
        ("INT16", [[1, 0, 1]]),
        ("FP16", [[1.0, 0.0, 1.0]]),
        ("BYTES", [["1", "0", "1.0"]]),
    ):
        body = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": datatype, "data": data}]}
        assert decode_v2(body, SCHEMA).inputs.tolist() == [[1.0, 0.0, 1.0]], datatype


def test_binary_and_json_inputs_mix_in_one_request() -> None:
    body, length = frame(
        [
            ({"name": "c", "shape": [2], "datatype": "FP64"}, np.array([3.0, 6.0]).tobytes()),
            ({"name": "a", "shape": [2, 1], "datatype": "INT32", "data": [[1], [4]]}, None),
            ({"name": "b", "shape": [2], "datatype": "BYTES"}, serialized_text(["2", "5"])),
        ],
        id="mixed",
    )
    request = decode(body, length)
    assert np.array_equal(request.inputs, EXPECTED) and request.request_id == "mixed"


def test_a_request_without_binary_parts_may_still_send_the_header() -> None:
    header = b'{"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}'
    assert decode(header, str(len(header)).encode()).inputs.tolist() == [[1, 2, 3]]


FP32_ROW = np.array([[1, 2, 3]], dtype=np.float32).tobytes()
ROW = {"name": "x", "shape": [1, 3], "datatype": "FP32"}
GOOD, GOOD_LENGTH = frame([(ROW, FP32_ROW)])
SHORT_DECLARED, SHORT_LENGTH = frame([(ROW, FP32_ROW[:8])])


@pytest.mark.parametrize(
    ("body", "length", "message"),
    [
        (GOOD, GOOD_LENGTH, None),  # the unbroken request the other cases start from
        (GOOD[:-4], GOOD_LENGTH, "input 'x' declares binary_data_size 12 but only 8"),  # short
        (GOOD + b"\0" * 4, GOOD_LENGTH, "4 bytes of binary data after the declared inputs' .*x: 12"),  # long
        (SHORT_DECLARED, SHORT_LENGTH, "input 'x': 3 FP32 values take 12 bytes, binary_data_size is 8"),
        (GOOD, b"5", "not valid JSON"),  # wrong header length: inside the JSON
        (GOOD, str(int(GOOD_LENGTH) + 4).encode(), "not valid JSON"),  # wrong header length: into the tensor
        (GOOD, b"99999", "is 99999 but the body has"),
        (GOOD, b"-3", "whole number"),
        (GOOD, b"0", "is 0"),
        (GOOD, None, "Inference-Header-Content-Length header"),  # binary without the header
        (b"\x00\x01binary" + FP32_ROW, b"8", "not valid JSON"),  # header not JSON
        (b"[1, 2, 3]" + FP32_ROW, b"9", "must be a JSON object"),
    ],
)
def test_malformed_framing_is_a_4xx_naming_what_is_wrong(
    body: bytes, length: bytes | None, message: str | None
) -> None:
    if message is None:
        assert decode(body, length).inputs.tolist() == [[1, 2, 3]]
        return
    with pytest.raises(InvalidInput, match=message) as caught:
        decode(body, length)
    assert 400 <= caught.value.status_code < 500


def test_bytes_framing_is_checked_element_by_element() -> None:
    text = serialized_text(["1", "2", "3"])
    tensor = {"name": "i", "shape": [1, 3], "datatype": "BYTES"}
    for raw, message in (
        (text[:-1], "element 2 says 1 bytes, 0 are left"),
        (text[:2], "cut short in its 4-byte length"),
        (text + write_bytes(["4"]), "holds more than 3"),
        (write_bytes(["1", "2"]), "holds 2"),
        (text[:-1] + b"\xff", None),
    ):
        if message is None:
            with pytest.raises(InvalidInput, match="not UTF-8"):
                decode(*frame([(tensor, raw)]))
        else:
            with pytest.raises(MalformedRequest, match=message):
                decode(*frame([(tensor, raw)]))


def test_input_parameter_refusals() -> None:
    both = {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}
    with pytest.raises(MalformedRequest, match="both data and"):
        decode(*frame([(both, FP32_ROW)]))
    for parameters, message in (
        ({"binary_data_size": -1}, "non-negative integer"),
        ({"binary_data_size": "12"}, "non-negative integer"),
        ({"shared_memory_region": "r", "shared_memory_byte_size": 12}, "shared memory is not supported"),
        ([1], "parameters must be an object"),
    ):
        tensor = {"name": "x", "shape": [1, 3], "datatype": "FP32", "parameters": parameters}
        with pytest.raises(InvalidInput, match=message):
            decode_v2({"inputs": [tensor]}, SCHEMA)


def test_binary_outputs_as_the_request_asks() -> None:
    row = {"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}
    assert decode_v2({"inputs": [row]}, SCHEMA).binary_outputs == frozenset()
    everything = decode_v2({"inputs": [row], "parameters": {"binary_data_output": True}}, SCHEMA)
    assert everything.outputs == ("label", "probabilities") and everything.binary_outputs == {"label", "probabilities"}
    some = decode_v2(
        {
            "inputs": [row],
            "parameters": {"binary_data_output": True},
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": False}}, {"name": "label"}],
        },
        SCHEMA,
    )
    assert some.outputs == ("probabilities", "label") and some.binary_outputs == {"label"}
    one = decode_v2({"inputs": [row], "outputs": [{"name": "label", "parameters": {"binary_data": True}}]}, SCHEMA)
    assert one.binary_outputs == {"label"}
    for body, message in (
        ({"inputs": [row], "parameters": {"binary_data_output": 1}}, "binary_data_output must be true or false"),
        ({"inputs": [row], "outputs": [{"name": "label", "parameters": {"binary_data": "yes"}}]}, "binary_data must"),
        ({"inputs": [row], "outputs": [{"name": "label", "parameters": {"classification": 2}}]}, "classification"),
    ):
        with pytest.raises(InvalidInput, match=message):
            decode_v2(body, SCHEMA)


def test_binary_outputs_decode_as_tritonclient_reads_them() -> None:
    proba = np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32)
    outputs, tail = encode_v2_outputs(np.array([1, 0]), proba, ("label", "probabilities"), frozenset(OUTPUTS))
    assert [o["parameters"]["binary_data_size"] for o in outputs] == [16, 16] and "data" not in outputs[0]
    assert np.frombuffer(tail[:16], "<i8").tolist() == [1, 0]
    assert np.array_equal(np.frombuffer(tail[16:], "<f4").reshape(2, 2), proba)

    outputs, tail = encode_v2_outputs(
        np.array(["bad", "good"]), proba, ("probabilities", "label"), frozenset({"label"})
    )
    assert outputs[0]["data"] == [0.25, 0.75, 0.5, 0.5], "a JSON output beside a binary one"
    assert outputs[1]["datatype"] == "BYTES" and outputs[1]["parameters"]["binary_data_size"] == len(tail)
    assert deserialize_bytes_tensor(tail).tolist() == [b"bad", b"good"]


OUTPUTS = ("label", "probabilities")


def test_compressed_bodies_inflate_within_the_cap() -> None:
    raw = b'{"inputs": []}' * 10
    assert decompress(gzip.compress(raw), "gzip", 1000) == raw
    assert decompress(zlib.compress(raw), "deflate", 1000) == raw
    assert decompress(raw, "identity", 1000) == raw
    with pytest.raises(PayloadTooLarge, match="inflates to over the 100-byte limit"):
        decompress(gzip.compress(raw), "gzip", 100)
    with pytest.raises(MalformedRequest, match="not valid gzip"):
        decompress(raw, "gzip", 1000)
    with pytest.raises(MalformedRequest, match="cut short"):
        decompress(gzip.compress(raw)[:-12], "gzip", 1000)
    with pytest.raises(UnsupportedEncoding, match="'br' is not supported"):
        decompress(raw, "br", 1000)
