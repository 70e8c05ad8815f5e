"""``driftloop models list|show|train|canary|promote|rollback``: the registry from the command line."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import hmac
import json
import uuid
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.table import Table

from services.console import emit_json, settings_from
from shared.bus import KafkaOptions, Publisher
from shared.config import DriftloopSettings, build_store
from shared.datasets import DatasetRepository
from shared.errors import Forbidden, InvalidInput, ModelNotFound
from shared.events import DeploymentChanged
from shared.registry import ALIASES, CANARY, PRODUCTION, AliasChange, Registry, headline
from shared.spec import SpecCatalog


def _check_token(settings: DriftloopSettings, given: str | None) -> None:
    expected = settings.admin_token
    if expected is None:
        return
    if given is None or not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise Forbidden("this registry requires an admin token: pass --token (DRIFTLOOP_ADMIN_TOKEN is set)")


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def cmd_models_list(args: argparse.Namespace) -> int:
    """Every registered model with its newest version and its aliases."""
    registry = Registry(build_store(settings_from(args)))
    rows: list[dict[str, Any]] = []
    for model in registry.models():
        latest = registry.latest_version(model)
        card = registry.card(model, latest) if latest else None
        rows.append(
            {
                "model": model,
                "versions": len(registry.versions(model)),
                "latest": latest,
                "aliases": registry.aliases(model),
                "latest_metrics": card.metrics if card else {},
                "latest_gate": card.gate.passed if card else None,
            }
        )
    if args.json:
        emit_json(rows)
        return 0
    table = Table(title="models")
    for column in ("model", "versions", "latest", "aliases", "latest holdout", "latest gate"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["model"],
            str(row["versions"]),
            str(row["latest"]),
            ", ".join(f"{k}=v{v}" for k, v in row["aliases"].items()) or "-",
            headline(row["latest_metrics"]),
            {True: "passed", False: "rejected", None: "-"}[row["latest_gate"]],
        )
    Console().print(table if rows else "no models registered yet")
    return 0


def cmd_models_show(args: argparse.Namespace) -> int:
    """One version's model card (the production version by default, else the newest)."""
    registry = Registry(build_store(settings_from(args)))
    version = args.version or registry.alias(args.model, PRODUCTION) or registry.latest_version(args.model)
    if version is None:
        raise ModelNotFound(f"model {args.model!r} has no registered version")
    card = registry.card(args.model, version)
    if args.json:
        data: dict[str, Any] = json.loads(card.model_dump_json())
        data["aliases"] = registry.aliases(args.model)
        data["history"] = [json.loads(h.model_dump_json()) for h in registry.history(args.model)]
        emit_json(data)
        return 0
    console = Console()
    console.print(f"[bold]{card.model} v{card.version}[/bold]  aliases: {registry.aliases(args.model)}")
    table = Table(show_header=False)
    for name, value in (
        ("estimator", f"{card.estimator} {card.params} seed={card.seed}"),
        ("dataset", f"v{card.dataset_version} (manifest sha256 {card.dataset_manifest_sha256[:12]}…)"),
        ("rows", f"{card.training_rows} train, {card.holdout_rows} holdout"),
        ("metrics", json.dumps({k: round(v, 4) for k, v in card.metrics.items()})),
        (
            "champion",
            f"v{card.champion_version} {json.dumps({k: round(v, 4) for k, v in (card.champion_metrics or {}).items()})}"
            if card.champion_version
            else "-",
        ),
        ("gate", ("passed: " if card.gate.passed else "rejected: ") + "; ".join(card.gate.reasons)),
        ("trigger", f"{card.trigger} {card.trigger_event_id or ''}"),
        ("artifact", f"{card.artifact_key} sha256 {card.artifact_sha256[:12]}… opset {card.onnx_opset}"),
        ("training time", f"{card.training_seconds:.2f}s"),
        ("code", f"driftloop {card.code.package} {card.code.git_commit or ''}"),
    ):
        table.add_row(name, value)
    console.print(table)
    return 0


