"""Inference use-cases: answer a request, keep every replica on the registry's versions.

Serving reads only in-memory references (:class:`ModelSlots`); keeping them current happens
beside it: a deployment or training event for a model (every replica receives every event)
and a periodic sweep both re-read the model's aliases from the registry, load what changed in a
worker thread, and swap references. A load that fails leaves the current version serving.

Answering counts the categories the answering version never saw in training (a valid input,
``driftloop_inference_unseen_categories_total``) and queues what was served for the prediction
log, which writes it as ``PredictionsLogged``: a MATRIX model's float32 matrix as it is, a
COLUMNS model's feeds as typed rows (numbers, strings, booleans, null; :func:`typed_rows`).
Whatever a version predicts, what it answered is one :class:`Prediction`; a regressor's rows
are logged as the event's contract says: the predicted numbers as ``labels``, no ``classes``,
an empty ``probabilities`` row each.
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
from services.inference.protocol import Feeds, InferenceRequest, Inputs, InputSchema, Prediction, unseen_categories
from services.inference.runtime import LoadedModel, ModelSlots, Variant, load_version
from shared.bus import Delivery
from shared.errors import ModelNotFound
from shared.events import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DeploymentChanged,
    FeatureValue,
    PredictionsLogged,
    TrainingCompleted,
    rfc3339,
)
from shared.features import BOOLEAN, CATEGORICAL
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
    prediction: Prediction
    latency_ms: float

    @property
    def labels(self) -> NDArray[Any]:
        """The predicted classes, or a regressor's predicted numbers."""
        return self.prediction.labels

    @property
    def probabilities(self) -> NDArray[np.float32]:
        """The class probabilities (``[N, 0]`` for a regressor)."""
        return self.prediction.probabilities


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
        self._unseen: dict[tuple[str, str], Any] = {}  # labelled counter children, looked up once

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

    def route(self, model: str, inference_id: str, pinned: LoadedModel | None = None) -> tuple[LoadedModel, Variant]:
        """The version that answers this request: ``pinned`` when given, else champion or canary
        (stable per inference id). The HTTP adapter routes before it decodes, so a request is
        read against the schema of the version that answers it."""
        if pinned is not None:
            return pinned, "champion"
        return self.model_slots(model).route(inference_id)

    def predict(
        self,
        model: str,
        request: InferenceRequest,
        inference_id: str | None,
        version: int | None = None,
        pinned: LoadedModel | None = None,
        routed: tuple[LoadedModel, Variant] | None = None,
    ) -> Answer:
        """Route (unless ``routed`` says where), predict, count unseen categories, log.
        ``pinned`` serves an explicit version (``/versions/{v}``)."""
        started = time.perf_counter()
        inference_id = inference_id or request.request_id or uuid.uuid4().hex
        chosen, variant = routed or self.route(model, inference_id, pinned)
        inputs = request.inputs
        prediction = chosen.predict(inputs)
        latency_ms = (time.perf_counter() - started) * 1000
        if chosen.schema.categories:
            self._count_unseen(model, inputs, chosen.schema)
        self._log(chosen, variant, inference_id, inputs, prediction, latency_ms)
        return Answer(model, chosen.version, variant, inference_id, prediction, latency_ms)

    def _count_unseen(self, model: str, inputs: Inputs, schema: InputSchema) -> None:
        """Categories the answering version never saw in training: valid, but counted."""
        for feature, count in unseen_categories(inputs, schema):
            child = self._unseen.get((model, feature))
            if child is None:
                child = self._unseen[(model, feature)] = self.metrics.unseen_categories.labels(model, feature)
            child.inc(count)

    def shadow(self, model: str, request: InferenceRequest, inference_id: str) -> None:
        """Score a copy of the request with the shadow version (after the response went out)."""
        slots = self.slots.get(model)
        shadow = slots.shadow if slots else None
        if shadow is None:
            return
        started = time.perf_counter()
        try:
            prediction = shadow.predict(request.inputs)
        except Exception as err:  # the shadow must never hurt the champion's traffic (nor a schema it does not share)
            log.warning("%s: shadow v%d failed: %s", model, shadow.version, err)
            return
        latency_ms = (time.perf_counter() - started) * 1000
        self._log(shadow, "shadow", inference_id, request.inputs, prediction, latency_ms)

    def _log(
        self,
        loaded: LoadedModel,
        variant: Variant,
        inference_id: str,
        inputs: Inputs,
        prediction: Prediction,
        latency_ms: float,
    ) -> None:
        # only references are queued here; the log's background task encodes many at once
        if self.log_predictions:
            labels, probabilities = prediction
            if loaded.regression and not np.isfinite(labels).all():  # the event has no form for it
                log.error(
                    "%s v%d: a prediction that is not a finite number (request %s) is answered as null, not logged",
                    loaded.model,
                    loaded.version,
                    inference_id,
                )
                return
            self.predlog.append(
                Served(loaded, variant, inference_id, inputs, labels, probabilities, latency_ms, time.time())
            )


