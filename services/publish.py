"""``driftloop publish annotations FILE.jsonl``: a small producer for upstream systems and demos."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from shared import topics
from shared.bus import KafkaOptions, Publisher, confirm
from shared.errors import InvalidInput
from shared.events import AnnotationSubmitted, describe_validation_error, encode_event

BATCH = 1000
MAX_REPORTED_ERRORS = 20


def prepare_line(line: bytes, model: str | None) -> AnnotationSubmitted:
    """One JSON line as an event; defaults filled in, ``model`` used where the line has none."""
    try:
        body = orjson.loads(line)
    except orjson.JSONDecodeError as err:
        raise InvalidInput(f"not JSON ({err})") from None
    if not isinstance(body, dict):
        raise InvalidInput("not a JSON object")
    if model is not None:
        body.setdefault("model", model)
    try:
        return AnnotationSubmitted.model_validate(body)
    except ValidationError as err:
        raise InvalidInput(describe_validation_error(err)) from None


async def publish_annotations(
    options: KafkaOptions, path: Path, model: str | None, raw: bool = False, console: Console | None = None
) -> dict[str, Any]:
    """Publish every line of ``path``; returns counts and the first invalid lines."""
    console = console or Console(stderr=True)
    try:
        lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    except OSError as err:
        raise InvalidInput(f"cannot read {path}: {err.strerror}") from None
    publisher = Publisher(options)
    await publisher.start(max_wait_s=15)
    sent = 0
    errors: list[str] = []
    invalid = 0
    progress = Progress(
        TextColumn("publishing annotations"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )
    try:
        with progress:
            task = progress.add_task("send", total=len(lines))
            futures: list[asyncio.Future[Any]] = []
            for number, line in enumerate(lines, start=1):
                if raw:
                    key = (model or "").encode() or None
                    futures.append(await publisher.enqueue(topics.ANNOTATIONS, line, key))
                else:
                    try:
                        event = prepare_line(line, model)
                    except InvalidInput as err:
                        invalid += 1
                        if len(errors) < MAX_REPORTED_ERRORS:
                            errors.append(f"line {number}: {err.message}")
                        progress.advance(task)
                        continue
                    futures.append(
                        await publisher.enqueue(topics.ANNOTATIONS, encode_event(event), event.model.encode())
                    )
                if len(futures) >= BATCH:
                    sent += await confirm(futures)
                    progress.advance(task, len(futures))
                    futures = []
            sent += await confirm(futures)
            progress.advance(task, len(futures))
    finally:
        await publisher.stop()
    for problem in errors:
        console.print(f"[red]{problem}[/red]")
    if invalid > len(errors):
        console.print(f"[red]… and {invalid - len(errors)} more invalid lines[/red]")
    console.print(f"sent {sent} of {len(lines)} lines to {topics.ANNOTATIONS} ({invalid} invalid, not sent)")
    return {"topic": topics.ANNOTATIONS, "lines": len(lines), "sent": sent, "invalid_lines": invalid, "errors": errors}
