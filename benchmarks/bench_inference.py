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

A mixed-type model (typed features, :mod:`shared.features`: 10 numeric, 6 categorical and 2
boolean features; a scikit-learn ``ColumnTransformer`` one-hot encoding the categories in front
of a ``HistGradientBoostingClassifier``, exported with one ``[N, 1]`` input per feature) is
served by the same inference processes, beside a second bare route serving its ONNX graph:
one-row V2 requests (one tensor per feature: BYTES, BOOL, FP32) at 8 connections, as JSON to
both and also binary and as KServe V1 to the inference service. Targets: at least 80% of its
bare route's throughput, p99 <= 5 ms.

A wide model (issue #23: the forest's shape on 300 features) is served beside its own bare route:
1- and 32-row V2 requests at 8 connections, JSON and binary.

    .venv/bin/python benchmarks/bench_inference.py [SECONDS] [--only forest|mixed|wide]
"""

from __future__ import annotations

import argparse
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
from typing import Any

import numpy as np
from sklearn.datasets import make_classification

from services.trainer.estimators import build_estimator
from services.trainer.export import TARGET_OPSET, session_for, to_onnx
from shared.broker import EmbeddedBroker, free_port
from shared.features import BOOLEAN, CATEGORICAL, COLUMNS, NUMERIC, frame_columns
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
    from shared.reference import build_reference
    from shared.registry import InputSchema

    proba = pipeline.predict_proba(X[:500])
    ref = build_reference(X, features, pipeline.predict(X[:500]), proba, [0, 1])
    schema = InputSchema(features=features, label_values=[0, 1])
    registered = Registry(store).register_built(model, onnx, schema, ref, estimator, "bench", training_rows=len(X))
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


def start_bare(env: dict[str, str], port: int, onnx_path: Path) -> subprocess.Popen[bytes]:
    """A bare FastAPI + onnxruntime route (benchmarks/bare_route.py) serving ``onnx_path``."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "benchmarks.bare_route:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env={**env, "BARE_ONNX": str(onnx_path)},
    )


# --- the mixed-type model ----------------------------------------------------------------------

MIXED_NUMERIC = [f"n{i}" for i in range(10)]
MIXED_CATEGORIES = {"c0": 3, "c1": 5, "c2": 8, "c3": 12, "c4": 20, "c5": 40}
"""Categorical features and how many categories each has in training."""
MIXED_BOOLEAN = ["b0", "b1"]
MIXED_FEATURES = [*MIXED_NUMERIC, *MIXED_CATEGORIES, *MIXED_BOOLEAN]
MIXED_TYPES = [NUMERIC] * len(MIXED_NUMERIC) + [CATEGORICAL] * len(MIXED_CATEGORIES) + [BOOLEAN] * len(MIXED_BOOLEAN)
V2_DATATYPE = {NUMERIC: "FP32", CATEGORICAL: "BYTES", BOOLEAN: "BOOL"}


def mixed_rows(n: int, rng: np.random.Generator) -> tuple[dict[str, list[Any]], np.ndarray]:
    """``n`` rows of event-form values (floats, category strings, booleans) and their labels."""
    columns: dict[str, list[Any]] = {f: rng.normal(size=n).round(4).tolist() for f in MIXED_NUMERIC}
    for name, count in MIXED_CATEGORIES.items():
        columns[name] = [f"{name}-{k}" for k in rng.integers(0, count, n)]
    for name in MIXED_BOOLEAN:
        columns[name] = (rng.random(n) < 0.5).tolist()
    score = np.array(columns["n0"]) + np.array(columns["b0"], dtype=float)
    score += np.array([int(v.rsplit("-", 1)[1]) % 3 for v in columns["c2"]]) - 1.0
    return columns, (score + rng.normal(scale=0.5, size=n) > 0.5).astype(np.int64)


