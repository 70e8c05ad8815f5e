"""Inference use-cases: answer a request, keep every replica on the registry's versions.

Serving reads only in-memory references (:class:`ModelSlots`); keeping them current happens
beside it: a deployment or training event for a model (every replica receives every event)
and a periodic sweep both re-read the model's aliases from the registry, load what changed in a
worker thread, and swap references. A load that fails leaves the current version serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from services.inference.metrics import InferenceMetrics
from services.inference.predlog import PredictionLog
from services.inference.protocol import InferenceRequest
from services.inference.runtime import LoadedModel, ModelSlots, Variant, load_version
from shared.bus import Delivery
from shared.errors import ModelNotFound
from shared.events import DeploymentChanged, PredictionsLogged, TrainingCompleted, rfc3339
from shared.registry import ALIASES, PRODUCTION, Registry
from shared.spec import SpecCatalog

log = logging.getLogger(__name__)

DEFAULT_CANARY_TRAFFIC = 0.1


@dataclass(frozen=True)
class Answer:
    """A served prediction, as the HTTP adapter renders it."""

    model: str
    version: int
    variant: Variant
    inference_id: str
    labels: NDArray[Any]
    probabilities: NDArray[np.float32]
    latency_ms: float


class InferenceHandlers:
    """The models this replica serves, and how it answers."""

    def __init__(
        self,
        registry: Registry,
        catalog: SpecCatalog,
        predlog: PredictionLog[Served],
        metrics: InferenceMetrics,
        *,
        log_predictions: bool = True,
    ) -> None:
        self.registry = registry
        self.catalog = catalog
        self.predlog = predlog
        self.metrics = metrics
        self.log_predictions = log_predictions
        self.slots: dict[str, ModelSlots] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # --- keeping versions current ----------------------------------------------------------

    async def on_event(self, event: DeploymentChanged | TrainingCompleted, delivery: Delivery) -> None:
        """Any change to a model's versions: re-read its aliases and swap what changed."""
        await self.refresh(event.model)

    async def refresh(self, model: str) -> None:
        """Bring one model's slots in line with the registry's aliases."""
        lock = self._locks.setdefault(model, asyncio.Lock())
        async with lock:
            aliases = await asyncio.to_thread(self.registry.aliases, model)
            if not aliases:
                return
            spec = await asyncio.to_thread(self.catalog.get, model)
            optional = frozenset(f.name for f in spec.features if f.allow_missing) if spec else frozenset()
            slots = self.slots.get(model) or ModelSlots()
            for alias in ALIASES:
                wanted = aliases.get(alias)
                current = slots.champion if alias == PRODUCTION else getattr(slots, alias)
                if wanted is None:
                    if alias != PRODUCTION:
                        setattr(slots, alias, None)
                    continue
                if current is not None and current.version == wanted:
                    continue
                loaded = slots.find(wanted) or await self._load(model, wanted, optional)
                if loaded is None:
                    continue  # the current version keeps serving
                if alias == PRODUCTION:
                    slots.champion = loaded
                else:
                    setattr(slots, alias, loaded)
                log.info("%s: %s now serves v%d", model, alias, wanted)
            slots.canary_traffic = spec.deployment.canary_traffic if spec else DEFAULT_CANARY_TRAFFIC
            self.slots[model] = slots
            for variant, loaded_model in (
                ("champion", slots.champion),
                ("canary", slots.canary),
                ("shadow", slots.shadow),
            ):
                self.metrics.serving_version.labels(model, variant).set(loaded_model.version if loaded_model else 0)

    async def _load(self, model: str, version: int, optional: frozenset[str]) -> LoadedModel | None:
        try:
            loaded = await asyncio.to_thread(load_version, self.registry, model, version, optional)
        except Exception as err:  # any failure: keep serving what we have, say so loudly
            self.metrics.load_failures.labels(model).inc()
            log.error("%s: loading v%d failed, current version keeps serving: %s", model, version, err)
            return None
        self.metrics.load_seconds.labels(model).observe(loaded.load_seconds)
        return loaded

    async def sweep(self) -> None:
        """Refresh every model the registry knows (catches missed events and new models)."""
        for model in await asyncio.to_thread(self.registry.models):
            await self.refresh(model)

    async def pinned(self, model: str, version: int) -> LoadedModel:
        """A specific registered version, loaded on first use."""
        slots = self.slots.get(model)
        if slots is None:
            raise ModelNotFound(f"model {model!r} is not served here")
        loaded = slots.find(version)
        if loaded is None:
            spec = self.catalog.cached(model)
            optional = frozenset(f.name for f in spec.features if f.allow_missing) if spec else frozenset()
            try:
                loaded = await asyncio.to_thread(load_version, self.registry, model, version, optional)
            except ModelNotFound:
                raise ModelNotFound(f"model {model!r} has no version {version}") from None
            slots.pin(loaded)
        return loaded

    def model_slots(self, model: str) -> ModelSlots:
        """The slots of a served model, or 404."""
        slots = self.slots.get(model)
        if slots is None or slots.champion is None:
            raise ModelNotFound(f"model {model!r} is not served here (no production version)")
        return slots

    # --- answering -------------------------------------------------------------------------

    def predict(
        self,
        model: str,
        request: InferenceRequest,
        inference_id: str | None,
        version: int | None = None,
        pinned: LoadedModel | None = None,
    ) -> Answer:
        """Route, predict, log. ``pinned`` serves an explicit version (``/versions/{v}``)."""
        started = time.perf_counter()
        inference_id = inference_id or request.request_id or uuid.uuid4().hex
        if pinned is not None:
            chosen: LoadedModel = pinned
            variant: Variant = "champion"
        else:
            chosen, variant = self.model_slots(model).route(inference_id)
        labels, probabilities = chosen.predict(request.X)
        latency_ms = (time.perf_counter() - started) * 1000
        self._log(chosen, variant, inference_id, request.X, labels, probabilities, latency_ms)
        return Answer(model, chosen.version, variant, inference_id, labels, probabilities, latency_ms)

    def shadow(self, model: str, request: InferenceRequest, inference_id: str) -> None:
        """Score a copy of the request with the shadow version (after the response went out)."""
        slots = self.slots.get(model)
        shadow = slots.shadow if slots else None
        if shadow is None:
            return
        started = time.perf_counter()
        try:
            labels, probabilities = shadow.predict(request.X)
        except Exception as err:  # the shadow must never hurt the champion's traffic
            log.warning("%s: shadow v%d failed: %s", model, shadow.version, err)
            return
        latency_ms = (time.perf_counter() - started) * 1000
        self._log(shadow, "shadow", inference_id, request.X, labels, probabilities, latency_ms)

    def _log(
        self,
        loaded: LoadedModel,
        variant: Variant,
        inference_id: str,
        X: NDArray[np.float32],
        labels: NDArray[Any],
        probabilities: NDArray[np.float32],
        latency_ms: float,
    ) -> None:
        # only references are queued here; the log's background task encodes many at once
        if self.log_predictions:
            self.predlog.append(
                Served(loaded, variant, inference_id, X, labels, probabilities, latency_ms, time.time())
            )


