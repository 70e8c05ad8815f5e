"""The monitor's use-cases on a FileStore registry of real (small) models; the publisher is the only fake.

Covered: predictions and labels join in either order and count once when redelivered; a canary
start opens a trial, enough labels give one verdict that moves the registry's aliases and is
published once, and a deployment event (the monitor also reads its own) is applied once; a
verdict that cannot be published yet stays queued and goes out with the next event; a confirmed
drift is published and starts the since-change wait; checkpoints restore the watch elsewhere.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry

from services.monitor.handlers import MonitorHandlers
from services.monitor.metrics import MonitorMetrics
from services.monitor.watch import Decision, state_key
from shared.errors import BrokerUnavailable
from shared.events import AnnotationSubmitted, DeploymentChanged, DriftDetected, Event, PredictionsLogged
from shared.registry import Registry
from shared.spec import SpecCatalog, apply_spec
from shared.store import FileStore
from tests.integration.test_inference import register, rows
from tests.integration.test_monitor import canary_started
from tests.integration.test_monitor import traffic as monitor_traffic

SPEC = """
name: {name}
features: [{{name: x1}}, {{name: x2}}, {{name: x3, allow_missing: true}}]
label: {{values: [0, 1]}}
training: {{estimator: LogisticRegression, holdout: 0.25, seed: 1, window: {{since_change: true}}}}
deployment: {{strategy: canary, promote_after: {{labelled_samples: 100}}}}
monitoring: {{confirmation_samples: 200}}
"""
T0 = datetime(2026, 5, 1, tzinfo=UTC)


@dataclass
class RecordingPublisher:
    """Keeps what is published; ``fail`` makes the next publishes raise, as a broker that is away."""

    events: list[Event] = field(default_factory=list)
    fail: int = 0

    async def publish(self, event: Event, headers: Any = None) -> None:
        if self.fail:
            self.fail -= 1
            raise BrokerUnavailable("broker away (test)")
        self.events.append(event)

    def of(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def handlers_on(store: FileStore, publisher: RecordingPublisher, table: dict[str, Any]) -> MonitorHandlers:
    return MonitorHandlers(
        Registry(store),
        SpecCatalog(store),
        store,
        publisher,  # type: ignore[arg-type]
        MonitorMetrics.create(CollectorRegistry()),
        table,
    )


def setup(tmp_path: Any) -> tuple[FileStore, Registry]:
    store = FileStore(tmp_path / "store")
    apply_spec(store, SPEC.format(name="m"))
    registry = Registry(store)
    registry.set_alias("m", "production", register(store, "m", rows(400, 0, flip=False), None, SPEC), "test", "first")
    return store, registry


def traffic(
    version: int, variant: str, start: int, n: int, error: float, seed: int, flip: bool = False
) -> tuple[PredictionsLogged, list[AnnotationSubmitted]]:
    """``n`` predictions of x1 + x2 > 10, wrong ``error`` of the time, and their labels."""
    return monitor_traffic("m", version, variant, start, n, flip, error, seed, t0=T0)


async def trial(
    handlers: MonitorHandlers, candidate: int, errors: tuple[float, float], n: int
) -> list[AnnotationSubmitted]:
    """Open a canary trial of ``candidate`` and log ``n`` predictions of each side; returns their
    labels, champion's first (wrong ``errors`` of the time: champion, canary)."""
    await handlers.on_deployment(canary_started("m", candidate, at=T0))
    champion, champion_labels = traffic(1, "champion", 0, n, error=errors[0], seed=2)
    canary, canary_labels = traffic(candidate, "canary", 0, n, error=errors[1], seed=3)
    await handlers.on_predictions(champion)
    await handlers.on_predictions(canary)
    return champion_labels + canary_labels


