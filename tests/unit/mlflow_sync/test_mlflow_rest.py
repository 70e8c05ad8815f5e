"""The MLflow REST adapter's translation of answers and failures (httpx's mock transport, no network).

Covered: an unreachable server, a 5xx and a 429 are :class:`MlflowUnavailable` (transient to the
bus); a 4xx is :class:`MlflowRejected` with MLflow's error code; creating what already exists
(an experiment another writer created, a registered model) is not an error; a missing registered
model has no aliases; version search follows page tokens; credentials are sent as configured;
requests carry the documented shapes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from services.mlflow_sync.rest import MlflowRejected, MlflowRest, MlflowUnavailable

Route = Callable[[httpx.Request], httpx.Response]


def client(route: Route, **options: Any) -> MlflowRest:
    return MlflowRest("http://mlflow.test/", transport=httpx.MockTransport(route), **options)


def error(status: int, code: str, message: str = "no") -> httpx.Response:
    return httpx.Response(status, json={"error_code": code, "message": message})


async def test_an_unreachable_or_failing_server_is_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(MlflowUnavailable, match="unreachable") as caught:
        await client(refuse).aliases("credit")
    assert isinstance(caught.value, ConnectionError)
    for status in (500, 503, 429):
        with pytest.raises(MlflowUnavailable, match=str(status)):
            await client(lambda r, s=status: httpx.Response(s, text="busy")).aliases("credit")  # type: ignore[misc]


async def test_a_refusal_carries_mlflows_error_code() -> None:
    mlflow = client(lambda r: error(400, "INVALID_PARAMETER_VALUE", "Changing param values is not allowed"))
    with pytest.raises(MlflowRejected, match="Changing param values") as caught:
        await mlflow.log_batch("run", params={"seed": "1"})
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE" and caught.value.status_code == 500


async def test_an_experiment_is_found_or_created_even_when_another_writer_wins() -> None:
    created = False

    def route(request: httpx.Request) -> httpx.Response:
        nonlocal created
        if request.url.path.endswith("/experiments/get-by-name"):
            assert request.url.params["experiment_name"] == "driftloop/credit"
            if created:
                return httpx.Response(200, json={"experiment": {"experiment_id": "4"}})
            return error(404, "RESOURCE_DOES_NOT_EXIST")
        assert request.url.path == "/api/2.0/mlflow/experiments/create"
        created = True  # another writer created it between our lookup and our create
        return error(400, "RESOURCE_ALREADY_EXISTS")

    assert await client(route).experiment_id("driftloop/credit") == "4"


async def test_a_registered_model_that_exists_is_fine_and_a_missing_one_has_no_aliases() -> None:
    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/registered-models/create"):
            return error(400, "RESOURCE_ALREADY_EXISTS")
        return error(404, "RESOURCE_DOES_NOT_EXIST")

    mlflow = client(route)
    await mlflow.ensure_registered_model("credit", "mirrored")
    assert await mlflow.aliases("credit") == {}


async def test_version_search_follows_page_tokens_and_reads_the_tag() -> None:
    pages = {
        None: {
            "model_versions": [{"version": "1", "tags": [{"key": "driftloop.version", "value": "1"}]}],
            "next_page_token": "p2",
        },
        "p2": {
            "model_versions": [{"version": "2", "tags": [{"key": "driftloop.version", "value": "3"}]}, {"version": "3"}]
        },
    }

    def route(request: httpx.Request) -> httpx.Response:
        assert request.url.params["filter"] == "name = 'credit'"
        return httpx.Response(200, json=pages[request.url.params.get("page_token")])

    assert await client(route).versions_by_tag("credit", "driftloop.version") == {"1": "1", "3": "2"}


async def test_requests_have_the_documented_shapes_and_credentials() -> None:
    seen: list[httpx.Request] = []

    def route(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/runs/search"):
            return httpx.Response(
                200, json={"runs": [{"info": {"run_id": "r1", "status": "RUNNING", "artifact_uri": "a"}}]}
            )
        return httpx.Response(200, json={})

    mlflow = client(route, token="t0ken")
    found = await mlflow.find_run("7", "driftloop.run_key", "version-3")
    await mlflow.log_batch("r1", params={"seed": "7"}, metrics={"accuracy": 0.9}, tags={"k": "v"}, timestamp_ms=5)
    await mlflow.upload_artifact("7/r1/artifacts", "model.onnx", b"graph")
    await mlflow.delete_alias("credit", "canary")
    assert found is not None and found.run_id == "r1" and found.status == "RUNNING"
    search, batch, upload, delete = seen
    assert json.loads(search.content)["filter"] == "tags.`driftloop.run_key` = 'version-3'"
    assert json.loads(batch.content) == {
        "run_id": "r1",
        "params": [{"key": "seed", "value": "7"}],
        "metrics": [{"key": "accuracy", "value": 0.9, "timestamp": 5, "step": 0}],
        "tags": [{"key": "k", "value": "v"}],
    }
    assert upload.method == "PUT" and upload.url.path == "/api/2.0/mlflow-artifacts/artifacts/7/r1/artifacts/model.onnx"
    assert upload.content == b"graph"
    assert delete.method == "DELETE" and json.loads(delete.content) == {"name": "credit", "alias": "canary"}
    assert all(r.headers["Authorization"] == "Bearer t0ken" for r in seen)

    basic = client(route, username="ann", password="pw")
    await basic.delete_alias("credit", "canary")
    assert seen[-1].headers["Authorization"] == "Basic " + base64.b64encode(b"ann:pw").decode()


async def test_a_quote_in_a_filter_value_is_escaped() -> None:
    seen: list[httpx.Request] = []

    def route(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"model_versions": []})

    assert await client(route).find_version("o'brien", "driftloop.version", "2") is None
    assert seen[0].url.params["filter"] == "name = 'o\\'brien' and tags.`driftloop.version` = '2'"