class Served(NamedTuple):
    """What one request served, as queued for the prediction log (references, not copies; a tuple
    because requests pay for building it)."""

    loaded: LoadedModel
    variant: Variant
    inference_id: str
    X: NDArray[np.float32]
    labels: NDArray[Any]
    probabilities: NDArray[np.float32]
    latency_ms: float
    at: float  # seconds since the epoch
    first_row: int = 0
    """Where these rows start in the request (a request too wide for one message is split)."""
    request_rows: int = 0
    """Rows of the whole request (0: these rows are all of it)."""

    def row_ids(self) -> list[str]:
        """One id per row: the inference id, suffixed ``:i`` when the request had several rows."""
        rows = self.X.shape[0]
        if (self.request_rows or rows) == 1:
            return [self.inference_id]
        return [f"{self.inference_id}:{i}" for i in range(self.first_row, self.first_row + rows)]

    def split(self, rows: int) -> list[Served]:
        """These rows in parts of at most ``rows`` (their ids as if unsplit)."""
        total = self.X.shape[0]
        if total <= rows:
            return [self]
        return [
            self._replace(
                X=self.X[start : start + rows],
                labels=self.labels[start : start + rows],
                probabilities=self.probabilities[start : start + rows],
                first_row=self.first_row + start,
                request_rows=self.request_rows or total,
            )
            for start in range(0, total, rows)
        ]


MAX_VALUES_PER_MESSAGE = 50_000
"""Feature and probability values per ``PredictionsLogged`` (~0.5 MB of JSON, under Kafka's 1 MB)."""


def encode_predictions(served: list[Served]) -> list[tuple[bytes, bytes, int]]:
    """Pack served requests into ``PredictionsLogged`` messages: one per run of the same version
    and variant, split to stay under :data:`MAX_VALUES_PER_MESSAGE` -- a request with more values
    than that (many rows of a wide table) across several messages (a contract test decodes them).
    """
    messages: list[tuple[bytes, bytes, int]] = []
    group: list[Served] = []
    values = 0
    for request in served:
        width = request.X.shape[1] + request.probabilities.shape[1]
        for item in request.split(max(1, MAX_VALUES_PER_MESSAGE // max(width, 1))):  # a wide request too
            same = group and group[0].loaded is item.loaded and group[0].variant == item.variant
            if group and (not same or values + item.X.shape[0] * width > MAX_VALUES_PER_MESSAGE):
                messages.append(_message(group))
                group, values = [], 0
            group.append(item)
            values += item.X.shape[0] * width
    if group:
        messages.append(_message(group))
    return messages


def _message(group: list[Served]) -> tuple[bytes, bytes, int]:
    """One ``PredictionsLogged`` of a run of served requests (the event writes its own JSON from
    these columns: :meth:`~shared.events.PredictionsLogged.encode_columns`)."""
    first = group[0]
    loaded = first.loaded
    labels = np.concatenate([g.labels for g in group])
    value = PredictionsLogged.encode_columns(
        model=loaded.model,
        version=loaded.version,
        variant=first.variant,
        feature_names=list(loaded.schema.features),
        classes=[str(c) for c in loaded.classes],
        inference_ids=[row_id for g in group for row_id in g.row_ids()],
        features=np.concatenate([g.X for g in group]),
        labels=labels if labels.dtype.kind in "iu" else labels.tolist(),
        probabilities=np.concatenate([g.probabilities for g in group]),
        latency_ms=[v for g in group for v in [g.latency_ms] * g.X.shape[0]],
        predicted_at=[v for g in group for v in [rfc3339(g.at)] * g.X.shape[0]],
    )
    return loaded.model.encode(), value, labels.shape[0]