async def test_predictions_and_labels_join_in_either_order_once(tmp_path: Any) -> None:
    store, _ = setup(tmp_path)
    handlers = handlers_on(store, RecordingPublisher(), {})
    event, labels = traffic(1, "champion", 0, 200, error=0.1, seed=1)
    for label in labels[:50]:  # labels first
        await handlers.on_annotation(label)
    await handlers.on_predictions(event)
    await handlers.on_predictions(PredictionsLogged.model_validate(event.model_dump()))  # redelivered
    for label in labels[50:] + labels[:10]:  # and ten labels again
        await handlers.on_annotation(label)
    watch = handlers.models["m"]
    assert (watch.join.hits, watch.join.duplicates) == (200, 210)
    status = await handlers.status("m")
    assert status is not None
    [live] = status["live"]
    assert live["labelled"] == 200 and 0.8 < live["accuracy"] < 0.97


async def test_a_canary_is_judged_once_and_the_registry_moves(tmp_path: Any) -> None:
    store, registry = setup(tmp_path)
    publisher = RecordingPublisher()
    handlers = handlers_on(store, publisher, {})
    candidate = register(store, "m", rows(400, 500, flip=False), 1, SPEC)
    registry.set_alias("m", "canary", candidate, "test", "canary")
    labels = await trial(handlers, candidate, (0.2, 0.02), 150)
    assert handlers.models["m"].trial is not None
    for label in labels:
        await handlers.on_annotation(label)
    verdict, shadow = publisher.of(DeploymentChanged)
    assert verdict.action == "promoted" and verdict.version == candidate and verdict.actor == "monitor"
    assert registry.alias("m", "production") == candidate and registry.alias("m", "canary") is None
    assert shadow.action == "shadow_started" and shadow.version == 1, "the previous champion scores beside it"
    assert registry.alias("m", "shadow") == 1
    watch = handlers.models["m"]
    assert watch.champion == candidate and watch.trial is None and watch.watch is not None and watch.watch.shadowed
    await handlers.on_deployment(verdict)  # the monitor reads its own event back: applied once
    assert [m.kind for m in watch.markers].count("promoted") == 1


async def test_a_canary_running_when_production_moves_is_judged_against_the_new_champion(tmp_path: Any) -> None:
    """The champion changes under a running canary (a rollback, a promotion by hand): the trial
    starts over against the version now in production, so the canary is still judged -- a trial
    kept against the old champion would wait for ever with the canary serving its share."""
    store, registry = setup(tmp_path)
    publisher = RecordingPublisher()
    handlers = handlers_on(store, publisher, {})
    second = register(store, "m", rows(400, 500, flip=False), 1, SPEC)
    canary = register(store, "m", rows(400, 1000, flip=False), 1, SPEC)
    registry.set_alias("m", "production", second, "operator", "train now")
    moved = DeploymentChanged(
        model="m", action="promoted", version=second, previous_version=1, traffic=1.0, reason="m", actor="op"
    )
    await handlers.on_deployment(moved)
    registry.set_alias("m", "canary", canary, "test", "canary")
    await handlers.on_deployment(canary_started("m", canary, at=T0))
    registry.set_alias("m", "production", 1, "operator", "back")
    back = DeploymentChanged(
        model="m",
        action="rolled_back",
        version=1,
        previous_version=second,
        traffic=1.0,
        reason="m",
        actor="op",
        occurred_at=T0,
    )
    await handlers.on_deployment(back)
    watch = handlers.models["m"]
    assert watch.trial is not None and watch.trial.champion_version == 1 and watch.trial.canary_version == canary
    champion, champion_labels = traffic(1, "champion", 0, 150, error=0.2, seed=2)
    challenger, challenger_labels = traffic(canary, "canary", 0, 150, error=0.02, seed=3)
    for event in (champion, challenger):
        await handlers.on_predictions(event)
    for label in champion_labels + challenger_labels:
        await handlers.on_annotation(label)
    verdicts = [c for c in publisher.of(DeploymentChanged) if c.version == canary]
    assert [v.action for v in verdicts] == ["promoted"] and verdicts[0].previous_version == 1
    assert registry.alias("m", "production") == canary


