"""The ``driftloop`` command.

``up`` runs the whole system on one machine, ``serve`` runs one service against external
Kafka and MinIO, ``demo`` runs a scripted scenario on the local stack. Each sub-command's
``--help`` says what it does and which settings it reads.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from services.console import DEFAULT_LOG_LEVEL, emit_json, route_stack_logs, settings_from
from services.models_cli import add_models_parser
from services.stack import DEFAULT_PORTS, MLFLOW_SYNC, SERVICE_NAMES, LocalStack, StackConfig
from shared import __version__
from shared.bus import KafkaOptions
from shared.config import build_store
from shared.datasets import DatasetRepository, manifest_summary
from shared.errors import DriftloopError, InvalidInput, NotFound
from shared.lifecycle import configure_logging
from shared.reference import FeatureStats
from shared.spec import ModelSpec, SpecCatalog, apply_spec

log = logging.getLogger("driftloop")


def _data_dir_default() -> Path:
    import os

    return Path(os.environ.get("DRIFTLOOP_DATA_DIR", ".driftloop"))


def _add_stack_flags(parser: argparse.ArgumentParser, data_dir: Path, fixed_ports: bool = True) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=data_dir,
        help=f"directory for the FileStore, logs and endpoints.json (default: {data_dir})",
    )
    for name in DEFAULT_PORTS:
        default = DEFAULT_PORTS[name] if fixed_ports else 0
        what = "broker" if name == "kafka" else "service (run when DRIFTLOOP_MLFLOW_TRACKING_URI is set)"
        parser.add_argument(
            f"--{name}-port",
            type=int,
            default=default,
            metavar="PORT",
            help=f"port of the {name} {what if name == MLFLOW_SYNC else what.split(' (')[0]} "
            f"(default {default or 'any free port'}; 0 picks a free one)",
        )
    parser.add_argument("--partitions", type=int, default=4, help="partitions per topic (default 4)")
    parser.add_argument(
        "--spec", type=Path, action="append", default=[], metavar="FILE", help="apply this spec at start (repeatable)"
    )


def _stack_config(args: argparse.Namespace) -> StackConfig:
    ports = {name: getattr(args, f"{name.replace('-', '_')}_port") for name in DEFAULT_PORTS}
    specs = []
    for path in args.spec:
        try:
            specs.append((str(path), Path(path).read_text()))
        except OSError as err:
            raise InvalidInput(f"cannot read spec {path}: {err.strerror}") from None
    level = args.log_level or DEFAULT_LOG_LEVEL
    return StackConfig(data_dir=args.data_dir, ports=ports, partitions=args.partitions, log_level=level, specs=specs)


def _print_endpoints(console: Console, stack: LocalStack, endpoints: dict[str, object]) -> None:
    table = Table(title=f"driftloop {__version__} — local stack", show_header=True)
    table.add_column("component")
    table.add_column("where")
    table.add_row("Kafka broker (Tansu)", str(endpoints["kafka_bootstrap"]))
    table.add_row("object store (FileStore)", str(stack.store_root))
    for child in stack.children:
        table.add_row(f"{child.name} service", child.url)
    table.add_row("endpoints file", str(stack.endpoints_path))
    table.add_row("logs", str(stack.log_dir))
    console.print(table)


class _StopFlag:
    def __init__(self) -> None:
        self.signal: str | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signal.Signals(signum).name


def cmd_up(args: argparse.Namespace) -> int:
    """Run the local stack until SIGTERM / Ctrl-C."""
    console = Console(stderr=True)
    stop = _StopFlag()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    stack = LocalStack(_stack_config(args))
    try:
        route_stack_logs(console, stack.log_path, args.log_level)
        endpoints = stack.start()
        _print_endpoints(console, stack, endpoints)
        log.info("local stack up; Ctrl-C or SIGTERM stops it")
        reported: set[str] = set()
        while stop.signal is None:
            time.sleep(0.2)
            for problem in stack.check():
                if problem not in reported:
                    log.error("%s", problem)
                    reported.add(problem)
        log.info("received %s: stopping the local stack", stop.signal)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stack.stop()
    log.info("local stack stopped")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run one service in the foreground against the configured Kafka and store."""
    app = importlib.import_module(f"services.{args.service.replace('-', '_')}.app")
    code: int = app.main()
    return code


