"""The trainer's use-cases: a dataset version arrived, a drift was detected, a run is due.

Triggers are written to the trainer's state in the object store (``trainer/<model>/state.json``)
before the message that carried them is committed, so none is lost to a crash. One worker
loop starts runs when the budget allows; a run covers every trigger pending when it starts,
and everything that arrives meanwhile becomes one follow-up run. A run interrupted by a crash
is found in the state at restart and run again under the same run id, which the registry
recognises, so no version is registered twice.

With ``training.window.since_change``, a drift starts a recovery schedule (see
:mod:`services.trainer.core`): the labelled rows at or after the drift's change point are
counted on every dataset version (and on the worker's tick, for versions whose event went to
another replica); the wait is logged, exported as ``driftloop_trainer_waiting_rows`` and kept
in the state file under ``recovery``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np

from services.trainer import core
from services.trainer.metrics import TrainerMetrics
from services.trainer.runner import RunResult, train
from shared.bus import Delivery, Publisher
from shared.datasets import DatasetRepository
from shared.errors import KeyNotFound, StoreError
from shared.events import (
    DatasetVersionCreated,
    DeploymentChanged,
    DriftDetected,
    GateVerdict,
    TrainingCompleted,
    utc_now,
)
from shared.registry import CANARY, PRODUCTION, SHADOW, Alias, Registry
from shared.spec import ModelSpec, SpecCatalog
from shared.store import ObjectStore

log = logging.getLogger(__name__)

ACTOR = "trainer"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def state_key(model: str) -> str:
    """Where the trainer keeps a model's triggers and run history."""
    return f"trainer/{model}/state.json"


class StateStore:
    """Trainer states in the object store, cached in memory."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._cache: dict[str, core.TrainerState] = {}

    def load(self, model: str) -> core.TrainerState:
        """A model's state (a fresh one when none was saved)."""
        state = self._cache.get(model)
        if state is None:
            try:
                state = core.TrainerState.model_validate_json(self.store.get(state_key(model)))
            except KeyNotFound:
                state = core.TrainerState()
            self._cache[model] = state
        return state

    def save(self, model: str, state: core.TrainerState) -> None:
        """Persist a model's state."""
        self.store.put(state_key(model), state.model_dump_json().encode())
        self._cache[model] = state

    def models(self) -> list[str]:
        """Models with a saved state."""
        return sorted({k.split("/")[1] for k in self.store.list("trainer/") if k.endswith("/state.json")})