def build_mixed(rng: np.random.Generator) -> tuple[bytes, dict[str, list[str]]]:
    """The mixed-type pipeline fitted on 5,000 rows and exported with one input per feature;
    its training categories. Parity with scikit-learn is checked on the last 500 rows."""
    import pandas as pd
    from skl2onnx import to_onnx as skl_to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    columns, y = mixed_rows(5000, rng)
    frame = pd.DataFrame(frame_columns(MIXED_FEATURES, MIXED_TYPES, columns))
    encode = ColumnTransformer(
        [("categories", OneHotEncoder(handle_unknown="ignore", sparse_output=False), list(MIXED_CATEGORIES))],
        remainder="passthrough",
    )
    estimator = HistGradientBoostingClassifier(random_state=0)
    pipeline = Pipeline([("encode", encode), ("model", estimator)]).fit(frame[:4500], y[:4500])
    initial_types = [
        (name, StringTensorType([None, 1]) if kind == CATEGORICAL else FloatTensorType([None, 1]))
        for name, kind in zip(MIXED_FEATURES, MIXED_TYPES, strict=True)
    ]
    onnx = skl_to_onnx(
        pipeline, initial_types=initial_types, options={id(estimator): {"zipmap": False}}, target_opset=TARGET_OPSET
    ).SerializeToString()
    holdout = frame[4500:]
    feeds = {
        name: holdout[name].to_numpy(dtype=object if kind == CATEGORICAL else np.float32).reshape(-1, 1)
        for name, kind in zip(MIXED_FEATURES, MIXED_TYPES, strict=True)
    }
    _, proba = session_for(onnx).run(None, feeds)
    gap = float(np.abs(np.asarray(proba) - pipeline.predict_proba(holdout)).max())
    if gap > 1e-4:
        raise RuntimeError(f"the mixed model's ONNX graph differs from scikit-learn by {gap}")
    return onnx, {name: sorted(set(columns[name])) for name in MIXED_CATEGORIES}


def register_mixed(store: FileStore, rng: np.random.Generator, model: str = "mixed") -> bytes:
    """Build the mixed-type model and register it as the production version of ``model`` with a
    card in the COLUMNS layout (types and training categories)."""
    from shared.reference import PredictionReference, Reference
    from shared.registry import InputSchema

    onnx, categories = build_mixed(rng)
    schema = InputSchema(
        features=MIXED_FEATURES,
        label_values=[0, 1],
        types=MIXED_TYPES,  # type: ignore[arg-type]
        layout=COLUMNS,
        categories=categories,
    )
    reference = Reference(
        features={},
        predictions=PredictionReference(label_distribution={"0": 0.5, "1": 0.5}, probability_histograms={}),
    )
    registered = Registry(store).register_built(
        model,
        onnx,
        schema,
        reference,
        "HistGradientBoostingClassifier",
        "bench",
        training_rows=4500,
        holdout_rows=500,
        onnx_opset=int(TARGET_OPSET[""]),
    )
    Registry(store).set_alias(model, "production", registered.version, "bench", "bench")
    return onnx


def mixed_row(rng: np.random.Generator) -> dict[str, Any]:
    columns, _ = mixed_rows(1, rng)
    return {name: values[0] for name, values in columns.items()}


def mixed_v2_json(row: dict[str, Any]) -> Request:
    """One row as one JSON tensor per feature, each ``[1, 1]`` in its datatype."""
    inputs = [
        {"name": name, "shape": [1, 1], "datatype": V2_DATATYPE[kind], "data": [[row[name]]]}
        for name, kind in zip(MIXED_FEATURES, MIXED_TYPES, strict=True)
    ]
    return Request(json.dumps({"inputs": inputs}).encode(), {"Content-Type": "application/json"})


def mixed_v2_binary(row: dict[str, Any]) -> Request:
    """The row as tritonclient sends it by default: FP32, BOOL and length-prefixed BYTES tensors."""
    from services.inference.binary import write_bytes

    tensors, tail = [], b""
    for name, kind in zip(MIXED_FEATURES, MIXED_TYPES, strict=True):
        if kind == CATEGORICAL:
            raw = write_bytes([row[name]])
        elif kind == BOOLEAN:
            raw = np.array([row[name]], dtype=np.bool_).tobytes()
        else:
            raw = np.array([row[name]], dtype="<f4").tobytes()
        tail += raw
        tensors.append(
            {"name": name, "shape": [1, 1], "datatype": V2_DATATYPE[kind], "parameters": {"binary_data_size": len(raw)}}
        )
    header = json.dumps({"inputs": tensors, "parameters": {"binary_data_output": True}}).encode()
    return Request(
        header + tail,
        {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))},
    )


def mixed_v1(row: dict[str, Any]) -> Request:
    return Request(json.dumps({"instances": [row]}).encode(), {"Content-Type": "application/json"})


def raw_mixed(onnx: bytes, row: dict[str, Any], seconds: float = 2.0) -> float:
    """Microseconds per in-process onnxruntime call on one mixed row: the floor."""
    session = session_for(onnx)
    feeds = {
        name: np.array([[row[name]]], dtype=object if kind == CATEGORICAL else np.float32)
        for name, kind in zip(MIXED_FEATURES, MIXED_TYPES, strict=True)
    }
    calls = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        session.run(None, feeds)
        calls += 1
    return (time.perf_counter() - started) / calls * 1e6


