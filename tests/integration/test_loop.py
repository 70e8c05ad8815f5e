"""The closed loop end to end on the embedded stack: bootstrap, drift, detection, retrain,
canary, promotion — each event in order — and a final champion that beats the pre-drift model
on post-drift data; also with an operator's canary straddling the change, and with a concept
that comes back (A -> B -> A)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from services.demo import SEA_SWITCH, DemoPlan, Sample, run_loop
from services.inference.runtime import load_version
from services.stack import LocalStack, StackConfig
from shared.registry import Registry
from shared.store import FileStore

pytestmark = pytest.mark.integration


def accuracy_on_new_regime(store: FileStore, model: str, version: int) -> float:
    return accuracy_on(store, model, version, SEA_SWITCH.after(3000, 99))


def accuracy_on(store: FileStore, model: str, version: int, samples: list[Sample]) -> float:
    X = np.array([[x[f] for f in SEA_SWITCH.features] for x, _ in samples], dtype=np.float32)
    y = np.array([label for _, label in samples])
    labels, _ = load_version(Registry(store), model, version).predict(X)
    return float(np.mean(np.asarray(labels).astype(int) == y))


@pytest.mark.timeout(420)  # the loop runs in wall-clock time; on a loaded 2-core CI machine it takes minutes
def test_the_loop_recovers_from_a_concept_switch(tmp_path: Path) -> None:
    ports = {"kafka": 0, "inference": 0, "ingest": 0, "monitor": 0, "trainer": 0}
    config = StackConfig(
        data_dir=tmp_path, ports=ports, log_level="WARNING", service_env={"DRIFTLOOP_FLUSH_ROWS": "500"}
    )
    plan = DemoPlan(
        bootstrap=1000, before_drift=1500, after_promotion=500, max_after_drift=6000, rate=400, faults=False
    )
    stack = LocalStack(config)
    with stack.running():
        _, result, served, timeline = asyncio.run(run_loop(stack, Console(quiet=True), plan))

    kinds = [(e.kind, e.version) for e in timeline]
    first = kinds.index(("training", 1))
    switch = plan.before_drift
    drift = next(i for i, e in enumerate(timeline) if e.kind == "drift")
    assert timeline[drift].index >= switch, f"no alarm before the drift: {kinds}"
    retrain = next(i for i, e in enumerate(timeline) if e.kind == "training" and e.version not in (None, 1))
    canary = next(i for i, e in enumerate(timeline) if e.kind == "canary_started")
    promoted = next(i for i, e in enumerate(timeline) if e.kind == "promoted" and e.version != 1)
    # TrainingCompleted and DeploymentChanged travel on different topics: either may be read first
    assert first < drift < min(retrain, canary) and max(retrain, canary) < promoted, kinds
    assert result.retrains_before_drift == 0 and result.alarms_before_drift == 0
    assert result.new_champion is not None and len(served) >= switch + 500

    store = FileStore(tmp_path / "store")
    champion = Registry(store).alias(SEA_SWITCH.model, "production")
    assert champion is not None
    before, after = (accuracy_on_new_regime(store, SEA_SWITCH.model, v) for v in (1, champion))
    assert after > before, f"the new champion v{champion} ({after:.3f}) beats v1 ({before:.3f}) after the drift"


@pytest.mark.timeout(420)
def test_a_change_while_an_operators_canary_runs_ends_on_a_model_of_the_new_concept(tmp_path: Path) -> None:
    """Issue #15: an operator trains a version by hand and starts it as a canary (``models canary``)
    just before the concept switches, so the trial straddles the change. Whatever the trial
    decides, the loop must not roll production back to the equally stale first version, must not
    go quiet, and must end on a version trained after the change that beats v1 there."""
    ports = {"kafka": 0, "inference": 0, "ingest": 0, "monitor": 0, "trainer": 0}
    config = StackConfig(
        data_dir=tmp_path, ports=ports, log_level="WARNING", service_env={"DRIFTLOOP_FLUSH_ROWS": "500"}
    )
    plan = DemoPlan(
        bootstrap=1000,
        before_drift=1500,
        after_promotion=500,
        max_after_drift=6000,
        rate=400,
        faults=False,
        operator_at=1400,
        operator_action="canary",
    )
    stack = LocalStack(config)
    with stack.running():
        _, result, _, timeline = asyncio.run(run_loop(stack, Console(quiet=True), plan))

    kinds = [(e.index, e.kind, e.version) for e in timeline]
    switch = plan.before_drift
    canary = next(e for e in timeline if e.kind == "canary_started")
    assert canary.version == 2 and canary.index < switch, kinds
    assert result.alarms_before_drift == 0, kinds
    assert not [e for e in timeline if e.kind == "rolled_back" and e.version == 1], f"back to the stale v1: {kinds}"
    assert result.new_champion is not None and result.new_champion > 2, f"no version of the new concept: {kinds}"
    assert sum(e.kind == "drift" for e in timeline if e.index >= switch) <= 3, f"an alarm storm: {kinds}"

    store = FileStore(tmp_path / "store")
    champion = Registry(store).alias(SEA_SWITCH.model, "production")
    assert champion is not None and champion > 2
    before, after = (accuracy_on_new_regime(store, SEA_SWITCH.model, v) for v in (1, champion))
    assert after > before, f"the new champion v{champion} ({after:.3f}) beats v1 ({before:.3f}) after the drift"


@pytest.mark.timeout(420)
def test_a_concept_that_comes_back_is_served_by_the_version_that_learnt_it(tmp_path: Path) -> None:
    """Issue #15, A -> B -> A: the loop retrains for B, then A returns. It must end serving A well
    -- the first version's graph again (registered anew from an earlier version, or production
    rolled back to it because it is better now) or a version trained after the return -- with no
    alarm storm, and never blind to the second change."""
    ports = {"kafka": 0, "inference": 0, "ingest": 0, "monitor": 0, "trainer": 0}
    config = StackConfig(
        data_dir=tmp_path, ports=ports, log_level="WARNING", service_env={"DRIFTLOOP_FLUSH_ROWS": "500"}
    )
    back = 3000
    scenario = dataclasses.replace(
        SEA_SWITCH,
        after=lambda n, seed: SEA_SWITCH.after(min(n, back), seed) + SEA_SWITCH.before(max(0, n - back), seed + 5),
    )
    plan = DemoPlan(
        bootstrap=1000,
        before_drift=1500,
        after_promotion=100_000,  # the whole stream: the second change comes after the first recovery
        max_after_drift=back + 3000,
        rate=400,
        faults=False,
        scenario=scenario,
    )
    stack = LocalStack(config)
    with stack.running():
        _, result, _, timeline = asyncio.run(run_loop(stack, Console(quiet=True), plan))

    kinds = [(e.index, e.kind, e.version) for e in timeline]
    second = plan.before_drift + back
    assert result.alarms_before_drift == 0 and result.new_champion is not None, kinds
    assert sum(e.kind == "drift" for e in timeline) <= 4, f"an alarm storm: {kinds}"
    store = FileStore(tmp_path / "store")
    registry = Registry(store)
    champion = registry.alias(SEA_SWITCH.model, "production")
    assert champion is not None
    card = registry.card(SEA_SWITCH.model, champion)
    first_graph = registry.card(SEA_SWITCH.model, 1).artifact_sha256
    reacted = [e for e in timeline if e.index >= second and e.kind in ("drift", "rolled_back", "promoted")]
    assert reacted and reacted[0].index < second + 1500, f"blind to the return of the first concept: {kinds}"
    assert card.artifact_sha256 == first_graph or card.reused_from == 1 or champion > 2, kinds
    a_again = SEA_SWITCH.before(3000, 98)
    served, learnt = (accuracy_on(store, SEA_SWITCH.model, v, a_again) for v in (champion, 1))
    assert served >= learnt - 0.02, f"production v{champion} ({served:.3f}) serves A about as well as v1 ({learnt:.3f})"
