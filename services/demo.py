"""``driftloop demo``: the closed loop on the local stack, from nothing to recovery after drift.

1. **Bootstrap.** A spec for a River SEA stream is applied; labelled records of the first
   concept are published to ``annotations`` — with resends, records that break the spec and
   undecodable bytes, which ingest must skip, reject and dead-letter — until the trainer has
   put a first model in production.
2. **Serving.** The stream goes on as traffic: every event is sent to the inference service
   (Open Inference Protocol V2) and its ground truth follows on ``annotations`` with the
   inference id, a moment later. The monitor joins the two.
3. **Drift.** Half-way the labelling rule switches (SEA variant 0 → 3). The monitor detects
   the concept drift, the trainer retrains on the new regime, the gate passes the candidate
   to a canary, the monitor judges it on live labels and promotes it (or rolls it back).
4. **Summary.** Accuracy before the drift, right after it and after recovery, detection delay
   and drift-to-new-champion time; the monitor's HTML report and a PNG of accuracy over time
   are written under ``<data-dir>/results/<model>/``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from river.datasets import synth

from services.demo_summary import LoopEvent, LoopFigures, Served, figures, new_champion, plot, to_json
from services.stack import LocalStack
from shared import topics
from shared.bus import Delivery, KafkaOptions, Publisher, Subscriber
from shared.datasets import DatasetRepository
from shared.events import (
    AnnotationRejected,
    AnnotationSubmitted,
    DeadLetter,
    DeploymentChanged,
    DriftDetected,
    FeatureValue,
    Target,
    TrainingCompleted,
    decode_as,
)
from shared.registry import Registry, headline
from shared.spec import apply_spec, parse_spec
from shared.store import FileStore

log = logging.getLogger(__name__)

Sample = tuple[dict[str, FeatureValue], Target]
"""One labelled event of a stream: features by name, and the label (a class, or a number)."""
OperatorAction = Literal["promote", "canary"]
"""How an operator rolls out a version trained by hand (:attr:`DemoPlan.operator_action`)."""

LOOP_SPEC = """
name: {model}
features: [@FEATURES@]
label: {{values: [@LABELS@]}}
validation: {{min_confidence: 0.6, max_rejection_rate: 0.2, label_shift_alert: 0.15}}
training:
  estimator: @ESTIMATOR@
  window: {{last_rows: 20000, since_change: true, min_rows_after_change: 600}}
  holdout: 0.25
  seed: 7
triggers: {{on_drift: true, new_labels: null, cooldown: 5s, max_runs_per_hour: 60}}
gate: {{metric: accuracy, min: 0.6, min_delta_vs_champion: 0.005}}
deployment:
  strategy: canary
  canary_traffic: 0.5
  promote_after: {{labelled_samples: 300, max_error_delta: 0.0}}
  rollback_on: {{error_increase: 0.05}}
monitoring: {{concept_detector: ADWIN, confirmation_samples: 200, alarm_cooldown: 2m}}
"""
"""The spec of every loop scenario; YAML braces doubled for :attr:`Scenario.spec_text`'s
``format(model=...)``; :func:`loop_spec` fills in @FEATURES@, @LABELS@ and @ESTIMATOR@."""


def loop_spec(features: Sequence[tuple[str, float, float]], estimator: str) -> str:
    """A loop scenario's spec: its features with their ranges, and its estimator."""
    declared = ", ".join(f"{{{{name: {name}, min: {low:g}, max: {high:g}}}}}" for name, low, high in features)
    return LOOP_SPEC.replace("@FEATURES@", declared).replace("@ESTIMATOR@", estimator).replace("@LABELS@", "0, 1")


SEA_SPEC = loop_spec([("x1", 0, 10), ("x2", 0, 10), ("x3", 0, 10)], "HistGradientBoostingClassifier")


@dataclass(frozen=True)
class Scenario:
    """A drifting stream and the spec of the model that learns it."""

    model: str
    spec: str
    """The model spec (YAML), ``{model}`` standing for the model name."""
    features: tuple[str, ...]
    before: Callable[[int, int], list[Sample]]
    """``(events, seed)`` → samples of the first regime."""
    after: Callable[[int, int], list[Sample]]
    """``(events, seed)`` → samples after the change."""
    description: str
    types: tuple[str, ...] = ()
    """Each feature's type (``shared.features``); empty: all numeric, served as one ``[1, F]`` tensor."""

    @property
    def spec_text(self) -> str:
        return self.spec.format(model=self.model)


