"""A consumer process for the graceful-shutdown test: each message takes a while to handle.

Usage: python slow_consumer.py BOOTSTRAP TOPIC GROUP OUT_FILE SECONDS_PER_MESSAGE
Appends "start <record_id>" and "done <record_id>" lines to OUT_FILE.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from shared.bus import Delivery, KafkaOptions, Publisher, Subscriber
from shared.events import AnnotationSubmitted, decode_as
from shared.lifecycle import configure_logging, run_until_signalled


async def main(bootstrap: str, topic: str, group: str, out: Path, seconds: float) -> None:
    options = KafkaOptions(bootstrap=bootstrap, client_id="slow", idempotence=False)
    publisher = Publisher(options)
    await publisher.start(max_wait_s=10)

    async def handle(event: AnnotationSubmitted, delivery: Delivery) -> None:
        with out.open("a") as f:
            f.write(f"start {event.record_id}\n")
        await asyncio.sleep(seconds)
        with out.open("a") as f:
            f.write(f"done {event.record_id}\n")

    sub = Subscriber(options, group, [topic], handle, publisher, lambda t, b: decode_as(AnnotationSubmitted, b))
    try:
        await run_until_signalled([sub.run], [sub.stop])
    finally:
        await publisher.stop()


if __name__ == "__main__":
    configure_logging("INFO")
    bootstrap, topic, group, out, seconds = sys.argv[1:6]
    asyncio.run(main(bootstrap, topic, group, Path(out), float(seconds)))