async def test_a_verdict_that_cannot_be_published_waits_for_the_next_event(tmp_path: Any) -> None:
    store, registry = setup(tmp_path)
    publisher = RecordingPublisher()
    handlers = handlers_on(store, publisher, {})
    candidate = register(store, "m", rows(400, 500, flip=False), 1, SPEC)
    labels = await trial(handlers, candidate, (0.0, 0.6), 150)
    failed = 0
    publisher.fail = 1
    for label in labels:
        try:
            await handlers.on_annotation(label)
        except BrokerUnavailable:
            failed += 1
    assert failed == 1 and len(handlers.models["m"].decisions) == 0, "the next label carried it out"
    [verdict] = publisher.of(DeploymentChanged)
    assert verdict.action == "rolled_back" and registry.alias("m", "canary") is None
    assert registry.alias("m", "shadow") is None, "no promotion, no watch, no shadow"


async def test_a_decision_left_by_an_outage_survives_a_restart(tmp_path: Any) -> None:
    store, registry = setup(tmp_path)
    publisher = RecordingPublisher()
    table: dict[str, Any] = {}
    handlers = handlers_on(store, publisher, table)
    candidate = register(store, "m", rows(400, 500, flip=False), 1, SPEC)
    labels = await trial(handlers, candidate, (0.2, 0.0), 100)
    for label in labels[:-1]:
        await handlers.on_annotation(label)
    publisher.fail = 1
    try:
        await handlers.on_annotation(labels[-1])
    except BrokerUnavailable:
        pass
    assert len(handlers.models["m"].decisions) == 1 and registry.alias("m", "production") == candidate
    assert await handlers.checkpoint() == 1 and store.exists(state_key("m"))

    again = handlers_on(store, publisher, table)  # another replica takes the partition over
    await again.on_annotation(labels[-1])  # the redelivered label: a duplicate, and the verdict goes out
    verdict, _ = publisher.of(DeploymentChanged)
    assert verdict.action == "promoted" and again.models["m"].champion == candidate
    assert again.models["m"].live.totals("m", candidate, "canary").labelled == 100


async def test_a_confirmed_concept_drift_is_published_and_starts_the_wait(tmp_path: Any) -> None:
    store, _ = setup(tmp_path)
    publisher = RecordingPublisher()
    handlers = handlers_on(store, publisher, {})
    stable, stable_labels = traffic(1, "champion", 0, 1500, error=0.05, seed=5)
    changed, changed_labels = traffic(1, "champion", 1500, 1200, error=0.05, seed=6, flip=True)
    for event, labels in ((stable, stable_labels), (changed, changed_labels)):
        await handlers.on_predictions(event)
        for label in labels:
            await handlers.on_annotation(label)
    concept = [d for d in publisher.of(DriftDetected) if d.kind == "concept"]
    # 20 minutes of the changed world with a 10-minute cooldown: said twice, never more
    assert len(concept) == 2 and {d.detector for d in concept} <= {"ADWIN", "expected_error"}
    first = concept[0]
    assert first.change_samples and first.change_started_at is not None
    assert abs((first.change_started_at - T0).total_seconds() - 1505) < 300, "dated near the flip"
    watch = handlers.models["m"]
    assert watch.last_drift == concept[-1] and watch.change_wait is not None and not watch.decisions


