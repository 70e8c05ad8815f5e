"""Inference's use-cases on a FileStore registry of real (small) ONNX models; the prediction log is the only fake.

Covered: ``refresh`` (and ``on_event``, ``sweep``) loads the registry's aliases into the serving
slots and swaps versions when an alias moves, reusing a version already loaded; a version
that fails to load leaves the current one serving until it loads; ``predict`` answers with the
champion, routes the canary's share of traffic by inference id, the same id always the same
way; the shadow scores a copy without touching the answer, and its failures stay its own;
pinned versions load on first use; unknown models and versions are ``ModelNotFound``; what is
served is queued for the prediction log (unless logging is off).
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from services.inference.handlers import DEFAULT_CANARY_TRAFFIC, InferenceHandlers
from services.inference.metrics import InferenceMetrics
from services.inference.protocol import OUTPUT_NAMES, InferenceRequest, canary_bucket
from services.trainer.runner import train
from shared import topics
from shared.bus import Delivery
from shared.datasets import DatasetRepository
from shared.errors import ModelNotFound
from shared.events import DeploymentChanged
from shared.registry import Registry, onnx_key
from shared.spec import SpecCatalog, apply_spec, parse_spec, spec_key
from shared.store import FileStore
from tests.integration.test_inference import rows

MODEL = "sea"
SPEC = """
name: {name}
features: [{{name: x1}}, {{name: x2}}, {{name: x3, allow_missing: true}}]
label: {{values: [0, 1]}}
training: {{estimator: LogisticRegression, window: {{last_rows: 300}}, holdout: 0.25, seed: 1}}
deployment: {{strategy: canary, canary_traffic: 0.5}}
"""
T0 = datetime(2026, 4, 1, tzinfo=UTC)
HIGH, LOW = [9.0, 9.0, 1.0], [1.0, 1.0, 1.0]
"""Rows version 1 labels 1 and 0; version 2 (trained on flipped labels) says the opposite."""
DELIVERY = Delivery(topics.DEPLOYMENTS, 0, 0, MODEL.encode(), b"{}", 0)


def register(store: FileStore, model: str, flip: bool) -> int:
    """Train and register a version of ``model`` on 300 new rows (its window: the newest 300)."""
    repo = DatasetRepository(store)
    latest = repo.latest_version(model)
    manifest = repo.write_version(
        model, "h" * 64, ["x1", "x2", "x3"], [0, 1], rows(300, 300 * (latest or 0), flip), latest
    )
    assert manifest is not None
    spec = parse_spec(SPEC.format(name=model))
    result = train(spec, repo, Registry(store), manifest.version, uuid.uuid4().hex, "manual", None)
    assert result.card is not None, result.error
    return result.card.version


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding the spec and two versions of MODEL (v2 flipped), trained once for the module."""
    store = FileStore(tmp_path_factory.mktemp("registered") / "store")
    apply_spec(store, SPEC.format(name=MODEL))
    assert register(store, MODEL, flip=False) == 1
    assert register(store, MODEL, flip=True) == 2
    return Path(store.root)


@pytest.fixture
def store(registered: Path, tmp_path: Path) -> FileStore:
    """A private copy of the registered store: each test moves its own aliases."""
    return FileStore(shutil.copytree(registered, tmp_path / "store"))


@dataclass
class RecordingLog:
    """The prediction-log seam: what the handlers queued, in order."""

    items: list[Any] = field(default_factory=list)

    def append(self, item: Any) -> None:
        self.items.append(item)


class Serving:
    """One inference replica on a store."""

    def __init__(self, store: FileStore, log_predictions: bool = True) -> None:
        self.store = store
        self.registry = Registry(store)
        self.log = RecordingLog()
        self.metrics_registry = CollectorRegistry()
        self.handlers = InferenceHandlers(
            self.registry,
            SpecCatalog(store, refresh_s=60.0),
            self.log,  # type: ignore[arg-type]
            InferenceMetrics.create(self.metrics_registry),
            log_predictions=log_predictions,
        )

    def point(self, alias: str, version: int | None, model: str = MODEL) -> None:
        self.registry.set_alias(model, alias, version, "test", f"{alias} -> {version}")  # type: ignore[arg-type]

    def metric(self, name: str, **labels: str) -> float | None:
        return self.metrics_registry.get_sample_value(name, labels)

    def serving(self, variant: str) -> float | None:
        return self.metric("driftloop_inference_serving_version", model=MODEL, variant=variant)

    def loads(self) -> float | None:
        return self.metric("driftloop_inference_model_load_seconds_count", model=MODEL)


