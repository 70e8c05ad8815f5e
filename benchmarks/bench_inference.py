"""Serving throughput and latency of the inference service against the bare-route ceiling.

One RandomForestClassifier (100 trees, depth 10, 20 float features, as in
../shared/notes/serving-anchors.md) is trained, exported and registered; the inference service
runs as its own process (``driftloop serve inference``, uvloop + httptools) against an
embedded broker, with validation, canary routing, the prediction log and metrics all on; a
bare FastAPI + onnxruntime route serves the same ONNX file beside it, and a second inference
process with the prediction log off. ``wrk`` (Debian package) sends 1-row and 32-row Open
Inference Protocol V2 requests at 1, 8 and 32 connections to each (median of three 4 s runs),
as JSON, and to the inference service also as a stock tritonclient sends them by default
(binary tensor data in, binary outputs back: issue #13 asks for a one-row binary request to
cost no more than a JSON one, and 32-row binary requests less); in-process
onnxruntime on the same model is the floor. Targets (issue #5): single-row p99 <= 5 ms at 8
connections, at least 80% of the bare route's throughput, logging on within 10% of off.

    .venv/bin/python benchmarks/bench_inference.py [SECONDS]
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.datasets import make_classification

from services.trainer.estimators import build_estimator
from services.trainer.export import to_onnx
from shared.broker import EmbeddedBroker, free_port
from shared.registry import Registry
from shared.store import FileStore

ANCHOR = {1: 2316.0, 8: 2808.0, 32: 2318.0}  # bare route, serving-anchors.md


def register_forest(store: FileStore) -> tuple[bytes, int]:
    """The benchmark's forest (100 trees, depth 10, 20 features), registered as ``bench`` v1."""
    X, y = make_classification(5000, 20, n_informative=10, random_state=0)
    return register_model(store, "RandomForestClassifier", {"n_estimators": 100, "max_depth": 10}, X, y)


def register_model(
    store: FileStore, estimator: str, params: dict[str, object], X: np.ndarray, y: np.ndarray, model: str = "bench"
) -> tuple[bytes, int]:
    """Fit an allow-listed estimator on 20-feature rows, export it and register it as the
    production version of ``model``, with a model card and reference statistics."""
    features = [f"f{i}" for i in range(X.shape[1])]
    pipeline = build_estimator(estimator, params, seed=0).fit(X, y)
    onnx, _ = to_onnx(pipeline, X.shape[1])
    # the registry needs a full card; the trainer's runner builds it, so reuse its pieces minimally
    from shared.events import GateVerdict
    from shared.reference import build_reference
    from shared.registry import CodeVersion, InputSchema, ModelCard

    proba = pipeline.predict_proba(X[:500])
    ref = build_reference(X, features, pipeline.predict(X[:500]), proba, [0, 1])

    def card(version: int, key: str, sha: str) -> ModelCard:
        return ModelCard(
            model=model,
            version=version,
            dataset_version=1,
            dataset_manifest_sha256="0" * 64,
            window={},
            code=CodeVersion(package="bench"),
            estimator=estimator,
            params={},
            seed=0,
            training_rows=len(X),
            holdout_rows=0,
            metrics={},
            gate=GateVerdict(passed=True),
            onnx_opset=17,
            input_schema=InputSchema(features=features, label_values=[0, 1]),
            output_names=["label", "probabilities"],
            artifact_key=key,
            artifact_sha256=sha,
            artifact_bytes=len(onnx),
            training_seconds=0.0,
            reference=ref,
            trigger="bench",
        )

    registered = Registry(store).register(model, onnx, card)
    Registry(store).set_alias(model, "production", registered.version, "bench", "bench")
    return onnx, registered.version


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


@dataclass(frozen=True)
class Request:
    """One request body wrk sends over and over, with its headers."""

    body: bytes
    headers: dict[str, str]


