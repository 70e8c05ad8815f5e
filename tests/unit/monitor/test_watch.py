"""A model's watch and its checkpoint: the current format round-trips, the previous one migrates.

``fixtures/checkpoint_v1.json`` was written by the monitor before checkpoints became pydantic
models (commit 4705c8b, hand-written ``to_state()``): a ModelWatch fed the stream below up to
the first batch where a concept candidate awaited confirmation, with a canary trial, a champion
watch, a since-change wait, markers and live accuracy. ``checkpoint_v1_expected.json`` holds
what that monitor did next on the rest of the stream -- alarms, suppressions, status -- so the
migrated checkpoint must make the current code do exactly the same. ``checkpoint_v2.json`` and
``checkpoint_v2_expected.json`` are the same for the schema-2 format as written before typed
features (no categorical window, no recent categories).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from services.monitor.drift import DriftUpdate, ModelDrift
from services.monitor.watch import ModelWatch, WatchState, load_checkpoint, migrate_v1
from shared.reference import build_reference
from shared.spec import parse_spec

FIXTURES = Path(__file__).parent / "fixtures"
SPEC = parse_spec(
    """
name: m
features: [{name: x0}, {name: x1}, {name: x2, allow_missing: true}]
label: {values: [0, 1]}
"""
)
T0 = datetime(2026, 3, 1, tzinfo=UTC)
Step = tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any], list[datetime], np.ndarray[Any, Any]]


def the_stream() -> tuple[Any, list[Step]]:
    """The reference and the 400 batches of 50 predictions the fixture was made from (seeded)."""
    rng = np.random.default_rng(11)
    X = rng.uniform(0, 10, size=(3000, 3))
    p1 = 1 / (1 + np.exp(-(X[:, 0] + X[:, 1] - 10)))
    reference = build_reference(X, ["x0", "x1", "x2"], (X[:, 0] + X[:, 1] > 10).astype(int), np.c_[1 - p1, p1], [0, 1])
    steps: list[Step] = []
    for b in range(400):
        shifted = b >= 60
        rows = rng.uniform(0, 10, size=(50, 3))
        if shifted:
            rows[:, 0] += 3.0
        rows[rng.random(50) < 0.05, 2] = np.nan
        p = 1 / (1 + np.exp(-(rows[:, 0] + rows[:, 1] - 10)))
        err = rng.random(50) < (0.4 if shifted else 0.1)
        times = [T0 + timedelta(seconds=(b * 50 + k) * 0.1) for k in range(50)]
        steps.append((rows, (p > 0.5).astype(int), np.c_[1 - p, p], times, err))
    return reference, steps


def feed(drift: ModelDrift, step: Step) -> list[DriftUpdate]:
    rows, labels, proba, times, err = step
    updates = [drift.observe_predictions(["x0", "x1", "x2"], rows, labels.tolist(), proba, ["0", "1"], times, 1)]
    updates += [drift.observe_outcome(bool(e), t) for e, t in zip(err, times, strict=True)]
    return updates


def outcomes(updates: list[DriftUpdate]) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    alarms = [
        a.to_event().model_dump(mode="json", exclude={"event_id", "occurred_at"}) for u in updates for a in u.alarms
    ]
    suppressed = [[s.kind, s.feature, s.detector, s.reason] for u in updates for s in u.suppressed]
    return alarms, suppressed


def test_a_version_1_checkpoint_migrates_and_the_detectors_carry_on_identically() -> None:
    expected = json.loads((FIXTURES / "checkpoint_v1_expected.json").read_text())
    data = (FIXTURES / "checkpoint_v1.json").read_bytes()
    assert "schema_version" not in json.loads(data), "the fixture is the old format"
    state = load_checkpoint(data)
    reference, steps = the_stream()
    watch = ModelWatch.restore(state, SPEC, reference, {}, 1000)

    pending = sorted(f"{k}|{f or ''}" for k, f, _ in watch.drift.policy.pending_list())
    assert pending == expected["pending_at_checkpoint"]
    trial = watch.trial
    assert (
        trial is not None
        and [
            trial.champion.labelled,
            trial.champion.errors,
            trial.canary.labelled,
            trial.canary.errors,
        ]
        == expected["trial"]
    )
    assert watch.watch is not None and watch.watch.error_rate == expected["watch_error_rate"]
    totals = watch.live.totals("m", 1, "champion")
    assert [totals.labelled, totals.errors] == expected["live_totals"]
    assert watch.change_wait is not None and watch.change_wait.waiting_rows == 600 - 153
    assert [m.kind for m in watch.markers] == ["promoted", "canary_started"] and list(watch.handled) == ["e1", "e2"]
    assert watch.last_drift is not None and watch.last_drift.feature == "x0"
    assert (watch.join.hits, watch.join.misses, watch.join.unlabelled) == (12, 3, 40)

    alarms: list[dict[str, Any]] = []
    suppressed: list[list[Any]] = []
    for step in steps[expected["dump_after_step"] + 1 :]:
        a, s = outcomes(feed(watch.drift, step))
        alarms += a
        suppressed += s
    assert alarms == expected["alarms"] and alarms, "the same alarms, with the same change points"
    assert suppressed == expected["suppressed"]
    assert watch.drift.status() == expected["status"]


def test_the_checkpoint_round_trips_and_says_its_version() -> None:
    state = load_checkpoint((FIXTURES / "checkpoint_v1.json").read_bytes())
    reference, steps = the_stream()
    watch = ModelWatch.restore(state, SPEC, reference, {}, 1000)
    feed(watch.drift, steps[70])
    written = watch.state().model_dump_json()
    assert json.loads(written)["schema_version"] == 2
    again = load_checkpoint(written.encode())
    assert again == watch.state()
    assert WatchState.model_validate_json(written) == again


def test_migrate_v1_keeps_old_confirmations_as_they_were() -> None:
    old = json.loads((FIXTURES / "checkpoint_v1.json").read_text())
    [concept] = [p for k, p in old["drift"]["policy"]["pending"].items() if k.startswith("concept")]
    del concept["confirmation"]["z_patient"], concept["confirmation"]["patience"]  # before the patient stage
    migrated = WatchState.model_validate(migrate_v1(old))
    rise = migrated.drift.policy.confirming["concept|"].confirmation
    assert rise.kind == "mean_rise" and rise.z_patient == rise.z and rise.patience == rise.extend


def test_a_checkpoint_written_before_typed_features_loads_and_carries_on_identically() -> None:
    """``fixtures/checkpoint_v2.json`` was written by the monitor before categorical features (schema
    2, no categorical window, no ``recent_categories``), with a data and a concept candidate under
    confirmation after step 61 of the stream; ``checkpoint_v2_expected.json`` holds what that
    monitor published next. Restored by the current code, it must do exactly the same."""
    expected = json.loads((FIXTURES / "checkpoint_v2_expected.json").read_text())
    raw = json.loads((FIXTURES / "checkpoint_v2.json").read_text())
    assert raw["schema_version"] == 2 and "categories" not in raw["drift"] and "recent_categories" not in raw
    state = load_checkpoint((FIXTURES / "checkpoint_v2.json").read_bytes())
    assert state.drift.categories is None and state.recent_categories == {}
    reference, steps = the_stream()
    watch = ModelWatch.restore(state, SPEC, reference, {}, 1000)
    assert sorted(f"{k}|{f or ''}" for k, f, _ in watch.drift.policy.pending_list()) == ["concept|", "data|x0"]
    alarms: list[dict[str, Any]] = []
    suppressed: list[list[Any]] = []
    for step in steps[expected["dump_after_step"] + 1 :]:
        a, s = outcomes(feed(watch.drift, step))
        alarms += a
        suppressed += s
    assert alarms == expected["alarms"] and alarms
    assert suppressed == expected["suppressed"]
    assert watch.drift.status() == expected["status"]
    assert json.loads(watch.state().model_dump_json())["drift"]["categories"] is None, "no categorical features"
