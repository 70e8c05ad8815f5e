"""The monitor's landing page and a report in a real browser: headless Chromium (Debian's
``chromium``) against a monitor service on the real broker, with two models -- one serving
labelled traffic, one not yet -- checking what is rendered, at a laptop's and a phone's width,
and saving the screenshots as test artifacts.

Chromium comes from Debian (deploy/install-tools.sh installs it). Without it the test skips with
the reason, unless DRIFTLOOP_REQUIRE_DEPLOY_TOOLS is set (CI sets it): then it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.inference.runtime import load_version
from services.monitor.app import MonitorService
from shared.bus import KafkaOptions, Publisher
from shared.events import DeploymentChanged
from shared.registry import Registry
from shared.spec import apply_spec
from shared.store import FileStore
from tests.deploy.deployment import require_tool
from tests.integration.serving import monitor_service
from tests.integration.test_inference import register, rows
from tests.integration.test_monitor import SPEC, send, traffic
from tests.integration.topic_reading import wait_for

pytestmark = pytest.mark.integration

LAPTOP = (1366, 900)
PHONE = (390, 844)
BROWSER_TIMEOUT_S = 60.0
"""One Chromium run (its first start in a fresh profile takes a few seconds)."""
LABELLED = 400


@dataclass
class Chromium:
    """Headless Chromium runs, each in a fresh profile under ``workdir``, never blocking the event
    loop (the monitor under test answers on the same loop)."""

    path: str
    workdir: Path
    runs: int = 0

    def _args(self, size: tuple[int, int]) -> list[str]:
        self.runs += 1
        return [
            self.path,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            f"--user-data-dir={self._profile()}",
            f"--window-size={size[0]},{size[1]}",
        ]

    def _profile(self) -> Path:
        """The profile directory of the current run."""
        return self.workdir / f"profile-{self.runs}"

    async def _run(self, args: list[str]) -> bytes:
        log = self.workdir / f"chromium-{self.runs}.log"
        with log.open("wb") as err:
            process = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE, stderr=err)
            try:
                out, _ = await asyncio.wait_for(process.communicate(), BROWSER_TIMEOUT_S)
            except TimeoutError:
                process.kill()
                await process.wait()
                pytest.fail(f"chromium did not finish within {BROWSER_TIMEOUT_S:.0f} s: {' '.join(args)}; see {log}")
        assert process.returncode == 0, f"chromium exited with {process.returncode}; see {log}"
        return out

    async def dom(self, url: str, size: tuple[int, int] = LAPTOP) -> str:
        """The document as the browser has it after loading and rendering ``url``."""
        return (await self._run([*self._args(size), "--dump-dom", url])).decode()

    async def screenshot(self, url: str, path: Path, size: tuple[int, int]) -> tuple[int, int]:
        """Save a PNG of ``url`` at ``size``; returns the image's width and height."""
        await self._run([*self._args(size), f"--screenshot={path}", url])
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)

    async def layout(self, url: str, size: tuple[int, int], expression: str) -> Any:
        """Evaluate ``expression`` in ``url`` once loaded, over the DevTools protocol: what
        styles and widths the browser computed, which a dump of the DOM cannot show."""
        import websockets

        args = [*self._args(size), "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank"]
        profile = self._profile()
        log = self.workdir / f"chromium-{self.runs}.log"
        with log.open("wb") as err:
            process = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.DEVNULL, stderr=err)
            try:
                async with asyncio.timeout(BROWSER_TIMEOUT_S):
                    port_file = profile / "DevToolsActivePort"
                    await wait_for(lambda: port_file.exists() and len(port_file.read_text().splitlines()) >= 2)
                    port = int(port_file.read_text().splitlines()[0])
                    async with httpx.AsyncClient(timeout=10) as client:
                        targets = (await client.get(f"http://127.0.0.1:{port}/json/list")).json()
                    page = next(t for t in targets if t["type"] == "page")
                    async with websockets.connect(page["webSocketDebuggerUrl"], max_size=None) as ws:
                        calls, seen = 0, set()  # seen: the events that arrived while waiting for an answer

                        async def call(method: str, **params: Any) -> dict[str, Any]:
                            nonlocal calls
                            calls += 1
                            await ws.send(json.dumps({"id": calls, "method": method, "params": params}))
                            while True:
                                message = json.loads(await ws.recv())
                                if message.get("id") == calls:
                                    assert "error" not in message, message
                                    return dict(message["result"])
                                seen.add(message.get("method"))

                        await call("Page.enable")
                        await call("Page.navigate", url=url)
                        while "Page.loadEventFired" not in seen:
                            seen.add(json.loads(await ws.recv()).get("method"))
                        result = await call("Runtime.evaluate", expression=expression, returnByValue=True)
                        return result["result"]["value"]
            except TimeoutError:
                pytest.fail(f"chromium did not load {url} within {BROWSER_TIMEOUT_S:.0f} s; see {log}")
            finally:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()