def wrk(url: str, request: Request, connections: int, seconds: int, script_dir: Path) -> tuple[float, str, str]:
    # the body is read from a file: a Lua string literal would mangle the binary tensors' bytes
    (script_dir / "body.bin").write_bytes(request.body)
    headers = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in request.headers.items())
    script = script_dir / "post.lua"
    script.write_text(
        f'wrk.method = "POST"\n{headers}'
        f'local f = assert(io.open("{script_dir / "body.bin"}", "rb"))\nwrk.body = f:read("*a")\nf:close()\n'
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE).group(1)  # type: ignore[union-attr]
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE).group(1)  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{errors.group(1)} failed requests:\n{out}")
    return rate, p50, p99


def v2_json(X: np.ndarray) -> Request:
    """A JSON V2 request of the rows ``X``: JSON in, JSON out."""
    data = [[round(float(v), 4) for v in row] for row in X]
    body = {"inputs": [{"name": "input", "shape": list(X.shape), "datatype": "FP32", "data": data}]}
    return Request(json.dumps(body).encode(), {"Content-Type": "application/json"})


def v2_binary(X: np.ndarray) -> Request:
    """The same rows as a stock tritonclient sends them by default: binary tensors in, binary
    outputs asked for (``binary_data_output``)."""
    raw = np.round(X, 4).astype(np.float32).tobytes()
    tensor = {"name": "input", "shape": list(X.shape), "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}
    header = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}}).encode()
    return Request(
        header + raw,
        {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))},
    )


ROUNDS = 3
"""Runs per figure; the median is shown (two cores shared by wrk, three servers and a broker are noisy)."""


