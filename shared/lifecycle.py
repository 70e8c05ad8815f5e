"""Process lifecycle: logging set-up and graceful shutdown on SIGTERM / SIGINT.

A service's ``app.py`` runs its loops under :func:`run_until_signalled`; the first signal
asks every component to stop cleanly (finish in-flight work, commit, close), a second one
is left to the default handler so an operator can still force an exit.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(level: str = "INFO") -> None:
    """Plain, timestamped log lines on stderr, one per event."""
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr, force=True)
    logging.getLogger("aiokafka").setLevel(max(logging.getLevelName(level), logging.WARNING))


async def run_until_signalled(
    tasks: Iterable[Callable[[], Awaitable[None]]],
    on_stop: Iterable[Callable[[], None]],
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT),
) -> None:
    """Run ``tasks`` concurrently until they end; a signal calls every ``on_stop`` once.

    The tasks are expected to return soon after their stop callback ran. If one task fails,
    the others are asked to stop too, and the failure is raised once they have ended.
    """
    loop = asyncio.get_running_loop()
    stops = list(on_stop)
    stopped = False

    def request_stop(signame: str | None = None) -> None:
        nonlocal stopped
        if stopped:
            return
        stopped = True
        if signame:
            log.info("received %s: stopping gracefully", signame)
        for stop in stops:
            stop()
        for sig in signals:
            loop.remove_signal_handler(sig)

    for sig in signals:
        loop.add_signal_handler(sig, request_stop, sig.name)
    running = [asyncio.ensure_future(factory()) for factory in tasks]
    try:
        pending = set(running)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(t.exception() for t in done if not t.cancelled()):
                request_stop()
        for task in running:
            failure = None if task.cancelled() else task.exception()
            if failure is not None:
                raise failure
    finally:
        if not stopped:
            for sig in signals:
                loop.remove_signal_handler(sig)


def run_forever(main: Coroutine[Any, Any, None]) -> None:
    """Run a service's main coroutine on uvloop when it is installed (it serves HTTP faster), else asyncio."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        asyncio.run(main)
        return
    uvloop.run(main)
