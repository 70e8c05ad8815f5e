"""The house rules a reader relies on (STYLE.md): pure modules do no I/O, no import circles,
reader-sized modules, and the monitor's report reads a watch, not the handlers."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IO_LIBRARIES = {"aiokafka", "faust", "fastapi", "minio", "prometheus_client", "uvicorn", "httpx"}
PURE = [
    "services/monitor/psi.py",
    "services/monitor/alarms.py",
    "services/monitor/drift.py",
    "services/monitor/drift_settings.py",
    "services/monitor/category_drift.py",
    "services/monitor/sample_times.py",
    "services/monitor/canary.py",
    "services/monitor/watch.py",
    "services/monitor/join.py",
    "services/monitor/signals.py",
    "services/monitor/adwin.py",
    "services/monitor/detectors.py",
    "services/monitor/state.py",
    "services/monitor/report.py",
    "services/monitor/landing.py",
    "services/monitor/outcome.py",
    "services/spec_init.py",
    "services/mlflow_sync/core.py",
    "services/inference/protocol.py",
    "services/inference/binary.py",
    "services/trainer/core.py",
    "services/ingest/core.py",
    "services/ingest/columnar.py",
    "shared/reference.py",
]
MAX_MONITOR_LINES = 620


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of its code (lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for top in ("shared", "services") for p in (ROOT / top).rglob("*.py")}


def test_pure_modules_do_no_io() -> None:
    for relative in PURE:
        libraries = {name.split(".")[0] for name in imports_of(ROOT / relative)}
        assert not libraries & IO_LIBRARIES, f"{relative} imports {sorted(libraries & IO_LIBRARIES)}"


def test_the_report_reads_a_watch_not_the_handlers() -> None:
    assert "services.monitor.handlers" not in imports_of(ROOT / "services/monitor/report.py")


def test_no_import_circles() -> None:
    modules = project_modules()
    graph = {
        name: {i for i in imports_of(path) if i in modules and i != name}
        for name, path in modules.items()
        if not name.endswith("__init__")
    }
    done: set[str] = set()

    def visit(name: str, stack: list[str]) -> None:
        if name in stack:
            raise AssertionError("import circle: " + " -> ".join([*stack[stack.index(name) :], name]))
        if name in done:
            return
        for imported in sorted(graph.get(name, ())):
            visit(imported, [*stack, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_monitor_modules_stay_reader_sized() -> None:
    for path in sorted((ROOT / "services/monitor").glob("*.py")):
        lines = len(path.read_text().splitlines())
        assert lines <= MAX_MONITOR_LINES, f"{path.name} has {lines} lines"


def test_services_never_import_each_other() -> None:
    for name, path in project_modules().items():
        parts = name.split(".")
        if parts[0] != "services" or len(parts) < 3:
            continue
        own = parts[1]
        for imported in imports_of(path):
            other = imported.split(".")
            if other[0] == "services" and len(other) > 2 and other[1] != own:
                raise AssertionError(f"{name} imports {imported}")
