"""The prediction routes as one plain ASGI app in front of FastAPI.

``POST /v2/models/{m}[/versions/{v}]/infer`` and ``POST /v1/models/{m}:predict`` are the hot
path: every microsecond of routing and dependency resolution shows in the serving throughput
(issue #5 asks for at least 80% of a bare FastAPI route). So these three routes skip FastAPI's
router and parameter machinery: the path is matched once, the body is read straight from the
ASGI channel (capped at the configured size, inflated when gzip or deflate), and the answer
is sent with two ASGI messages — JSON, or a JSON header and binary outputs when the request
uses the binary tensor data extension (:mod:`.binary`). Every other route — health, metadata,
metrics, the OpenAPI docs — is FastAPI's.

A request is routed (champion or canary, by inference id) before it is decoded, and decoded
against the schema of the version that answers it: a canary trained on other features (typed
ones, say, beside an all-numeric champion) reads its requests as it takes them, and the outputs
a V2 request may ask for, and the form of a V1 answer, are that version's (a classifier's
``label`` and ``probabilities``, a regressor's ``prediction``).

Errors take their status and body from the one mapping, :func:`shared.http.encode_error`: a
:class:`DriftloopError` is its status with ``{"error": "..."}``, anything else a logged 500 with
no detail leaked.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import zlib
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

from services.inference.binary import split_body
from services.inference.handlers import Answer, InferenceHandlers
from services.inference.metrics import InferenceMetrics
from services.inference.protocol import (
    InferenceRequest,
    decode_v1,
    decode_v2,
    encode_v1_predictions,
    encode_v2_outputs,
)
from shared.errors import (
    DriftloopError,
    InvalidInput,
    MalformedRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedEncoding,
)
from shared.http import encode_error

log = logging.getLogger("driftloop.inference")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = (b"content-type", b"application/json")
OCTETS = (b"content-type", b"application/octet-stream")
ALLOW_POST = [(b"allow", b"POST")]


@dataclass
class Body:
    """A prediction request's body and the headers that say how to read it."""

    raw: bytes
    inference_id: str | None = None
    header_length: bytes | None = None  # Inference-Header-Content-Length: the binary extension
    encoding: str = ""  # Content-Encoding


@dataclass(frozen=True)
class PredictRoute:
    """Which prediction route a path names."""

    protocol: str  # "v2" or "v1"
    model: str
    version: int | None = None


def match_route(path: str) -> PredictRoute | None:
    """The prediction route of ``path``, or None when it is not one.

    >>> match_route("/v2/models/credit/versions/3/infer")
    PredictRoute(protocol='v2', model='credit', version=3)
    >>> match_route("/v1/models/credit:predict")
    PredictRoute(protocol='v1', model='credit', version=None)
    >>> match_route("/v2/models/credit") is None
    True
    """
    parts = path.split("/")
    if len(parts) == 5 and parts[1] == "v2" and parts[2] == "models" and parts[4] == "infer" and parts[3]:
        return PredictRoute("v2", parts[3])
    if len(parts) == 7 and parts[1] == "v2" and parts[2] == "models" and parts[4] == "versions" and parts[6] == "infer":
        if not parts[5].isdigit():
            raise InvalidInput(f"version must be a whole number, got {parts[5]!r}")
        return PredictRoute("v2", parts[3], int(parts[5]))
    if len(parts) == 4 and parts[1] == "v1" and parts[2] == "models" and parts[3].endswith(":predict"):
        model = parts[3][: -len(":predict")]
        if model:
            return PredictRoute("v1", model)
    return None


