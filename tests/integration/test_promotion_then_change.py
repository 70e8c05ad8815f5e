"""A promotion shortly before the world changes, through the real broker, inference and monitor.

The issue this guards (#15): an operator promotes v2 ("train now" and "promote"), then the
labelling concept flips. v2 errs -- and so would v1. The monitor must not roll back into v1
(equally stale) and must not go quiet: v1 scores the same traffic as a shadow (the monitor
makes it one, the inference service serves it), the champion watch sees both wrong and keeps
v2, and the concept change is published as a drift of v2 for the trainer to act on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest

from services.inference.app import InferenceService, InferenceSettings
from services.monitor.app import MonitorService, MonitorSettings
from shared import topics
from shared.bus import KafkaOptions, Publisher
from shared.events import DeploymentChanged, DriftDetected, decode_as
from shared.registry import Registry
from shared.spec import apply_spec
from shared.store import FileStore
from tests.integration.test_inference import register, rows
from tests.integration.test_monitor import ground_truth
from tests.integration.topic_reading import read_settled, wait_for

pytestmark = pytest.mark.integration

SPEC = """
name: {name}
features: [{{name: x1}}, {{name: x2}}, {{name: x3, allow_missing: true}}]
label: {{values: [0, 1]}}
training: {{estimator: LogisticRegression, holdout: 0.25, seed: 1}}
deployment: {{strategy: canary, promote_after: {{labelled_samples: 100}}}}
monitoring: {{confirmation_samples: 200, alarm_cooldown: 10m}}
"""


@pytest.fixture
async def stack(
    options: KafkaOptions, store: FileStore, unique: str, tmp_path: Path
) -> AsyncIterator[tuple[str, MonitorService, InferenceService, httpx.AsyncClient]]:
    """v1 in production, v2 registered; a monitor and an inference service on the module's broker."""
    model = f"pc{unique}"
    apply_spec(store, SPEC.format(name=model))
    first = register(store, model, rows(600, 0, flip=False), None, SPEC)
    Registry(store).set_alias(model, "production", first, "test", "first")
    register(store, model, rows(600, 700, flip=False), 1, SPEC)
    common = {
        "kafka_bootstrap": options.bootstrap,
        "kafka_idempotence": False,
        "store_kind": "file",
        "store_root": store.root,
        "port": 0,
    }
    monitor = MonitorService(
        MonitorSettings(**common, checkpoint_s=0.5, monitor_group=f"monitor-{unique}", data_dir=tmp_path)  # type: ignore[arg-type]
    )
    inference = InferenceService(
        InferenceSettings(**common, refresh_s=0.5, journal_dir=tmp_path / "journal")  # type: ignore[arg-type]
    )
    tasks = [asyncio.create_task(monitor.run()), asyncio.create_task(inference.run())]
    await wait_for(lambda: monitor.not_ready() is None, timeout=60)
    await wait_for(lambda: inference.subscriber.started.is_set() and model in inference.handlers.slots, timeout=30)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{inference.http.port}", timeout=10) as client:
        yield model, monitor, inference, client
    monitor.stop()
    inference.stop()
    await asyncio.wait_for(asyncio.gather(*tasks), 60)


async def serve_and_label(
    model: str, client: httpx.AsyncClient, publisher: Publisher, start: int, n: int, flip: bool
) -> None:
    """``n`` requests over HTTP, then their ground truth (x1 + x2 > 10, inverted when ``flip``)."""
    rng = np.random.default_rng(start)
    X = rng.uniform(0, 10, size=(n, 3))
    ids = [f"req-{start + i}" for i in range(n)]
    for i in range(n):
        body = {"id": ids[i], "inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": X[i].tolist()}]}
        r = await client.post(f"/v2/models/{model}/infer", json=body)
        assert r.status_code == 200, r.text
    await asyncio.sleep(1.0)  # the prediction log's batch goes out first (the join takes either order anyway)
    truth = ((X[:, 0] + X[:, 1] > 10) != flip).astype(int)
    await publisher.publish_many(ground_truth(model, X, truth, ids, [datetime.now(UTC)] * n))


async def test_a_change_right_after_a_manual_promotion_is_a_drift_not_a_rollback(
    stack: tuple[str, MonitorService, InferenceService, httpx.AsyncClient],
    publisher: Publisher,
    options: KafkaOptions,
    store: FileStore,
) -> None:
    model, monitor, inference, client = stack
    registry = Registry(store)
    await serve_and_label(model, client, publisher, 0, 300, flip=False)
    await wait_for(lambda: (w := monitor.handlers.models.get(model)) is not None and w.join.hits >= 300, timeout=60)

    # the operator: "train now" gave v2; "promote"
    registry.set_alias(model, "production", 2, "operator", "train now")
    await publisher.publish(
        DeploymentChanged(
            model=model, action="promoted", version=2, previous_version=1, traffic=1.0, reason="manual", actor="op"
        )
    )
    await wait_for(lambda: registry.alias(model, "shadow") == 1, timeout=30)  # the monitor keeps v1 scoring
    await wait_for(
        lambda: (
            (s := inference.handlers.slots.get(model)) is not None
            and s.champion is not None
            and s.champion.version == 2
            and s.shadow is not None
            and s.shadow.version == 1
        ),
        timeout=30,
    )

    # the world changes: both versions are now wrong on every row
    await serve_and_label(model, client, publisher, 1000, 500, flip=True)
    watch = monitor.handlers.models[model]
    await wait_for(lambda: watch.watch is not None and len(watch.watch.previous_recent) >= 100, timeout=60)
    drifts = [decode_as(DriftDetected, v) for v in await read_settled(options, topics.DRIFT, model, settle_s=3.0)]
    concept = [d for d in drifts if d.kind == "concept"]
    assert concept and concept[0].model_version == 2, drifts
    changes = [decode_as(DeploymentChanged, v) for v in await read_settled(options, topics.DEPLOYMENTS, model)]
    assert [c.action for c in changes if c.actor == "monitor"] == ["shadow_started"], "no rollback into v1"
    assert registry.alias(model, "production") == 2
    assert watch.watch is not None and watch.watch.error_rate > 0.9 and watch.watch.previous_error_rate > 0.9