async def test_a_change_soon_after_a_promotion_is_a_drift_not_a_rollback(tmp_path: Any) -> None:
    """v2 is promoted (by an operator), then the concept flips: v2 errs, and so does v1 scoring the
    same traffic as a shadow. No rollback to the equally stale v1: a concept drift instead, and the
    shadow is cleared when the watch ends."""
    store, registry = setup(tmp_path)
    publisher = RecordingPublisher()
    handlers = handlers_on(store, publisher, {})
    candidate = register(store, "m", rows(400, 500, flip=False), 1, SPEC)
    stable, stable_labels = traffic(1, "champion", 0, 300, error=0.0, seed=7)
    await handlers.on_predictions(stable)
    for label in stable_labels:
        await handlers.on_annotation(label)
    registry.set_alias("m", "production", candidate, "operator", "train now")
    promoted = DeploymentChanged(
        model="m", action="promoted", version=candidate, previous_version=1, traffic=1.0, reason="manual", actor="op"
    )
    await handlers.on_deployment(promoted)
    watch = handlers.models["m"]
    assert watch.watch is not None and watch.watch.shadowed and registry.alias("m", "shadow") == 1
    for start in range(300, 1500, 100):  # the flipped world: both versions wrong on every row
        champion, champion_labels = traffic(candidate, "champion", start, 100, error=0.0, seed=start, flip=True)
        shadow = PredictionsLogged.model_validate({**champion.model_dump(), "version": 1, "variant": "shadow"})
        await handlers.on_predictions(champion)
        await handlers.on_predictions(shadow)
        for label in champion_labels:
            await handlers.on_annotation(label)
    assert [c.action for c in publisher.of(DeploymentChanged)] == ["shadow_started"], "no rollback"
    assert registry.alias("m", "production") == candidate
    concept = [d for d in publisher.of(DriftDetected) if d.kind == "concept"]
    assert concept and concept[0].model_version == candidate, "the changed world is a drift of the new champion"
    assert watch.watch.done and not watch.watch.shadowed and registry.alias("m", "shadow") is None


async def test_a_worse_release_is_rolled_back_once_its_predecessor_proves_better_on_the_same_traffic(
    tmp_path: Any,
) -> None:
    store, registry = setup(tmp_path)
    publisher = RecordingPublisher()
    handlers = handlers_on(store, publisher, {})
    candidate = register(store, "m", rows(400, 500, flip=False), 1, SPEC)
    assert (await handlers.watch_of("m")) is not None  # watching v1 when the operator promotes v2
    registry.set_alias("m", "production", candidate, "operator", "train now")
    await handlers.on_deployment(
        DeploymentChanged(
            model="m", action="promoted", version=candidate, previous_version=1, traffic=1.0, reason="m", actor="op"
        )
    )
    champion, champion_labels = traffic(candidate, "champion", 0, 300, error=0.4, seed=8)  # a bad release
    truth = [label.label for label in champion_labels]
    answers = [t if i % 20 else 1 - int(t) for i, t in enumerate(truth)]  # v1 on the same rows: 5% wrong
    shadow = PredictionsLogged.model_validate(
        {**champion.model_dump(), "version": 1, "variant": "shadow", "labels": answers}
    )
    await handlers.on_predictions(champion)
    await handlers.on_predictions(shadow)
    for label in champion_labels:
        await handlers.on_annotation(label)
    rolled = [c for c in publisher.of(DeploymentChanged) if c.action == "rolled_back"]
    assert len(rolled) == 1 and rolled[0].version == 1 and "over the same last 100" in rolled[0].reason
    assert registry.alias("m", "production") == 1 and registry.alias("m", "shadow") is None


async def test_decisions_settled_from_two_agents_at_once_go_out_once_each(tmp_path: Any) -> None:
    """The agents of different topics run concurrently: both may settle one model's queue."""
    store, _ = setup(tmp_path)
    publisher = RecordingPublisher()
    handlers = handlers_on(store, publisher, {})
    watch = await handlers.watch_of("m")
    assert watch is not None
    gate = asyncio.Event()
    original = publisher.publish

    async def slow_publish(event: Event, headers: Any = None) -> None:
        await gate.wait()  # the broker is slow: the other agent runs meanwhile
        await original(event, headers)

    publisher.publish = slow_publish  # type: ignore[method-assign]
    drifts = [
        DriftDetected(
            model="m",
            model_version=1,
            kind="data",
            detector="PSI",
            feature=f"x{i}",
            statistic=0.5,
            threshold=0.2,
            samples=1000,
            severity="medium",
        )
        for i in (1, 2)
    ]
    watch.decisions.extend(Decision(event=event) for event in drifts)
    settling = [asyncio.create_task(handlers._settle(watch)) for _ in range(2)]
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(*settling)
    assert [e.feature for e in publisher.of(DriftDetected)] == ["x1", "x2"] and not watch.decisions