def _announce(
    settings: DriftloopSettings, model: str, action: str, change: AliasChange, previous: int | None, traffic: float
) -> None:
    """Tell every replica (inference, monitor) that an alias moved: production (``traffic``
    1.0) or a canary beside it (its share of requests)."""
    assert change.version is not None
    event = DeploymentChanged(
        model=model,
        action=action,  # type: ignore[arg-type]
        version=change.version,
        previous_version=previous,
        traffic=traffic,
        reason=change.reason,
        actor=change.actor,
    )

    async def publish() -> None:
        publisher = Publisher(KafkaOptions.from_settings(settings, "driftloop-cli"))
        await publisher.start(max_wait_s=15)
        try:
            await publisher.publish(event)
        finally:
            await publisher.stop()

    asyncio.run(publish())


def cmd_models_canary(args: argparse.Namespace) -> int:
    """Start a canary of VERSION beside production by hand, as the trainer does for a passed
    candidate of a ``canary`` spec: the monitor then judges it on live labels and promotes it
    or rolls it back by the spec's ``deployment`` rules."""
    settings = settings_from(args)
    _check_token(settings, args.token)
    store = build_store(settings)
    registry = Registry(store)
    registry.card(args.model, args.version)  # ModelNotFound names the registered versions
    production = registry.alias(args.model, PRODUCTION)
    if production is None:
        raise InvalidInput(
            f"{args.model}: no production version to judge a canary against; use `driftloop models promote`"
        )
    if args.version == production:
        raise InvalidInput(f"{args.model}: v{args.version} is already in production")
    spec = SpecCatalog(store).get(args.model)
    if spec is None:
        raise ModelNotFound(f"no spec is applied for model {args.model!r}; run `driftloop specs apply`")
    traffic = spec.deployment.canary_traffic  # what inference replicas send to a canary
    reason = args.reason or f"canary started by hand beside production v{production}"
    change = registry.set_alias(args.model, CANARY, args.version, _actor(), reason)
    _announce(settings, args.model, "canary_started", change, production, traffic)
    console = Console(stderr=True)
    replaced = (
        f" (replacing canary v{change.previous_version})" if change.previous_version not in (None, args.version) else ""
    )
    console.print(
        f"{args.model}: canary v{args.version} beside production v{production}{replaced}, "
        f"{traffic:.0%} of requests (the spec's deployment.canary_traffic)"
    )
    return 0


def cmd_models_promote(args: argparse.Namespace) -> int:
    """Make VERSION the production version on every inference replica."""
    settings = settings_from(args)
    _check_token(settings, args.token)
    registry = Registry(build_store(settings))
    previous = registry.alias(args.model, PRODUCTION)
    reason = args.reason or f"promoted by hand from v{previous}"
    change = registry.set_alias(args.model, PRODUCTION, args.version, _actor(), reason)
    for alias in ALIASES[1:]:
        if registry.alias(args.model, alias) == args.version:
            registry.set_alias(args.model, alias, None, _actor(), f"v{args.version} promoted to production")
    _announce(settings, args.model, "promoted", change, previous, 1.0)
    Console(stderr=True).print(f"{args.model}: production v{previous} → v{args.version}")
    return 0


def cmd_models_rollback(args: argparse.Namespace) -> int:
    """Put production back on the version it served before the current one."""
    settings = settings_from(args)
    _check_token(settings, args.token)
    registry = Registry(build_store(settings))
    current = registry.alias(args.model, PRODUCTION)
    change = registry.rollback(args.model, PRODUCTION, _actor(), args.reason or "rolled back by hand")
    if change.version is None:
        raise InvalidInput(f"{args.model}: nothing to roll back to")
    _announce(settings, args.model, "rolled_back", change, current, 1.0)
    Console(stderr=True).print(f"{args.model}: production v{current} → v{change.version} (rolled back)")
    return 0


