"""The Open Inference Protocol's binary tensor data extension. Pure: no I/O.

A request may carry its tensors as raw bytes after a JSON header instead of as JSON lists
(tritonclient does so by default): the ``Inference-Header-Content-Length`` HTTP header gives
the size of the JSON part, each binary input says ``parameters.binary_data_size`` and has no
``data``, and the inputs' bytes follow the JSON in the order of the inputs. Elements are
little-endian, row-major, without padding; ``BOOL`` is one byte, ``BYTES`` elements are a
4-byte little-endian length followed by the bytes. Responses carry outputs the same way when
the request asks (``parameters.binary_data_output``, or ``parameters.binary_data`` on an
output).

Framing faults — a header length that does not fit the body, a JSON part that is not JSON, a
declared size that does not match the bytes — are :class:`MalformedRequest` (400), each
naming the input or the header at fault.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from shared.errors import InvalidInput, MalformedRequest

FIXED_SIZE: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("u1"),  # one byte per element: 0 or 1
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # the top half of a float32's bits
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
"""Datatypes whose elements have one size, and how their bytes read."""

HEADER = "Inference-Header-Content-Length"
_LENGTH = struct.Struct("<I")


def split_body(raw: bytes, header_length: bytes | None) -> tuple[Any, memoryview]:
    """The parsed JSON part of a request body and the binary part after it.

    Without the ``Inference-Header-Content-Length`` header the whole body is JSON and the
    binary part is empty.

    >>> header, tail = split_body(b'{"inputs": []}' + bytes(4), b"14")
    >>> header, len(tail)
    ({'inputs': []}, 4)
    """
    if header_length is None:
        return _json(raw, "the request body", f" (binary tensors need the {HEADER} header)"), memoryview(b"")
    text = header_length.decode("latin-1").strip()
    if not text.isdigit():
        raise MalformedRequest(f"{HEADER} must be a whole number of bytes, got {text!r}")
    size = int(text)
    if size == 0 or size > len(raw):
        raise MalformedRequest(
            f"{HEADER} is {size} but the body has {len(raw)} bytes; it must give the size of the JSON part"
        )
    view = memoryview(raw)
    return _json(view[:size], f"the JSON part of the body (the first {size} bytes, per {HEADER})"), view[size:]


def _json(raw: bytes | memoryview, what: str, hint: str = "") -> Any:
    if not raw:
        raise MalformedRequest(f"{what} is empty; send JSON")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise MalformedRequest(f"{what} is not valid JSON{hint}: {err}") from None


class BinaryCursor:
    """Hands each binary input its bytes, in input order, and checks that every byte is used."""

    def __init__(self, tail: memoryview) -> None:
        self.tail = tail
        self.offset = 0
        self.declared: list[str] = []

    def take(self, name: str, size: int) -> memoryview:
        """The next ``size`` bytes, for input ``name``."""
        left = len(self.tail) - self.offset
        if size > left:
            raise MalformedRequest(
                f"input {name!r} declares binary_data_size {size} but only {left} bytes of binary data are left"
                + ("" if self.tail else f" (is the {HEADER} header missing?)")
            )
        chunk = self.tail[self.offset : self.offset + size]
        self.offset += size
        self.declared.append(f"{name}: {size}")
        return chunk

    def finish(self) -> None:
        """Refuse bytes that no input declared."""
        extra = len(self.tail) - self.offset
        if extra:
            declared = ", ".join(self.declared) or "none"
            raise MalformedRequest(
                f"the body has {extra} bytes of binary data after the declared inputs' "
                f"({self.offset} declared: {declared}); each binary input's binary_data_size must match its bytes"
            )


def read_tensor(raw: memoryview, datatype: str, count: int, where: str) -> NDArray[Any] | list[str]:
    """The ``count`` elements of one binary input: an array, or text for ``BYTES``."""
    if datatype == "BYTES":
        return _read_bytes(raw, count, where)
    dtype = FIXED_SIZE[datatype]
    if len(raw) != count * dtype.itemsize:
        raise MalformedRequest(
            f"{where}: {count} {datatype} values take {count * dtype.itemsize} bytes, binary_data_size is {len(raw)}"
        )
    values = np.frombuffer(raw, dtype=dtype)
    if datatype == "BOOL":
        if (values > 1).any():
            raise InvalidInput(f"{where}: BOOL bytes must be 0 or 1")
        return values.astype(np.bool_)
    if datatype == "BF16":
        return (values.astype(np.uint32) << 16).view(np.float32)
    return values


def _read_bytes(raw: memoryview, count: int, where: str) -> list[str]:
    items: list[str] = []
    offset, end = 0, len(raw)
    while offset < end:
        if offset + 4 > end:
            raise MalformedRequest(f"{where}: BYTES element {len(items)} is cut short in its 4-byte length")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > end:
            raise MalformedRequest(
                f"{where}: BYTES element {len(items)} says {length} bytes, {end - offset} are left of binary_data_size"
            )
        try:
            items.append(str(raw[offset : offset + length], "utf-8"))
        except UnicodeDecodeError:
            raise InvalidInput(f"{where}: BYTES element {len(items)} is not UTF-8 text") from None
        offset += length
        if len(items) > count:
            break
    if len(items) != count:
        held = f"more than {count}" if len(items) > count else str(len(items))
        raise MalformedRequest(f"{where}: the shape needs {count} BYTES elements, binary_data_size holds {held}")
    return items


def write_bytes(items: Sequence[str]) -> bytes:
    """``BYTES`` elements as the extension writes them: 4-byte length, then the UTF-8 bytes.

    >>> write_bytes(["ab", ""])
    b'\\x02\\x00\\x00\\x00ab\\x00\\x00\\x00\\x00'
    """
    parts: list[bytes] = []
    for item in items:
        encoded = item.encode()
        parts.append(_LENGTH.pack(len(encoded)))
        parts.append(encoded)
    return b"".join(parts)