def request(*rows_: list[float], request_id: str | None = None) -> InferenceRequest:
    return InferenceRequest(inputs=np.asarray(rows_, dtype=np.float32), request_id=request_id, outputs=OUTPUT_NAMES)


# --- keeping versions current ----------------------------------------------------------------


async def test_refresh_serves_the_production_version(store: FileStore) -> None:
    serving = Serving(store)
    serving.point("production", 1)
    await serving.handlers.refresh(MODEL)

    answer = serving.handlers.predict(MODEL, request(HIGH, LOW), "id-1")
    assert (answer.model, answer.version, answer.variant, answer.inference_id) == (MODEL, 1, "champion", "id-1")
    assert answer.labels.tolist() == [1, 0]
    assert answer.probabilities.shape == (2, 2) and np.allclose(answer.probabilities.sum(axis=1), 1.0)
    assert answer.latency_ms >= 0
    assert (serving.serving("champion"), serving.serving("canary"), serving.serving("shadow")) == (1, 0, 0)
    assert serving.loads() == 1
    champion = serving.handlers.model_slots(MODEL).champion
    assert champion is not None and champion.schema.optional == {"x3"}, "the spec's allow_missing features"


async def test_a_moved_alias_swaps_the_version_and_requests_holding_the_old_one_still_finish(
    store: FileStore,
) -> None:
    serving = Serving(store)
    serving.point("production", 1)
    await serving.handlers.refresh(MODEL)
    in_flight = serving.handlers.model_slots(MODEL).champion
    assert in_flight is not None

    serving.point("production", 2)
    await serving.handlers.on_event(
        DeploymentChanged(
            model=MODEL, action="promoted", version=2, previous_version=1, traffic=1.0, reason="r", actor="test"
        ),
        DELIVERY,
    )

    answer = serving.handlers.predict(MODEL, request(HIGH), None)
    assert answer.version == 2 and answer.labels.tolist() == [0]
    assert serving.serving("champion") == 2
    labels, _ = in_flight.predict(request(HIGH).inputs)
    assert in_flight.version == 1 and labels.tolist() == [1], "the swap replaced a reference, not the session"


async def test_a_refresh_with_nothing_changed_loads_nothing(store: FileStore) -> None:
    serving = Serving(store)
    serving.point("production", 1)
    await serving.handlers.refresh(MODEL)
    champion = serving.handlers.model_slots(MODEL).champion
    await serving.handlers.refresh(MODEL)

    assert serving.handlers.model_slots(MODEL).champion is champion and serving.loads() == 1


