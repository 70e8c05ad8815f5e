"""A regime that comes back (A -> B -> A), and a window a newer drift made stale.

Covered: a since-change run scores earlier versions on its holdout and registers one again
when it clearly beats the fresh fit (the card says ``reused_from``, the graph is the earlier
one's, the metrics and expected error are this holdout's); it does not reuse a version of
another regime, nor the champion's own graph; a plain-window run never reuses. A run during
which a new drift arrived registers its candidate but does not roll it out, and says why.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest

from services.trainer.runner import train
from shared.datasets import AcceptedRecord, DatasetRepository
from shared.registry import Registry
from shared.spec import apply_spec, parse_spec
from shared.store import FileStore
from tests.unit.trainer.test_handlers import (
    DELIVERY,
    MODEL,
    T0,
    Trainer,
    drift,
    hold_first_run,
    sea_rows,
    spec_text,
    stored_state,
    write_dataset,
)


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "store")


def noisy(rows: list[AcceptedRecord], every: int) -> list[AcceptedRecord]:
    """Every ``every``-th label flipped: the concept is learnt from many rows, not from a few."""
    return [dataclasses.replace(r, label=1 - int(r.label)) if i % every == 0 else r for i, r in enumerate(rows)]


def three_regimes(store: FileStore) -> tuple[Registry, DatasetRepository]:
    """v1 learnt regime A on 2,000 rows, v2 regime B on 2,000 and serves; then A comes back (60 rows)."""
    spec = parse_spec(spec_text(since_change=True, min_delta=0.005))
    repo, registry = DatasetRepository(store), Registry(store)
    write_dataset(store, noisy(sea_rows(2000, seed=1), 7))
    assert train(spec, repo, registry, 1, "a", "first_data", None).passed
    write_dataset(store, noisy(sea_rows(2000, start=2000, seed=2, rotated=True), 7))
    b = train(spec, repo, registry, 2, "b", "drift", None, since=T0 + timedelta(seconds=2000))
    assert b.passed and b.card is not None and b.card.reused_from is None, "v1 knows nothing of regime B"
    registry.set_alias(MODEL, "production", 2, "test", "B")
    write_dataset(store, noisy(sea_rows(60, start=4000, seed=3), 7))
    return registry, repo


def test_a_regime_that_comes_back_gets_the_version_that_learnt_it(store: FileStore) -> None:
    registry, repo = three_regimes(store)
    spec = parse_spec(spec_text(since_change=True, min_delta=0.005))

    result = train(spec, repo, registry, 3, "a-again", "drift", None, since=T0 + timedelta(seconds=4000))

    assert result.passed and result.card is not None, result.gate.reasons
    card = result.card
    assert card.reused_from == 1 and card.version == 3
    assert registry.load_onnx(MODEL, 3) == registry.load_onnx(MODEL, 1), "the earlier graph, unchanged"
    assert card.training_rows == registry.card(MODEL, 1).training_rows
    assert card.holdout_rows == 15 and card.window["rows"] == 60, "scored on the rows after the change"
    assert result.gate.reasons[0].startswith("reused v1's graph: accuracy ")
    assert card.metrics["accuracy"] > (card.champion_metrics or {})["accuracy"]
    expected = card.reference.expected_error
    assert expected is not None and expected.rows == 15
    assert expected.rate == pytest.approx(1 - card.metrics["accuracy"])


def test_no_reuse_without_a_change_point_or_when_the_fresh_fit_is_as_good(store: FileStore) -> None:
    registry, repo = three_regimes(store)
    spec = parse_spec(spec_text(since_change=True, min_delta=0.005))

    plain = train(spec, repo, registry, 3, "plain", "new_labels", None)
    assert plain.card is not None and plain.card.reused_from is None, "the plain window is not the new regime"

    write_dataset(store, noisy(sea_rows(2000, start=4060, seed=4, rotated=True), 7))
    again_b = train(spec, repo, registry, 4, "b-again", "drift", None, since=T0 + timedelta(seconds=4060))
    assert again_b.card is not None
    assert again_b.card.reused_from != 2, "the champion's own graph is never registered again"
    assert again_b.card.reused_from is None, "2,000 fresh rows of B: nothing earlier beats them clearly"


async def test_a_run_a_newer_drift_overtook_is_registered_but_not_rolled_out(
    store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_spec(store, spec_text(since_change=True, new_labels="null"))
    write_dataset(store, sea_rows(400))
    trainer = Trainer(store)
    await trainer.handlers.on_event(drift(change_started_at=T0), DELIVERY)
    may_finish, _ = hold_first_run(monkeypatch)
    try:
        async with trainer.working():
            await trainer.until(lambda: stored_state(store).running is not None)
            newer = drift(change_started_at=T0 + timedelta(seconds=300))
            await trainer.handlers.on_event(newer, DELIVERY)
            may_finish.set()
            await trainer.until(lambda: len(trainer.completed()) == 2 and stored_state(store).running is None)
    finally:
        may_finish.set()

    overtaken, follow_up = trainer.completed()
    assert overtaken.gate.passed and overtaken.gate.reasons[-1] == (
        "not rolled out: a concept drift (change at 2026-03-01T00:05:00+00:00) arrived during the run"
    )
    assert follow_up.trigger.startswith("drift (concept, change at 2026-03-01T00:05:00+00:00, 100 rows after it)")
    assert [d.version for d in trainer.deployments()] == [2], "only the newer drift's candidate is rolled out"