def sea(events: int, variant: int, seed: int, noise: float = 0.0) -> list[Sample]:
    """``events`` samples of River's SEA generator: features x1..x3 in [0, 10] and the label of
    the variant's rule (x1 + x2 <= 8, 9, 7 or 9.5), flipped with probability ``noise``."""
    return [
        ({f"x{k + 1}": float(v) for k, v in x.items()}, int(y))
        for x, y in synth.SEA(variant=variant, noise=noise, seed=seed).take(events)
    ]


SEA_SWITCH = Scenario(
    model="sea-demo",
    spec=SEA_SPEC,
    features=("x1", "x2", "x3"),
    before=lambda n, seed: sea(n, variant=0, seed=seed),
    after=lambda n, seed: sea(n, variant=3, seed=seed),
    description="River SEA, labelling rule switching from variant 0 to 3",
)

EDUCATION = ("none", "high-school", "bachelor", "master", "doctorate")
CAR_MAKES = tuple(f"make-{c}" for c in "abcdefghijklmnopqrst")
LOAN_FEATURES: tuple[tuple[str, str, str], ...] = (
    ("salary", "numeric", "min: 0"),
    ("commission", "numeric", "min: 0"),
    ("age", "numeric", "min: 18, max: 100, allow_missing: true"),
    ("loan", "numeric", "min: 0"),
    ("house_years", "numeric", "min: 0, max: 40"),
    ("education", "categorical", "values: [" + ", ".join(EDUCATION) + "]"),
    ("car", "categorical", "allow_missing: true"),
    ("zipcode", "categorical", ""),
    ("has_commission", "boolean", ""),
    ("repaid_before", "boolean", ""),
)
"""The loan table: name, type and the rest of each feature's spec entry."""


def loan(
    events: int, function: int, seed: int, shifted: bool = False, missing: float = 0.05, tiers_with: int | None = None
) -> list[Sample]:
    """``events`` loan applications from River's Agrawal generator, as a real table holds them.

    Education level, car make and zip code are categories (Agrawal's integer codes mapped to
    names), two flags are booleans, ``age`` and ``car`` are missing in ``missing`` of the rows.
    The label is Agrawal's classification function ``function`` (with 5 % perturbation of the
    numbers). ``shifted`` changes who applies: applicants with a master's or a doctorate, and
    from zip codes Z4-Z9, become the majority (a covariate shift the monitor sees in the
    category shares). With ``tiers_with`` the label is one of three tiers (:data:`TIERS`): how
    many of the two rules, ``function`` and ``tiers_with``, approve the application.
    """
    rng = random.Random(seed + 1000)
    out: list[Sample] = []
    rule = synth.Agrawal(classification_function=function, seed=seed, perturbation=0.05)
    second = synth.Agrawal(classification_function=tiers_with or 0, seed=seed, perturbation=0.05)
    for (x, y), (_, y2) in zip(rule, second, strict=False):  # same seed: the same applications
        if shifted and (
            (int(x["elevel"]) < 3 and rng.random() < 0.7) or (int(x["zipcode"]) < 3 and rng.random() < 0.6)
        ):
            continue
        row: dict[str, FeatureValue] = {
            "salary": round(float(x["salary"]), 2),
            "commission": round(float(x["commission"]), 2),
            "age": None if rng.random() < missing else float(x["age"]),
            "loan": round(float(x["loan"]), 2),
            "house_years": float(x["hyears"]),
            "education": EDUCATION[int(x["elevel"])],
            "car": None if rng.random() < missing else CAR_MAKES[int(x["car"]) - 1],
            "zipcode": f"Z{int(x['zipcode']) + 1}",
            "has_commission": float(x["commission"]) > 0,
            "repaid_before": rng.random() < 0.7,
        }
        out.append((row, int(y) if tiers_with is None else TIERS[int(y) + int(y2)]))
        if len(out) == events:
            break
    return out


TIERS = ("decline", "review", "approve")
"""The three classes of the tiered loan scenario."""


def _loan_spec(labels: Sequence[str]) -> str:
    declared = ", ".join(
        f"{{{{name: {name}, type: {kind}{', ' + rest if rest else ''}}}}}" for name, kind, rest in LOAN_FEATURES
    )
    spec = LOOP_SPEC.replace("@FEATURES@", declared).replace("@ESTIMATOR@", "HistGradientBoostingClassifier")
    return spec.replace("@LABELS@", ", ".join(labels))