def cmd_demo(args: argparse.Namespace) -> int:
    """Start the local stack, run the demo scenario, stop."""
    from services.demo import SCENARIOS, DemoPlan, run_demo

    console = Console(stderr=True)
    config = _stack_config(args)
    config.service_env.setdefault("DRIFTLOOP_FLUSH_ROWS", "1000")  # several dataset versions to look at
    stack = LocalStack(config)
    route_stack_logs(console, stack.log_path, args.log_level)
    with stack.running() as endpoints:
        _print_endpoints(console, stack, endpoints)
        return run_demo(stack, console, DemoPlan(rate=args.rate, scenario=SCENARIOS[args.scenario]))


def cmd_specs_apply(args: argparse.Namespace) -> int:
    """Validate spec files and store them; services pick them up without a restart."""
    store = build_store(settings_from(args))
    console = Console(stderr=True)
    for path in args.files:
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise InvalidInput(f"cannot read {path}: {err.strerror}") from None
        spec, changed = apply_spec(store, text, source=str(path))
        state = "applied" if changed else "unchanged"
        console.print(f"{spec.name}: {state} ({len(spec.features)} features, {_label_text(spec)}) from {path}")
    return 0


def cmd_specs_init(args: argparse.Namespace) -> int:
    """Infer a commented spec from a CSV or Parquet file; write it to stdout or --output."""
    from services.publish import file_kind, read_sample
    from services.spec_init import SAMPLE_ROWS, infer_spec, model_name

    path: Path = args.data
    if file_kind(path) == "jsonl":
        raise InvalidInput(f"{path}: specs init reads a table: a .csv, .tsv, .parquet or .pq file")
    name = args.name or model_name(path.stem.split(".")[0])
    if name is None:
        raise InvalidInput(f"no model name can be made from {path.name!r}: give one with --name")
    if args.output is not None and args.output.exists() and not args.force:
        raise InvalidInput(f"{args.output} exists; pass --force to overwrite it")
    table, total = read_sample(path, args.sample_rows or SAMPLE_ROWS)
    inferred = infer_spec(
        table, args.label, name=name, source=path.name, id_column=args.id, total_rows=total, more_rows=total is None
    )
    console = Console(stderr=True)
    if args.output is None:
        sys.stdout.write(inferred.text)
    else:
        try:
            args.output.write_text(inferred.text)
        except OSError as err:
            raise InvalidInput(f"cannot write {args.output}: {err.strerror}") from None
    for left in inferred.left_out:
        console.print(f"left out {left.column!r}: {left.reason}", markup=False, highlight=False)
    where = args.output or "stdout"
    console.print(f"{inferred.summary()}; written to {where}", markup=False, highlight=False)
    if args.output is not None:
        console.print(f"next: driftloop specs apply {args.output}", markup=False, highlight=False)
    return 0


def _label_text(spec: ModelSpec) -> str:
    """What a spec's model predicts, as a listing says it.

    >>> from shared.spec import parse_spec
    >>> _label_text(parse_spec("name: m\\nfeatures: [{name: x}]\\nlabel: {type: regression, min: 0}"))
    'a number (regression), min 0.0'
    >>> _label_text(parse_spec("name: m\\nfeatures: [{name: x}]\\nlabel: {values: [a, b]}"))
    "labels ['a', 'b']"
    """
    label = spec.label
    if not spec.regression:
        return f"labels {label.values}"
    bounds = [f"{name} {value}" for name, value in (("min", label.min), ("max", label.max)) if value is not None]
    return ", ".join(["a number (regression)", *bounds])


