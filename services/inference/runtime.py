"""Loaded models and the routing between them: champion, canary, shadow, pinned versions.

A version is loaded from the registry (sha256 verified), its graph's inputs checked against its
card's layout (:mod:`shared.features`: one ``input`` matrix, or one input per feature) and its
outputs against its card's task (a classifier's ``label`` and ``probabilities``, a regressor's
``prediction``), warmed up with one row, and only then
swapped in by replacing a reference — requests already running keep the session they started
with, new ones get the new one, nobody waits. A version that fails to load leaves the current
one serving.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from services.inference.protocol import Inputs, InputSchema, Prediction, canary_bucket
from shared.errors import CorruptArtifact, InvalidInput, ModelNotFound
from shared.features import CATEGORICAL, COLUMNS, MISSING_CATEGORY, TaskKind, graph_outputs
from shared.registry import InputSchema as CardSchema
from shared.registry import Registry

log = logging.getLogger(__name__)

Variant = Literal["champion", "canary", "shadow"]
PINNED_CACHE = 4


@dataclass
class LoadedModel:
    """One ONNX version ready to answer."""

    model: str
    version: int
    session: ort.InferenceSession
    schema: InputSchema
    classes: list[Any]
    """The classes, in the order of the probabilities' columns (empty for a regressor)."""
    load_seconds: float
    task: TaskKind = "classification"
    """What the version predicts (its card's ``input_schema.task``)."""

    @property
    def regression(self) -> bool:
        """True when the version predicts a number."""
        return self.task == "regression"

    @property
    def outputs(self) -> tuple[str, ...]:
        """The graph's outputs this version answers with, as the protocols name them."""
        return graph_outputs(self.regression)

    def predict(self, inputs: Inputs) -> Prediction:
        """What the version predicts for the rows of ``inputs``: the ``[N, F]`` matrix of a
        MATRIX graph, or the per-feature feeds of a COLUMNS graph (as the request was decoded
        against this version's schema). A classifier's labels and class probabilities, a
        regressor's numbers (float64 ``[N]``): one :class:`Prediction` either way."""
        if isinstance(inputs, np.ndarray):
            if self.schema.layout == COLUMNS:
                raise InvalidInput(
                    f"{self.model} v{self.version} takes one input per feature; "
                    "the request was read for a model that takes one matrix"
                )
            feeds: dict[str, Any] = {"input": inputs}
        elif self.schema.layout != COLUMNS:
            raise InvalidInput(
                f"{self.model} v{self.version} takes one matrix of numeric features; "
                "the request was read for a model with typed features"
            )
        else:
            feeds = inputs
        if self.regression:
            (values,) = self.session.run(list(self.outputs), feeds)
            return Prediction.of_values(values)
        label, proba = self.session.run(list(self.outputs), feeds)
        return Prediction(np.asarray(label), np.asarray(proba, dtype=np.float32))


def schema_of(card: CardSchema, optional: frozenset[str] = frozenset()) -> InputSchema:
    """What the service needs of a card's input schema (``optional``: the spec's ``allow_missing``)."""
    kinds = card.feature_types
    return InputSchema(
        features=tuple(card.features),
        optional=optional,
        types=tuple(card.types),
        layout=card.layout,
        categories={
            name: frozenset(card.categories[name])
            for name, kind in zip(card.features, kinds, strict=True)
            if kind == CATEGORICAL and name in card.categories
        },
    )


def warm_up_row(schema: InputSchema) -> Inputs:
    """One row in the graph's layout (zeros; an empty category, i.e. missing, for categorical)."""
    if schema.layout != COLUMNS:
        return np.zeros((1, len(schema.features)), dtype=np.float32)
    return {
        name: np.full((1, 1), MISSING_CATEGORY, dtype=object) if kind == CATEGORICAL else np.zeros((1, 1), np.float32)
        for name, kind in zip(schema.features, schema.kinds, strict=True)
    }


def _check_graph(session: ort.InferenceSession, schema: InputSchema, task: TaskKind, where: str) -> None:
    """The graph takes what the card says (``input`` for MATRIX, the features' names for
    COLUMNS) and answers what its task says (:func:`shared.features.graph_outputs`): a card that
    calls a classifier's graph a regressor's, or the reverse, is refused at load, not at the
    first request."""
    names = sorted(i.name for i in session.get_inputs())
    expected = sorted(schema.features) if schema.layout == COLUMNS else ["input"]
    if names != expected:
        raise CorruptArtifact(
            f"{where}: the ONNX graph's inputs {names} do not match its card's {schema.layout} layout "
            f"(expected {expected})"
        )
    outputs = [o.name for o in session.get_outputs()]
    wanted = list(graph_outputs(task == "regression"))
    if any(name not in outputs for name in wanted):
        raise CorruptArtifact(
            f"{where}: the ONNX graph's outputs {outputs} do not match its card's task {task!r} (expected {wanted})"
        )


def load_version(registry: Registry, model: str, version: int, optional: frozenset[str] = frozenset()) -> LoadedModel:
    """Load and warm up a registered version (the registry verifies the artifact's sha256)."""
    started = time.perf_counter()
    card = registry.card(model, version)
    onnx = registry.load_onnx(model, version)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(onnx, sess_options=options, providers=["CPUExecutionProvider"])
    schema = schema_of(card.input_schema, optional)
    task = card.input_schema.task
    _check_graph(session, schema, task, f"{model} v{version}")
    loaded = LoadedModel(model, version, session, schema, list(card.input_schema.label_values), 0.0, task)
    loaded.predict(warm_up_row(schema))  # warm-up: first run allocates
    loaded.load_seconds = time.perf_counter() - started
    return loaded


@dataclass
class ModelSlots:
    """What serves one model name right now."""

    champion: LoadedModel | None = None
    canary: LoadedModel | None = None
    canary_traffic: float = 0.0
    shadow: LoadedModel | None = None
    pinned: OrderedDict[int, LoadedModel] = field(default_factory=OrderedDict)

    def route(self, inference_id: str) -> tuple[LoadedModel, Variant]:
        """Champion or canary for this request: stable per inference id."""
        canary = self.canary
        if canary is not None and canary_bucket(inference_id) < self.canary_traffic:
            return canary, "canary"
        if self.champion is None:
            raise ModelNotFound("no production version is loaded yet")
        return self.champion, "champion"

    def loaded(self) -> list[LoadedModel]:
        """Every distinct loaded version."""
        seen: dict[int, LoadedModel] = {}
        for m in (self.champion, self.canary, self.shadow, *self.pinned.values()):
            if m is not None:
                seen.setdefault(m.version, m)
        return list(seen.values())

    def find(self, version: int) -> LoadedModel | None:
        """A loaded version, wherever it serves."""
        for m in self.loaded():
            if m.version == version:
                return m
        return None

    def pin(self, loaded: LoadedModel) -> None:
        """Keep a version served by ``/versions/{v}`` in a small LRU cache."""
        self.pinned[loaded.version] = loaded
        self.pinned.move_to_end(loaded.version)
        while len(self.pinned) > PINNED_CACHE:
            self.pinned.popitem(last=False)