LOAN_SHIFT = Scenario(
    model="loan-demo",
    spec=_loan_spec(["0", "1"]),
    features=tuple(name for name, _, _ in LOAN_FEATURES),
    types=tuple(kind for _, kind, _ in LOAN_FEATURES),
    before=lambda n, seed: loan(n, function=2, seed=seed),
    after=lambda n, seed: loan(n, function=8, seed=seed, shifted=True),
    description="loan applications (River Agrawal): categories, flags and missing values; "
    "the applicant mix shifts and the approval rule changes",
)
LOAN_TIERS = Scenario(
    model="loan-tiers-demo",
    spec=_loan_spec(TIERS),
    features=LOAN_SHIFT.features,
    types=LOAN_SHIFT.types,
    before=lambda n, seed: loan(n, function=2, seed=seed, tiers_with=0),
    after=lambda n, seed: loan(n, function=8, seed=seed, shifted=True, tiers_with=0),
    description="loan applications in three tiers (decline / review / approve): categories, flags, missing "
    "values; the applicant mix shifts and one of the two approval rules changes",
)
REGIONS = ("north", "south", "east", "west", "centre", "harbour")
REGION_MINUTES: dict[bool, dict[str, float]] = {
    False: {"north": 0.0, "south": 4.0, "east": 2.0, "west": 6.0, "centre": -2.0, "harbour": 8.0},
    True: {"north": 0.0, "south": 4.0, "east": 2.0, "west": 6.0, "centre": 5.0, "harbour": 18.0},
}
"""Minutes each region adds to a delivery, before and after the change (the harbour bridge
closes and the centre becomes a low-traffic zone)."""
DELIVERY_FEATURES: tuple[tuple[str, str, str], ...] = (
    ("distance_km", "numeric", "min: 0"),
    ("parcels", "numeric", "min: 0"),
    ("hour", "numeric", "min: 0, max: 24"),
    ("traffic", "numeric", "min: 0, max: 1"),
    ("weight_kg", "numeric", "min: 0, allow_missing: true"),
    ("region", "categorical", "values: [" + ", ".join(REGIONS) + "]"),
    ("express", "boolean", ""),
)
"""The delivery table: name, type and the rest of each feature's spec entry."""


def delivery(
    events: int, seed: int, changed: bool = False, shifted: bool = False, missing: float = 0.05
) -> list[Sample]:
    """``events`` deliveries and how many minutes each took: a numeric target on a real table.

    River's Friedman generator gives the five numbers that matter (distance, parcels, hour,
    traffic, weight; ``missing`` of the weights are not recorded) and its noise; the minutes are
    twice Friedman's target plus what the region adds, less six for an express delivery. With
    ``changed`` the relation changes everywhere: Friedman's drifted concept (its global abrupt
    drift, ``gra``: other features matter, differently) and new region minutes
    (:data:`REGION_MINUTES`). With ``shifted`` only who orders changes (most deliveries go to
    the harbour and the west, and more are express): a covariate shift that a model trained on
    every region and both kinds of delivery handles without losing accuracy.
    """
    rng = random.Random(seed + 2000)
    position = (0, 10**9) if changed else (10**9, 2 * 10**9)
    generator = synth.FriedmanDrift(drift_type="gra", position=position, seed=seed)
    minutes = REGION_MINUTES[changed]
    out: list[Sample] = []
    for x, y in generator:
        if shifted and rng.random() < 0.6:
            region = rng.choice(("harbour", "west"))
            express = rng.random() < 0.7
        else:
            region = REGIONS[min(int(x[5] * len(REGIONS)), len(REGIONS) - 1)]
            express = x[6] < 0.3
        row: dict[str, FeatureValue] = {
            "distance_km": round(0.5 + 20.0 * x[0], 3),
            "parcels": round(10.0 * x[1], 3),
            "hour": round(24.0 * x[2], 3),
            "traffic": round(x[3], 4),
            "weight_kg": None if rng.random() < missing else round(30.0 * x[4], 3),
            "region": region,
            "express": express,
        }
        out.append((row, round(max(0.0, 8.0 + 2.0 * y + minutes[region] - (6.0 if express else 0.0)), 2)))
        if len(out) == events:
            break
    return out


