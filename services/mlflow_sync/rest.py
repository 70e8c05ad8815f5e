"""MLflow's REST API over httpx: the one place the mirror talks to an MLflow server.

Only the documented endpoints of the tracking server (``/api/2.0/mlflow/...``) and its
artifact proxy (``/api/2.0/mlflow-artifacts/artifacts/...``) are used, so driftloop needs no
``mlflow`` package -- only httpx (``pip install 'driftloop[mlflow]'``).

Errors are translated once, here:

* the server unreachable, timing out, answering 429 or 5xx: :class:`MlflowUnavailable`, which
  the bus retries with backoff for as long as it lasts (it is a ``ConnectionError``, one of the
  bus's transient errors), never dead-lettering the event;
* any other refusal: :class:`MlflowRejected`, with MLflow's ``error_code`` and message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from shared.errors import DriftloopError

API = "/api/2.0/mlflow"
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"
PAGE_SIZE = 200


class MlflowUnavailable(DriftloopError, ConnectionError):
    """The MLflow server cannot be reached or is overloaded; what was being mirrored waits on Kafka.

    A ``ConnectionError`` as well, so the bus treats it as it treats any unreachable peer:
    retried with capped backoff, the offset left uncommitted until MLflow takes the work.
    """


class MlflowRejected(DriftloopError):
    """MLflow refused a request (a 4xx other than 429); the message carries its error code."""

    def __init__(self, message: str, error_code: str = "") -> None:
        super().__init__(message)
        self.error_code = error_code


@dataclass(frozen=True)
class RunInfo:
    """The parts of an MLflow run the mirror reads back."""

    run_id: str
    status: str
    artifact_uri: str
    tags: dict[str, str] = field(default_factory=dict)


def _tags(items: list[dict[str, Any]] | None) -> dict[str, str]:
    return {str(t["key"]): str(t.get("value", "")) for t in items or []}


def _run_info(run: dict[str, Any]) -> RunInfo:
    info = run["info"]
    return RunInfo(
        run_id=str(info.get("run_id") or info["run_uuid"]),
        status=str(info.get("status", "")),
        artifact_uri=str(info.get("artifact_uri", "")),
        tags=_tags(run.get("data", {}).get("tags")),
    )


def _pairs(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in values.items()]


def _quoted(value: str) -> str:
    """A string literal of MLflow's search filter syntax."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class MlflowRest:
    """An MLflow tracking server, seen through the calls the mirror makes.

    Parameters
    ----------
    base_url
        The tracking server, ``http(s)://host:port`` (``DRIFTLOOP_MLFLOW_TRACKING_URI``).
    timeout_s
        Per request; a hung server counts as unavailable after it.
    token, username, password
        A bearer token, or basic-auth credentials, when the server asks for them.
    transport
        For tests: an ``httpx`` transport to use instead of the network.
    """

    def __init__(
        self,
        base_url: str,
        timeout_s: float = 10.0,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        auth = httpx.BasicAuth(username, password or "") if username else None
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout_s, headers=headers, auth=auth, transport=transport
        )

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        content: bytes | None = None,
        missing_ok: bool = False,
    ) -> dict[str, Any] | None:
        """One request; its JSON answer, or None for a 404 when ``missing_ok``."""
        try:
            response = await self._client.request(method, path, json=json, params=params, content=content)
        except httpx.TransportError as err:  # connect, read, write, pool: all "try again later"
            raise MlflowUnavailable(f"MLflow at {self.base_url} unreachable ({type(err).__name__}: {err})") from err
        if response.status_code == 429 or response.status_code >= 500:
            raise MlflowUnavailable(
                f"MLflow at {self.base_url} answered {response.status_code} to {method} {path}: {response.text[:200]}"
            )
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {}
            code = str(body.get("error_code", "")) if isinstance(body, dict) else ""
            message = str(body.get("message", response.text[:300])) if isinstance(body, dict) else response.text[:300]
            raise MlflowRejected(f"MLflow refused {method} {path} ({response.status_code} {code}): {message}", code)
        if not response.content:
            return {}
        try:
            answer = response.json()
        except ValueError as err:
            raise MlflowRejected(
                f"MLflow at {self.base_url} answered {method} {path} with something other than JSON; "
                "is DRIFTLOOP_MLFLOW_TRACKING_URI the tracking server itself (not its UI behind a proxy)?"
            ) from err
        return answer if isinstance(answer, dict) else {}

    # --- experiments and runs ---------------------------------------------------------------

    async def experiment_id(self, name: str) -> str:
        """The id of experiment ``name``, created when missing."""
        found = await self._call(
            "GET", f"{API}/experiments/get-by-name", params={"experiment_name": name}, missing_ok=True
        )
        if found is not None:
            return str(found["experiment"]["experiment_id"])
        try:
            created = await self._call("POST", f"{API}/experiments/create", json={"name": name})
        except MlflowRejected as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":  # another writer created it just now
                raise
            return await self.experiment_id(name)
        assert created is not None
        return str(created["experiment_id"])

    async def find_run(self, experiment_id: str, tag: str, value: str) -> RunInfo | None:
        """The run of ``experiment_id`` whose tag ``tag`` is ``value`` (the oldest if several), or None."""
        answer = await self._call(
            "POST",
            f"{API}/runs/search",
            json={
                "experiment_ids": [experiment_id],
                "filter": f"tags.`{tag}` = {_quoted(value)}",
                "run_view_type": "ACTIVE_ONLY",
                "max_results": 10,
                "order_by": ["attributes.start_time ASC"],
            },
        )
        runs = (answer or {}).get("runs") or []
        return _run_info(runs[0]) if runs else None

    async def create_run(self, experiment_id: str, name: str, started_ms: int, tags: dict[str, str]) -> RunInfo:
        """Create a run (status RUNNING until :meth:`finish_run`)."""
        answer = await self._call(
            "POST",
            f"{API}/runs/create",
            json={"experiment_id": experiment_id, "run_name": name, "start_time": started_ms, "tags": _pairs(tags)},
        )
        assert answer is not None
        return _run_info(answer["run"])

    async def log_batch(
        self,
        run_id: str,
        params: dict[str, str] | None = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
        timestamp_ms: int = 0,
    ) -> None:
        """Log params, metrics (step 0, at ``timestamp_ms``) and tags in one call."""
        await self._call(
            "POST",
            f"{API}/runs/log-batch",
            json={
                "run_id": run_id,
                "params": _pairs(params or {}),
                "metrics": [
                    {"key": k, "value": v, "timestamp": timestamp_ms, "step": 0} for k, v in (metrics or {}).items()
                ],
                "tags": _pairs(tags or {}),
            },
        )

    async def finish_run(self, run_id: str, status: str, ended_ms: int) -> None:
        """Mark a run FINISHED or FAILED, ending at ``ended_ms``."""
        await self._call("POST", f"{API}/runs/update", json={"run_id": run_id, "status": status, "end_time": ended_ms})

    async def upload_artifact(self, artifact_path: str, name: str, data: bytes) -> None:
        """Put ``data`` as artifact ``name`` under a run's proxied artifact path (overwriting)."""
        await self._call("PUT", f"{ARTIFACTS_API}/{artifact_path}/{name}", content=data)

    # --- model registry ---------------------------------------------------------------------

    async def ensure_registered_model(self, name: str, description: str) -> None:
        """Create registered model ``name`` unless it exists."""
        try:
            await self._call("POST", f"{API}/registered-models/create", json={"name": name, "description": description})
        except MlflowRejected as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    async def versions_by_tag(self, name: str, tag: str) -> dict[str, str]:
        """Every version of registered model ``name`` that has tag ``tag``: its value -> MLflow version."""
        found: dict[str, str] = {}
        token: str | None = None
        while True:
            params: dict[str, Any] = {"filter": f"name = {_quoted(name)}", "max_results": PAGE_SIZE}
            if token:
                params["page_token"] = token
            answer = await self._call("GET", f"{API}/model-versions/search", params=params) or {}
            for version in answer.get("model_versions") or []:
                value = _tags(version.get("tags")).get(tag)
                if value is not None and value not in found:
                    found[value] = str(version["version"])
            token = answer.get("next_page_token") or None
            if not token:
                return found

    async def find_version(self, name: str, tag: str, value: str) -> str | None:
        """The MLflow version of ``name`` whose tag ``tag`` is ``value``, or None."""
        answer = await self._call(
            "GET",
            f"{API}/model-versions/search",
            params={"filter": f"name = {_quoted(name)} and tags.`{tag}` = {_quoted(value)}", "max_results": 10},
        )
        versions = sorted((answer or {}).get("model_versions") or [], key=lambda v: int(v["version"]))
        return str(versions[0]["version"]) if versions else None

    async def create_version(self, name: str, source: str, run_id: str, tags: dict[str, str], description: str) -> str:
        """Register a new MLflow version of ``name`` from a run's artifact; its number."""
        answer = await self._call(
            "POST",
            f"{API}/model-versions/create",
            json={"name": name, "source": source, "run_id": run_id, "tags": _pairs(tags), "description": description},
        )
        assert answer is not None
        return str(answer["model_version"]["version"])

    async def set_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        """Set one tag of an MLflow model version."""
        await self._call(
            "POST",
            f"{API}/model-versions/set-tag",
            json={"name": name, "version": version, "key": key, "value": value},
        )

    async def aliases(self, name: str) -> dict[str, str]:
        """Registered model ``name``'s aliases (alias -> MLflow version); empty when the model does not exist."""
        answer = await self._call("GET", f"{API}/registered-models/get", params={"name": name}, missing_ok=True)
        if answer is None:
            return {}
        model = answer.get("registered_model", {})
        return {str(a["alias"]): str(a["version"]) for a in model.get("aliases") or []}

    async def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``alias`` of ``name`` at MLflow version ``version``."""
        await self._call(
            "POST", f"{API}/registered-models/alias", json={"name": name, "alias": alias, "version": version}
        )

    async def delete_alias(self, name: str, alias: str) -> None:
        """Remove ``alias`` of ``name`` (no error when it is not set)."""
        await self._call("DELETE", f"{API}/registered-models/alias", json={"name": name, "alias": alias})
