"""Container health probe for a driftloop service: GET a health route on the service's own port.

Used by the image's HEALTHCHECK and by docker-compose (the python:slim base has no curl).
Usage: ``driftloop-healthcheck [PATH]`` (default ``/health/ready``). The port is
``DRIFTLOOP_PORT``, else the default port of the service PID 1 serves (``driftloop serve X``).
Exits 0 when the route answers 2xx, 1 otherwise, with the reason on stderr.
Standard library only, so it works whatever else is broken.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_PORTS = {"inference": 8000, "ingest": 8001, "monitor": 8002, "trainer": 8003}


def service_port() -> int | None:
    """``DRIFTLOOP_PORT``, else the default port of the service named on PID 1's command line."""
    port = os.environ.get("DRIFTLOOP_PORT", "")
    if port.isdigit():
        return int(port)
    try:
        args = Path("/proc/1/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    for name in args:
        if name in DEFAULT_PORTS:
            return DEFAULT_PORTS[name]
    return None


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else "/health/ready"
    port = service_port()
    if port is None:
        sys.stderr.write("driftloop-healthcheck: set DRIFTLOOP_PORT (no `driftloop serve X` on PID 1)\n")
        return 1
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return 0 if 200 <= response.status < 300 else 1
    except urllib.error.HTTPError as err:
        sys.stderr.write(f"driftloop-healthcheck: {url} answered {err.code}\n")
    except OSError as err:
        sys.stderr.write(f"driftloop-healthcheck: {url} unreachable ({err})\n")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