REGRESSION_SPEC_LINES = (
    ("label: {{values: [@LABELS@]}}", "label: {{type: regression, min: 0}}"),
    (
        "gate: {{metric: accuracy, min: 0.6, min_delta_vs_champion: 0.005}}",
        "gate: {{metric: mae, min_delta_vs_champion: 0.05}}",
    ),
)
"""What a regression loop spec says instead: a number per record, gated on MAE (a candidate
must be 0.05 minutes better than the champion on the same holdout)."""


def _delivery_spec() -> str:
    declared = ", ".join(
        f"{{{{name: {name}, type: {kind}{', ' + rest if rest else ''}}}}}" for name, kind, rest in DELIVERY_FEATURES
    )
    spec = LOOP_SPEC.replace("@FEATURES@", declared).replace("@ESTIMATOR@", "HistGradientBoostingRegressor")
    for classification, regression in REGRESSION_SPEC_LINES:
        spec = spec.replace(classification, regression)
    return spec


DELIVERY_CHANGE = Scenario(
    model="delivery-demo",
    spec=_delivery_spec(),
    features=tuple(name for name, _, _ in DELIVERY_FEATURES),
    types=tuple(kind for _, kind, _ in DELIVERY_FEATURES),
    before=lambda n, seed: delivery(n, seed=seed),
    after=lambda n, seed: delivery(n, seed=seed, changed=True),
    description="delivery times in minutes (River Friedman on a table with a region, a flag and missing "
    "weights); the relation changes everywhere",
)
SCENARIOS: dict[str, Scenario] = {
    "sea": SEA_SWITCH,
    "loan": LOAN_SHIFT,
    "loan-tiers": LOAN_TIERS,
    "delivery": DELIVERY_CHANGE,
}
"""The demo's scenarios by the name ``driftloop demo --scenario`` takes."""

POISON = (b"{not json", b"\xff\xfe", b"[1, 2, 3]")


def labelled_records(model: str, samples: list[Sample], prefix: str) -> list[AnnotationSubmitted]:
    """Labelled records of an annotation tool."""
    return [
        AnnotationSubmitted(model=model, record_id=f"{prefix}-{i}", features=x, label=y, annotator="generator")
        for i, (x, y) in enumerate(samples)
    ]


def broken_records(scenario: Scenario, count: int, seed: int = 11) -> list[AnnotationSubmitted]:
    """Records an annotation tool might really send: out of range, unsure, unknown label (text
    for a regression), a missing feature; for a typed table also a string where a number belongs
    and a category outside the declared ones (where the spec declares some)."""
    rng = random.Random(seed)
    features = scenario.features
    base, good = scenario.before(1, seed)[0]
    bad: Target = 7 if isinstance(good, int) else "no-such-class"  # a number where a class belongs, or text
    numeric = [f for f in features if isinstance(base[f], float)]  # present, not a flag
    kinds: list[tuple[dict[str, FeatureValue], Target, float]] = [
        ({**base, numeric[0]: -1000.0}, good, 1.0),
        (base, good, 0.3),
        (base, bad, 1.0),
        ({k: v for k, v in base.items() if k != features[0]}, good, 1.0),
    ]
    if scenario.types:
        kinds.append(({**base, numeric[-1]: "n/a"}, good, 1.0))
        declared = next((f.name for f in parse_spec(scenario.spec_text).features if f.values), None)
        if declared is not None:  # a category outside the declared ones
            kinds.append(({**base, declared: "no-such-category"}, good, 1.0))
    out = []
    for i in range(count):
        values, label, confidence = kinds[i % len(kinds)]
        jittered = {k: v + rng.random() * 0.01 if isinstance(v, float) else v for k, v in values.items()}
        out.append(
            AnnotationSubmitted(
                model=scenario.model,
                record_id=f"broken-{i}",
                features=jittered,
                label=label,
                confidence=confidence,
                annotator="careless-tool",
            )
        )
    return out


def reset_demo_model(store: FileStore, model: str) -> None:
    """Forget everything of the demo model from earlier runs, so every run starts from nothing
    (other models are untouched)."""
    for prefix in ("datasets", "registry", "trainer", "monitor", "demo"):
        for key in store.list(f"{prefix}/{model}/"):
            store.delete(key)


