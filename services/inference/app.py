"""Composition root and HTTP adapter of the inference service.

Routes translate HTTP to :class:`InferenceHandlers` calls and back: the Open Inference Protocol
V2 (KServe, Triton, MLServer) and KServe V1 ``:predict``. Every client error is a 4xx with
``{"error": "..."}``; the body size is capped before it is parsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from pathlib import Path
from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import Field
from starlette.background import BackgroundTask

from services.inference.handlers import Answer, InferenceHandlers
from services.inference.metrics import InferenceMetrics
from services.inference.predlog import PredictionLog
from services.inference.protocol import OUTPUT_NAMES, InferenceRequest, decode_v1, decode_v2, encode_v2_outputs
from shared import __version__, topics
from shared.bus import Subscriber
from shared.config import ServiceSettings, build_store, load_settings
from shared.errors import DriftloopError, InvalidInput, PayloadTooLarge
from shared.lifecycle import configure_logging, run_forever
from shared.registry import Registry
from shared.service import BusService
from shared.spec import SpecCatalog

log = logging.getLogger("driftloop.inference")

ID_HEADER = "x-inference-id"


class InferenceSettings(ServiceSettings):
    """Settings of the inference service (``DRIFTLOOP_*``)."""

    port: int = Field(default=8000, ge=0, le=65535, description="HTTP port of the inference APIs.")
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Largest request body accepted (413 above).")
    refresh_s: float = Field(default=5.0, gt=0, description="How often every model's aliases are re-read.")
    journal_dir: Path | None = Field(
        default=None, description="Where predictions wait when Kafka is away. Default: <data_dir>/inference-journal."
    )
    prediction_buffer: int = Field(default=50_000, ge=1, description="Predictions held in memory before spilling.")


class InferenceService(BusService):
    """Serving wired up: registry, deployment events, prediction log, HTTP."""

    def __init__(self, settings: InferenceSettings) -> None:
        super().__init__(settings, "inference", [topics.DEPLOYMENTS, topics.TRAINING_COMPLETED, topics.PREDICTIONS])
        store = build_store(settings)
        self.settings: InferenceSettings = settings
        self.metrics = InferenceMetrics.create(self.registry)
        journal = settings.journal_dir or settings.data_dir / "inference-journal"
        self.predlog = PredictionLog(
            self.publisher, journal, max_buffer=settings.prediction_buffer, on_change=self._log_metrics
        )
        self.handlers = InferenceHandlers(Registry(store), SpecCatalog(store), self.predlog, self.metrics)
        # every replica must see every deployment: a group of its own, reading from now on
        self.subscriber = Subscriber(
            self.options,
            f"driftloop-inference-{uuid.uuid4().hex[:12]}",
            [topics.DEPLOYMENTS, topics.TRAINING_COMPLETED],
            self.handlers.on_event,
            self.publisher,
            auto_offset_reset="latest",
        )
        self.background += [self.predlog.run, self._sweep_forever]
        self.on_stop.append(self.predlog.stop)
        self._sweeping = True
        self.on_stop.append(self._stop_sweeping)
        add_routes(self)

    def _stop_sweeping(self) -> None:
        self._sweeping = False

    def _log_metrics(self, plog: PredictionLog) -> None:
        self.metrics.log_depth.set(plog.depth)
        self.metrics.log_spilled.set(plog.spilled)
        self.metrics.log_lost.set(plog.lost)
        self.metrics.log_sent.set(plog.sent + plog.replayed)

    async def _sweep_forever(self) -> None:
        while self._sweeping:
            try:
                await self.handlers.sweep()
            except Exception as err:  # the registry may be briefly unreachable: serving goes on
                log.warning("refreshing models failed: %s", err)
            for _ in range(int(self.settings.refresh_s * 10)):
                if not self._sweeping:
                    return
                await asyncio.sleep(0.1)

    def not_ready(self) -> str | None:
        """Ready once consuming deployments; models may still be loading (``/v2/models/{m}/ready``)."""
        return super().not_ready()


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None, background: Any = None) -> Response:
    return Response(
        orjson.dumps(data), status_code=status, media_type="application/json", headers=headers, background=background
    )


def add_routes(service: InferenceService) -> None:
    """The Open Inference Protocol V2 and KServe V1 routes."""
    app = service.app
    handlers = service.handlers
    metrics = service.metrics
    limit = service.settings.max_body_bytes

    @app.exception_handler(DriftloopError)
    async def driftloop_error(request: Request, exc: DriftloopError) -> Response:
        model = request.path_params.get("model", "")
        metrics.requests.labels(model, "", "", str(exc.status_code)).inc()
        return _json({"error": exc.message}, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'path')}: {e.get('msg')}" for e in exc.errors()
        ]
        return _json({"error": "; ".join(problems)}, 422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        return _json({"error": "internal error; see the service log"}, 500)

    async def body_of(request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"request body of {declared} bytes is over the {limit}-byte limit")
        if declared is not None and declared.isdigit():
            chunks = await request.body()  # the server enforces Content-Length
        else:  # chunked: count as it arrives
            buffer = bytearray()
            async for chunk in request.stream():
                buffer.extend(chunk)
                if len(buffer) > limit:
                    raise PayloadTooLarge(f"request body is over the {limit}-byte limit")
            chunks = bytes(buffer)
        if not chunks:
            raise InvalidInput("the request body is empty; send JSON")
        try:
            return orjson.loads(chunks)
        except orjson.JSONDecodeError as err:
            raise MalformedJson(f"the request body is not valid JSON: {err}") from None

    children: dict[tuple[str, int, str], tuple[Any, Any]] = {}

    def respond(answer: Answer, request: InferenceRequest, payload: dict[str, Any], shadow: bool) -> Response:
        key = (answer.model, answer.version, answer.variant)
        child = children.get(key)
        if child is None:  # labelled children are looked up once per (model, version, variant)
            labels = (answer.model, str(answer.version), answer.variant)
            child = children[key] = (metrics.requests.labels(*labels, "200"), metrics.latency.labels(*labels))
        child[0].inc()
        child[1].observe(answer.latency_ms / 1000)
        slots = handlers.slots.get(answer.model)
        has_shadow = shadow and slots is not None and slots.shadow is not None
        task = BackgroundTask(handlers.shadow, answer.model, request, answer.inference_id) if has_shadow else None
        return _json(
            payload,
            headers={"X-Inference-Id": answer.inference_id, "X-Model-Version": str(answer.version)},
            background=task,
        )

    async def infer_v2(model: str, request: Request, version: int | None) -> Response:
        body = await body_of(request)
        pinned = await handlers.pinned(model, version) if version is not None else None
        loaded = pinned or handlers.model_slots(model).champion
        assert loaded is not None
        decoded = decode_v2(body, loaded.schema)
        answer = handlers.predict(model, decoded, request.headers.get(ID_HEADER), version, pinned)
        payload = {
            "model_name": model,
            "model_version": str(answer.version),
            "id": answer.inference_id,
            "parameters": {"variant": answer.variant},
            "outputs": encode_v2_outputs(answer.labels, answer.probabilities, decoded.outputs),
        }
        return respond(answer, decoded, payload, shadow=pinned is None)

    @app.post("/v2/models/{model}/infer")
    async def infer(model: str, request: Request) -> Response:
        return await infer_v2(model, request, None)

    @app.post("/v2/models/{model}/versions/{version}/infer")
    async def infer_version(model: str, version: int, request: Request) -> Response:
        return await infer_v2(model, request, version)

    @app.post("/v1/models/{model}:predict")
    async def predict_v1(model: str, request: Request) -> Response:
        body = await body_of(request)
        slots = handlers.model_slots(model)
        assert slots.champion is not None
        decoded = decode_v1(body, slots.champion.schema)
        answer = handlers.predict(model, decoded, request.headers.get(ID_HEADER))
        predictions = [
            {
                "label": label.item() if hasattr(label, "item") else label,
                "probabilities": dict(zip([str(c) for c in slots.champion.classes], map(float, row), strict=False)),
            }
            for label, row in zip(answer.labels, answer.probabilities, strict=True)
        ]
        payload = {"predictions": predictions, "model_version": str(answer.version), "id": answer.inference_id}
        return respond(answer, decoded, payload, shadow=True)

    @app.get("/v2/health/live")
    async def v2_live() -> Response:
        return _json({"live": True})

    @app.get("/v2/health/ready")
    async def v2_ready() -> Response:
        reason = service.not_ready()
        return _json(
            {"ready": reason is None, **({"reason": reason} if reason else {})}, 200 if reason is None else 503
        )

    @app.get("/v2")
    async def server_metadata() -> Response:
        return _json({"name": "driftloop", "version": __version__, "extensions": []})

    def metadata(model: str, version: int | None) -> dict[str, Any]:
        slots = handlers.model_slots(model)
        loaded = slots.find(version) if version is not None else slots.champion
        if loaded is None:
            raise ModelNotServed(f"model {model!r} version {version} is not loaded; call its infer route to load it")
        n_classes = len(loaded.classes)
        label_type = "BYTES" if any(isinstance(c, str) for c in loaded.classes) else "INT64"
        return {
            "name": model,
            "versions": [str(m.version) for m in slots.loaded()],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, len(loaded.schema.features)]}],
            "outputs": [
                {"name": OUTPUT_NAMES[0], "datatype": label_type, "shape": [-1]},
                {"name": OUTPUT_NAMES[1], "datatype": "FP32", "shape": [-1, n_classes]},
            ],
            "parameters": {
                "version": str(loaded.version),
                "features": list(loaded.schema.features),
                "classes": [str(c) for c in loaded.classes],
                "canary": slots.canary.version if slots.canary else None,
                "canary_traffic": slots.canary_traffic if slots.canary else 0.0,
                "shadow": slots.shadow.version if slots.shadow else None,
            },
        }

    @app.get("/v2/models/{model}")
    async def model_metadata(model: str) -> Response:
        return _json(metadata(model, None))

    @app.get("/v2/models/{model}/versions/{version}")
    async def version_metadata(model: str, version: int) -> Response:
        await handlers.pinned(model, version)
        return _json(metadata(model, version))

    @app.get("/v2/models/{model}/ready")
    async def model_ready(model: str) -> Response:
        slots = handlers.slots.get(model)
        ready = slots is not None and slots.champion is not None
        return _json({"name": model, "ready": ready}, 200 if ready else 404)

    @app.get("/v2/models/{model}/versions/{version}/ready")
    async def version_ready(model: str, version: int) -> Response:
        slots = handlers.slots.get(model)
        ready = slots is not None and slots.find(version) is not None
        return _json({"name": model, "version": str(version), "ready": ready}, 200 if ready else 404)


class MalformedJson(InvalidInput):
    """The body is not JSON at all (400, where a well-formed but invalid request is 422)."""

    status_code = 400


class ModelNotServed(DriftloopError):
    """A version exists but is not loaded on this replica."""

    status_code = 404


def main() -> int:
    """``driftloop serve inference``."""
    settings = load_settings(InferenceSettings)
    configure_logging(settings.log_level)
    with contextlib.suppress(KeyboardInterrupt):
        run_forever(InferenceService(settings).run())
    return 0
