"""The model registry on a real FileStore: numbering, cards, verified artifacts, aliases and rollback."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.errors import AlreadyExists, CorruptArtifact, InvalidInput, ModelNotFound, NotFound, StoreError
from shared.events import GateVerdict
from shared.reference import FeatureReference, FeatureStats, PredictionReference, Reference, ReferenceHistogram
from shared.registry import (
    AliasChange,
    CodeVersion,
    InputSchema,
    ModelCard,
    Registry,
    alias_key,
    card_key,
    claim_key,
    history_key,
    onnx_key,
)
from shared.store import FileStore


def make_card(model: str, version: int, artifact_key: str, sha256: str, size: int, accuracy: float = 0.9) -> ModelCard:
    histogram = ReferenceHistogram(edges=[0.0, 0.5, 1.0], proportions=[0.4, 0.6])
    return ModelCard(
        model=model,
        version=version,
        dataset_version=3,
        dataset_manifest_sha256="d" * 64,
        window={"last_rows": 5000, "start_row": 0, "rows": 5000, "since_change": False},
        code=CodeVersion(package="0.1.0", git_commit="abc123"),
        estimator="LogisticRegression",
        params={"C": 1.0},
        seed=42,
        training_rows=4000,
        holdout_rows=1000,
        metrics={"accuracy": accuracy},
        gate=GateVerdict(passed=True, reasons=["accuracy 0.9 >= 0.7"]),
        onnx_opset=17,
        input_schema=InputSchema(features=["a", "b"], label_values=["good", "bad"]),
        output_names=["label", "probabilities"],
        artifact_key=artifact_key,
        artifact_sha256=sha256,
        artifact_bytes=size,
        training_seconds=1.5,
        reference=Reference(
            features={
                "a": FeatureReference(
                    stats=FeatureStats(count=2, mean=0.5, m2=0.5, min=0.0, max=1.0), histogram=histogram
                )
            },
            predictions=PredictionReference(
                label_distribution={"good": 0.7, "bad": 0.3}, probability_histograms={"good": histogram}
            ),
        ),
        trigger="new_labels",
    )


def builder(model: str, onnx: bytes, accuracy: float = 0.9) -> Callable[[int, str, str], ModelCard]:
    def build(version: int, artifact_key: str, sha256: str) -> ModelCard:
        return make_card(model, version, artifact_key, sha256, len(onnx), accuracy)

    return build


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path)


@pytest.fixture
def registry(store: FileStore) -> Registry:
    return Registry(store)


def register(registry: Registry, onnx: bytes, model: str = "credit", accuracy: float = 0.9) -> ModelCard:
    return registry.register(model, onnx, builder(model, onnx, accuracy))


def test_register_two_versions_and_read_cards_back(registry: Registry, store: FileStore) -> None:
    first = register(registry, b"onnx-one", accuracy=0.81)
    second = register(registry, b"onnx-two", accuracy=0.86)
    assert (first.version, second.version) == (1, 2)
    assert registry.versions("credit") == [1, 2]
    assert registry.latest_version("credit") == 2
    assert registry.models() == ["credit"]
    card = registry.card("credit", 2)
    assert card == second
    assert card.metrics == {"accuracy": 0.86}
    assert card.artifact_key == onnx_key("credit", 2)
    assert card.artifact_sha256 == hashlib.sha256(b"onnx-two").hexdigest()
    assert card.reference.features["a"].stats.std == pytest.approx(0.5)
    assert registry.card("credit", 1).metrics == {"accuracy": 0.81}
    for key in (claim_key("credit", 1), onnx_key("credit", 1), card_key("credit", 1)):
        assert store.exists(key), key


def test_models_are_separate(registry: Registry) -> None:
    register(registry, b"a", model="credit")
    register(registry, b"b", model="churn")
    register(registry, b"c", model="churn")
    assert registry.models() == ["churn", "credit"]
    assert registry.versions("credit") == [1] and registry.versions("churn") == [1, 2]


def test_claim_without_card_is_invisible_and_its_number_is_skipped(registry: Registry, store: FileStore) -> None:
    register(registry, b"one")
    store.put_if_absent(claim_key("credit", 2), b"{}")  # a trainer that crashed after claiming
    store.put(onnx_key("credit", 2), b"half")
    assert registry.versions("credit") == [1]
    assert registry.latest_version("credit") == 1
    with pytest.raises(ModelNotFound, match="no version 2"):
        registry.card("credit", 2)
    with pytest.raises(ModelNotFound):
        registry.set_alias("credit", "production", 2, "ops", "try the incomplete one")
    assert register(registry, b"three").version == 3
    assert registry.versions("credit") == [1, 3]


def test_model_with_only_a_claim_is_not_listed(registry: Registry, store: FileStore) -> None:
    store.put_if_absent(claim_key("ghost", 1), b"{}")
    assert registry.models() == []
    assert registry.latest_version("ghost") is None


def test_card_that_does_not_match_the_claim_is_refused_and_not_written(registry: Registry, store: FileStore) -> None:
    def wrong(version: int, artifact_key: str, sha256: str) -> ModelCard:
        return make_card("credit", version + 1, artifact_key, sha256, 3)

    with pytest.raises(InvalidInput, match="version=2 \\(expected 1\\)"):
        registry.register("credit", b"abc", wrong)
    assert not store.exists(card_key("credit", 1))
    assert registry.versions("credit") == []
    assert register(registry, b"abc").version == 2


def test_register_refuses_empty_artifact_and_bad_model_name(registry: Registry) -> None:
    with pytest.raises(InvalidInput, match="empty"):
        register(registry, b"")
    with pytest.raises(InvalidInput, match="invalid model name"):
        register(registry, b"x", model="../etc")
    with pytest.raises(InvalidInput, match="invalid model name"):
        registry.versions("a/b")


def test_load_onnx_round_trips(registry: Registry) -> None:
    payload = bytes(range(256)) * 10
    register(registry, payload)
    assert registry.load_onnx("credit", 1) == payload


def test_load_onnx_detects_a_tampered_artifact(registry: Registry, store: FileStore) -> None:
    register(registry, b"genuine")
    store.put(onnx_key("credit", 1), b"genuinf")  # same size, other bytes
    with pytest.raises(CorruptArtifact, match="corrupt") as caught:
        registry.load_onnx("credit", 1)
    assert isinstance(caught.value, StoreError)
    assert "credit v1" in caught.value.message


def test_load_onnx_detects_a_missing_artifact(registry: Registry, store: FileStore) -> None:
    register(registry, b"genuine")
    store.delete(onnx_key("credit", 1))
    with pytest.raises(CorruptArtifact, match="missing"):
        registry.load_onnx("credit", 1)


def test_unparseable_card_is_reported_as_corrupt(registry: Registry, store: FileStore) -> None:
    register(registry, b"x")
    store.put(card_key("credit", 1), b'{"model": "credit"}')
    with pytest.raises(CorruptArtifact, match="card.json"):
        registry.card("credit", 1)


def test_concurrent_registrations_get_distinct_contiguous_numbers(registry: Registry, store: FileStore) -> None:
    workers = 4
    barrier = threading.Barrier(workers)
    cards: list[ModelCard] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        onnx = f"model-{i}".encode()
        own = Registry(store)  # one registry per "replica"
        barrier.wait()
        try:
            card = own.register("credit", onnx, builder("credit", onnx))
        except BaseException as exc:  # reported below
            errors.append(exc)
            return
        with lock:
            cards.append(card)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not errors
    assert sorted(c.version for c in cards) == [1, 2, 3, 4]
    assert registry.versions("credit") == [1, 2, 3, 4]
    for card in cards:  # every number holds the artifact of the registration that claimed it
        assert hashlib.sha256(registry.load_onnx("credit", card.version)).hexdigest() == card.artifact_sha256


def test_registration_gives_up_after_bounded_attempts(
    registry: Registry, store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shared.registry.MAX_ATTEMPTS", 3)

    def always_taken(key: str, data: bytes) -> None:
        raise AlreadyExists(key)

    monkeypatch.setattr(store, "put_if_absent", always_taken)
    with pytest.raises(AlreadyExists, match="after 3 attempts"):
        register(registry, b"x")


def test_set_and_get_aliases(registry: Registry, store: FileStore) -> None:
    register(registry, b"one")
    register(registry, b"two")
    assert registry.alias("credit", "production") is None
    assert registry.aliases("credit") == {}
    change = registry.set_alias("credit", "production", 1, "trainer", "first model passed the gate")
    assert isinstance(change, AliasChange)
    assert (change.version, change.previous_version, change.seq) == (1, None, 1)
    registry.set_alias("credit", "canary", 2, "trainer", "canary at 10%")
    assert registry.alias("credit", "production") == 1
    assert registry.alias("credit", "canary") == 2
    assert registry.aliases("credit") == {"production": 1, "canary": 2}
    pointer = AliasChange.model_validate_json(store.get(alias_key("credit", "canary")))
    assert pointer.seq == 2 and pointer.actor == "trainer" and pointer.reason == "canary at 10%"
    registry.set_alias("credit", "canary", None, "trainer", "canary promoted")
    assert registry.alias("credit", "canary") is None
    assert registry.aliases("credit") == {"production": 1}


def test_history_is_append_only_with_actor_and_reason(registry: Registry, store: FileStore) -> None:
    register(registry, b"one")
    register(registry, b"two")
    registry.set_alias("credit", "production", 1, "trainer", "gate passed")
    registry.set_alias("credit", "canary", 2, "trainer", "canary")
    registry.set_alias("credit", "production", 2, "alice", "promoted by hand")
    before = store.get(history_key("credit", 1))
    history = registry.history("credit")
    assert [(c.seq, c.alias, c.version, c.previous_version) for c in history] == [
        (1, "production", 1, None),
        (2, "canary", 2, None),
        (3, "production", 2, 1),
    ]
    assert [(c.actor, c.reason) for c in history] == [
        ("trainer", "gate passed"),
        ("trainer", "canary"),
        ("alice", "promoted by hand"),
    ]
    assert [c.seq for c in registry.history("credit", "production")] == [1, 3]
    assert store.get(history_key("credit", 1)) == before, "earlier entries are never rewritten"
    assert store.list("registry/credit/aliases/history/") == [history_key("credit", s) for s in (1, 2, 3)]


def test_rollback_returns_to_the_previous_version_and_is_recorded(registry: Registry) -> None:
    for payload in (b"one", b"two", b"three"):
        register(registry, payload)
    registry.set_alias("credit", "production", 1, "trainer", "first")
    registry.set_alias("credit", "production", 2, "trainer", "second")
    registry.set_alias("credit", "production", 3, "trainer", "third")
    change = registry.rollback("credit", "production", "bob", "error rate doubled")
    assert registry.alias("credit", "production") == 2
    assert (change.version, change.previous_version, change.actor) == (2, 3, "bob")
    assert "error rate doubled" in change.reason and "rollback" in change.reason
    assert registry.history("credit", "production")[-1] == change
    assert len(registry.history("credit", "production")) == 4
    # A second rollback undoes the first: production goes back to where it was.
    assert registry.rollback("credit", "production", "bob", "false alarm").version == 3


def test_rollback_skips_repeated_settings_of_the_current_version(registry: Registry) -> None:
    register(registry, b"one")
    register(registry, b"two")
    registry.set_alias("credit", "production", 1, "trainer", "first")
    registry.set_alias("credit", "production", 2, "trainer", "second")
    registry.set_alias("credit", "production", 2, "alice", "re-affirmed")
    assert registry.rollback("credit", "production", "bob", "bad").version == 1


def test_rollback_with_nothing_to_go_back_to_is_refused(registry: Registry) -> None:
    register(registry, b"one")
    with pytest.raises(InvalidInput, match="not set"):
        registry.rollback("credit", "production", "bob", "why")
    registry.set_alias("credit", "production", 1, "trainer", "first")
    with pytest.raises(InvalidInput, match="nothing to roll back to"):
        registry.rollback("credit", "production", "bob", "why")
    assert registry.alias("credit", "production") == 1
    assert len(registry.history("credit")) == 1, "a refused rollback records nothing"


def test_set_alias_to_unknown_version_is_refused(registry: Registry) -> None:
    register(registry, b"one")
    with pytest.raises(ModelNotFound, match=r"'credit' has no version 7"):
        registry.set_alias("credit", "production", 7, "alice", "typo")
    with pytest.raises(InvalidInput, match="unknown alias"):
        registry.set_alias("credit", "staging", 1, "alice", "no such alias")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="actor and a reason"):
        registry.set_alias("credit", "production", 1, "", "")
    assert registry.alias("credit", "production") is None
    assert registry.history("credit") == []


def test_errors_for_unknown_model_or_version_name_them(registry: Registry) -> None:
    with pytest.raises(ModelNotFound, match=r"'fraud' has no registered version") as caught:
        registry.card("fraud", 3)
    assert isinstance(caught.value, NotFound) and caught.value.status_code == 404
    assert "version 3" in caught.value.message
    with pytest.raises(ModelNotFound, match="'fraud'"):
        registry.load_onnx("fraud", 1)
    with pytest.raises(ModelNotFound, match="'fraud'"):
        registry.set_alias("fraud", "production", 1, "alice", "x")
    register(registry, b"one")
    with pytest.raises(ModelNotFound, match=r"'credit' has no version 5 \(registered: 1\)"):
        registry.card("credit", 5)
    assert (
        registry.versions("fraud") == []
        and registry.history("fraud") == []
        and registry.alias("fraud", "shadow") is None
    )


def test_concurrent_alias_changes_get_distinct_seqs_and_pointer_ends_on_the_newest(
    registry: Registry, store: FileStore
) -> None:
    for payload in (b"one", b"two", b"three", b"four"):
        register(registry, payload)
    barrier = threading.Barrier(4)

    def move(version: int) -> None:
        barrier.wait()
        Registry(store).set_alias("credit", "production", version, f"worker-{version}", "race")

    threads = [threading.Thread(target=move, args=(v,)) for v in (1, 2, 3, 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    history = registry.history("credit", "production")
    assert [c.seq for c in history] == [1, 2, 3, 4]
    assert sorted(c.version for c in history if c.version is not None) == [1, 2, 3, 4]
    assert registry.alias("credit", "production") == history[-1].version


def test_a_graph_built_outside_the_trainer_registers_with_a_minimal_card(tmp_path: Path) -> None:
    from shared.reference import PredictionReference, Reference
    from shared.registry import InputSchema

    registry = Registry(FileStore(tmp_path))
    reference = Reference(
        features={}, predictions=PredictionReference(label_distribution={"a": 1.0}, probability_histograms={})
    )
    schema = InputSchema(features=["x"], label_values=["a", "b"])
    card = registry.register_built("m", b"graph", schema, reference, "LogisticRegression", "bench", training_rows=9)
    assert registry.card("m", card.version) == card and registry.load_onnx("m", card.version) == b"graph"
    assert (card.code.package, card.trigger, card.training_rows, card.input_schema) == ("bench", "bench", 9, schema)
    assert card.gate.passed and card.dataset_version == 1
