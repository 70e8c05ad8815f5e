"""The user's path through the CLI: up with a spec, publish a JSONL file, list datasets, stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from shared import topics
from shared.broker import EmbeddedBroker, free_port
from shared.bus import KafkaOptions
from shared.events import DeploymentChanged, decode_as
from shared.registry import Registry
from shared.spec import apply_spec
from shared.store import FileStore
from tests.integration.test_inference import SPEC as SERVED_SPEC
from tests.integration.test_inference import register, rows
from tests.integration.topic_reading import read_keyed, read_settled

pytestmark = pytest.mark.integration

SPEC = """
name: iris
features: [{name: sl, min: 0}, {name: sw, min: 0}]
label: {values: [setosa, versicolor]}
"""


def run(
    *args: str, data_dir: Path, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env} if env else None,
    )


def test_up_publish_and_list(tmp_path: Path) -> None:
    spec = tmp_path / "iris.yaml"
    spec.write_text(SPEC)
    data_dir = tmp_path / "stack"
    ingest_port, inference_port = free_port(), free_port()
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli",
            "up",
            "--data-dir",
            str(data_dir),
            "--kafka-port",
            str(free_port()),
            "--ingest-port",
            str(ingest_port),
            "--inference-port",
            str(inference_port),
            "--trainer-port",
            "0",
            "--monitor-port",
            "0",
            "--spec",
            str(spec),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        ready = False
        while time.monotonic() < deadline and not ready:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ingest_port}/health/ready", timeout=1) as response:
                    ready = response.status == 200
            except OSError:
                time.sleep(0.2)
        assert ready, "ingest never became ready"

        listed = run("specs", "list", "--json", data_dir=data_dir)
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout)[0]["model"] == "iris"

        lines = [
            json.dumps(
                {
                    "record_id": f"r{i}",
                    "features": {"sl": 5.0 + (i % 10) / 10, "sw": 3.0},
                    "label": "setosa" if i % 10 < 5 else "versicolor",
                }
            )
            for i in range(40)
        ]
        lines.insert(7, "{broken")
        lines.append(json.dumps({"record_id": "bad", "features": {"sl": -1, "sw": 3.0}, "label": "setosa"}))
        (tmp_path / "batch.jsonl").write_text("\n".join(lines) + "\n")
        published = run(
            "publish", "annotations", str(tmp_path / "batch.jsonl"), "--model", "iris", "--json", data_dir=data_dir
        )
        report = json.loads(published.stdout)
        assert published.returncode == 1, "an invalid line makes the exit code say so"
        assert report["sent"] == 41 and report["invalid_lines"] == 1
        assert report["errors"][0].startswith("line 8: not JSON")

        rows = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and rows < 40:
            result = run("datasets", "list", "iris", "--json", data_dir=data_dir)
            if result.returncode == 0:
                rows = json.loads(result.stdout)[-1]["rows_total"]
            time.sleep(0.3)
        assert rows == 40, "40 valid records stored; the out-of-range one rejected"
        shown = run("datasets", "show", "iris", "--json", data_dir=data_dir)
        manifest = json.loads(shown.stdout)
        assert manifest["features"] == ["sl", "sw"] and manifest["stats"]["sw"]["mean"] == 3.0

        with urllib.request.urlopen(f"http://127.0.0.1:{ingest_port}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert 'driftloop_ingest_rejected_records_total{model="iris",rule="range"} 1.0' in metrics

        # the trainer (started by up) trains on first data and puts version 1 in production
        production = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and production != 1:
            listed = run("models", "list", "--json", data_dir=data_dir)
            models = json.loads(listed.stdout) if listed.returncode == 0 else []
            production = models[0]["aliases"].get("production") if models else None
            time.sleep(0.3)
        assert production == 1
        trained = run("models", "train", "iris", "--json", data_dir=data_dir)
        assert trained.returncode == 0, trained.stderr
        outcome = json.loads(trained.stdout)
        assert outcome["version"] == 2 and outcome["champion_version"] == 1
        assert run("models", "promote", "iris", "2", "--reason", "test", data_dir=data_dir).returncode == 0
        card = json.loads(run("models", "show", "iris", "--json", data_dir=data_dir).stdout)
        assert card["version"] == 2 and card["aliases"]["production"] == 2
        assert card["input_schema"]["features"] == ["sl", "sw"] and card["dataset_version"] >= 1
        rolled = run("models", "rollback", "iris", data_dir=data_dir)
        assert rolled.returncode == 0, rolled.stderr
        card = json.loads(run("models", "show", "iris", "--json", data_dir=data_dir).stdout)
        assert card["aliases"]["production"] == 1
        production_moves = [h for h in card["history"] if h["alias"] == "production"]
        assert [h["actor"].split(":")[0] for h in production_moves][-2:] == ["cli", "cli"]

        # the inference service (started by up) follows the rollback: production v1 answers
        body = json.dumps({"instances": [{"sl": 5.1, "sw": 3.0}]}).encode()
        served = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and served != "1":
            request = urllib.request.Request(
                f"http://127.0.0.1:{inference_port}/v1/models/iris:predict", data=body, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    served = json.loads(response.read())["model_version"]
            except OSError:
                time.sleep(0.3)
        assert served == "1"
    finally:
        up.send_signal(signal.SIGTERM)
        _, err = up.communicate(timeout=30)
    assert up.returncode == 0, err.decode()[-2000:]


def test_missing_model_and_bad_spec_are_clear_errors(tmp_path: Path) -> None:
    result = run("datasets", "show", "nothing", data_dir=tmp_path)
    assert result.returncode == 1 and "model 'nothing' has no dataset version yet" in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nfeatures: [{name: a, min: 2, max: 1}]\nlabel: {values: [1, 2]}\n")
    result = run("specs", "apply", str(bad), data_dir=tmp_path)
    assert result.returncode == 1 and "features.0: Value error, min 2.0 is above max 1.0" in result.stderr
    result = run("specs", "apply", str(tmp_path / "nope.yaml"), data_dir=tmp_path)
    assert result.returncode == 1 and "cannot read" in result.stderr


def test_canary_by_hand(own_broker: EmbeddedBroker, store: FileStore, tmp_path: Path, unique: str) -> None:
    """``models canary`` starts a trial as the trainer's rollout does: the canary alias, and
    canary_started with production as the previous version and the spec's traffic."""
    model = f"c{unique}"
    env = {
        "DRIFTLOOP_KAFKA_BOOTSTRAP": own_broker.bootstrap,
        "DRIFTLOOP_KAFKA_IDEMPOTENCE": "false",
        "DRIFTLOOP_STORE_KIND": "file",
        "DRIFTLOOP_STORE_ROOT": str(store.root),
    }
    options = KafkaOptions(bootstrap=own_broker.bootstrap, idempotence=False)

    def canary(*args: str) -> subprocess.CompletedProcess[str]:
        return run("models", "canary", *args, data_dir=tmp_path, env=env)

    apply_spec(store, SERVED_SPEC.format(name=model))  # deployment: canary at 0.5
    first = register(store, model, rows(400, 0, flip=False), None)
    refused = canary(model, str(first))
    assert refused.returncode == 1 and "no production version to judge a canary against" in refused.stderr
    registry = Registry(store)
    registry.set_alias(model, "production", first, "test", "first")
    second = register(store, model, rows(400, 500, flip=False), 1)

    for args, message in (
        ((model, "9"), f"model {model!r} has no version 9 (registered: 1, 2)"),
        (("nothing", "1"), "model 'nothing' has no registered version"),
        ((model, str(first)), f"{model}: v1 is already in production"),
    ):
        failed = canary(*args)
        assert failed.returncode == 1 and message in failed.stderr, (args, failed.stderr)
    assert registry.alias(model, "canary") is None, "a refused canary changes nothing"

    started = canary(model, str(second), "--reason", "operator: try it")
    assert started.returncode == 0, started.stderr
    assert "canary v2 beside production v1, 50% of requests" in started.stderr
    assert registry.aliases(model) == {"production": first, "canary": second}
    change = registry.history(model, "canary")[-1]
    assert change.actor.startswith("cli") and change.reason == "operator: try it"
    (raw,) = asyncio.run(read_keyed(options, topics.DEPLOYMENTS, model, 1))
    event = decode_as(DeploymentChanged, raw)
    assert (event.action, event.version, event.previous_version, event.traffic) == ("canary_started", 2, 1, 0.5)
    assert event.reason == "operator: try it" and event.actor == change.actor

    third = register(store, model, rows(400, 1000, flip=False), 2)
    replaced = canary(model, str(third))
    assert replaced.returncode == 0, replaced.stderr
    assert "(replacing canary v2)" in replaced.stderr
    published = [decode_as(DeploymentChanged, r) for r in asyncio.run(read_settled(options, topics.DEPLOYMENTS, model))]
    assert [(e.version, e.traffic, e.reason) for e in published] == [
        (2, 0.5, "operator: try it"),
        (3, 0.5, "canary started by hand beside production v1"),
    ]
    assert registry.alias(model, "canary") == third
