"""HTTP plumbing every service shares: health and metrics routes, error responses, a uvicorn runner.

Each service mounts ``/health/live``, ``/health/ready`` and ``/metrics`` (Prometheus) on its
FastAPI app and runs it with :class:`HttpServer`, which leaves signal handling to the
service's lifecycle (uvicorn would otherwise take SIGTERM for itself). Every error a route
answers with goes through :func:`encode_error`, the one mapping from an error to HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from shared import __version__
from shared.errors import DriftloopError, http_status

log = logging.getLogger(__name__)


def add_health_routes(app: FastAPI, registry: CollectorRegistry, ready: Callable[[], str | None]) -> None:
    """Mount ``/health/live``, ``/health/ready`` (both say the version) and ``/metrics``.

    ``ready()`` returns None when the service can do its work, else the reason it cannot.
    """

    @app.get("/health/live", tags=["health"])
    async def live() -> dict[str, str]:
        return {"status": "live", "version": __version__}

    @app.get("/health/ready", tags=["health"], response_model=None)
    async def is_ready() -> dict[str, str] | JSONResponse:
        reason = ready()
        if reason is None:
            return {"status": "ready", "version": __version__}
        return JSONResponse({"status": "not ready", "reason": reason, "version": __version__}, status_code=503)

    @app.get("/metrics", tags=["health"])
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


INTERNAL_ERROR = "internal error; see the service log"
"""What a client is told of an error that is not a :class:`DriftloopError` (the log has the rest)."""
_INTERNAL_ERROR_BODY = orjson.dumps({"error": INTERNAL_ERROR})


def encode_error(err: Exception) -> tuple[int, bytes]:
    """The status and JSON body of the response to ``err``: the one mapping from errors to HTTP.

    A :class:`DriftloopError` answers ``{"error": message}`` with its status from
    :data:`shared.errors.HTTP_STATUS`; any other exception is a 500 that leaks no detail (the
    caller logs it). Raw ASGI routes send these bytes as they are; FastAPI routes wrap them
    with :func:`error_response`.

    >>> from shared.errors import ModelNotFound
    >>> encode_error(ModelNotFound("no model credit"))
    (404, b'{"error":"no model credit"}')
    >>> encode_error(KeyError("secret detail"))
    (500, b'{"error":"internal error; see the service log"}')
    """
    if isinstance(err, DriftloopError):
        return http_status(err), orjson.dumps({"error": err.message})
    return 500, _INTERNAL_ERROR_BODY


def error_response(err: Exception) -> Response:
    """:func:`encode_error` as a FastAPI response."""
    status, body = encode_error(err)
    return Response(body, status_code=status, media_type="application/json")


def add_error_handler(app: FastAPI, observe: Callable[[Request, int], None] | None = None) -> None:
    """Answer every :class:`DriftloopError` a route raises with :func:`error_response`.

    ``observe(request, status)``, when given, sees each one first (a service's request metrics).
    """

    @app.exception_handler(DriftloopError)
    async def driftloop_error(request: Request, exc: DriftloopError) -> Response:
        response = error_response(exc)
        if observe is not None:
            observe(request, response.status_code)
        return response


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the service's lifecycle owns SIGTERM / SIGINT


class HttpServer:
    """Serves a FastAPI app on ``host:port`` until :meth:`stop`."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self.app: Any = app  # a service may put a plain ASGI app in front of its FastAPI app
        self.host = host
        self.port = port
        self._server: _QuietServer | None = None
        self._socket: socket.socket | None = None
        self._stop_requested = False

    def bind(self) -> int:
        """Bind the listening socket now (port 0 picks a free one); returns the port."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # accepted connections inherit it: no Nagle delay (40 ms with delayed ACKs) on small responses
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.host, self.port))
        sock.listen(2048)
        sock.setblocking(False)
        self._socket = sock
        self.port = sock.getsockname()[1]
        return self.port

    async def run(self) -> None:
        """Serve until :meth:`stop` is called."""
        if self._socket is None:
            self.bind()
        assert self._socket is not None
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="on")
        self._server = _QuietServer(config)
        self._server.should_exit = self._stop_requested
        log.info("HTTP on http://%s:%d", self.host, self.port)
        await self._server.serve(sockets=[self._socket])

    def stop(self) -> None:
        """Ask the server to finish in-flight requests and exit."""
        self._stop_requested = True
        if self._server is not None:
            self._server.should_exit = True

    async def wait_started(self, timeout: float = 10.0) -> None:
        """Wait until the server accepts requests."""
        async with asyncio.timeout(timeout):
            while self._server is None or not self._server.started:
                await asyncio.sleep(0.01)
