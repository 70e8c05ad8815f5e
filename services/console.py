"""Plumbing shared by the ``driftloop`` sub-commands: settings from ``--data-dir``, JSON output,
and where the log lines of ``up`` and ``demo`` go.

Those two commands draw progress bars, tables and one-line events on the terminal; the
libraries beneath them (the bus's partition assignments, aiokafka's group chatter, httpx's
line per request, matplotlib's font cache, the embedded broker's start and stop) have plenty
to say too. :func:`route_stack_logs` sends every line to ``<data-dir>/logs/driftloop.log``
and lets through to the terminal only the command's own events and what anyone warns about —
except the libraries that warn about routine things (:data:`TERMINAL_FLOORS`). An explicit
``--log-level`` turns the filter off: the terminal then shows what the file gets.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.text import Text

from shared.config import DriftloopSettings, load_settings
from shared.errors import ConfigError
from shared.lifecycle import LOG_FORMAT


def settings_from(args: argparse.Namespace) -> DriftloopSettings:
    """Settings from the environment, pointed at the local stack in ``--data-dir``."""
    return load_settings(DriftloopSettings, data_dir=args.data_dir)


def emit_json(data: object) -> None:
    """Print machine-readable output (``--json``) on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


DEFAULT_LOG_LEVEL = "INFO"
"""The level when ``--log-level`` is not given (the file's; the terminal is filtered)."""
OWN_LOGGERS = ("driftloop", "services")
"""Loggers whose INFO lines are the command's own one-line events ("local stack up", "spec
applied", "received SIGTERM"): shown on the terminal. Every other logger's INFO goes to the
file only."""
TERMINAL_FLOORS: dict[str, int] = {
    "aiokafka": logging.ERROR,  # coordinator and rebalance warnings on every group change
    "kafka": logging.ERROR,
    "faust": logging.ERROR,
    "mode": logging.ERROR,
    "matplotlib": logging.ERROR,  # "building the font cache" on a first run is a WARNING
    "PIL": logging.ERROR,
}
"""Libraries that warn about routine things: on the terminal only from ERROR (their warnings
are in the file)."""


def terminal_floor(name: str) -> int:
    """The lowest level a record of logger ``name`` needs to reach a quiet terminal.

    >>> logging.getLevelName(terminal_floor("services.stack"))
    'INFO'
    >>> logging.getLevelName(terminal_floor("shared.bus"))
    'WARNING'
    >>> logging.getLevelName(terminal_floor("aiokafka.consumer.group_coordinator"))
    'ERROR'
    >>> logging.getLevelName(terminal_floor("servicesx"))  # a prefix is a whole dotted name
    'WARNING'
    """
    parts = name.split(".")
    for depth in range(len(parts), 0, -1):
        floor = TERMINAL_FLOORS.get(".".join(parts[:depth]))
        if floor is not None:
            return floor
    return logging.INFO if parts[0] in OWN_LOGGERS else logging.WARNING


class QuietTerminal(logging.Filter):
    """Passes a record to the terminal when it is at or above its logger's :func:`terminal_floor`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= terminal_floor(record.name)


class TerminalLines(logging.Formatter):
    """``HH:MM:SS message`` for the command's own events; level and logger for anything else,
    so a warning says whose it is."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(message)s", datefmt="%H:%M:%S")
        self.attributed = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno == logging.INFO and record.name.split(".")[0] in OWN_LOGGERS:
            return super().format(record)
        return self.attributed.format(record)


class ConsoleHandler(logging.Handler):
    """Prints records through the command's rich :class:`~rich.console.Console`.

    While a progress bar is live, the console draws a printed line above the bars; a plain
    stream handler would write into the middle of them.
    """

    STYLES = {logging.WARNING: "yellow", logging.ERROR: "red", logging.CRITICAL: "bold red"}

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = Text(self.format(record), style=self.STYLES.get(record.levelno, ""))
            self.console.print(text, soft_wrap=True, highlight=False)  # soft wrap: one line stays one line
        except Exception:  # logging must never break the command (logging.Handler's contract)
            self.handleError(record)


@dataclass
class StackLogging:
    """What :func:`route_stack_logs` installed, to undo it (a test, or a command run in-process)."""

    path: Path
    """The file every record goes to."""
    handlers: list[logging.Handler] = field(default_factory=list)
    replaced: list[logging.Handler] = field(default_factory=list)
    levels: dict[str, int] = field(default_factory=dict)
    """Levels of the root and the library loggers before, by logger name ("" is the root)."""

    def close(self) -> None:
        """Remove the handlers, close the file, restore what was there."""
        root = logging.getLogger()
        for handler in self.handlers:
            root.removeHandler(handler)
            handler.close()
        for handler in self.replaced:
            root.addHandler(handler)
        for name, level in self.levels.items():
            logging.getLogger(name or None).setLevel(level)


def route_stack_logs(console: Console, path: Path, level: str | None) -> StackLogging:
    """Send every log record of this process to ``path`` and a quiet selection to ``console``.

    Parameters
    ----------
    console
        The console the command draws its progress bars and tables on.
    path
        The process's log file (``LocalStack.log_path``); created with its directory.
    level
        ``--log-level`` as given, or ``None``. ``None``: the file gets INFO and up, the
        terminal only what passes :class:`QuietTerminal`. A level: file and terminal both get
        everything at that level — the library lines come back.
    """
    threshold = logging.getLevelNamesMapping()[level or DEFAULT_LOG_LEVEL]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(path, encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot write the log file {path}: {err.strerror}; choose another --data-dir") from None
    to_file.setFormatter(logging.Formatter(LOG_FORMAT))  # the lines of a service's own log
    to_terminal = ConsoleHandler(console)
    to_terminal.setFormatter(TerminalLines())
    if level is None:
        to_terminal.addFilter(QuietTerminal())
    root = logging.getLogger()
    libraries = [name for name in TERMINAL_FLOORS if logging.getLogger(name).level]
    installed = StackLogging(
        path=path,
        handlers=[to_file, to_terminal],
        replaced=list(root.handlers),
        levels={"": root.level, **{name: logging.getLogger(name).level for name in libraries}},
    )
    for handler in installed.replaced:  # configure_logging's stderr handler: it would print everything
        root.removeHandler(handler)
    for handler in installed.handlers:
        handler.setLevel(threshold)
        root.addHandler(handler)
    root.setLevel(threshold)
    for name in libraries:  # configure_logging holds aiokafka at WARNING: the file takes its INFO, not its DEBUG
        logging.getLogger(name).setLevel(max(threshold, logging.INFO))
    return installed
