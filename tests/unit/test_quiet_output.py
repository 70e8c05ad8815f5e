"""``driftloop up`` and ``demo`` keep library log lines in ``<data-dir>/logs/driftloop.log``
and off the terminal, where their progress bars, tables and own events are; an explicit
``--log-level`` brings every line back to the terminal."""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from rich.progress import Progress

from services.cli import build_parser
from services.console import ConsoleHandler, QuietTerminal, StackLogging, route_stack_logs
from services.stack import LocalStack, StackConfig
from shared.errors import ConfigError
from shared.lifecycle import configure_logging

LIBRARY_CHATTER = [
    ("shared.bus", logging.INFO, "assigned annotations[0], annotations[1]"),
    ("shared.bus", logging.INFO, "consuming annotations as group g from 127.0.0.1:9092"),
    ("shared.broker", logging.INFO, "embedded Kafka broker ready on 127.0.0.1:9092 (pid 1)"),
    ("aiokafka.consumer.group_coordinator", logging.INFO, "Joined group 'g' (generation 1)"),
    ("aiokafka.consumer.group_coordinator", logging.WARNING, "Heartbeat failed for group g: rebalancing"),
    ("httpx", logging.INFO, 'HTTP Request: POST http://127.0.0.1:8000/v2/models/m/infer "HTTP/1.1 200 OK"'),
    ("matplotlib.font_manager", logging.WARNING, "Matplotlib is building the font cache; this may take a moment."),
    ("faust.transport.consumer", logging.INFO, "Fetch offset 0 is out of range"),
]
OWN_EVENTS = [
    ("driftloop", logging.INFO, "local stack up; Ctrl-C or SIGTERM stops it"),
    ("services.stack", logging.INFO, "spec sea-demo applied from sea.yaml"),
]
TROUBLE = [
    ("shared.bus", logging.WARNING, "Kafka at 127.0.0.1:9092 unreachable; producer retrying in 0.5s"),
    ("driftloop", logging.ERROR, "inference exited with code 1; see logs/inference.log"),
    ("aiokafka", logging.ERROR, "Unexpected error in the fetcher"),
]


@pytest.fixture
def terminal() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def console(terminal: io.StringIO) -> Console:
    return Console(file=terminal, width=100, color_system=None)