class PredictRoutes:
    """Answers the prediction routes; hands every other request to ``inner`` (FastAPI)."""

    def __init__(
        self, inner: ASGIApp, handlers: InferenceHandlers, metrics: InferenceMetrics, max_body_bytes: int
    ) -> None:
        self.inner = inner
        self.handlers = handlers
        self.metrics = metrics
        self.limit = max_body_bytes
        self._children: dict[tuple[str, int, str], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        try:
            route = match_route(scope["path"])
        except DriftloopError as err:
            await self._error(send, "", err)
            return
        if route is None:
            await self.inner(scope, receive, send)
            return
        shadow: Callable[[], None] | None = None
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed(f"{scope['path']} takes POST, not {scope['method']}")
            body = await self._read(scope, receive)
            status, payload, binary, answer, shadow = await self._answer(route, body)
        except DriftloopError as err:
            await self._error(send, route.model, err)
            return
        except Exception as err:
            log.exception("unexpected error on %s", scope["path"])
            await _send(send, *encode_error(err))
            return
        await _send(
            send,
            status,
            orjson.dumps(payload),
            [(b"x-inference-id", answer.inference_id.encode()), (b"x-model-version", str(answer.version).encode())],
            binary,
        )
        if shadow is not None:  # off the request path: the response is already out
            asyncio.get_running_loop().call_soon(shadow)

    async def _read(self, scope: Scope, receive: Receive) -> Body:
        """The body (capped at the limit, decompressed) and the headers the routes read."""
        declared: bytes | None = None
        body = Body(b"")
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"x-inference-id":
                body.inference_id = value.decode("latin-1")
            elif name == b"inference-header-content-length":
                body.header_length = value
            elif name == b"content-encoding":
                body.encoding = value.decode("latin-1").strip().lower()
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            raise PayloadTooLarge(f"request body of {int(declared)} bytes is over the {self.limit}-byte limit")
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise InvalidInput("the client went away before the body arrived")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise PayloadTooLarge(f"request body is over the {self.limit}-byte limit")
            chunks.append(chunk)
            more = message.get("more_body", False)
        raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        body.raw = decompress(raw, body.encoding, self.limit) if body.encoding else raw
        return body

    async def _answer(
        self, route: PredictRoute, body: Body
    ) -> tuple[int, dict[str, Any], bytes, Answer, Callable[[], None] | None]:
        handlers = self.handlers
        model = route.model
        if route.protocol == "v1":
            if body.header_length is not None:
                raise MalformedRequest("the binary tensor data extension is for the V2 infer route; send V1 as JSON")
            inference_id = body.inference_id or uuid.uuid4().hex
            routed = handlers.route(model, inference_id)
            chosen = routed[0]
            decoded = decode_v1(split_body(body.raw, None)[0], chosen.schema, chosen.outputs)
            answer = handlers.predict(model, decoded, inference_id, routed=routed)
            payload: dict[str, Any] = {
                "predictions": encode_v1_predictions(answer.prediction, chosen.classes, chosen.outputs),
                "model_version": str(answer.version),
                "id": answer.inference_id,
            }
            return 200, payload, b"", self._count(answer), self._shadow(model, decoded, answer, pinned=False)
        header, tail = split_body(body.raw, body.header_length)
        pinned = await handlers.pinned(model, route.version) if route.version is not None else None
        request_id = header.get("id") if isinstance(header, Mapping) else None
        inference_id = body.inference_id or (request_id if isinstance(request_id, str) else None) or uuid.uuid4().hex
        routed = handlers.route(model, inference_id, pinned)
        decoded = decode_v2(header, routed[0].schema, tail, routed[0].outputs)
        answer = handlers.predict(model, decoded, inference_id, route.version, pinned, routed)
        outputs, binary = encode_v2_outputs(*answer.prediction, decoded.outputs, decoded.binary_outputs)
        payload = {
            "model_name": model,
            "model_version": str(answer.version),
            "id": answer.inference_id,
            "parameters": {"variant": answer.variant},
            "outputs": outputs,
        }
        return (
            200,
            payload,
            binary,
            self._count(answer),
            self._shadow(model, decoded, answer, pinned=pinned is not None),
        )

    def _count(self, answer: Answer) -> Answer:
        key = (answer.model, answer.version, answer.variant)
        child = self._children.get(key)
        if child is None:  # labelled children are looked up once per (model, version, variant)
            labels = (answer.model, str(answer.version), answer.variant)
            child = self._children[key] = (
                self.metrics.requests.labels(*labels, "200"),
                self.metrics.latency.labels(*labels),
            )
        child[0].inc()
        child[1].observe(answer.latency_ms / 1000)
        return answer

    def _shadow(
        self, model: str, request: InferenceRequest, answer: Answer, *, pinned: bool
    ) -> Callable[[], None] | None:
        """The shadow scoring to run once the response is out, when the model has a shadow."""
        slots = self.handlers.slots.get(model)
        if pinned or slots is None or slots.shadow is None:
            return None
        handlers = self.handlers
        return lambda: handlers.shadow(model, request, answer.inference_id)

    async def _error(self, send: Send, model: str, err: DriftloopError) -> None:
        status, body = encode_error(err)
        served = model if model in self.handlers.slots else ""  # callers cannot grow the label set
        self.metrics.requests.labels(served, "", "", str(status)).inc()
        await _send(send, status, body, ALLOW_POST if isinstance(err, MethodNotAllowed) else None)


async def _send(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None, binary: bytes = b""
) -> None:
    """One JSON response (``body``); with ``binary``, that JSON header then those bytes (the binary extension)."""
    if binary:
        framing = [OCTETS, (b"inference-header-content-length", str(len(body)).encode())]
        body += binary
    else:
        framing = [JSON]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*framing, (b"content-length", str(len(body)).encode()), *(headers or ())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def decompress(raw: bytes, encoding: str, limit: int) -> bytes:
    """A ``gzip`` or ``deflate`` request body (as tritonclient's compression sends), inflated to
    at most ``limit`` bytes: the cap holds for what the body expands to, not only what it weighs."""
    if encoding == "identity":
        return raw
    if encoding not in ("gzip", "deflate"):
        raise UnsupportedEncoding(f"Content-Encoding {encoding!r} is not supported; send identity, gzip or deflate")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        inflated = inflater.decompress(raw, limit + 1)
    except zlib.error as err:
        raise MalformedRequest(f"the body is not valid {encoding} data: {err}") from None
    if len(inflated) > limit:
        raise PayloadTooLarge(f"the request body inflates to over the {limit}-byte limit")
    if not inflater.eof:
        raise MalformedRequest(f"the {encoding} body is cut short")
    return inflated
