"""The prediction/label join: either order, duplicates, retention, eviction, rebuild from the store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from services.monitor import join as join_module
from services.monitor.join import Join, JoinCounts, JoinedPair
from shared.events import Label

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def predict(
    join: Join, inference_id: str, version: int, variant: str, label: Label, when: datetime
) -> JoinedPair | None:
    """One prediction, as a message of one row named after its inference id."""
    _, pairs = join.add_predictions(inference_id, version, variant, [inference_id], [label], [when])
    return pairs[0] if pairs else None


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def saved(join: Join) -> JoinCounts:
    """The join's counters through their checkpoint's JSON."""
    return JoinCounts.model_validate_json(join.state().model_dump_json())


def test_join_in_either_order_with_lag_and_duplicates() -> None:
    store: dict[str, dict[str, Any]] = {}
    join = Join(store, retention=timedelta(hours=1), namespace="m/")
    assert predict(join, "a", 1, "champion", "good", at(0)) is None
    pair = join.add_label("a", "bad", at(90))
    assert pair is not None and pair.version == 1 and pair.variant == "champion"
    assert not pair.correct and pair.lag_seconds == 90.0
    assert join.add_label("b", 1, at(100)) is None  # the label first
    pair = predict(join, "b", 2, "canary", "1", at(95))
    assert pair is not None and pair.correct and pair.lag_seconds == 5.0 and pair.variant == "canary"
    assert join.add_label("a", "bad", at(120)) is None  # redelivered: recognised
    assert predict(join, "b", 2, "canary", "1", at(95)) is None
    assert (join.hits, join.duplicates, join.misses) == (2, 2, 0)
    json.dumps(store, allow_nan=False)


def test_a_message_is_stored_once_and_its_redelivery_is_all_duplicates() -> None:
    store: dict[str, dict[str, Any]] = {}
    join = Join(store, retention=timedelta(hours=1), namespace="m/")
    join.add_label("id3", 0, at(1))
    ids = [f"id{i}" for i in range(6)]
    fresh, pairs = join.add_predictions("msg", 4, "champion", ids, [0, 1, 0, 1, 0, 1], [at(i) for i in range(6)])
    assert fresh == [0, 1, 2, 3, 4, 5]
    assert [(p.inference_id, p.correct) for p in pairs] == [("id3", False)]
    batches = [k for k in store if k.startswith("m/b:")]
    assert len(batches) == 1 and store[batches[0]]["ids"] == ids  # one entry for the message
    assert join.add_predictions("msg", 4, "champion", ids, [0] * 6, [at(0)] * 6) == ([], [])
    fresh, _ = join.add_predictions("other", 4, "champion", ["id1", "new"], [0, 0], [at(7), at(7)])
    assert fresh == [1]  # a row already held is a duplicate in another message too
    assert join.duplicates == 7 and len(join) == 7  # 6 rows of msg (one joined) + "new"
    assert join.add_label("id5", 1, at(30)) is not None
    assert join.add_label("id5", 1, at(31)) is None and join.duplicates == 8


def test_large_messages_are_stored_in_chunks(monkeypatch: Any) -> None:
    monkeypatch.setattr(join_module, "CHUNK_ROWS", 4)
    store: dict[str, dict[str, Any]] = {}
    join = Join(store, retention=timedelta(hours=1))
    ids = [str(i) for i in range(10)]
    fresh, _ = join.add_predictions("big", 1, "champion", ids, [1] * 10, [at(i) for i in range(10)])
    assert fresh == list(range(10))
    assert sorted(len(v["ids"]) for v in store.values()) == [2, 4, 4]
    pair = join.add_label("9", 1, at(20))
    assert pair is not None and pair.predicted_at == at(9)


def test_expiry_eviction_and_rebuild() -> None:
    store: dict[str, dict[str, Any]] = {}
    join = Join(store, retention=timedelta(minutes=10), max_entries=3)
    join.add_label("lonely", "x", at(0))
    predict(join, "never-labelled", 1, "champion", "x", at(10))
    predict(join, "p1", 1, "champion", "x", at(500))
    assert join.expire(at(620)) == 2
    assert (join.misses, join.unlabelled) == (1, 1)
    for i in range(4):
        predict(join, f"q{i}", 1, "champion", "x", at(600 + i))
    assert len(join) == 3 and join.unlabelled == 3  # p1 and q0 evicted beyond max_entries
    restored = Join.from_state(saved(join), store, timedelta(minutes=10), max_entries=3)
    assert len(restored) == 3 and restored.unlabelled == 3
    pair = restored.add_label("q3", "x", at(700))
    assert pair is not None and pair.correct
    assert restored.add_label("q3", "x", at(701)) is None and restored.duplicates == 1
    assert restored.expire(at(2000)) == 4 and store == {}  # three messages and a tombstone
    assert restored.hit_rate == 1 / 2 and restored.unlabelled == 5


def test_rebuild_keeps_joined_rows_joined_and_namespaces_apart() -> None:
    store: dict[str, dict[str, Any]] = {}
    main = Join(store, retention=timedelta(hours=1), namespace="m/")
    shadow = Join(store, retention=timedelta(hours=1), namespace="m/shadow/")
    main.add_predictions("1", 1, "champion", ["a", "b", "c"], [1, 1, 1], [at(0), at(1), at(2)])
    shadow.add_predictions("2", 9, "shadow", ["a", "b"], [0, 0], [at(0), at(1)])
    main.add_label("b", 1, at(5))
    main.add_label("z", 0, at(6))  # waits for a prediction
    again = Join.from_state(saved(main), store, timedelta(hours=1), namespace="m/")
    assert len(again) == len(main) == 4  # a and c wait, b joined, z waits
    assert again.add_label("b", 1, at(7)) is None  # still joined after the rebuild
    pair = again.add_label("c", 0, at(8))
    assert pair is not None and pair.version == 1 and not pair.correct
    assert predict(again, "z", 1, "champion", 0, at(6)) is not None
    shadow_again = Join.from_state(
        saved(shadow),
        store,
        timedelta(hours=1),
        namespace="m/shadow/",
    )
    pair = shadow_again.add_label("a", 0, at(9))
    assert pair is not None and pair.version == 9 and pair.correct