async def test_a_version_that_fails_to_load_leaves_the_current_one_serving_until_it_loads(store: FileStore) -> None:
    serving = Serving(store)
    serving.point("production", 1)
    await serving.handlers.refresh(MODEL)
    artifact = store.get(onnx_key(MODEL, 2))
    store.put(onnx_key(MODEL, 2), artifact[: len(artifact) // 2])  # a truncated upload: sha256 no longer matches

    serving.point("production", 2)
    await serving.handlers.refresh(MODEL)
    answer = serving.handlers.predict(MODEL, request(HIGH), None)
    assert answer.version == 1 and answer.labels.tolist() == [1]
    assert serving.metric("driftloop_inference_model_load_failures_total", model=MODEL) == 1
    assert serving.serving("champion") == 1

    store.put(onnx_key(MODEL, 2), artifact)
    await serving.handlers.refresh(MODEL)
    assert serving.handlers.predict(MODEL, request(HIGH), None).version == 2, "the next refresh tries again"


async def test_promoting_the_canary_reuses_its_loaded_version(store: FileStore) -> None:
    serving = Serving(store)
    serving.point("production", 1)
    serving.point("canary", 2)
    await serving.handlers.refresh(MODEL)
    canary = serving.handlers.model_slots(MODEL).canary
    assert canary is not None and canary.version == 2 and serving.loads() == 2

    serving.point("production", 2)
    serving.point("canary", None)
    await serving.handlers.refresh(MODEL)

    slots = serving.handlers.model_slots(MODEL)
    assert slots.champion is canary and slots.canary is None and serving.loads() == 2
    assert (serving.serving("champion"), serving.serving("canary")) == (2, 0)


async def test_sweep_serves_every_model_the_registry_knows(store: FileStore) -> None:
    apply_spec(store, SPEC.format(name="other"))
    other = register(store, "other", flip=True)
    serving = Serving(store)
    serving.point("production", 1)
    serving.point("production", other, model="other")

    await serving.handlers.sweep()

    assert serving.handlers.predict(MODEL, request(HIGH), None).labels.tolist() == [1]
    assert serving.handlers.predict("other", request(HIGH), None).labels.tolist() == [0]


# --- answering -----------------------------------------------------------------------------


async def test_the_canary_gets_its_share_of_traffic_and_each_inference_id_always_the_same_route(
    store: FileStore,
) -> None:
    serving = Serving(store)
    serving.point("production", 1)
    serving.point("canary", 2)
    await serving.handlers.refresh(MODEL)

    ids = [f"req-{i}" for i in range(400)]
    answers = {i: serving.handlers.predict(MODEL, request(HIGH), i) for i in ids}
    canary = [i for i, a in answers.items() if a.variant == "canary"]
    assert 0.4 < len(canary) / len(ids) < 0.6, "the spec's canary_traffic is 0.5"
    for inference_id, answer in answers.items():
        expected = "canary" if canary_bucket(inference_id) < 0.5 else "champion"
        assert answer.variant == expected
        assert (answer.version, answer.labels.tolist()) == ((2, [0]) if expected == "canary" else (1, [1]))
    again = [serving.handlers.predict(MODEL, request(LOW), i).variant for i in ids]
    assert again == [answers[i].variant for i in ids], "the same id takes the same route"


async def test_without_a_spec_the_canary_gets_the_default_share(store: FileStore) -> None:
    store.delete(spec_key(MODEL))
    serving = Serving(store)
    serving.point("production", 1)
    serving.point("canary", 2)
    await serving.handlers.refresh(MODEL)

    ids = [f"req-{i}" for i in range(2000)]
    variants = [serving.handlers.predict(MODEL, request(HIGH), i).variant for i in ids]
    expected = [("canary" if canary_bucket(i) < DEFAULT_CANARY_TRAFFIC else "champion") for i in ids]
    assert variants == expected and 0.07 < variants.count("canary") / len(ids) < 0.13


async def test_clearing_the_canary_sends_all_traffic_to_the_champion(store: FileStore) -> None:
    serving = Serving(store)
    serving.point("production", 1)
    serving.point("canary", 2)
    await serving.handlers.refresh(MODEL)
    serving.point("canary", None)
    await serving.handlers.refresh(MODEL)

    answers = [serving.handlers.predict(MODEL, request(HIGH), f"req-{i}") for i in range(200)]
    assert {(a.variant, a.version) for a in answers} == {("champion", 1)}
    assert serving.serving("canary") == 0


async def test_the_shadow_scores_a_copy_without_changing_the_answer(store: FileStore) -> None:
    serving = Serving(store)
    serving.point("production", 1)
    serving.point("shadow", 2)
    await serving.handlers.refresh(MODEL)

    answers = [serving.handlers.predict(MODEL, request(HIGH), f"req-{i}") for i in range(50)]
    assert {(a.variant, a.version) for a in answers} == {("champion", 1)}, "the shadow never answers"
    answer = answers[0]
    serving.log.items.clear()
    serving.handlers.shadow(MODEL, request(HIGH), answer.inference_id)

    assert answer.labels.tolist() == [1]
    [shadowed] = serving.log.items
    assert (shadowed.variant, shadowed.loaded.version, shadowed.inference_id) == ("shadow", 2, "req-0")
    assert shadowed.labels.tolist() == [0]
    assert serving.serving("shadow") == 2


async def test_a_failing_shadow_stays_its_own_problem(store: FileStore) -> None:
    serving = Serving(store)
    serving.point("production", 1)
    await serving.handlers.refresh(MODEL)
    serving.handlers.shadow(MODEL, request(HIGH), "no-shadow")  # nothing to score
    serving.handlers.shadow("nope", request(HIGH), "no-model")

    serving.point("shadow", 2)
    await serving.handlers.refresh(MODEL)
    serving.handlers.shadow(MODEL, request([1.0, 2.0]), "bad")  # the shadow's session refuses two columns

    assert serving.log.items == []


async def test_what_is_served_is_queued_for_the_prediction_log(store: FileStore) -> None:
    serving = Serving(store)
    serving.point("production", 1)
    await serving.handlers.refresh(MODEL)
    sent = request(HIGH, LOW)
    answer = serving.handlers.predict(MODEL, sent, "abc")

    [served] = serving.log.items
    assert (served.loaded.version, served.variant, served.inference_id) == (1, "champion", "abc")
    assert served.inputs is sent.inputs and served.labels.tolist() == [1, 0]
    assert served.latency_ms == answer.latency_ms and served.row_ids() == ["abc:0", "abc:1"]


async def test_with_logging_off_nothing_is_queued(store: FileStore) -> None:
    serving = Serving(store, log_predictions=False)
    serving.point("production", 1)
    await serving.handlers.refresh(MODEL)
    serving.handlers.predict(MODEL, request(HIGH), "abc")

    assert serving.log.items == []


async def test_the_inference_id_is_the_callers_else_the_request_id_else_a_new_one(store: FileStore) -> None:
    serving = Serving(store)
    serving.point("production", 1)
    await serving.handlers.refresh(MODEL)

    assert serving.handlers.predict(MODEL, request(HIGH, request_id="req-7"), "hdr-1").inference_id == "hdr-1"
    assert serving.handlers.predict(MODEL, request(HIGH, request_id="req-7"), None).inference_id == "req-7"
    generated = {serving.handlers.predict(MODEL, request(HIGH), None).inference_id for _ in range(20)}
    assert len(generated) == 20 and all(len(i) == 32 for i in generated)


async def test_a_pinned_version_is_loaded_on_first_use_and_served_as_asked(store: FileStore) -> None:
    serving = Serving(store)
    serving.point("production", 1)
    await serving.handlers.refresh(MODEL)

    pinned = await serving.handlers.pinned(MODEL, 2)
    answer = serving.handlers.predict(MODEL, request(HIGH), "p", version=2, pinned=pinned)
    assert (answer.version, answer.labels.tolist()) == (2, [0])
    assert await serving.handlers.pinned(MODEL, 2) is pinned and serving.loads() == 1, "kept, not loaded again"
    assert await serving.handlers.pinned(MODEL, 1) is serving.handlers.model_slots(MODEL).champion
    assert serving.handlers.predict(MODEL, request(HIGH), "q").version == 1, "pinning does not move production"

    with pytest.raises(ModelNotFound, match="no version 99"):
        await serving.handlers.pinned(MODEL, 99)


async def test_models_not_served_here_are_not_found(store: FileStore) -> None:
    serving = Serving(store)
    with pytest.raises(ModelNotFound, match="'nope'"):
        serving.handlers.predict("nope", request(HIGH), None)
    with pytest.raises(ModelNotFound):
        await serving.handlers.pinned("nope", 1)

    await serving.handlers.refresh(MODEL)  # registered, but no alias set yet
    assert MODEL not in serving.handlers.slots

    serving.point("canary", 2)  # a canary without a champion is not servable
    await serving.handlers.refresh(MODEL)
    with pytest.raises(ModelNotFound, match="no production version"):
        serving.handlers.predict(MODEL, request(HIGH), "req-0")
    assert serving.log.items == []


# --- the prediction log's messages, bounded by bytes ---------------------------------------------


def _wide(features: int, types: tuple[str, ...] = ()) -> Any:
    from services.inference.protocol import InputSchema
    from services.inference.runtime import LoadedModel
    from shared.features import COLUMNS

    names = tuple(f"feature_{i:04d}" for i in range(features))
    schema = InputSchema(features=names, types=types, layout=COLUMNS if types else "matrix")
    return LoadedModel("wide", 1, None, schema, ["no", "yes"], 0.0)


def _logged(messages: list[tuple[bytes, bytes, int]], limit: int) -> list[Any]:
    from shared.events import PredictionsLogged, decode_as

    events = []
    for key, value, count in messages:
        assert len(key) + len(value) <= limit, f"a {len(key) + len(value)}-byte message"
        event = decode_as(PredictionsLogged, value)
        assert len(event.inference_ids) == count
        events.append(event)
    return events


def test_a_thousand_rows_of_a_thousand_features_are_logged_under_the_byte_limit() -> None:
    from services.inference.handlers import Served, encode_predictions
    from shared.events import DEFAULT_MAX_MESSAGE_BYTES

    loaded = _wide(1000)
    X = np.random.default_rng(0).normal(size=(1000, 1000)).astype(np.float32) * np.float32(1e-7)  # long decimals
    proba = np.full((1000, 2), 0.5, dtype=np.float32)
    served = Served(loaded, "champion", "req", X, np.array(["yes"] * 1000), proba, 1.0, 0.0)

    events = _logged(encode_predictions([served]), DEFAULT_MAX_MESSAGE_BYTES)
    ids = [i for e in events for i in e.inference_ids]
    assert ids == [f"req:{i}" for i in range(1000)], "every row once, in order, its id as if unsplit"
    assert np.allclose([row for e in events for row in e.features], X)


def test_long_categories_split_messages_by_their_bytes_not_their_count_of_values() -> None:
    """1,000 categorical features of 256 characters: ~260 kB a row, so a few rows a message."""
    from services.inference.handlers import MAX_VALUES_PER_MESSAGE, Served, encode_predictions
    from shared.features import CATEGORICAL

    loaded = _wide(1000, (CATEGORICAL,) * 1000)
    n = 40
    assert n * 1002 <= MAX_VALUES_PER_MESSAGE, "within the value cap: only the bytes split it"
    feeds = {
        name: np.array([[f'{i:03d}é"' + "ab" * 125 + f"{j:02d}"] for j in range(n)], dtype=object)
        for i, name in enumerate(loaded.schema.features)
    }
    proba = np.full((n, 2), 0.5, dtype=np.float32)
    served = [
        Served(loaded, "champion", "one", {k: v[:1] for k, v in feeds.items()}, np.array(["no"]), proba[:1], 1.0, 0.0),
        Served(loaded, "champion", "many", feeds, np.array(["yes"] * n), proba, 1.0, 0.0),
    ]
    limit = 1_000_000
    messages = encode_predictions(served, max_bytes=limit)
    events = _logged(messages, limit)
    assert len(events) >= 10
    ids = [i for e in events for i in e.inference_ids]
    assert ids == ["one", *(f"many:{j}" for j in range(n))]
    rows = [row for e in events for row in e.features]
    assert rows[1][0] == feeds["feature_0000"][0, 0] and rows[-1][999] == feeds["feature_0999"][n - 1, 0]
    assert max(len(key) + len(value) for key, value, _ in messages) > limit * 0.6, "parts are not needlessly small"


def test_small_messages_are_as_they_were() -> None:
    from services.inference.handlers import Served, encode_predictions

    loaded = _wide(3)
    X = np.ones((2, 3), dtype=np.float32)
    proba = np.full((2, 2), 0.5, dtype=np.float32)
    served = [Served(loaded, "champion", f"r{i}", X, np.array(["no", "yes"]), proba, 1.0, 0.0) for i in range(100)]
    [(key, _, rows)] = encode_predictions(served)
    assert (key, rows) == (b"wide", 200)


def test_a_row_that_alone_is_over_the_limit_is_left_out_and_said_so(caplog: pytest.LogCaptureFixture) -> None:
    from services.inference.handlers import Served, encode_predictions
    from shared.features import CATEGORICAL

    loaded = _wide(100, (CATEGORICAL,) * 100)
    proba = np.full((1, 2), 0.5, dtype=np.float32)

    def row(text: str) -> dict[str, Any]:
        return {name: np.array([[text]], dtype=object) for name in loaded.schema.features}

    served = [
        Served(loaded, "champion", "fits", row("a"), np.array(["no"]), proba, 1.0, 0.0),
        Served(loaded, "champion", "huge", row("b" * 1000), np.array(["no"]), proba, 1.0, 0.0),
        Served(loaded, "champion", "after", row("c"), np.array(["no"]), proba, 1.0, 0.0),
    ]
    events = _logged(encode_predictions(served, max_bytes=50_000), 50_000)
    assert [i for e in events for i in e.inference_ids] == ["fits", "after"]
    assert "row huge is" in caplog.text and "over the 50000-byte limit: not logged" in caplog.text
