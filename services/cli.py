"""The ``driftloop`` command.

``up`` runs the whole system on one machine, ``serve`` runs one service against external
Kafka and MinIO, ``demo`` runs a scripted scenario on the local stack. Each sub-command's
``--help`` says what it does and which settings it reads.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.table import Table

from services.stack import DEFAULT_PORTS, SERVICE_NAMES, LocalStack, StackConfig, service_available
from shared import __version__
from shared.errors import DriftloopError
from shared.lifecycle import configure_logging

log = logging.getLogger("driftloop")

ISSUE_OF_SERVICE = {"ingest": 3, "trainer": 4, "inference": 5, "monitor": 6}
EXIT_USAGE = 2


def _data_dir_default() -> Path:
    import os

    return Path(os.environ.get("DRIFTLOOP_DATA_DIR", ".driftloop"))


def _add_stack_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=_data_dir_default(),
        help="directory for the FileStore, logs and endpoints.json (default: $DRIFTLOOP_DATA_DIR or ./.driftloop)",
    )
    for name in ("kafka", "inference", "ingest", "monitor", "trainer"):
        parser.add_argument(
            f"--{name}-port",
            type=int,
            default=DEFAULT_PORTS[name],
            metavar="PORT",
            help=f"port of the {name} {'broker' if name == 'kafka' else 'service'} (default {DEFAULT_PORTS[name]})",
        )
    parser.add_argument("--partitions", type=int, default=4, help="partitions per topic (default 4)")


def _stack_config(args: argparse.Namespace) -> StackConfig:
    ports = {name: getattr(args, f"{name}_port") for name in DEFAULT_PORTS}
    return StackConfig(data_dir=args.data_dir, ports=ports, partitions=args.partitions, log_level=args.log_level)


def _print_endpoints(console: Console, stack: LocalStack, endpoints: dict[str, object]) -> None:
    table = Table(title=f"driftloop {__version__} — local stack", show_header=True)
    table.add_column("component")
    table.add_column("where")
    table.add_row("Kafka broker (Tansu)", str(endpoints["kafka_bootstrap"]))
    table.add_row("object store (FileStore)", str(stack.store_root))
    for child in stack.children:
        table.add_row(f"{child.name} service", child.url)
    for name in stack.missing:
        table.add_row(f"{name} service", f"[yellow]not built yet (issue #{ISSUE_OF_SERVICE[name]})[/yellow]")
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
    name: str = args.service
    if not service_available(name):
        log.error(
            "the %s service is not built yet (issue #%d); services available: %s",
            name,
            ISSUE_OF_SERVICE[name],
            ", ".join(n for n in SERVICE_NAMES if service_available(n)) or "none",
        )
        return EXIT_USAGE
    app = importlib.import_module(f"services.{name}.app")
    code: int = app.main()
    return code


def cmd_demo(args: argparse.Namespace) -> int:
    """Start the local stack, run the demo scenario with what is built, stop."""
    from services.demo import run_demo

    console = Console(stderr=True)
    stack = LocalStack(_stack_config(args))
    with stack.running() as endpoints:
        _print_endpoints(console, stack, endpoints)
        return run_demo(stack, console, events=args.events)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``driftloop``."""
    parser = argparse.ArgumentParser(
        prog="driftloop",
        description="driftloop keeps ML models fresh in production: ingest, retrain, gate, serve, monitor over Kafka.",
    )
    parser.add_argument("--version", action="version", version=f"driftloop {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level (default INFO)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser(
        "up",
        help="run the whole system on this machine",
        description="Start the embedded Kafka-protocol broker, a FileStore under --data-dir and every built "
        "service; write <data-dir>/endpoints.json; stop everything on Ctrl-C or SIGTERM.",
    )
    _add_stack_flags(up)
    up.set_defaults(func=cmd_up)

    serve = sub.add_parser(
        "serve",
        help="run one service against external Kafka / MinIO",
        description="Run one service in the foreground. Settings come from DRIFTLOOP_* variables: "
        "DRIFTLOOP_KAFKA_BOOTSTRAP, DRIFTLOOP_STORE_KIND (file|minio), DRIFTLOOP_STORE_ENDPOINT, "
        "DRIFTLOOP_STORE_ACCESS_KEY, DRIFTLOOP_STORE_SECRET_KEY, DRIFTLOOP_STORE_BUCKET, DRIFTLOOP_PORT, "
        "DRIFTLOOP_LOG_LEVEL. SIGTERM stops it gracefully.",
    )
    serve.add_argument("service", choices=SERVICE_NAMES)
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser(
        "demo",
        help="start the local stack and run the demo scenario",
        description="Start the local stack, stream a drifting labelled data set (River's SEA generator) "
        "through it, report what happened, and stop.",
    )
    _add_stack_flags(demo)
    demo.add_argument("--events", type=int, default=5000, help="labelled records to stream (default 5000)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``driftloop`` console script."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
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