def cmd_models_train(args: argparse.Namespace) -> int:
    """Train MODEL now on its newest dataset version, register it and publish the outcome."""
    from services.trainer.handlers import TrainerHandlers
    from services.trainer.metrics import TrainerMetrics
    from services.trainer.runner import train

    settings = settings_from(args)
    store = build_store(settings)
    spec = SpecCatalog(store).get(args.model)
    if spec is None:
        raise ModelNotFound(f"no spec is applied for model {args.model!r}; run `driftloop specs apply`")
    repo = DatasetRepository(store)
    dataset_version = args.dataset_version or repo.latest_version(args.model)
    if dataset_version is None:
        raise ModelNotFound(f"model {args.model!r} has no dataset version yet")
    console = Console(stderr=True)
    with console.status(f"training {args.model} ({spec.training.estimator}) on dataset v{dataset_version}…"):
        result = train(spec, repo, Registry(store), dataset_version, uuid.uuid4().hex, "manual", None)

    async def report() -> None:
        publisher = Publisher(KafkaOptions.from_settings(settings, "driftloop-cli"))
        await publisher.start(max_wait_s=15)
        try:
            handlers = TrainerHandlers(store, SpecCatalog(store), publisher, TrainerMetrics.create(CollectorRegistry()))
            await handlers.report(spec, result)
        finally:
            await publisher.stop()

    if not args.no_publish:
        asyncio.run(report())
    summary = {
        "model": args.model,
        "version": result.card.version if result.card else None,
        "passed": result.passed,
        "metrics": result.metrics,
        "champion_version": result.champion_version,
        "champion_metrics": result.champion_metrics,
        "gate": result.gate.reasons,
        "error": result.error,
        "timings": {k: round(v, 3) for k, v in result.timings.items()},
    }
    if args.json:
        emit_json(summary)
    else:
        console.print(summary)
    return 0 if result.error is None else 1


def add_models_parser(sub: Any, data_dir: Path) -> None:
    """Register the ``models`` sub-commands."""
    models = sub.add_parser("models", help="list, inspect, train, canary, promote and roll back models").add_subparsers(
        dest="models_command", required=True, metavar="ACTION"
    )
    help_dir = f"local stack directory (default: {data_dir})"

    listing = models.add_parser("list", help="registered models, newest versions and aliases")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=cmd_models_list)

    show = models.add_parser("show", help="a version's model card: lineage, metrics, gate, artifact")
    show.add_argument("model")
    show.add_argument("--version", type=int, help="version (default: production, else the newest)")
    show.add_argument("--json", action="store_true", help="the card, aliases and alias history as JSON")
    show.set_defaults(func=cmd_models_show)

    train = models.add_parser(
        "train",
        help="train a model now",
        description="Train MODEL on its newest dataset version (or --dataset-version), export to ONNX, "
        "gate it against production, register it, and publish TrainingCompleted (and the rollout when it "
        "passes), as a triggered run would.",
    )
    train.add_argument("model")
    train.add_argument("--dataset-version", type=int, help="dataset version (default: newest)")
    train.add_argument("--no-publish", action="store_true", help="register only; publish no event")
    train.add_argument("--json", action="store_true", help="print the outcome as JSON")
    train.set_defaults(func=cmd_models_train)

    canary = models.add_parser(
        "canary",
        help="start a canary of VERSION beside production",
        description="Point the canary alias at VERSION and publish canary_started, as the trainer does for a "
        "candidate that passed the gate: inference replicas send it the spec's deployment.canary_traffic share of "
        "requests, and the monitor judges "
        "it against production on live labels (the spec's deployment.promote_after and rollback_on) and "
        "promotes it or rolls it back. A running canary of another version is replaced. For a version the "
        "gate did not offer, e.g. one registered by `driftloop models train MODEL --no-publish` (a retrain on "
        "the same concept rarely beats production by the gate's min_delta_vs_champion).",
    )
    canary.add_argument("model")
    canary.add_argument("version", type=int, help="a registered version other than production")
    canary.add_argument("--reason", help="recorded in the alias history and the event")
    canary.add_argument("--token", help="admin token, when DRIFTLOOP_ADMIN_TOKEN is configured")
    canary.set_defaults(func=cmd_models_canary)

    promote = models.add_parser("promote", help="make VERSION the production version")
    promote.add_argument("model")
    promote.add_argument("version", type=int)
    promote.add_argument("--reason", help="recorded in the alias history and the event")
    promote.add_argument("--token", help="admin token, when DRIFTLOOP_ADMIN_TOKEN is configured")
    promote.set_defaults(func=cmd_models_promote)

    rollback = models.add_parser("rollback", help="put production back on its previous version")
    rollback.add_argument("model")
    rollback.add_argument("--reason", help="recorded in the alias history and the event")
    rollback.add_argument("--token", help="admin token, when DRIFTLOOP_ADMIN_TOKEN is configured")
    rollback.set_defaults(func=cmd_models_rollback)

    for parser in (listing, show, train, canary, promote, rollback):
        parser.add_argument("--data-dir", type=Path, default=data_dir, help=help_dir)