@dataclass
class DemoPlan:
    """How big the run is."""

    bootstrap: int = 2000
    """Labelled records published before any serving."""
    before_drift: int = 3000
    """Served events of the first concept."""
    after_promotion: int = 2000
    """Served events after a new champion, to measure recovery."""
    max_after_drift: int = 16000
    """Served events after the switch before giving up on a new champion."""
    rate: float = 300.0
    """Served events per second (the loop reacts in wall-clock time)."""
    batch: int = 50
    """Events served concurrently; their ground truth follows as one batch."""
    scenario: Scenario = SEA_SWITCH
    faults: bool = True
    """Also publish resends, records that break the spec and undecodable bytes in the bootstrap."""
    seed: int = 7
    operator_at: int | None = None
    """At this served event an operator trains a version by hand (``driftloop models train
    --no-publish``) and rolls it out by :attr:`operator_action`, as one does before a change
    nobody saw coming."""
    operator_action: OperatorAction = "promote"
    """What the operator does with the version: ``promote`` it (``models promote``), or start it
    as a ``canary`` for the monitor to judge (``models canary``), which a retrain on the same
    concept would not get from the gate (it rarely beats production by ``min_delta_vs_champion``)."""

    def streams(self) -> tuple[list[Sample], list[Sample]]:
        """The bootstrap records and the served stream (switching regime at ``before_drift``),
        exactly as the run uses them — for comparing other learners on the identical stream."""
        bootstrap = self.scenario.before(self.bootstrap, self.seed)
        stream = self.scenario.before(self.before_drift, self.seed + 10) + self.scenario.after(
            self.max_after_drift, self.seed + 11
        )
        return bootstrap, stream


class Watcher:
    """Collects the loop's events (drift, training, deployments) for the demo model."""

    def __init__(self, model: str, options: KafkaOptions, publisher: Publisher) -> None:
        self.model = model
        self.timeline: list[LoopEvent] = []
        self.origin: float | None = None
        """The demo's clock starts when serving does; events before it are at second 0."""
        self.served = 0
        """Events served so far: each loop event is stamped with its position in the stream."""
        self.subscriber: Subscriber[Any] = Subscriber(
            options,
            f"driftloop-demo-{uuid.uuid4().hex[:8]}",
            [topics.DRIFT, topics.TRAINING_COMPLETED, topics.DEPLOYMENTS],
            self.on_event,
            publisher,
        )

    async def on_event(self, event: Any, delivery: Delivery) -> None:
        if event.model != self.model:
            return
        seconds = 0.0 if self.origin is None else time.monotonic() - self.origin
        index = self.served
        if isinstance(event, DriftDetected):
            where = f" on {event.feature}" if event.feature else ""
            text = (
                f"{event.kind} drift{where} ({event.detector}, {event.severity}, ~{event.change_samples} samples ago)"
            )
            self.timeline.append(LoopEvent(seconds, index, "drift", event.model_version, text))
        elif isinstance(event, TrainingCompleted):
            verdict = "passed" if event.gate.passed else "rejected"
            text = f"v{event.version} trained ({event.trigger}); gate {verdict}"
            self.timeline.append(LoopEvent(seconds, index, "training", event.version, text))
        elif isinstance(event, DeploymentChanged):
            text = f"v{event.version} {event.action.replace('_', ' ')} by {event.actor}: {event.reason}"
            self.timeline.append(LoopEvent(seconds, index, event.action, event.version, text))
        else:
            return
        log.info("event %d: %s", index, self.timeline[-1].text)  # one line above the progress bars

    def seen(self, kind: str, version: int | None = None) -> bool:
        return any(e.kind == kind and (version is None or e.version == version) for e in self.timeline)