def cmd_specs_list(args: argparse.Namespace) -> int:
    """List the applied specs."""
    catalog = SpecCatalog(build_store(settings_from(args)))
    specs = catalog.all()
    rows = [
        {
            "model": name,
            "features": spec.feature_names,
            "labels": spec.label.values,
            "estimator": spec.training.estimator,
            "strategy": spec.deployment.strategy,
            "task": spec.label.type,
            "label_range": {"min": spec.label.min, "max": spec.label.max} if spec.regression else None,
        }
        for name, spec in sorted(specs.items())
    ]
    if args.json:
        emit_json(rows)
        return 0
    table = Table(title="model specs")
    columns = ("model", "features", "labels", "estimator", "strategy")
    for column in columns:
        table.add_column(column)
    for (_, spec), row in zip(sorted(specs.items()), rows, strict=True):
        shown = {**row, "labels": _label_text(spec) if spec.regression else row["labels"]}
        table.add_row(*(", ".join(map(str, v)) if isinstance(v, list) else str(v) for v in (shown[c] for c in columns)))
    Console().print(table if rows else "no specs applied yet: driftloop specs apply FILE.yaml")
    return 0


def cmd_datasets_list(args: argparse.Namespace) -> int:
    """List dataset versions: of one model, or the newest of every model."""
    repo = DatasetRepository(build_store(settings_from(args)))
    if args.model:
        versions = repo.versions(args.model)
        if not versions:
            raise NotFound(f"model {args.model!r} has no dataset version yet")
        rows = [manifest_summary(repo.manifest(args.model, v)) for v in versions]
    else:
        rows = [manifest_summary(repo.manifest(m)) for m in repo.models()]
    if args.json:
        emit_json(rows)
        return 0
    table = Table(title="dataset versions")
    columns = ("model", "version", "rows_total", "rows_added", "shards", "labels", "created_at", "flags")
    for column in columns:
        table.add_column(column)
    for row in rows:
        shown = {**row, "labels": _labels_cell(row)}
        table.add_row(*(str(shown[c]) for c in columns))
    Console().print(table if rows else "no datasets yet")
    return 0


def _labels_cell(summary: dict[str, object]) -> str:
    """A listing's labels: rows per class, or a regression label's summary.

    >>> _labels_cell({"label_counts": {"a": 2}, "label_summary": None})
    "{'a': 2}"
    >>> _labels_cell({"label_summary": {"count": 3.0, "mean": 2.0, "std": 0.8165, "min": 1.0, "p50": 2.0, "max": 3.0}})
    'mean 2 ± 0.8165, p50 2, [1, 3]'
    """
    label_summary = summary.get("label_summary")
    if not isinstance(label_summary, dict):
        return str(summary.get("label_counts"))
    s = label_summary
    median = f", p50 {s['p50']:.4g}" if "p50" in s else ""
    return f"mean {s['mean']:.4g} ± {s['std']:.4g}{median}, [{s['min']:.4g}, {s['max']:.4g}]"


def cmd_datasets_show(args: argparse.Namespace) -> int:
    """Show one dataset version's manifest: shards, label counts or summary, feature statistics, checks."""
    repo = DatasetRepository(build_store(settings_from(args)))
    manifest = repo.manifest(args.model, args.version)
    label_summary = manifest.label_summary()
    if args.json:
        if label_summary is None:
            sys.stdout.write(manifest.model_dump_json(indent=2) + "\n")
        else:  # the summary is derived, not stored: shown beside the manifest's fields
            emit_json({**json.loads(manifest.model_dump_json()), "label_summary": label_summary})
        return 0
    console = Console()
    console.print(manifest_summary(manifest))
    title = f"{manifest.model} v{manifest.version}"
    if label_summary is not None:
        label = Table(title=f"{title}: regression label")
        for column in label_summary:
            label.add_column(column, justify="right")
        label.add_row(*(f"{label_summary[c]:.6g}" for c in label_summary))
        console.print(label)
    stats = Table(title=f"{title}: numeric features")
    for column in ("feature", "count", "missing", "mean", "std", "min", "max"):
        stats.add_column(column, justify="left" if column == "feature" else "right")
    categories = Table(title=f"{title}: categorical and boolean features")
    for column in ("feature", "type", "count", "missing", "distinct"):
        categories.add_column(column, justify="left" if column in ("feature", "type") else "right")
    categories.add_column(f"top {TOP_CATEGORIES} categories: rows")
    for name, kind in zip(manifest.features, manifest.feature_types, strict=True):
        missing = str(manifest.missing[name]) if name in manifest.missing else "-"
        if kind == "numeric":
            st = manifest.stats.get(name, FeatureStats())
            stats.add_row(name, str(st.count), missing, f"{st.mean:.4g}", f"{st.std:.4g}", f"{st.min}", f"{st.max}")
            continue
        counts = manifest.categories.get(name, {})
        other = manifest.categories_other.get(name, 0)
        distinct = f"{len(counts)}{'+' if other else ''}"
        shown = escape(_top_categories(counts, other, quoted=kind == "categorical"))
        categories.add_row(name, kind, str(sum(counts.values()) + other), missing, distinct, shown)
    if stats.row_count:
        console.print(stats)
    if categories.row_count:
        console.print(categories)
    console.print({"checks": manifest.checks})
    return 0


