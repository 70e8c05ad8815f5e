"""The version is written once (shared.__version__) and shown everywhere a user looks for it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from shared import __version__
from shared.http import add_health_routes

ROOT = Path(__file__).resolve().parents[3]


def test_the_package_takes_its_version_from_shared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "shared.__version__"}
    assert version("driftloop") == __version__, "the installed distribution says the same"


def test_the_cli_says_the_version() -> None:
    done = subprocess.run([sys.executable, "-m", "services.cli", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"driftloop {__version__}"


async def test_health_routes_say_the_version() -> None:
    app = FastAPI()
    reason: list[str | None] = [None]
    add_health_routes(app, CollectorRegistry(), lambda: reason[0])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.get("/health/live")).json() == {"status": "live", "version": __version__}
        assert (await client.get("/health/ready")).json() == {"status": "ready", "version": __version__}
        reason[0] = "warming up"
        r = await client.get("/health/ready")
        assert r.status_code == 503 and r.json() == {
            "status": "not ready",
            "reason": "warming up",
            "version": __version__,
        }


def test_the_licence_file_matches_the_declared_licence() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    text = (ROOT / "LICENSE").read_text()
    assert project["project"]["license"] == "Apache-2.0"
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