class Served(NamedTuple):
    """What one request served, as queued for the prediction log (references, not copies; a tuple
    because requests pay for building it)."""

    loaded: LoadedModel
    variant: Variant
    inference_id: str
    inputs: Inputs
    """What the graph was fed: the ``[N, F]`` matrix, or one ``[N, 1]`` array per feature."""
    labels: NDArray[Any]
    """The :class:`Prediction`'s labels: classes, or a regressor's predicted numbers."""
    probabilities: NDArray[np.float32]
    """The :class:`Prediction`'s probabilities (``[N, 0]`` for a regressor)."""
    latency_ms: float
    at: float  # seconds since the epoch
    first_row: int = 0
    """Where these rows start in the request (a request too wide for one message is split)."""
    request_rows: int = 0
    """Rows of the whole request (0: these rows are all of it)."""

    @property
    def rows(self) -> int:
        """How many rows (one label each) these are."""
        return int(self.labels.shape[0])

    def row_ids(self) -> list[str]:
        """One id per row: the inference id, suffixed ``:i`` when the request had several rows."""
        rows = self.rows
        if (self.request_rows or rows) == 1:
            return [self.inference_id]
        return [f"{self.inference_id}:{i}" for i in range(self.first_row, self.first_row + rows)]

    def split(self, rows: int) -> list[Served]:
        """These rows in parts of at most ``rows`` (their ids as if unsplit)."""
        total = self.rows
        if total <= rows:
            return [self]
        return [self.slice(start, start + rows) for start in range(0, total, rows)]

    def slice(self, start: int, stop: int) -> Served:
        """Rows ``start`` to ``stop`` of these (their ids as if unsplit)."""
        total = self.rows
        if start <= 0 and stop >= total:
            return self
        inputs = self.inputs
        return self._replace(
            inputs=(
                inputs[start:stop]
                if isinstance(inputs, np.ndarray)
                else {name: feed[start:stop] for name, feed in inputs.items()}
            ),
            labels=self.labels[start:stop],
            probabilities=self.probabilities[start:stop],
            first_row=self.first_row + start,
            request_rows=self.request_rows or total,
        )


MAX_VALUES_PER_MESSAGE = 50_000
"""Feature and probability values per ``PredictionsLogged`` at most: bounds the work of encoding
one message (~0.5 MB of numbers); the bytes are bounded by ``max_bytes`` (:func:`encode_predictions`)."""

_SPLIT_MARGIN = 1.1
"""A message over the byte limit is split into parts of the rows that fit at this many times its
bytes per row (rows differ in width: a category's text, a row id); a part still over is split again."""


