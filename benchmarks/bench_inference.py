"""Serving throughput and latency of the inference service against the bare-route ceiling.

One RandomForestClassifier (100 trees, depth 10, 20 float features, as in
../shared/notes/serving-anchors.md) is trained, exported and registered; the inference service
runs as its own process (``driftloop serve inference``, uvloop + httptools) against an
embedded broker, with validation, canary routing, the prediction log and metrics all on; a
bare FastAPI + onnxruntime route serves the same ONNX file beside it. ``wrk`` (Debian package)
sends one-row Open Inference Protocol V2 requests for 10 s at 1 and 8 connections.
Target (issue #5): at least 80% of the bare route's throughput.

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
from pathlib import Path

import numpy as np
from sklearn.datasets import make_classification

from services.trainer.estimators import build_estimator
from services.trainer.export import to_onnx
from shared.broker import EmbeddedBroker, free_port
from shared.registry import Registry
from shared.store import FileStore

ANCHOR = {1: 2316.0, 8: 2808.0}  # bare route, serving-anchors.md


def register_forest(store: FileStore) -> tuple[bytes, int]:
    X, y = make_classification(5000, 20, n_informative=10, random_state=0)
    pipeline = build_estimator("RandomForestClassifier", {"n_estimators": 100, "max_depth": 10}, seed=0).fit(X, y)
    onnx, _ = to_onnx(pipeline, 20)
    # the registry needs a full card; the trainer's runner builds it, so reuse its pieces minimally
    from services.trainer import core
    from shared.events import GateVerdict
    from shared.registry import CodeVersion, InputSchema, ModelCard

    proba = pipeline.predict_proba(X[:500])
    ref = core.reference(X, [f"f{i}" for i in range(20)], pipeline.predict(X[:500]), proba, [0, 1])

    def card(version: int, key: str, sha: str) -> ModelCard:
        return ModelCard(
            model="bench",
            version=version,
            dataset_version=1,
            dataset_manifest_sha256="0" * 64,
            window={},
            code=CodeVersion(package="bench"),
            estimator="RandomForestClassifier",
            params={},
            seed=0,
            training_rows=5000,
            holdout_rows=0,
            metrics={},
            gate=GateVerdict(passed=True),
            onnx_opset=17,
            input_schema=InputSchema(features=[f"f{i}" for i in range(20)], label_values=[0, 1]),
            output_names=["label", "probabilities"],
            artifact_key=key,
            artifact_sha256=sha,
            artifact_bytes=len(onnx),
            training_seconds=0.0,
            reference=ref,
            trigger="bench",
        )

    registered = Registry(store).register("bench", onnx, card)
    Registry(store).set_alias("bench", "production", registered.version, "bench", "bench")
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


def wrk(url: str, body: str, connections: int, seconds: int, script_dir: Path) -> tuple[float, str, str]:
    script = script_dir / "post.lua"
    script.write_text(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [[{body}]]\n')
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{errors.group(1)} failed requests:\n{out}")
    return rate, p50, p99


def main(seconds: int) -> None:
    if shutil.which("wrk") is None:
        print("bench_inference: wrk is not installed (Debian: apt-get install -y wrk); skipped")
        return
    rng = np.random.default_rng(1)
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 20],
                    "datatype": "FP32",
                    "data": [round(float(v), 4) for v in rng.normal(size=20)],
                }
            ]
        }
    )
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        root = Path(tmp)
        store = FileStore(root / "store")
        onnx, _ = register_forest(store)
        (root / "model.onnx").write_bytes(onnx)
        port, bare_port = free_port(), free_port()
        env = {
            **os.environ,
            "DRIFTLOOP_KAFKA_BOOTSTRAP": broker.bootstrap,
            "DRIFTLOOP_KAFKA_IDEMPOTENCE": "false",
            "DRIFTLOOP_STORE_KIND": "file",
            "DRIFTLOOP_STORE_ROOT": str(store.root),
            "DRIFTLOOP_PORT": str(port),
            "DRIFTLOOP_DATA_DIR": str(root),
            "DRIFTLOOP_LOG_LEVEL": "WARNING",
            "BARE_ONNX": str(root / "model.onnx"),
        }
        service = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "inference"], env=env)
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
        try:
            wait_http(f"http://127.0.0.1:{port}/v2/models/bench/ready")
            wait_http(f"http://127.0.0.1:{bare_port}/docs")
            print(f"inference: RandomForest 100 trees depth 10, 20 features, one-row V2 requests, wrk {seconds}s")
            print(f"{'server':<28} {'conns':>5} {'req/s':>9} {'p50':>9} {'p99':>9} {'vs bare':>8}")
            for connections in (1, 8):
                bare_rate, bp50, bp99 = wrk(
                    f"http://127.0.0.1:{bare_port}/v2/models/bench/infer", body, connections, seconds, root
                )
                rate, p50, p99 = wrk(f"http://127.0.0.1:{port}/v2/models/bench/infer", body, connections, seconds, root)
                print(f"{'bare route (ceiling)':<28} {connections:>5} {bare_rate:>9.0f} {bp50:>9} {bp99:>9} {'':>8}")
                print(
                    f"{'driftloop inference':<28} {connections:>5} {rate:>9.0f} {p50:>9} {p99:>9} "
                    f"{rate / bare_rate:>7.0%}"
                )
                print(f"{'  (anchor: bare route)':<28} {connections:>5} {ANCHOR[connections]:>9.0f}")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
                metrics = response.read().decode()
            lost = re.search(r"driftloop_inference_prediction_log_lost (\S+)", metrics)
            print(f"prediction log: lost {lost.group(1) if lost else '?'} (every prediction is published)")
        finally:
            for process in (service, bare):
                process.terminate()
                process.wait(timeout=20)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