@pytest.fixture
def chromium(tmp_path: Path) -> Chromium:
    workdir = tmp_path / "chromium"
    workdir.mkdir()
    return Chromium(require_tool("chromium", "chromium"), workdir)


@pytest.fixture
async def monitor(
    options: KafkaOptions, store: FileStore, unique: str, tmp_path: Path
) -> AsyncIterator[tuple[MonitorService, str]]:
    async with monitor_service(options, store, tmp_path, f"landing-{unique}") as (service, client):
        yield service, str(client.base_url).rstrip("/")


def promoted(model: str, version: int) -> DeploymentChanged:
    return DeploymentChanged(
        model=model,
        action="promoted",
        version=version,
        previous_version=None,
        traffic=1.0,
        reason="first version <gate passed>",
        actor="test",
    )


async def test_landing_page_and_report_in_a_browser(
    chromium: Chromium,
    monitor: tuple[MonitorService, str],
    publisher: Publisher,
    store: FileStore,
    unique: str,
    tmp_path: Path,
) -> None:
    service, base = monitor
    serving, waiting = f"credit{unique}", f"churn{unique}"
    registry = Registry(store)
    for model in (serving, waiting):
        apply_spec(store, SPEC.format(name=model))
        version = register(store, model, rows(600, 0, flip=False), None, SPEC)
        registry.set_alias(model, "production", version, "test", "first version")
    await publisher.publish(promoted(serving, 1))  # an event for the page, before the traffic it resets
    await wait_for(lambda: (w := service.handlers.models.get(serving)) is not None and w.markers, timeout=60)
    served = load_version(registry, serving, 1, frozenset({"x3"}))
    start = datetime.now(UTC) - timedelta(seconds=LABELLED)  # the report's plot spans the traffic and the event
    event, labels = traffic(serving, 1, "champion", 0, LABELLED, False, 0.0, seed=3, served=served, t0=start)
    await send(publisher, event, labels)
    await wait_for(lambda: service.handlers.models[serving].join.hits >= LABELLED, timeout=60)
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        status = (await client.get(f"/v1/models/{serving}/status")).json()
        assert (await client.get("/")).headers["content-type"].startswith("text/html")
    [live] = [r for r in status["live"] if r["variant"] == "champion"]
    figure = f"accuracy {live['accuracy']:.3f} over {LABELLED} labelled"

    dom = await chromium.dom(f"{base}/")
    assert "<title>driftloop monitor</title>" in dom and "2 models" in dom
    assert f'<a class="name" href="/report/{serving}">{serving}</a>' in dom
    assert f'<a class="name" href="/report/{waiting}">{waiting}</a>' in dom
    assert dom.index(waiting) < dom.index(serving), "models by name"
    assert figure in dom, f"{figure!r} not rendered"
    assert "promoted</b> v1: first version &lt;gate passed&gt;" in dom, "the last event, escaped"
    assert "no labelled predictions yet" in dom, "the model without traffic says what it waits for"
    assert "badge stable" in dom

    report = await chromium.dom(f"{base}/report/{serving}")
    assert f"driftloop — {serving}" in report and "<svg" in report and "Live accuracy" in report
    assert "x1" in report and "v1 champion" in report

    shots = tmp_path / "screenshots"
    shots.mkdir()
    pages = {"landing": f"{base}/", "report": f"{base}/report/{serving}"}
    for name, url in pages.items():
        for device, size in (("laptop", LAPTOP), ("phone", PHONE)):
            path = shots / f"{name}-{device}.png"
            assert await chromium.screenshot(url, path, size) == size
    print(f"screenshots of the landing page and the report: {shots}")

    measure = """JSON.stringify({
        overflow: document.documentElement.scrollWidth - window.innerWidth,
        row: getComputedStyle(document.querySelector('table.models tbody tr')).display,
        header: document.querySelector('table.models thead').getBoundingClientRect().right,
        label: getComputedStyle(document.querySelector('table.models td'), '::before').content})"""
    phone = json.loads(await chromium.layout(f"{base}/", PHONE, measure))
    assert phone["overflow"] <= 0, f"the landing page scrolls sideways on a phone by {phone['overflow']} px"
    assert phone["row"] == "grid" and phone["header"] < 0, "on a phone each model is a card, headers hidden"
    assert phone["label"] == '"Model"', "each field of a card is labelled"
    laptop = json.loads(await chromium.layout(f"{base}/", LAPTOP, measure))
    assert laptop["overflow"] <= 0 and laptop["row"] == "table-row" and laptop["label"] == "none"