def milliseconds(text: str) -> float:
    """wrk's latency text (``812.00us``, ``2.31ms``, ``1.02s``) in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]


MIXED_CONNECTIONS = 8


def bench_mixed(ports: dict[str, int], seconds: int, root: Path, row: dict[str, Any], floor_us: float) -> None:
    """One-row requests of the mixed-type model at 8 connections: the bare route, driftloop."""
    print(
        f"\nmixed types: HistGradientBoosting, {len(MIXED_NUMERIC)} numeric + {len(MIXED_CATEGORIES)} categorical + "
        f"{len(MIXED_BOOLEAN)} boolean features (one [N, 1] input each), 1 row, {MIXED_CONNECTIONS} connections"
    )
    print(f"raw onnxruntime in-process, 1 row: {floor_us:8.1f} us/call ({1e6 / floor_us:,.0f} calls/s)")
    print(f"{'server':<28} {'req/s':>8} {'p50':>9} {'p99':>9} {'vs bare':>8}")
    runs = [
        ("bare route (ceiling)", ports["bare"], "/v2/models/mixed/infer", mixed_v2_json(row)),
        ("driftloop, logging off", ports["quiet"], "/v2/models/mixed/infer", mixed_v2_json(row)),
        ("driftloop inference", ports["service"], "/v2/models/mixed/infer", mixed_v2_json(row)),
        ("driftloop, binary", ports["service"], "/v2/models/mixed/infer", mixed_v2_binary(row)),
        ("driftloop, KServe V1", ports["service"], "/v1/models/mixed:predict", mixed_v1(row)),
    ]
    results: dict[str, tuple[float, str]] = {}
    for name, port, path, body in runs:
        rate, p50, p99 = median_run(f"http://127.0.0.1:{port}{path}", body, MIXED_CONNECTIONS, seconds, root)
        results[name] = (rate, p99)
        ceiling = results["bare route (ceiling)"][0]
        vs_bare = f"{rate / ceiling:.0%}" if name != "bare route (ceiling)" else ""
        print(f"{name:<28} {rate:>8.0f} {p50:>9} {p99:>9} {vs_bare:>8}")
    rate, p99 = results["driftloop inference"]
    share = rate / results["bare route (ceiling)"][0]
    print(
        f"targets, driftloop inference (V2 JSON, logging on): {share:.0%} of the bare route (>= 80%: "
        f"{'met' if share >= 0.8 else 'MISSED'}), p99 {p99} (<= 5 ms: {'met' if milliseconds(p99) <= 5 else 'MISSED'})"
    )


WIDE_FEATURES = 300
WIDE_CONNECTIONS = 8


def register_wide(store: FileStore) -> bytes:
    """A wide model (issue #23): the forest's shape on 300 features, registered as ``wide`` v1."""
    X, y = make_classification(5000, WIDE_FEATURES, n_informative=30, random_state=0)
    onnx, _ = register_model(
        store, "RandomForestClassifier", {"n_estimators": 100, "max_depth": 10}, X, y, model="wide"
    )
    return onnx


def bench_wide(ports: dict[str, int], seconds: int, root: Path, rng: np.random.Generator) -> None:
    """The 300-feature model: 1 and 32 rows at 8 connections, JSON and binary, against its bare route."""
    print(
        f"\nwide: RandomForest 100 trees depth 10, {WIDE_FEATURES} features, V2 requests, "
        f"{WIDE_CONNECTIONS} connections, wrk {seconds}s per row"
    )
    print(f"{'server':<28} {'rows':>4} {'req/s':>8} {'p50':>9} {'p99':>9} {'vs bare':>8}")
    for rows in (1, 32):
        X = rng.normal(size=(rows, WIDE_FEATURES))
        runs = [
            ("bare route (ceiling)", ports["bare"], v2_json(X)),
            ("driftloop inference", ports["service"], v2_json(X)),
            ("driftloop, binary", ports["service"], v2_binary(X)),
        ]
        ceiling = 0.0
        for name, port, body in runs:
            url = f"http://127.0.0.1:{port}/v2/models/wide/infer"
            rate, p50, p99 = median_run(url, body, WIDE_CONNECTIONS, seconds, root)
            ceiling = ceiling or rate
            vs_bare = f"{rate / ceiling:.0%}" if name != "bare route (ceiling)" else ""
            print(f"{name:<28} {rows:>4} {rate:>8.0f} {p50:>9} {p99:>9} {vs_bare:>8}")


def bench_forest(
    ports: dict[str, int], seconds: int, root: Path, rows_of: dict[int, np.ndarray], floor: dict[int, float]
) -> None:
    """The forest: 1 and 32 rows at 1, 8 and 32 connections, JSON and binary, logging on and off."""
    bodies = {rows: v2_json(X) for rows, X in rows_of.items()}
    binary = {rows: v2_binary(X) for rows, X in rows_of.items()}
    servers = {
        "bare route (ceiling)": ports["bare"],
        "driftloop, logging off": ports["quiet"],
        "driftloop inference": ports["service"],
    }
    print(f"inference: RandomForest 100 trees depth 10, 20 features, V2 requests, wrk {seconds}s per row")
    for rows, us in floor.items():
        print(f"raw onnxruntime in-process, {rows:>2} rows: {us:8.1f} us/call ({1e6 / us:,.0f} calls/s)")
    print(f"{'server':<24} {'rows':>4} {'conns':>5} {'req/s':>8} {'p50':>9} {'p99':>9} {'vs bare':>8} {'vs raw':>7}")
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
                print(f"{name:<24} {rows:>4} {connections:>5} {rate:>8.0f} {p50:>9} {p99:>9} {vs_bare:>8} {vs_raw:>7}")
            url = f"http://127.0.0.1:{ports['service']}/v2/models/bench/infer"
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


def main(seconds: int, only: str | None = None) -> None:
    if shutil.which("wrk") is None:
        print("bench_inference: wrk is not installed (Debian: apt-get install -y wrk); skipped")
        return
    rng = np.random.default_rng(1)
    rows_of = {rows: rng.normal(size=(rows, 20)) for rows in (1, 32)}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        root = Path(tmp)
        store = FileStore(root / "store")
        onnx, _ = register_forest(store)
        (root / "model.onnx").write_bytes(onnx)
        mixed = register_mixed(store, np.random.default_rng(2))
        (root / "mixed.onnx").write_bytes(mixed)
        (root / "wide.onnx").write_bytes(register_wide(store))
        row = mixed_row(np.random.default_rng(3))
        floor = {rows: raw_onnxruntime(onnx, rows, rng) for rows in rows_of}
        mixed_floor = raw_mixed(mixed, row)
        port, quiet_port, bare_port, mixed_bare_port = free_port(), free_port(), free_port(), free_port()
        wide_bare_port = free_port()
        env = {
            **os.environ,
            "DRIFTLOOP_KAFKA_BOOTSTRAP": broker.bootstrap,
            "DRIFTLOOP_KAFKA_IDEMPOTENCE": "false",
            "DRIFTLOOP_STORE_KIND": "file",
            "DRIFTLOOP_STORE_ROOT": str(store.root),
            "DRIFTLOOP_DATA_DIR": str(root),
            "DRIFTLOOP_LOG_LEVEL": "WARNING",
        }
        processes = [
            start_service(env, port, log_predictions=True),
            start_service(env, quiet_port, log_predictions=False),
            start_bare(env, bare_port, root / "model.onnx"),
            start_bare(env, mixed_bare_port, root / "mixed.onnx"),
            start_bare(env, wide_bare_port, root / "wide.onnx"),
        ]
        try:
            for each in (port, quiet_port, bare_port, mixed_bare_port, wide_bare_port):
                wait_http(f"http://127.0.0.1:{each}/openapi.json")
            for each in (port, quiet_port):
                for model in ("bench", "mixed", "wide"):
                    wait_http(f"http://127.0.0.1:{each}/v2/models/{model}/ready")
            ports = {"service": port, "quiet": quiet_port, "bare": bare_port}
            if only in (None, "forest"):
                bench_forest(ports, seconds, root, rows_of, floor)
            if only in (None, "mixed"):
                bench_mixed({**ports, "bare": mixed_bare_port}, seconds, root, row, mixed_floor)
            if only in (None, "wide"):
                bench_wide({**ports, "bare": wide_bare_port}, seconds, root, np.random.default_rng(4))
            metrics = f"http://127.0.0.1:{port}/metrics"
            time.sleep(1.0)  # the last batch
            print(
                "prediction log: sent "
                f"{metric(metrics, 'driftloop_inference_prediction_log_sent')}, spilled "
                f"{metric(metrics, 'driftloop_inference_prediction_log_spilled')}, lost "
                f"{metric(metrics, 'driftloop_inference_prediction_log_lost')}"
            )
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=20)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("seconds", nargs="?", type=int, default=4, help="seconds per wrk run (default 4)")
    parser.add_argument("--only", choices=("forest", "mixed", "wide"), help="run one of the three models only")
    arguments = parser.parse_args()
    main(arguments.seconds, arguments.only)