async def _bootstrap(
    stack: LocalStack, console: Console, publisher: Publisher, options: KafkaOptions, plan: DemoPlan
) -> dict[str, Any]:
    """Phase 1: labelled data in (with what an upstream gets wrong), a first model out."""
    store = FileStore(stack.store_root)
    repo = DatasetRepository(store)
    scenario = plan.scenario
    model = scenario.model
    records = labelled_records(model, plan.streams()[0], "boot")
    broken = broken_records(scenario, max(6, plan.bootstrap // 50)) if plan.faults else []
    resent = records[: plan.bootstrap // 20] if plan.faults else []  # an upstream retry: stored once
    poison = POISON if plan.faults else ()
    outgoing = records + broken + resent
    rejected: Counter[str] = Counter()
    dead: list[DeadLetter] = []

    async def on_rejected(event: AnnotationRejected, delivery: Delivery) -> None:
        if event.model == model:
            rejected.update(reason.rule for reason in event.reasons)

    async def on_dead(letter: DeadLetter, delivery: Delivery) -> None:
        dead.append(letter)

    watchers: list[Subscriber[Any]] = [
        Subscriber(options, "driftloop-demo-rejected", [topics.ANNOTATIONS_REJECTED], on_rejected, publisher),
        Subscriber(
            options,
            "driftloop-demo-dlq",
            [topics.dlq(topics.ANNOTATIONS)],
            on_dead,
            publisher,
            lambda topic, data: decode_as(DeadLetter, data),
        ),
    ]
    watching = [asyncio.create_task(w.run()) for w in watchers]
    registry = Registry(store)
    try:
        with _progress(console) as progress:
            sending = progress.add_task("publishing labelled records", total=len(outgoing) + len(poison))
            for i in range(0, len(outgoing), 500):
                progress.advance(sending, await publisher.publish_many(outgoing[i : i + 500]))
            for raw in poison:
                await publisher.send(topics.ANNOTATIONS, raw, key=model.encode())
                progress.advance(sending)
            storing = progress.add_task("ingest: validate, dedupe, version", total=len(records))
            stored = 0
            async with asyncio.timeout(120):
                while stored < len(records) or sum(rejected.values()) < len(broken) or len(dead) < len(poison):
                    version = await asyncio.to_thread(repo.latest_version, model)
                    if version is not None:
                        stored = (await asyncio.to_thread(repo.manifest, model, version)).rows_total
                        progress.update(storing, completed=min(stored, len(records)))
                    await asyncio.sleep(0.2)
            training = progress.add_task("trainer: first model in production", total=1)
            async with asyncio.timeout(120):
                while (first := await asyncio.to_thread(registry.alias, model, "production")) is None:
                    await asyncio.sleep(0.2)
            progress.update(training, completed=1)
    finally:
        for watcher in watchers:
            watcher.stop()
        await asyncio.gather(*watching, return_exceptions=True)
    data = await asyncio.to_thread(repo.load, model)
    card = await asyncio.to_thread(registry.card, model, first)
    return {
        "first_version": first,
        "records published (incl. resends)": len(outgoing),
        "rows stored once each": f"{len(set(data.record_ids.tolist()))} of {len(data.record_ids)}",
        "resends skipped": len(resent),
        "rejected by rule": dict(sorted(rejected.items())),
        "dead-lettered": len({(d.source.partition, d.source.offset) for d in dead}),
        "first model": f"v{first} {card.estimator}, holdout {headline(card.metrics, 3)}",
        "_ok": len(data.record_ids) == len(set(data.record_ids.tolist())) == len(records)
        and sum(rejected.values()) == len(broken)
        and len({(d.source.partition, d.source.offset) for d in dead}) == len(poison),
    }


def v2_inputs(scenario: Scenario, x: dict[str, FeatureValue]) -> list[dict[str, Any]]:
    """One event as Open Inference Protocol V2 inputs: one ``[1, F]`` FP64 tensor for an
    all-numeric model; for a typed one a tensor per feature — FP64, BYTES for a category, BOOL
    for a flag, and a missing value as an empty BYTES element."""
    if not scenario.types:
        return [
            {
                "name": "input",
                "shape": [1, len(scenario.features)],
                "datatype": "FP64",
                "data": [x[f] for f in scenario.features],
            }
        ]
    inputs = []
    for name, kind in zip(scenario.features, scenario.types, strict=True):
        value = x.get(name)
        if value is None:
            inputs.append({"name": name, "shape": [1], "datatype": "BYTES", "data": [""]})
        elif kind == "boolean":
            inputs.append({"name": name, "shape": [1], "datatype": "BOOL", "data": [value]})
        elif kind == "categorical":
            inputs.append({"name": name, "shape": [1], "datatype": "BYTES", "data": [value]})
        else:
            inputs.append({"name": name, "shape": [1], "datatype": "FP64", "data": [value]})
    return inputs


async def _serve(
    client: httpx.AsyncClient, scenario: Scenario, run: str, start: int, samples: list[Sample]
) -> list[tuple[Served, AnnotationSubmitted]]:
    """Send a batch of events to inference; pair each answer with its ground truth to publish."""
    model = scenario.model

    async def one(i: int, x: dict[str, FeatureValue], y: Target) -> tuple[Served, AnnotationSubmitted]:
        inference_id = f"{run}-{start + i}"
        body = {"id": inference_id, "inputs": v2_inputs(scenario, x)}
        response = await client.post(f"/v2/models/{model}/infer", json=body)
        response.raise_for_status()
        answer = response.json()
        first = answer["outputs"][0]
        error = abs(float(first["data"][0]) - float(y)) if first["name"] == "prediction" else None
        served = Served(
            start + i,
            error is None and str(first["data"][0]) == str(y),
            int(answer["model_version"]),
            str(answer["parameters"]["variant"]),
            error,
        )
        truth = AnnotationSubmitted(
            model=model,
            record_id=f"{run}-truth-{start + i}",
            features=x,
            label=y,
            confidence=1.0,
            annotator="ground truth",
            inference_id=inference_id,
        )
        return served, truth

    return list(await asyncio.gather(*(one(i, x, y) for i, (x, y) in enumerate(samples))))


async def _loop(
    stack: LocalStack, console: Console, publisher: Publisher, watcher: Watcher, plan: DemoPlan, first: int
) -> tuple[list[Served], int, float]:
    """Phases 2 and 3: traffic with ground truth, the concept switch, until recovery is measured."""
    run = uuid.uuid4().hex[:6]
    scenario = plan.scenario
    stream = plan.streams()[1]
    served: list[Served] = []
    started = watcher.origin = time.monotonic()
    switch_seconds = 0.0
    promoted_at: int | None = None
    operated = False
    url = stack.endpoints()["services"]["inference"]
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        with _progress(console) as progress:
            task = progress.add_task("serving, labels following", total=len(stream))
            for start in range(0, len(stream), plan.batch):
                if start >= plan.before_drift and not switch_seconds:
                    switch_seconds = time.monotonic() - started
                    progress.update(task, description="concept switched: waiting for the loop")
                if plan.operator_at is not None and start >= plan.operator_at and not operated:
                    operated = True
                    await asyncio.to_thread(OPERATOR_ACTIONS[plan.operator_action], stack, scenario.model)
                batch_started = time.monotonic()
                answered = await _serve(client, scenario, run, start, stream[start : start + plan.batch])
                served += [s for s, _ in answered]
                watcher.served = len(served)
                await publisher.publish_many([t for _, t in answered])
                progress.update(task, completed=len(served), description=_phase(watcher, first, promoted_at))
                if promoted_at is None:
                    promoted = new_champion(watcher.timeline, plan.before_drift, first)
                    if promoted is not None and start >= plan.before_drift:
                        promoted_at = len(served)
                        progress.update(task, total=min(len(stream), promoted_at + plan.after_promotion))
                if promoted_at is not None and len(served) >= promoted_at + plan.after_promotion:
                    break
                await asyncio.sleep(max(0.0, plan.batch / plan.rate - (time.monotonic() - batch_started)))
    await asyncio.sleep(1.0)  # the last events of the loop
    return served, plan.before_drift, switch_seconds


def _driftloop(stack: LocalStack, *args: str) -> str:
    """Run ``driftloop ARGS`` against the stack as an operator's terminal would; its stdout."""
    env = {**os.environ, "DRIFTLOOP_DATA_DIR": str(stack.data_dir)}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", *args], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"driftloop {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def _train_now(stack: LocalStack, model: str) -> int:
    """``models train --no-publish``: a version registered and offered to nobody; returns it."""
    return int(json.loads(_driftloop(stack, "models", "train", model, "--no-publish", "--json"))["version"])


def train_and_promote(stack: LocalStack, model: str) -> int:
    """What an operator does from a terminal: ``models train`` (register only), then
    ``models promote`` of the new version; returns it."""
    version = _train_now(stack, model)
    _driftloop(stack, "models", "promote", model, str(version), "--reason", "operator: train now")
    return version


def train_and_canary(stack: LocalStack, model: str) -> int:
    """``models train`` (register only), then ``models canary`` of the new version beside
    production, for the monitor to judge on live labels; returns it."""
    version = _train_now(stack, model)
    _driftloop(stack, "models", "canary", model, str(version), "--reason", "operator: train now, canary")
    return version


OPERATOR_ACTIONS: dict[OperatorAction, Callable[[LocalStack, str], int]] = {
    "promote": train_and_promote,
    "canary": train_and_canary,
}
"""The operator's hand at :attr:`DemoPlan.operator_at`, by :attr:`DemoPlan.operator_action`."""


def _phase(watcher: Watcher, first: int, promoted_at: int | None) -> str:
    if promoted_at is not None:
        return "new champion: measuring recovery"
    if watcher.seen("canary_started"):
        return "canary: monitor judging on live labels"
    if any(e.kind == "training" and e.version != first for e in watcher.timeline):
        return "retrained: gate"
    if watcher.seen("drift"):
        return "drift detected: retraining"
    return "serving, labels following"


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


async def run_loop(
    stack: LocalStack, console: Console, plan: DemoPlan
) -> tuple[dict[str, Any], LoopFigures, list[Served], list[LoopEvent]]:
    """The whole scenario on a started stack: bootstrap, serving through the drift, figures, report."""
    model = plan.scenario.model
    store = FileStore(stack.store_root)
    reset_demo_model(store, model)
    apply_spec(store, plan.scenario.spec_text, source=f"{plan.scenario.description} spec")
    options = KafkaOptions(bootstrap=stack.broker.bootstrap, client_id="driftloop-demo", idempotence=False)
    publisher = Publisher(options)
    await publisher.start(max_wait_s=10)
    watcher = Watcher(model, options, publisher)
    watching = asyncio.create_task(watcher.subscriber.run())
    try:
        bootstrap = await _bootstrap(stack, console, publisher, options, plan)
        first = int(bootstrap["first_version"])
        served, switch_index, switch_seconds = await _loop(stack, console, publisher, watcher, plan, first)
    finally:
        watcher.subscriber.stop()
        await asyncio.gather(watching, return_exceptions=True)
        await publisher.stop()
    registry = Registry(store)
    versions = []
    for version in await asyncio.to_thread(registry.versions, model):
        card = await asyncio.to_thread(registry.card, model, version)
        verdict = "passed" if card.gate.passed else "rejected"
        versions.append(f"v{version} ({card.trigger.split(' (')[0]}, {card.training_rows} rows, gate {verdict})")
    result = figures(served, watcher.timeline, switch_index, switch_seconds, first, versions)
    out = stack.data_dir / "results" / model
    measure = "error" if parse_spec(plan.scenario.spec_text).regression else "accuracy"
    title = f"{model}: served {measure} through a drift"
    plot(served, watcher.timeline, switch_index, out / "accuracy.png", title)
    monitor = stack.endpoints()["services"].get("monitor")
    if monitor:
        async with httpx.AsyncClient(base_url=monitor, timeout=30) as client:
            response = await client.get(f"/report/{model}")
            if response.status_code == 200:
                (out / "report.html").write_text(response.text)
    (out / "timeline.json").write_text(json.dumps([e.__dict__ for e in watcher.timeline], indent=2))
    return bootstrap, result, served, watcher.timeline


def run_demo(stack: LocalStack, console: Console, plan: DemoPlan | None = None) -> int:
    """Run the scenario on a started stack, print and store its summary; 0 when every check passes."""
    plan = plan or DemoPlan()
    missing = [name for name in ("ingest", "trainer", "inference", "monitor") if name in stack.missing]
    if missing:
        console.print(f"[red]the loop needs every service; missing: {', '.join(missing)}[/red]")
        return 1
    bootstrap, result, _, _ = asyncio.run(run_loop(stack, console, plan))
    ingest_ok = bool(bootstrap.pop("_ok"))
    bootstrap.pop("first_version")
    model = plan.scenario.model
    out = stack.data_dir / "results" / model
    summary = {"ingest": bootstrap, "loop": to_json(result)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))

    table = Table(title=f"driftloop demo — {model}: {plan.scenario.description}, switch at event {result.switch_index}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in bootstrap.items():
        table.add_row(name, str(value))
    for name, value in result.rows():
        table.add_row(name, value)
    console.print(table)
    checks = {"ingest kept every record once, rejected and dead-lettered the bad ones": ingest_ok, **result.checks()}
    for name, ok in checks.items():
        console.print(f"  {'[green]✓' if ok else '[red]✗'}[/] {name}")
    console.print(f"report: {out / 'report.html'}\nplot:   {out / 'accuracy.png'}\nsummary: {out / 'summary.json'}")
    passed = all(checks.values())
    console.print("[green]all checks passed[/green]" if passed else "[red]some checks failed[/red]")
    return 0 if passed else 1