def encode_predictions(
    served: list[Served], max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> list[tuple[bytes, bytes, int]]:
    """Pack served requests into ``PredictionsLogged`` messages: one per run of the same version
    and variant, split to stay under :data:`MAX_VALUES_PER_MESSAGE` values and ``max_bytes`` bytes
    (value and key, as the bus counts a record) -- a request with more than that (many rows of a
    wide table, long categories) across several messages, every row once with its id as if
    unsplit (a contract test decodes them).

    Bytes are measured, not guessed: a message is encoded, and one over ``max_bytes`` is split by
    rows in proportion and encoded again, until each part fits. A single row over the limit
    cannot be split: it is left out of the log and said so (an error in the service's log).
    """
    messages: list[tuple[bytes, bytes, int]] = []
    for group in _groups(served):
        messages += _bounded(group, max_bytes)
    return messages


def _groups(served: list[Served]) -> list[list[Served]]:
    """Runs of the same version and variant, each of at most :data:`MAX_VALUES_PER_MESSAGE` values."""
    groups: list[list[Served]] = []
    group: list[Served] = []
    values = 0
    for request in served:
        width = len(request.loaded.schema.features) + request.probabilities.shape[1]
        for item in request.split(max(1, MAX_VALUES_PER_MESSAGE // max(width, 1))):  # a wide request too
            same = group and group[0].loaded is item.loaded and group[0].variant == item.variant
            rows = item.rows
            if group and (not same or values + rows * width > MAX_VALUES_PER_MESSAGE):
                groups.append(group)
                group, values = [], 0
            group.append(item)
            values += rows * width
    if group:
        groups.append(group)
    return groups


def _bounded(group: list[Served], max_bytes: int) -> list[tuple[bytes, bytes, int]]:
    """The message of ``group``, or of its parts when it is over ``max_bytes``."""
    key, value, rows = _message(group)
    size = len(key) + len(value)
    if size <= max_bytes:
        return [(key, value, rows)]
    if rows == 1:
        first = group[0]
        log.error(
            "prediction log: %s v%d row %s is %d bytes as a message, over the %d-byte limit: not logged",
            first.loaded.model,
            first.loaded.version,
            first.row_ids()[0],
            size,
            max_bytes,
        )
        return []
    per_part = min(rows - 1, max(1, int(max_bytes * rows / (size * _SPLIT_MARGIN))))  # rows its bytes say fit
    messages: list[tuple[bytes, bytes, int]] = []
    for part in _by_rows(group, per_part):
        messages += _bounded(part, max_bytes)
    return messages


def _by_rows(group: list[Served], rows: int) -> list[list[Served]]:
    """The rows of ``group`` in order, in parts of ``rows`` (the last may be shorter)."""
    parts: list[list[Served]] = []
    part: list[Served] = []
    room = rows
    for item in group:
        start = 0
        while start < item.rows:
            take = min(room, item.rows - start)
            part.append(item.slice(start, start + take))
            start += take
            room -= take
            if room == 0:
                parts.append(part)
                part, room = [], rows
    if part:
        parts.append(part)
    return parts


def _message(group: list[Served]) -> tuple[bytes, bytes, int]:
    """One ``PredictionsLogged`` of a run of served requests (the event writes its own JSON from
    these columns: :meth:`~shared.events.PredictionsLogged.encode_columns`)."""
    first = group[0]
    loaded = first.loaded
    labels = np.concatenate([g.labels for g in group])
    inputs = [g.inputs for g in group]
    counts = [g.rows for g in group]
    value = PredictionsLogged.encode_columns(
        model=loaded.model,
        version=loaded.version,
        variant=first.variant,
        feature_names=list(loaded.schema.features),
        classes=[str(c) for c in loaded.classes],
        inference_ids=[row_id for g in group for row_id in g.row_ids()],
        features=(
            np.concatenate(inputs)  # type: ignore[arg-type]
            if isinstance(inputs[0], np.ndarray)
            else typed_rows(inputs, loaded.schema, labels.shape[0])  # type: ignore[arg-type]
        ),
        labels=labels if labels.dtype.kind in "iu" else labels.tolist(),
        probabilities=np.concatenate([g.probabilities for g in group]),
        latency_ms=[v for g, n in zip(group, counts, strict=True) for v in [g.latency_ms] * n],
        predicted_at=[v for g, n in zip(group, counts, strict=True) for v in [rfc3339(g.at)] * n],
    )
    return loaded.model.encode(), value, labels.shape[0]


def typed_rows(parts: list[Feeds], schema: InputSchema, rows: int | None = None) -> list[list[FeatureValue]]:
    """The ``features`` rows of a COLUMNS model's predictions, as the event carries them: numbers
    (NaN: null), categories as strings (missing ``""``: null), booleans (from the graph's 0 / 1).

    Built a column at a time, each column straight from the requests' feeds (indexed when every
    request is one row, which costs less than concatenating thousands of ``[1, 1]`` arrays;
    ``rows``: the total, when the caller knows it). Numbers stay float32 scalars, which orjson
    writes as the float32 they are (as the MATRIX path writes its array) and NaN as null.
    """
    single = rows == len(parts) if rows is not None else all(len(next(iter(p.values()))) == 1 for p in parts)
    columns: list[list[Any]] = []
    for name, kind in zip(schema.features, schema.kinds, strict=True):
        if single:
            values: list[Any] = [p[name][0, 0] for p in parts]
        else:
            values = list(np.concatenate([p[name] for p in parts]).ravel())
        if kind == CATEGORICAL:
            columns.append([text or None for text in values])
        elif kind == BOOLEAN:
            columns.append([None if flag != flag else bool(flag) for flag in values])
        else:
            columns.append(values)
    return [list(row) for row in zip(*columns, strict=True)]