class TrainerHandlers:
    """Turns trigger events into runs, and runs into events."""

    def __init__(
        self,
        store: ObjectStore,
        catalog: SpecCatalog,
        publisher: Publisher,
        metrics: TrainerMetrics,
        clock: Callable[[], datetime] = utc_now,
        tick_s: float = 1.0,
    ) -> None:
        self.repo = DatasetRepository(store)
        self.registry = Registry(store)
        self.states = StateStore(store)
        self.catalog = catalog
        self.publisher = publisher
        self.metrics = metrics
        self.clock = clock
        self.tick_s = tick_s
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._deferred: dict[str, tuple[str, int]] = {}
        self.results: list[RunResult] = []

    async def _spec(self, model: str) -> ModelSpec | None:
        spec = self.catalog.cached(model)
        if spec is None or self.catalog.due(model):
            spec = await asyncio.to_thread(self.catalog.get, model)
        return spec

    async def on_event(self, event: DatasetVersionCreated | DriftDetected, delivery: Delivery) -> None:
        """Record a trigger carried by a ``datasets`` or ``drift`` event (persisted before commit)."""
        spec = await self._spec(event.model)
        if spec is None:
            log.warning("%s: no spec applied; ignoring %s", event.model, type(event).__name__)
            return
        state = await asyncio.to_thread(self.states.load, event.model)
        triggers: list[core.Trigger | None] = []
        if isinstance(event, DatasetVersionCreated):
            has_model = await asyncio.to_thread(self.registry.latest_version, event.model) is not None
            triggers.append(
                core.on_dataset(
                    state,
                    event.version,
                    event.rows_total,
                    str(event.event_id),
                    event.occurred_at,
                    spec.triggers,
                    has_model,
                )
            )
            triggers.append(await self._count_after_change(spec, state, event.version))
        else:
            if state.latest_dataset_version is None:  # drift before any datasets event reached this replica
                state.latest_dataset_version = await asyncio.to_thread(self.repo.latest_version, event.model)
            if not spec.triggers.on_drift:
                log.info("%s: drift (%s) ignored: triggers.on_drift is off", event.model, event.kind)
                return
            detail = f"{event.kind} drift" + (f" on {event.feature}" if event.feature else "") + f" ({event.detector})"
            trigger = core.Trigger(
                kind="drift", event_id=str(event.event_id), occurred_at=event.occurred_at, detail=detail
            )
            if spec.training.window.since_change:
                change_at = await asyncio.to_thread(self._change_point, event, state.latest_dataset_version)
                added = core.on_drift(state, trigger, event.kind, change_at, spec.training.window.min_rows_after_change)
                triggers.append(added)
                if added is not None:
                    await self._count_after_change(spec, state, state.latest_dataset_version, announce=True)
            else:
                triggers.append(trigger if state.add(trigger) else None)
        await asyncio.to_thread(self.states.save, event.model, state)
        self._observe(event.model, state)
        for added_trigger in triggers:
            if added_trigger is None:
                continue
            self.metrics.triggers.labels(event.model, added_trigger.kind).inc()
            log.info(
                "%s: trigger %s (%s); %d pending",
                event.model,
                added_trigger.kind,
                added_trigger.detail,
                len(state.pending),
            )
            self._wake.set()
        if state.pending:  # a count may have ended a wait: let the worker look now, not on its next tick
            self._wake.set()

    def _change_point(self, event: DriftDetected, latest_version: int | None) -> datetime:
        """Where the drift's new regime begins, on the clock of the records (their ``occurred_at``).

        The detector's ``change_started_at`` when it gives one; else the time of the first of
        the newest ``change_samples`` rows; else just after the newest row stored (the new
        regime is what arrives from now on).
        """
        if event.change_started_at is not None:
            return event.change_started_at
        if latest_version is None:
            return event.occurred_at
        if event.change_samples:
            data = self.repo.load(event.model, latest_version, last_rows=event.change_samples)
            if len(data.occurred_at):
                return _to_datetime(np.min(data.occurred_at))
        data = self.repo.load(event.model, latest_version, last_rows=1)
        if len(data.occurred_at):
            return _to_datetime(data.occurred_at[-1]) + timedelta(microseconds=1)
        return event.occurred_at

    async def _count_after_change(
        self, spec: ModelSpec, state: core.TrainerState, version: int | None, announce: bool = False
    ) -> core.Trigger | None:
        """Count the post-change rows of dataset ``version`` for an active recovery; queue a due step.

        The wait is logged whenever the count moves (or, with ``announce``, even when it did not).
        """
        recovery = state.recovery
        if recovery is None or not recovery.active:
            return None
        if not spec.training.window.since_change:
            core.stop_recovery(state, "training.window.since_change was turned off")
            return None
        trigger = None
        if version is not None and (recovery.rows_version is None or version > recovery.rows_version):
            rows_after = await asyncio.to_thread(self.repo.rows_since, spec.name, version, recovery.change_at)
            trigger = core.on_rows_after_change(state, version, rows_after, self.clock())
        elif not announce:
            return None
        if recovery.waiting_rows:
            log.info("%s: drift run %s", spec.name, core.waiting_reason(recovery))
        elif recovery.steps == 0:
            log.info(
                "%s: %d labelled rows after the change at %s: the drift run may start",
                spec.name,
                recovery.rows_after,
                recovery.change_at.isoformat(timespec="seconds"),
            )
        return trigger

    def _observe(self, model: str, state: core.TrainerState) -> None:
        self.metrics.pending.labels(model).set(len(state.pending))
        self.metrics.waiting_rows.labels(model).set(state.recovery.waiting_rows if state.recovery else 0)

    def stop(self) -> None:
        """Stop starting runs (a run in progress finishes)."""
        self._stopping.set()
        self._wake.set()

    async def work(self) -> None:
        """Start runs when they are due, one at a time, until :meth:`stop`."""
        while not self._stopping.is_set():
            try:
                await self._work_once()
            except (StoreError, OSError) as err:
                log.warning("trainer loop: store unavailable (%s); retrying", err)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.tick_s)
            except TimeoutError:
                pass

    async def _work_once(self) -> None:
        for model in await asyncio.to_thread(self.states.models):
            if self._stopping.is_set():
                return
            spec = await self._spec(model)
            if spec is None:
                continue
            state = await asyncio.to_thread(self.states.load, model)
            now = self.clock()
            if state.running is not None:  # a crash interrupted this run: run it again under the same id
                await self._run(spec, state, state.running, state.running_covers, resumed=True)
                continue
            last = state.run_ended_at[-1] if state.run_ended_at else None
            changed = core.on_schedule(state, now, spec.triggers, last) is not None
            if state.recovery is not None and state.recovery.active:
                if not spec.training.window.since_change:
                    core.stop_recovery(state, "training.window.since_change was turned off")
                    changed = True
                else:  # a version whose datasets event went to another replica, or was not consumed yet
                    latest = await asyncio.to_thread(self.repo.latest_version, model)
                    if latest is not None and latest != state.recovery.rows_version:
                        step = await self._count_after_change(spec, state, latest)
                        if step is not None:
                            self.metrics.triggers.labels(model, step.kind).inc()
                            log.info("%s: trigger %s (%s)", model, step.kind, step.detail)
                        changed = True
            if changed:
                await asyncio.to_thread(self.states.save, model, state)
            decision = core.decide(state, now, spec.triggers)
            self._observe(model, state)
            if decision.run:
                self._deferred.pop(model, None)
                run_id = uuid.uuid4().hex
                covers = core.start_run(state, run_id)
                await asyncio.to_thread(self.states.save, model, state)
                await self._run(spec, state, run_id, covers, resumed=False)
            elif decision.retry_at is not None:
                # Each trigger is counted once when first deferred: those held back already by
                # the same reason are not counted again, one arriving meanwhile is.
                reason, counted = self._deferred.get(model, ("", 0))
                fresh = len(state.pending) - (counted if reason == decision.reason else 0)
                if fresh > 0:
                    self._deferred[model] = (decision.reason, len(state.pending))
                    self.metrics.suppressed.labels(model).inc(fresh)
                    state.suppressed += fresh
                    await asyncio.to_thread(self.states.save, model, state)
                    log.info(
                        "%s: %d trigger(s) deferred: %s; next run at %s",
                        model,
                        fresh,
                        decision.reason,
                        decision.retry_at.isoformat(timespec="seconds"),
                    )

    async def _run(
        self, spec: ModelSpec, state: core.TrainerState, run_id: str, covers: list[core.Trigger], resumed: bool
    ) -> None:
        model = spec.name
        if resumed and state.running_dataset_version is not None:
            dataset_version: int | None = state.running_dataset_version
        else:  # the newest data, even if its datasets event has not reached this replica yet
            dataset_version = await asyncio.to_thread(self.repo.latest_version, model)
            state.running_dataset_version = dataset_version
            await asyncio.to_thread(self.states.save, model, state)
        if dataset_version is None:  # no data yet: put the triggers back and wait for a dataset
            state.running, state.running_covers = None, []
            state.pending = [*covers, *state.pending]
            await asyncio.to_thread(self.states.save, model, state)
            return
        kind = core.describe_triggers(covers)
        first = next((t for t in covers if t.kind == kind), None)
        since = state.running_since
        recovery = state.recovery
        if recovery is None or recovery.event_id != state.running_recovery:
            recovery = None
        rows_after = None
        if since is not None:
            rows_after = await asyncio.to_thread(self.repo.rows_since, model, dataset_version, since)
        trigger = core.describe_run(covers, recovery, rows_after)
        log.info(
            "%s: %s run %s on dataset v%d: %s (%s)",
            model,
            "resuming" if resumed else "starting",
            run_id[:8],
            dataset_version,
            trigger,
            ", ".join(t.detail or t.kind for t in covers),
        )
        with self.metrics.run_seconds.labels(model).time():
            result = await asyncio.to_thread(
                train,
                spec,
                self.repo,
                self.registry,
                dataset_version,
                run_id,
                trigger,
                first.event_id if first else None,
                since,
            )
        superseded = core.superseded_by(state.recovery, state.running_drift)
        await self.report(spec, result, superseded)
        rows = None
        if result.error is None:
            manifest = await asyncio.to_thread(self.repo.manifest, model, dataset_version)
            rows = manifest.rows_total
        core.finish_recovery_step(
            state,
            result.window_rows or 0,
            result.passed,
            result.error,
            result.transient,
            spec.training.window.last_rows,
        )
        core.finish_run(state, self.clock(), rows)
        if result.transient:  # store or broker trouble: the same triggers run again after the cooldown
            state.pending = [*covers, *state.pending]
        if recovery is not None:
            self._log_recovery(model, recovery)
            if recovery.active:  # rows that arrived during the run may already make the next step due
                recovery.rows_version = None  # recount, now that the step has moved the doubling point
                latest = await asyncio.to_thread(self.repo.latest_version, model)
                step = await self._count_after_change(spec, state, latest)
                if step is not None:
                    self.metrics.triggers.labels(model, step.kind).inc()
                    log.info("%s: trigger %s (%s)", model, step.kind, step.detail)
        await asyncio.to_thread(self.states.save, model, state)
        self._observe(model, state)
        self.results.append(result)

    @staticmethod
    def _log_recovery(model: str, recovery: core.Recovery) -> None:
        if recovery.stopped is not None:
            log.info(
                "%s: recovery after the change at %s ended: %s",
                model,
                recovery.change_at.isoformat(timespec="seconds"),
                recovery.stopped,
            )
        elif recovery.steps:
            log.info(
                "%s: recovery step %d done on %d rows; step %d when %d labelled rows exist after the change",
                model,
                recovery.steps,
                recovery.rows_used,
                recovery.steps + 1,
                recovery.next_rows,
            )

    async def report(self, spec: ModelSpec, result: RunResult, superseded: str | None = None) -> None:
        """Publish the run's outcome, and offer a passed candidate for rollout.

        ``superseded`` (why the run's window is out of date: a drift arrived while it ran) keeps
        a passed candidate from rollout; the reason is added to the published gate reasons.
        """
        model = spec.name
        outcome = "failed" if result.error else ("passed" if result.passed else "rejected")
        self.metrics.runs.labels(model, outcome).inc()
        for phase, seconds in result.timings.items():
            self.metrics.phase_seconds.labels(model, phase).set(seconds)
        card = result.card
        gate = result.gate
        if superseded is not None and result.passed:
            gate = GateVerdict(passed=gate.passed, reasons=[*gate.reasons, f"not rolled out: {superseded}"])
        await self.publisher.publish(
            TrainingCompleted(
                model=model,
                version=card.version if card else None,
                trigger=result.trigger,
                trigger_event_id=_uuid_or_none(result.trigger_event_id),
                dataset_version=result.dataset_version,
                metrics=result.metrics,
                champion_metrics=result.champion_metrics,
                gate=gate,
                artifact_key=card.artifact_key if card else None,
                sha256=card.artifact_sha256 if card else None,
            )
        )
        log.info(
            "%s: run %s %s%s: %s",
            model,
            result.run_id[:8],
            outcome,
            f" (v{card.version})" if card else "",
            "; ".join(gate.reasons),
        )
        if card is not None and result.passed and superseded is None:
            await self.offer(spec, card.version, result)

    async def offer(self, spec: ModelSpec, version: int, result: RunResult) -> None:
        """Roll a passed candidate out: production if first or ``direct``, else canary or shadow."""
        model = spec.name
        aliases = await asyncio.to_thread(self.registry.aliases, model)
        champion = aliases.get(PRODUCTION)
        strategy = "direct" if champion is None else spec.deployment.strategy
        target: Alias = {"direct": PRODUCTION, "canary": CANARY, "shadow": SHADOW}[strategy]
        if aliases.get(target) == version or champion == version:
            return  # already offered (a run resumed after a crash)
        reason = "; ".join(result.gate.reasons)
        if strategy == "direct":
            action, traffic = "promoted", 1.0
            reason = ("first version of the model; " if champion is None else "direct rollout; ") + reason
        elif strategy == "canary":
            action, traffic = "canary_started", spec.deployment.canary_traffic
        else:
            action, traffic = "shadow_started", 0.0
        await asyncio.to_thread(self.registry.set_alias, model, target, version, ACTOR, reason)
        await self.publisher.publish(
            DeploymentChanged(
                model=model,
                action=action,  # type: ignore[arg-type]
                version=version,
                previous_version=champion,
                traffic=traffic,
                reason=reason,
                actor=ACTOR,
            )
        )


def _to_datetime(value: np.datetime64) -> datetime:
    """A record time from a dataset's ``occurred_at`` column (UTC) as an aware datetime."""
    return EPOCH + timedelta(microseconds=int(value.astype("datetime64[us]").astype(np.int64)))


def _uuid_or_none(value: str | None) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