def median_run(url: str, body: Request, connections: int, seconds: int, root: Path) -> tuple[float, str, str]:
    runs = sorted((wrk(url, body, connections, seconds, root) for _ in range(ROUNDS)), key=lambda run: run[0])
    return runs[len(runs) // 2]


def raw_onnxruntime(onnx: bytes, rows: int, rng: np.random.Generator, seconds: float = 2.0) -> float:
    """Microseconds per call of in-process onnxruntime (1 intra-op thread): the floor."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx, sess_options=options, providers=["CPUExecutionProvider"])
    X = rng.normal(size=(rows, 20)).astype(np.float32)
    calls = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        session.run(None, {"input": X})
        calls += 1
    return (time.perf_counter() - started) / calls * 1e6


def metric(url: str, name: str) -> str:
    with urllib.request.urlopen(url) as response:
        text = response.read().decode()
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return found.group(1) if found else "?"


def start_service(env: dict[str, str], port: int, log_predictions: bool) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "serve", "inference"],
        env={**env, "DRIFTLOOP_PORT": str(port), "DRIFTLOOP_LOG_PREDICTIONS": str(log_predictions).lower()},
    )


def main(seconds: int) -> None:
    if shutil.which("wrk") is None:
        print("bench_inference: wrk is not installed (Debian: apt-get install -y wrk); skipped")
        return
    rng = np.random.default_rng(1)
    rows_of = {rows: rng.normal(size=(rows, 20)) for rows in (1, 32)}
    bodies = {rows: v2_json(X) for rows, X in rows_of.items()}
    binary = {rows: v2_binary(X) for rows, X in rows_of.items()}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        root = Path(tmp)
        store = FileStore(root / "store")
        onnx, _ = register_forest(store)
        (root / "model.onnx").write_bytes(onnx)
        floor = {rows: raw_onnxruntime(onnx, rows, rng) for rows in bodies}
        port, quiet_port, bare_port = free_port(), free_port(), free_port()
        env = {
            **os.environ,
            "DRIFTLOOP_KAFKA_BOOTSTRAP": broker.bootstrap,
            "DRIFTLOOP_KAFKA_IDEMPOTENCE": "false",
            "DRIFTLOOP_STORE_KIND": "file",
            "DRIFTLOOP_STORE_ROOT": str(store.root),
            "DRIFTLOOP_DATA_DIR": str(root),
            "DRIFTLOOP_LOG_LEVEL": "WARNING",
            "BARE_ONNX": str(root / "model.onnx"),
        }
        service = start_service(env, port, log_predictions=True)
        quiet = start_service(env, quiet_port, log_predictions=False)
        bare = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "benchmarks.bare_route:app",
                "--port",
                str(bare_port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env=env,
        )
        servers = {
            "bare route (ceiling)": bare_port,
            "driftloop, logging off": quiet_port,
            "driftloop inference": port,
        }
        try:
            for each in servers.values():
                wait_http(f"http://127.0.0.1:{each}/openapi.json")
            wait_http(f"http://127.0.0.1:{port}/v2/models/bench/ready")
            wait_http(f"http://127.0.0.1:{quiet_port}/v2/models/bench/ready")
            print(f"inference: RandomForest 100 trees depth 10, 20 features, V2 requests, wrk {seconds}s per row")
            for rows, us in floor.items():
                print(f"raw onnxruntime in-process, {rows:>2} rows: {us:8.1f} us/call ({1e6 / us:,.0f} calls/s)")
            print(
                f"{'server':<24} {'rows':>4} {'conns':>5} {'req/s':>8} {'p50':>9} {'p99':>9} "
                f"{'vs bare':>8} {'vs raw':>7}"
            )
            for rows, body in bodies.items():
                for connections in (1, 8, 32):
                    rates: dict[str, float] = {}
                    for name, each in servers.items():
                        url = f"http://127.0.0.1:{each}/v2/models/bench/infer"
                        rate, p50, p99 = median_run(url, body, connections, seconds, root)
                        rates[name] = rate
                        ceiling = rates["bare route (ceiling)"]
                        vs_bare = f"{rate / ceiling:.0%}" if name != "bare route (ceiling)" else ""
                        # time per request over the floor, at one connection (no queueing)
                        vs_raw = f"{1e6 / rate / floor[rows]:.1f}x" if connections == 1 else ""
                        print(
                            f"{name:<24} {rows:>4} {connections:>5} {rate:>8.0f} {p50:>9} {p99:>9} "
                            f"{vs_bare:>8} {vs_raw:>7}"
                        )
                    url = f"http://127.0.0.1:{port}/v2/models/bench/infer"
                    rate, p50, p99 = median_run(url, binary[rows], connections, seconds, root)
                    vs_raw = f"{1e6 / rate / floor[rows]:.1f}x" if connections == 1 else ""
                    print(
                        f"{'driftloop, binary':<24} {rows:>4} {connections:>5} {rate:>8.0f} {p50:>9} {p99:>9} "
                        f"{rate / rates['bare route (ceiling)']:>8.0%} {vs_raw:>7}"
                    )
                    on, off = rates["driftloop inference"], rates["driftloop, logging off"]
                    print(f"{'  logging on vs off':<24} {rows:>4} {connections:>5} {on / off - 1:>+8.1%}")
                    print(f"{'  binary vs JSON':<24} {rows:>4} {connections:>5} {rate / on - 1:>+8.1%}")
                    if rows == 1 and connections in ANCHOR:
                        print(f"{'  (anchor: bare route)':<24} {rows:>4} {connections:>5} {ANCHOR[connections]:>8.0f}")
            metrics = f"http://127.0.0.1:{port}/metrics"
            time.sleep(1.0)  # the last batch
            print(
                "prediction log: sent "
                f"{metric(metrics, 'driftloop_inference_prediction_log_sent')}, spilled "
                f"{metric(metrics, 'driftloop_inference_prediction_log_spilled')}, lost "
                f"{metric(metrics, 'driftloop_inference_prediction_log_lost')}"
            )
        finally:
            for process in (service, quiet, bare):
                process.terminate()
                process.wait(timeout=20)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4)
