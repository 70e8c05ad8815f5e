"""Graceful shutdown: SIGTERM lets the in-flight message finish and commits it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.bus import Delivery, KafkaOptions, Publisher, Subscriber, ensure_topics
from shared.events import AnnotationSubmitted, decode_as, encode_event

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).with_name("slow_consumer.py")


async def test_sigterm_finishes_in_flight_message_and_commits(kafka: KafkaOptions, unique: str, tmp_path: Path) -> None:
    topic, group = f"term-{unique}", f"g-{unique}"
    await ensure_topics(kafka, [topic], partitions=1)
    publisher = Publisher(kafka)
    await publisher.start(max_wait_s=10)
    try:
        for i in range(6):
            event = AnnotationSubmitted(model="m", record_id=f"r-{i}", features={"x": 1.0}, label=0)
            await publisher.send(topic, encode_event(event), key=b"m")

        out = tmp_path / "handled.txt"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), kafka.bootstrap, topic, group, str(out), "1.0"],
            env=env,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "start r-1" not in (out.read_text() if out.exists() else ""):
            await asyncio.sleep(0.05)
        assert "start r-1" in out.read_text(), "consumer never got going"
        proc.send_signal(signal.SIGTERM)  # r-1 is in flight
        _, stderr = await asyncio.to_thread(proc.communicate, timeout=20)
        assert proc.returncode == 0, stderr.decode()
        lines = out.read_text().split()
        handled = [lines[i + 1] for i in range(0, len(lines), 2) if lines[i] == "done"]
        assert handled == ["r-0", "r-1"], "the in-flight message must finish, and nothing after it start"
        assert "received SIGTERM: stopping gracefully" in stderr.decode()

        rest: list[str] = []

        async def collect(event: AnnotationSubmitted, delivery: Delivery) -> None:
            rest.append(event.record_id)

        sub = Subscriber(kafka, group, [topic], collect, publisher, lambda t, b: decode_as(AnnotationSubmitted, b))
        task = asyncio.create_task(sub.run())
        async with asyncio.timeout(30):
            while len(rest) < 4:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        sub.stop()
        await task
        assert rest == ["r-2", "r-3", "r-4", "r-5"], "committed messages must not come back; none may be lost"
    finally:
        await publisher.stop()
