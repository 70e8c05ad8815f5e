"""Composition root and HTTP adapter of the inference service.

Routes translate HTTP to :class:`InferenceHandlers` calls and back: the Open Inference Protocol
V2 (KServe, Triton, MLServer) and KServe V1 ``:predict``. Every client error is a 4xx with
``{"error": "..."}`` (the one mapping, :func:`shared.http.encode_error`); the body size is
capped before it is parsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import uuid
from pathlib import Path
from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import Field

from services.inference.handlers import InferenceHandlers, Served, encode_predictions
from services.inference.metrics import InferenceMetrics
from services.inference.predict_routes import PredictRoutes
from services.inference.predlog import PredictionLog
from services.inference.protocol import describe_outputs
from shared import __version__, topics
from shared.bus import Subscriber
from shared.config import ServiceSettings, build_store, load_settings
from shared.errors import InvalidInput, VersionNotLoaded
from shared.features import COLUMNS
from shared.http import add_error_handler, error_response
from shared.lifecycle import configure_logging, run_forever
from shared.registry import Registry
from shared.service import BusService
from shared.spec import SpecCatalog

log = logging.getLogger("driftloop.inference")

ID_HEADER = "x-inference-id"
GC_YOUNG_THRESHOLD = 10_000
"""Allocations between young-generation collections once serving (Python's default: 700)."""


class InferenceSettings(ServiceSettings):
    """Settings of the inference service (``DRIFTLOOP_*``)."""

    port: int = Field(default=8000, ge=0, le=65535, description="HTTP port of the inference APIs.")
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Largest request body accepted (413 above).")
    refresh_s: float = Field(default=5.0, gt=0, description="How often every model's aliases are re-read.")
    journal_dir: Path | None = Field(
        default=None, description="Where predictions wait when Kafka is away. Default: <data_dir>/inference-journal."
    )
    prediction_buffer: int = Field(
        default=50_000,
        ge=1,
        description="Served requests held in memory for the log before spilling to disk.",
    )
    log_predictions: bool = Field(
        default=True, description="Publish every prediction to `predictions` (the monitor needs them; off to compare)."
    )


class InferenceService(BusService):
    """Serving wired up: registry, deployment events, prediction log, HTTP."""

    def __init__(self, settings: InferenceSettings) -> None:
        super().__init__(settings, "inference", [topics.DEPLOYMENTS, topics.TRAINING_COMPLETED, topics.PREDICTIONS])
        store = build_store(settings)
        self.settings: InferenceSettings = settings
        self.metrics = InferenceMetrics.create(self.registry)
        journal = settings.journal_dir or settings.data_dir / "inference-journal"
        self.predlog: PredictionLog[Served] = PredictionLog(
            self.publisher,
            journal,
            functools.partial(encode_predictions, max_bytes=self.options.max_message_bytes),
            max_buffer=settings.prediction_buffer,
            on_change=self._log_metrics,
        )
        self.handlers = InferenceHandlers(
            Registry(store), SpecCatalog(store), self.predlog, self.metrics, log_predictions=settings.log_predictions
        )
        # every replica must see every deployment: a group of its own, reading from now on
        self.http.app = PredictRoutes(self.app, self.handlers, self.metrics, settings.max_body_bytes)
        self.subscriber = Subscriber(
            self.options,
            f"driftloop-inference-{uuid.uuid4().hex[:12]}",
            [topics.DEPLOYMENTS, topics.TRAINING_COMPLETED],
            self.handlers.on_event,
            self.publisher,
            auto_offset_reset="latest",
        )
        self.background += [self.predlog.run, self._sweep_forever, self._settle_gc]
        self.on_stop.append(self.predlog.stop)
        self._sweeping = True
        self.on_stop.append(self._stop_sweeping)
        add_routes(self)

    def _stop_sweeping(self) -> None:
        self._sweeping = False

    def _log_metrics(self, plog: PredictionLog[Served]) -> None:
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

    async def _settle_gc(self) -> None:
        """Once serving, move start-up objects out of the collector's sight and collect less often.

        Every request allocates a few dozen short-lived objects and the prediction log keeps
        some alive for a few tens of milliseconds; with the default thresholds that promotes
        enough of them to run full collections over every module, pydantic model and FastAPI
        route several times a second. Frozen start-up objects are never traversed again.
        """
        await self.http.wait_started(timeout=60)
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])

    def not_ready(self) -> str | None:
        """Ready once consuming deployments; models may still be loading (``/v2/models/{m}/ready``)."""
        return super().not_ready()


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None, background: Any = None) -> Response:
    return Response(
        orjson.dumps(data), status_code=status, media_type="application/json", headers=headers, background=background
    )


def add_routes(service: InferenceService) -> None:
    """Health and metadata routes of the Open Inference Protocol V2 (predictions: :mod:`predict_routes`)."""
    app = service.app
    handlers = service.handlers
    metrics = service.metrics

    def count_error(request: Request, status: int) -> None:
        metrics.requests.labels(request.path_params.get("model", ""), "", "", str(status)).inc()

    add_error_handler(app, count_error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'path')}: {e.get('msg')}" for e in exc.errors()
        ]
        return error_response(InvalidInput("; ".join(problems)))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        return error_response(exc)

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
        return _json({"name": "driftloop", "version": __version__, "extensions": ["binary_tensor_data"]})

    def metadata(model: str, version: int | None) -> dict[str, Any]:
        slots = handlers.model_slots(model)
        loaded = slots.find(version) if version is not None else slots.champion
        if loaded is None:
            raise VersionNotLoaded(f"model {model!r} version {version} is not loaded; call its infer route to load it")
        schema = loaded.schema
        if schema.layout == COLUMNS:  # one tensor per feature, in its own datatype
            inputs = [
                {"name": name, "datatype": datatype, "shape": [-1, 1]}
                for name, datatype in zip(schema.features, schema.datatypes(), strict=True)
            ]
        else:
            inputs = [{"name": "input", "datatype": "FP32", "shape": [-1, len(schema.features)]}]
        return {
            "name": model,
            "versions": [str(m.version) for m in slots.loaded()],
            "platform": "onnxruntime_onnx",
            "inputs": inputs,
            "outputs": describe_outputs(loaded.outputs, loaded.classes),
            "parameters": {
                "version": str(loaded.version),
                "task": loaded.task,
                "features": list(schema.features),
                "feature_types": list(schema.kinds),
                "layout": schema.layout,
                "optional": [f for f in schema.features if f in schema.optional],
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


def main() -> int:
    """``driftloop serve inference``."""
    settings = load_settings(InferenceSettings)
    configure_logging(settings.log_level)
    with contextlib.suppress(KeyboardInterrupt):
        run_forever(InferenceService(settings).run())
    return 0