@pytest.fixture
def as_the_cli_starts() -> Iterator[None]:
    """Logging as ``driftloop``'s main() leaves it before a command runs, restored after."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("aiokafka").level)
    configure_logging("INFO")
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    logging.getLogger("aiokafka").setLevel(saved[2])


def log_all(records: list[tuple[str, int, str]]) -> None:
    for name, level, message in records:
        logging.getLogger(name).log(level, message)


@contextlib.contextmanager
def routed(console: Console, path: Path, level: str | None) -> Iterator[StackLogging]:
    installed = route_stack_logs(console, path, level)
    try:
        yield installed
    finally:
        installed.close()


def test_library_info_goes_to_the_file_and_not_the_terminal(
    tmp_path: Path, console: Console, terminal: io.StringIO, as_the_cli_starts: None
) -> None:
    stack = LocalStack(StackConfig(data_dir=tmp_path, ports={"kafka": 0}))
    with routed(console, stack.log_path, None):
        log_all(LIBRARY_CHATTER + OWN_EVENTS + TROUBLE)
    assert stack.log_path == tmp_path.resolve() / "logs" / "driftloop.log"
    written = stack.log_path.read_text()
    shown = terminal.getvalue()
    for name, level, message in LIBRARY_CHATTER + OWN_EVENTS + TROUBLE:
        assert f"{logging.getLevelName(level):<7} {name}: {message}" in written
    for _, _, message in LIBRARY_CHATTER:
        assert message not in shown
    lines = shown.splitlines()
    assert len(lines) == len(OWN_EVENTS) + len(TROUBLE)
    assert lines[0].endswith(" local stack up; Ctrl-C or SIGTERM stops it")  # own events: time and message
    assert "INFO" not in lines[0] and "driftloop" not in lines[0]
    assert lines[2].endswith(" WARNING shared.bus: Kafka at 127.0.0.1:9092 unreachable; producer retrying in 0.5s")
    assert lines[4].endswith(" ERROR aiokafka: Unexpected error in the fetcher")


@pytest.mark.parametrize("level", ["DEBUG", "INFO"])
def test_an_explicit_log_level_brings_the_library_lines_back(
    tmp_path: Path, console: Console, terminal: io.StringIO, as_the_cli_starts: None, level: str
) -> None:
    with routed(console, tmp_path / "logs" / "driftloop.log", level):
        log_all(LIBRARY_CHATTER + OWN_EVENTS)
        logging.getLogger("shared.bus").debug("fetched 3 records")
    shown = terminal.getvalue()
    for name, _, message in LIBRARY_CHATTER:
        assert f"{name}: {message}" in shown
    assert ("fetched 3 records" in shown) is (level == "DEBUG")
    assert ("fetched 3 records" in (tmp_path / "logs" / "driftloop.log").read_text()) is (level == "DEBUG")


def test_a_quieter_log_level_quiets_file_and_terminal(
    tmp_path: Path, console: Console, terminal: io.StringIO, as_the_cli_starts: None
) -> None:
    with routed(console, tmp_path / "driftloop.log", "WARNING"):
        log_all(OWN_EVENTS + TROUBLE)
    for text in (terminal.getvalue(), (tmp_path / "driftloop.log").read_text()):
        assert "local stack up" not in text and "unreachable" in text


def test_the_handlers_go_to_the_file_and_the_console_and_nothing_else(
    tmp_path: Path, console: Console, as_the_cli_starts: None
) -> None:
    root = logging.getLogger()
    before = list(root.handlers)  # configure_logging's stderr handler (and pytest's capture)
    with routed(console, tmp_path / "driftloop.log", None) as installed:
        assert root.handlers == installed.handlers  # a stderr handler would print every line
        to_file, to_terminal = installed.handlers
        assert isinstance(to_file, logging.FileHandler) and not to_file.filters
        assert isinstance(to_terminal, ConsoleHandler)
        assert [type(f) for f in to_terminal.filters] == [QuietTerminal]
        assert logging.getLogger("aiokafka").getEffectiveLevel() == logging.INFO  # its INFO reaches the file
    assert root.handlers == before
    assert logging.getLogger("aiokafka").level == logging.WARNING


def test_a_line_logged_under_a_live_progress_bar_is_printed_above_it(tmp_path: Path, as_the_cli_starts: None) -> None:
    terminal = io.StringIO()
    console = Console(file=terminal, width=80, force_terminal=True, color_system=None)
    with routed(console, tmp_path / "driftloop.log", None):
        with Progress(console=console, auto_refresh=False) as progress:
            task = progress.add_task("publishing labelled records", total=10)
            progress.advance(task, 5)
            progress.refresh()
            logging.getLogger("driftloop").info("spec applied")
            logging.getLogger("shared.bus").info("assigned annotations[0]")
            progress.advance(task, 5)
    shown = terminal.getvalue()
    assert "assigned annotations[0]" not in shown
    # the console clears the bar, prints the line on a line of its own, and draws the bar again below it
    (line,) = [line for line in shown.splitlines() if "spec applied" in line]
    assert re.fullmatch(r"\d\d:\d\d:\d\d spec applied", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line).split("\r")[-1])
    assert shown.rindex("publishing labelled records") > shown.index("spec applied")


def test_an_unwritable_log_directory_is_a_clear_error(tmp_path: Path, console: Console) -> None:
    blocker = tmp_path / "logs"
    blocker.write_text("a file where the log directory belongs")
    with pytest.raises(ConfigError, match="cannot write the log file .*choose another --data-dir"):
        route_stack_logs(console, blocker / "driftloop.log", None)


def test_log_level_is_optional_so_up_and_demo_know_when_it_was_given() -> None:
    parser = build_parser()
    assert parser.parse_args(["up"]).log_level is None
    assert parser.parse_args(["--log-level", "INFO", "demo"]).log_level == "INFO"
    assert "driftloop.log" in parser.format_help()
