"""Inference over real sockets, with the real broker: protocols, errors, hot swap, canary, shadow, log."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import httpx
import numpy as np
import pytest
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput, InferResult
from tritonclient.http.aio import InferenceServerClient as AsyncInferenceServerClient

from services.inference.app import InferenceService
from services.trainer.runner import train
from shared.bus import KafkaOptions, Publisher
from shared.datasets import AcceptedRecord, DatasetRepository
from shared.events import DeploymentChanged
from shared.registry import Registry
from shared.spec import apply_spec
from shared.store import FileStore
from tests.integration.serving import inference_service
from tests.integration.topic_reading import read_predictions, wait_for

pytestmark = pytest.mark.integration
T = TypeVar("T")

SPEC = """
name: {name}
features: [{{name: x1}}, {{name: x2}}, {{name: x3, allow_missing: true}}]
label: {{values: [0, 1]}}
training: {{estimator: LogisticRegression, holdout: 0.25, seed: 1}}
deployment: {{strategy: canary, canary_traffic: 0.5}}
"""
T0 = datetime(2026, 4, 1, tzinfo=UTC)


def rows(n: int, start: int, flip: bool) -> list[AcceptedRecord]:
    rng = np.random.default_rng(start)
    X = rng.uniform(0, 10, size=(n, 3))
    y = ((X[:, 0] + X[:, 1] > 10) != flip).astype(int)
    return [
        AcceptedRecord(f"r{start + i}", T0 + timedelta(seconds=start + i), int(y[i]), 1.0, None, None, tuple(X[i]))
        for i in range(n)
    ]


def register(store: FileStore, model: str, records: list[AcceptedRecord], known: int | None, spec: str = SPEC) -> int:
    repo = DatasetRepository(store)
    manifest = repo.write_version(model, "h" * 64, ["x1", "x2", "x3"], [0, 1], records, known)
    assert manifest is not None
    from shared.spec import parse_spec

    result = train(
        parse_spec(spec.format(name=model)), repo, Registry(store), manifest.version, uuid.uuid4().hex, "manual", None
    )
    assert result.card is not None, result.error
    return result.card.version


@pytest.fixture
async def served(
    options: KafkaOptions, store: FileStore, unique: str, tmp_path: Path
) -> AsyncIterator[tuple[str, InferenceService, httpx.AsyncClient]]:
    model = f"m{unique}"
    apply_spec(store, SPEC.format(name=model))
    version = register(store, model, rows(400, 0, flip=False), None)
    Registry(store).set_alias(model, "production", version, "test", "first")
    async with inference_service(options, store, tmp_path, model) as (service, client):
        yield model, service, client


def v2(rows_: list[list[float]], **extra: object) -> dict[str, object]:
    return {"inputs": [{"name": "input", "shape": [len(rows_), 3], "datatype": "FP32", "data": rows_}], **extra}


async def test_protocols_and_metadata(served: tuple[str, InferenceService, httpx.AsyncClient]) -> None:
    model, _, client = served
    r = await client.post(f"/v2/models/{model}/infer", json=v2([[9, 9, 1], [1, 1, 1]], id="req-7"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "req-7" and r.headers["x-inference-id"] == "req-7" and body["model_version"] == "1"
    label, proba = body["outputs"]
    assert label == {"name": "label", "shape": [2], "datatype": "INT64", "data": [1, 0]}
    assert proba["shape"] == [2, 2] and abs(sum(proba["data"][:2]) - 1) < 1e-5

    per_feature = {
        "inputs": [
            {"name": n, "shape": [1], "datatype": "FP64", "data": [v]}
            for n, v in (("x2", 9.0), ("x1", 9.0), ("x3", 0.0))
        ],
        "outputs": [{"name": "label"}],
    }
    r = await client.post(f"/v2/models/{model}/infer", json=per_feature, headers={"X-Inference-Id": "abc"})
    assert r.status_code == 200 and r.json()["id"] == "abc" and [o["name"] for o in r.json()["outputs"]] == ["label"]

    r = await client.post(
        f"/v1/models/{model}:predict", json={"instances": [{"x1": 9, "x2": 9, "x3": 1}, [1, 1, None]]}
    )
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["label"] == 1 and r.json()["model_version"] == "1" and r.json()["id"]

    r = await client.post(f"/v2/models/{model}/versions/1/infer", json=v2([[1, 1, 1]]))
    assert r.status_code == 200 and r.json()["model_version"] == "1"

    meta = (await client.get(f"/v2/models/{model}")).json()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3]}]
    assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities"]
    assert meta["parameters"]["features"] == ["x1", "x2", "x3"]
    assert (await client.get("/v2")).json()["name"] == "driftloop"
    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{model}/ready", "/health/live", "/metrics"):
        assert (await client.get(path)).status_code == 200, path
    assert (await client.get(f"/v2/models/{model}/versions/1/ready")).status_code == 200


@pytest.mark.parametrize(
    ("path", "content", "status", "message"),
    [
        ("/v2/models/{m}/infer", b"{not json", 400, "not valid JSON"),
        ("/v2/models/{m}/infer", b"", 400, "empty"),
        ("/v2/models/{m}/infer", json.dumps(v2([[1, 2]])).replace("[1, 3]", "[1, 2]").encode(), 422, "has 2 columns"),
        (
            "/v2/models/{m}/infer",
            b'{"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [NaN, 1, 1]}]}',
            400,
            "not valid JSON",
        ),
        (
            "/v2/models/{m}/infer",
            b'{"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": [1e39, 1, 1]}]}',
            422,
            "too large for a 32-bit float",
        ),
        ("/v2/models/{m}/infer", json.dumps(v2([[1, 2, 3]])).replace("FP32", "BYTES").encode(), 422, "BYTES data"),
        ("/v2/models/nope/infer", json.dumps(v2([[1, 2, 3]])).encode(), 404, "'nope' is not served"),
        ("/v2/models/{m}/versions/99/infer", json.dumps(v2([[1, 2, 3]])).encode(), 404, "no version 99"),
        ("/v2/models/{m}/infer", json.dumps(v2([[1.0, 2.0, 3.0]] * 5000)).encode(), 413, "limit"),
        ("/v1/models/{m}:predict", b'{"instances": [{"x1": 1}]}', 422, "missing feature"),
        ("/v1/models/{m}:predict", b'{"rows": []}', 422, "instances"),
        ("/v2/models/{m}/versions/abc/infer", json.dumps(v2([[1, 2, 3]])).encode(), 422, "version"),
    ],
)
async def test_bad_input_is_a_clear_4xx(
    served: tuple[str, InferenceService, httpx.AsyncClient], path: str, content: bytes, status: int, message: str
) -> None:
    model, _, client = served
    r = await client.post(path.format(m=model), content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


async def test_hot_swap_under_load_loses_no_request(
    served: tuple[str, InferenceService, httpx.AsyncClient], store: FileStore, publisher: Publisher
) -> None:
    model, service, client = served
    flipped = register(store, model, rows(2000, 1000, flip=True), 1)  # outweighs the 400 unflipped rows
    statuses: list[int] = []
    versions: list[str] = []
    stop = asyncio.Event()

    async def load() -> None:
        while not stop.is_set():
            r = await client.post(f"/v2/models/{model}/infer", json=v2([[9, 9, 1]]))
            statuses.append(r.status_code)
            versions.append(r.json().get("model_version", "?"))

    clients = [asyncio.create_task(load()) for _ in range(4)]
    await asyncio.sleep(0.5)
    change = Registry(store).set_alias(model, "production", flipped, "test", "swap")
    await publisher.publish(
        DeploymentChanged(
            model=model,
            action="promoted",
            version=flipped,
            previous_version=1,
            traffic=1.0,
            reason=change.reason,
            actor="test",
        )
    )
    await wait_for(lambda: versions and versions[-1] == str(flipped), timeout=20)
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*clients)
    assert set(statuses) == {200}, "no request failed during the swap"
    assert "1" in versions and versions[-1] == str(flipped)
    r = await client.post(f"/v2/models/{model}/infer", json=v2([[9, 9, 1]]))
    assert r.json()["outputs"][0]["data"] == [0], "the new version answers (its concept is flipped)"

    # a version that fails to load leaves the current one serving
    broken = register(store, model, rows(400, 3000, flip=False), 2)
    store.put(Registry(store).card(model, broken).artifact_key, b"not onnx")
    Registry(store).set_alias(model, "production", broken, "test", "bad artifact")
    await service.handlers.refresh(model)
    r = await client.post(f"/v2/models/{model}/infer", json=v2([[9, 9, 1]]))
    assert r.status_code == 200 and r.json()["model_version"] == str(flipped)
    assert service.registry.get_sample_value("driftloop_inference_model_load_failures_total", {"model": model}) == 1


async def test_canary_shadow_and_the_prediction_log(
    served: tuple[str, InferenceService, httpx.AsyncClient], store: FileStore, options: KafkaOptions
) -> None:
    model, service, client = served
    candidate = register(store, model, rows(400, 2000, flip=False), 1)
    registry = Registry(store)
    registry.set_alias(model, "canary", candidate, "test", "canary")
    registry.set_alias(model, "shadow", candidate, "test", "shadow")
    await service.handlers.refresh(model)
    variants = {}
    for i in range(60):
        r = await client.post(f"/v2/models/{model}/infer", json=v2([[5, 5, 5]], id=f"id-{i}"))
        variants[f"id-{i}"] = r.json()["parameters"]["variant"]
    assert {"champion", "canary"} <= set(variants.values())
    again = await client.post(f"/v2/models/{model}/infer", json=v2([[5, 5, 5]], id="id-7"))
    assert again.json()["parameters"]["variant"] == variants["id-7"], "the route is stable per inference id"

    logged = await read_predictions(options, model, 121)  # 60 + 1 served, 60 shadowed
    by_variant = {p.variant for p in logged}
    assert {"champion", "canary", "shadow"} <= by_variant
    shadow = [p for p in logged if p.variant == "shadow"]
    assert shadow[0].version == candidate and shadow[0].inference_id.startswith("id-")
    first = next(p for p in logged if p.inference_id == "id-0" and p.variant != "shadow")
    assert first.features == {"x1": 5.0, "x2": 5.0, "x3": 5.0} and set(first.probabilities) == {"0", "1"}


async def test_wrong_method_and_chunked_bodies_over_the_limit(
    served: tuple[str, InferenceService, httpx.AsyncClient],
) -> None:
    model, _, client = served
    r = await client.get(f"/v2/models/{model}/infer")
    assert r.status_code == 405 and "takes POST" in r.json()["error"] and r.headers["allow"] == "POST"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit is counted as it arrives
        yield b'{"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": ['
        for _ in range(20_000):
            yield b"1.0, "
        yield b"1.0]}]}"

    r = await client.post(f"/v2/models/{model}/infer", content=chunks())
    assert r.status_code == 413 and "limit" in r.json()["error"]
    r = await client.post(f"/v2/models/{model}/infer", json=v2([[1, 1, 1]]))
    assert r.status_code == 200, "the service carries on"


async def send_all(client: httpx.AsyncClient, path: str, bodies: list[dict[str, object]]) -> list[httpx.Response]:
    """POST every body, eight at a time, in order of the list."""
    gate = asyncio.Semaphore(8)

    async def one(body: dict[str, object]) -> httpx.Response:
        async with gate:
            return await client.post(path, json=body)

    return await asyncio.gather(*(one(b) for b in bodies))


async def test_canary_gets_its_share_and_the_shadow_changes_nothing(
    served: tuple[str, InferenceService, httpx.AsyncClient], store: FileStore
) -> None:
    model, service, client = served
    registry = Registry(store)
    flipped = register(store, model, rows(2000, 5000, flip=True), 1)  # answers the opposite of v1
    rng = np.random.default_rng(3)
    bodies = [v2([[float(v) for v in rng.uniform(0, 10, 3)]], id=f"req-{i}") for i in range(2000)]
    path = f"/v2/models/{model}/infer"
    before = await send_all(client, path, bodies[:300])

    registry.set_alias(model, "shadow", flipped, "test", "shadow")
    await service.handlers.refresh(model)
    shadowed = await send_all(client, path, bodies[:300])
    assert [r.json()["outputs"] for r in shadowed] == [r.json()["outputs"] for r in before]
    assert {r.json()["model_version"] for r in shadowed} == {"1"}, "the shadow never answers"

    registry.set_alias(model, "canary", flipped, "test", "canary at 50%")
    await service.handlers.refresh(model)
    answers = await send_all(client, path, bodies)
    assert all(r.status_code == 200 for r in answers)
    share = sum(r.json()["parameters"]["variant"] == "canary" for r in answers) / len(answers)
    assert abs(share - 0.5) <= 0.03, f"canary share {share:.3f} for a configured 0.5"
    for r in answers:  # each variant answers with its own version
        expected = str(flipped) if r.json()["parameters"]["variant"] == "canary" else "1"
        assert r.json()["model_version"] == expected


# --- a stock tritonclient (the Open Inference Protocol's binary tensor data extension) -------------------


def stock_url(client: httpx.AsyncClient) -> str:
    return str(client.base_url).removeprefix("http://").rstrip("/")


async def with_stock_client(client: httpx.AsyncClient, calls: Callable[[InferenceServerClient], T]) -> T:
    """Run ``calls`` with tritonclient's HTTP client in its default settings, in a worker thread
    (it blocks, and gevent wants the client made and used on one thread)."""

    def run() -> T:
        with InferenceServerClient(stock_url(client)) as stock:
            return calls(stock)

    return await asyncio.to_thread(run)


async def json_answer(client: httpx.AsyncClient, path: str, X: np.ndarray) -> tuple[list[int], np.ndarray]:
    r = await client.post(path, json=v2(X.tolist()))
    assert r.status_code == 200, r.text
    label, proba = r.json()["outputs"]
    return label["data"], np.array(proba["data"], dtype=np.float32).reshape(proba["shape"])


async def test_tritonclient_defaults_get_the_json_answer(
    served: tuple[str, InferenceService, httpx.AsyncClient],
) -> None:
    model, _, client = served
    for n in (1, 64):
        for version in ("", "1"):
            await stock_matches_json(client, model, n, version)


async def stock_matches_json(client: httpx.AsyncClient, model: str, n: int, version: str) -> None:
    """tritonclient with its defaults, one request of ``n`` rows: the same answer as JSON gets."""
    X = np.random.default_rng(n).uniform(0, 10, size=(n, 3)).astype(np.float32)
    tensor = InferInput("input", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X)  # binary_data=True by default; no outputs given: binary outputs asked for

    def calls(stock: InferenceServerClient) -> InferResult:
        assert stock.is_model_ready(model) and stock.get_model_metadata(model)["name"] == model
        return stock.infer(model, [tensor], model_version=version, request_id=f"t{n}")

    result = await with_stock_client(client, calls)
    response = result.get_response()
    assert response["id"] == f"t{n}" and response["model_version"] == "1"
    assert all("binary_data_size" in o["parameters"] for o in response["outputs"]), "outputs came back binary"
    path = f"/v2/models/{model}/versions/{version}/infer" if version else f"/v2/models/{model}/infer"
    labels, proba = await json_answer(client, path, X)
    assert result.as_numpy("label").tolist() == labels
    assert np.array_equal(result.as_numpy("probabilities"), proba)


async def test_tritonclient_json_mixed_and_compressed_requests(
    served: tuple[str, InferenceService, httpx.AsyncClient],
) -> None:
    model, _, client = served
    X = np.random.default_rng(5).uniform(0, 10, size=(16, 3))
    labels, proba = await json_answer(client, f"/v2/models/{model}/infer", X.astype(np.float32))

    as_json = InferInput("input", [16, 3], "FP64").set_data_from_numpy(X, binary_data=False)
    mixed = [  # one tensor per feature: binary FP64, JSON FP32, binary BYTES holding numbers as text
        InferInput("x2", [16], "FP64").set_data_from_numpy(X[:, 1]),
        InferInput("x1", [16, 1], "FP32").set_data_from_numpy(X[:, :1].astype(np.float32), binary_data=False),
        InferInput("x3", [16], "BYTES").set_data_from_numpy(np.array([repr(float(v)) for v in X[:, 2]], dtype=object)),
    ]

    def calls(stock: InferenceServerClient) -> list[InferResult]:
        return [
            stock.infer(model, [as_json], outputs=[InferRequestedOutput("label", binary_data=False)]),
            stock.infer(
                model,
                mixed,
                outputs=[InferRequestedOutput("probabilities"), InferRequestedOutput("label", binary_data=False)],
            ),
            *(stock.infer(model, [as_json], request_compression_algorithm=a) for a in ("gzip", "deflate")),
        ]

    plain, some, *squeezed = await with_stock_client(client, calls)
    assert plain.get_response()["outputs"][0]["data"] == labels, "JSON in, JSON out"
    assert "data" in some.get_response()["outputs"][1] and "data" not in some.get_response()["outputs"][0]
    assert some.as_numpy("label").tolist() == labels
    assert np.allclose(some.as_numpy("probabilities"), proba, atol=1e-6)
    assert all(each.as_numpy("label").tolist() == labels for each in squeezed), "gzip and deflate bodies"

    async with AsyncInferenceServerClient(stock_url(client)) as aio:
        tensor = InferInput("input", [16, 3], "FP32").set_data_from_numpy(X.astype(np.float32))
        result = await aio.infer(model, [tensor])
        assert result.as_numpy("label").tolist() == labels


def binary_request(X: np.ndarray, name: str = "input") -> tuple[bytes, int]:
    header = json.dumps(
        {
            "inputs": [
                {"name": name, "shape": list(X.shape), "datatype": "FP32", "parameters": {"binary_data_size": X.nbytes}}
            ]
        }
    ).encode()
    return header + X.astype(np.float32).tobytes(), len(header)


ONE, ONE_LENGTH = binary_request(np.array([[9, 9, 1]], dtype=np.float32))
NARROW, NARROW_LENGTH = binary_request(np.ones((1, 2), np.float32))
TALL, TALL_LENGTH = binary_request(np.ones((1500, 3), np.float32))  # 18 kB: under the 64 kB cap
HUGE, HUGE_LENGTH = binary_request(np.ones((6000, 3), np.float32))  # 72 kB: over it


MALFORMED_BINARY = [  # (body, Inference-Header-Content-Length, status, message)
    (ONE[:-4], ONE_LENGTH, 400, "input 'input' declares binary_data_size 12 but only 8"),
    (ONE + b"\0\0\0\0", ONE_LENGTH, 400, "4 bytes of binary data after"),
    (ONE, ONE_LENGTH - 3, 400, "not valid JSON"),
    (ONE, ONE_LENGTH + 1, 400, "not valid JSON"),
    (ONE, 10**6, 400, "the body has"),
    (b"\x89PNG\r\n\x1a\n" + ONE[-12:], 8, 400, "not valid JSON"),
    (ONE, None, 400, "Inference-Header-Content-Length"),
    (NARROW, NARROW_LENGTH, 422, "has 2 columns"),
    (TALL, TALL_LENGTH, 200, ""),
    (HUGE, HUGE_LENGTH, 413, "limit"),
]


async def test_malformed_binary_bodies_are_a_clear_4xx(served: tuple[str, InferenceService, httpx.AsyncClient]) -> None:
    model, _, client = served
    for content, header_length, status, message in MALFORMED_BINARY:
        headers = {"content-type": "application/octet-stream"}
        if header_length is not None:
            headers["inference-header-content-length"] = str(header_length)
        r = await client.post(f"/v2/models/{model}/infer", content=content, headers=headers)
        assert r.status_code == status, (message, r.text)
        if status != 200:
            assert message in r.json()["error"], r.text
    binary_v1 = {"inference-header-content-length": "1"}
    r = await client.post(f"/v1/models/{model}:predict", content=b'{"instances": [[1, 1, 1]]}', headers=binary_v1)
    assert r.status_code == 400 and "V2 infer route" in r.json()["error"], "V1 is JSON only"
    assert (await client.post(f"/v2/models/{model}/infer", json=v2([[1, 1, 1]]))).status_code == 200