TOP_CATEGORIES = 10


def _top_categories(counts: dict[str, int], other_rows: int, quoted: bool = True) -> str:
    """The most frequent categories with their rows, then how many more there are.

    >>> _top_categories({"a": 3, "b": 1}, 0)
    "'a': 3, 'b': 1"
    """
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    text = ", ".join(f"{repr(category) if quoted else category}: {rows}" for category, rows in ordered[:TOP_CATEGORIES])
    more = len(ordered) - TOP_CATEGORIES
    if more > 0:
        text += f", … {more} more"
    if other_rows:
        text += f" (and {other_rows} rows of rarer categories)"
    return text


def cmd_publish_annotations(args: argparse.Namespace) -> int:
    """Publish a JSON-lines, CSV or Parquet file of annotations to the annotations topic."""
    from services.publish import TableColumns, file_kind, publish_annotations

    settings = settings_from(args)
    spec = None
    columns = None
    if file_kind(args.file) != "jsonl":
        if not args.model:
            raise InvalidInput(f"publishing the table {args.file} needs --model: its spec names the features")
        spec = SpecCatalog(build_store(settings)).get(args.model)
        if spec is None:
            raise InvalidInput(
                f"no spec is applied for model {args.model!r}: `driftloop specs init {args.file} --label COLUMN "
                "--output SPEC.yaml` writes one, `driftloop specs apply SPEC.yaml` applies it"
            )
        flags = {
            "label": args.label,
            "record_id": args.id,
            "confidence": args.confidence,
            "annotator": args.annotator,
            "inference_id": args.inference_id,
        }
        given = {name: column for name, column in flags.items() if column is not None}
        columns = TableColumns(**given, given=frozenset(given))
    elif any(v is not None for v in (args.label, args.id, args.confidence, args.annotator, args.inference_id)):
        raise InvalidInput(
            "--label, --id, --confidence, --annotator and --inference-id map a CSV or Parquet file's columns"
        )
    report = asyncio.run(
        publish_annotations(
            KafkaOptions.from_settings(settings, "driftloop-publish"),
            args.file,
            args.model,
            args.raw,
            spec=spec,
            columns=columns,
        )
    )
    if args.json:
        emit_json(report)
    invalid = report["invalid_rows"] if "invalid_rows" in report else report["invalid_lines"]
    return 0 if not invalid else 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``driftloop``."""
    parser = argparse.ArgumentParser(
        prog="driftloop",
        description="driftloop keeps ML models fresh in production: ingest, retrain, gate, serve, monitor over Kafka.",
    )
    parser.add_argument("--version", action="version", version=f"driftloop {__version__}")
    parser.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (default INFO; up and demo then keep the libraries' lines in DATA_DIR/logs/driftloop.log "
        "and show only their own events and warnings: give it to see every line on the terminal too)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser(
        "up",
        help="run the whole system on this machine",
        description="Start the embedded Kafka-protocol broker, a FileStore under --data-dir and every "
        "service; write <data-dir>/endpoints.json; stop everything on Ctrl-C or SIGTERM.",
    )
    _add_stack_flags(up, _data_dir_default())
    up.set_defaults(func=cmd_up)

    serve = sub.add_parser(
        "serve",
        help="run one service against external Kafka / MinIO",
        description="Run one service in the foreground. Settings come from DRIFTLOOP_* variables: "
        "DRIFTLOOP_KAFKA_BOOTSTRAP, DRIFTLOOP_STORE_KIND (file|minio), DRIFTLOOP_STORE_ENDPOINT, "
        "DRIFTLOOP_STORE_ACCESS_KEY, DRIFTLOOP_STORE_SECRET_KEY, DRIFTLOOP_STORE_BUCKET, DRIFTLOOP_PORT, "
        "DRIFTLOOP_LOG_LEVEL. SIGTERM stops it gracefully.",
    )
    serve.add_argument("service", choices=(*SERVICE_NAMES, MLFLOW_SYNC))
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser(
        "demo",
        help="start the local stack and run the demo scenario",
        description="Start the local stack and run the closed loop on a drifting stream: bootstrap a first "
        "model, serve the stream over HTTP with ground truth following, change the world at event 3,000, "
        "and watch the monitor detect it, the trainer retrain on the new regime, the canary get judged and "
        "promoted. Scenarios: 'sea' (River's SEA stream, three numbers, the labelling rule switches), "
        "'loan' (a loan table from River's Agrawal generator with string categories, flags and missing "
        "values; the applicant mix shifts and the approval rule changes), 'loan-tiers' (the same table, "
        "three classes) and 'delivery' (a regression: minutes a delivery takes, from River's Friedman "
        "generator on a table with a region, an express flag and missing weights; the relation changes "
        "everywhere). Prints a summary (accuracy, or a regressor's MAE, before / after the drift / after "
        "recovery, detection delay, drift-to-new-champion time) and writes the monitor's HTML report and "
        "a PNG of accuracy (or error) over time under DATA_DIR/results/MODEL/. About a minute.",
    )
    _add_stack_flags(demo, _data_dir_default() / "demo", fixed_ports=False)
    demo.add_argument(
        "--rate", type=float, default=300.0, help="served events per second while the loop runs (default 300)"
    )
    demo.add_argument(
        "--scenario",
        choices=("sea", "loan", "loan-tiers", "delivery"),  # services.demo.SCENARIOS (imported only to run)
        default="sea",
        help="the drifting stream: sea (numeric), loan (categories, flags, missing values), loan-tiers "
        "(the same table, three classes) or delivery (a regression on a typed table); default sea",
    )
    demo.set_defaults(func=cmd_demo)

    data_dir_help = "local stack directory (default: $DRIFTLOOP_DATA_DIR or ./.driftloop)"
    specs = sub.add_parser("specs", help="infer, apply and list model specs").add_subparsers(
        dest="specs_command", required=True, metavar="ACTION"
    )
    apply = specs.add_parser(
        "apply",
        help="validate spec YAML files and store them",
        description="Validate each spec (unknown keys and bad values are refused with the field's path) and "
        "store it as specs/<model>.yaml; running services pick it up without a restart.",
    )
    apply.add_argument("files", nargs="+", type=Path, metavar="FILE")
    apply.add_argument("--data-dir", type=Path, default=_data_dir_default(), help=data_dir_help)
    apply.set_defaults(func=cmd_specs_apply)
    init = specs.add_parser(
        "init",
        help="write a commented spec inferred from a CSV or Parquet file",
        description="Read a sample of DATA (a .csv, .tsv, .parquet or .pq file; the first 100,000 rows of a big "
        "one) and write a spec for it: each column's type (numeric, categorical, boolean), min 0 for columns "
        "never negative, allow_missing where values are missing, declared categories where the set is small, the "
        "label's kind (classes or a regression number) and defaults for training, triggers, gate, rollout and "
        "monitoring. Every inferred choice is a comment beside it; the spec is valid as written (specs apply "
        "accepts it). Columns that are not features (the record id, confidence, annotator, inference_id, "
        "timestamps, identifiers) are listed as left out.",
    )
    init.add_argument("data", type=Path, metavar="DATA", help="the table: .csv, .tsv, .parquet or .pq")
    init.add_argument("--label", required=True, metavar="COLUMN", help="the column holding the label")
    init.add_argument(
        "--id", metavar="COLUMN", help="the column holding each record's id (default: record_id, when present)"
    )
    init.add_argument("--name", help="the model name (default: from the file name)")
    init.add_argument("--output", "-o", type=Path, metavar="FILE", help="write the spec here (default: stdout)")
    init.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    init.add_argument(
        "--sample-rows", type=int, default=None, metavar="N", help="rows read from a big file (default 100,000)"
    )
    init.set_defaults(func=cmd_specs_init)
    listing = specs.add_parser("list", help="list applied specs")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.add_argument("--data-dir", type=Path, default=_data_dir_default(), help=data_dir_help)
    listing.set_defaults(func=cmd_specs_list)

    datasets = sub.add_parser("datasets", help="list and inspect dataset versions").add_subparsers(
        dest="datasets_command", required=True, metavar="ACTION"
    )
    dlist = datasets.add_parser("list", help="versions of MODEL, or the newest version of every model")
    dlist.add_argument("model", nargs="?", help="model name (default: every model)")
    dlist.add_argument("--json", action="store_true", help="machine-readable output")
    dlist.add_argument("--data-dir", type=Path, default=_data_dir_default(), help=data_dir_help)
    dlist.set_defaults(func=cmd_datasets_list)
    dshow = datasets.add_parser("show", help="one version's manifest, statistics and checks")
    dshow.add_argument("model")
    dshow.add_argument("version", nargs="?", type=int, help="version number (default: newest)")
    dshow.add_argument("--json", action="store_true", help="the manifest as JSON")
    dshow.add_argument("--data-dir", type=Path, default=_data_dir_default(), help=data_dir_help)
    dshow.set_defaults(func=cmd_datasets_show)

    publish = sub.add_parser("publish", help="publish records to a topic").add_subparsers(
        dest="publish_command", required=True, metavar="KIND"
    )
    pann = publish.add_parser(
        "annotations",
        help="publish a JSON-lines, CSV or Parquet file of annotations",
        description="Publish one AnnotationSubmitted per line of a JSON-lines FILE, or per row of a table "
        "(.csv, .tsv, .parquet or .pq, streamed in batches). JSON lines may omit schema_version, event_id and "
        "occurred_at (filled in) and model (taken from --model). A table needs --model: the model's applied spec "
        "names its features, each read from the column of that name (cells converted to the feature's type; "
        "empty cells and nulls are missing values); the label, record id, confidence, annotator and inference id "
        "come from the columns the flags name; other columns are ignored and counted. Without a record id "
        "column, each row's id is FILE's name and its row number, so publishing a file again is deduplicated by "
        "ingest. Lines or rows that are not valid annotations are reported with their number and not sent "
        "(exit code 1), unless --raw.",
    )
    pann.add_argument("file", type=Path, metavar="FILE")
    pann.add_argument("--model", help="model name (required for a table; for JSON lines, where a line gives none)")
    pann.add_argument("--raw", action="store_true", help="send every JSON line verbatim; ingest judges them")
    pann.add_argument("--label", metavar="COLUMN", help="table: the label's column (default: label)")
    pann.add_argument(
        "--id",
        metavar="COLUMN",
        help="table: the record id's column (default: record_id; without one, FILE's name and the row number)",
    )
    pann.add_argument("--confidence", metavar="COLUMN", help="table: the confidence's column (default: confidence)")
    pann.add_argument("--annotator", metavar="COLUMN", help="table: the annotator's column (default: annotator)")
    pann.add_argument(
        "--inference-id",
        metavar="COLUMN",
        help="table: the column naming the prediction a label is ground truth for (default: inference_id)",
    )
    pann.add_argument("--json", action="store_true", help="print the report as JSON")
    pann.add_argument("--data-dir", type=Path, default=_data_dir_default(), help=data_dir_help)
    pann.set_defaults(func=cmd_publish_annotations)

    add_models_parser(sub, _data_dir_default())
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``driftloop`` console script."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level or DEFAULT_LOG_LEVEL)
    try:
        code: int = args.func(args)
        return code
    except DriftloopError as err:
        log.error("%s", err.message)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
