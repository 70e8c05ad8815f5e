"""The prediction log across a broker outage: requests keep succeeding, logs arrive after it returns."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from services.inference.app import InferenceService, InferenceSettings
from shared import topics
from shared.broker import EmbeddedBroker, free_port
from shared.bus import KafkaOptions, ensure_topics
from shared.registry import Registry
from shared.spec import apply_spec
from shared.store import FileStore
from tests.integration.test_inference import SPEC, register, rows, v2
from tests.integration.topic_reading import read_predictions, wait_for

pytestmark = pytest.mark.integration


def restore_topics(options: KafkaOptions, partitions: int) -> None:
    """Create the topics again before the service can write: blocks this event loop while it runs.

    A real Kafka keeps its topics across a restart. The embedded broker keeps nothing, and
    auto-creates a topic on the first produce, where concurrent first writes race (the broker
    answers one of them UnknownError): the test would measure the broker, not the service.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, ensure_topics(options, [topics.PREDICTIONS], partitions=partitions)).result()


async def test_logs_written_during_an_outage_arrive_after_it(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    model = "outage"
    apply_spec(store, SPEC.format(name=model))
    version = register(store, model, rows(400, 0, flip=False), None)
    Registry(store).set_alias(model, "production", version, "test", "first")
    port = free_port()
    broker = EmbeddedBroker(port=port, log_path=tmp_path / "tansu.log")
    broker.start()
    options = KafkaOptions(bootstrap=broker.bootstrap, client_id="outage", idempotence=False)
    settings = InferenceSettings(
        kafka_bootstrap=broker.bootstrap,
        kafka_idempotence=False,
        store_kind="file",
        store_root=store.root,
        port=0,
        journal_dir=tmp_path / "journal",
        prediction_buffer=50,  # small: the outage must reach the disk journal too
    )
    service = InferenceService(settings)
    task = asyncio.create_task(service.run())
    try:
        await wait_for(lambda: model in service.handlers.slots and service.subscriber.started.is_set(), timeout=30)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http.port}", timeout=10) as client:
            path = f"/v2/models/{model}/infer"
            before = [await client.post(path, json=v2([[1, 2, 3]], id=f"before-{i}")) for i in range(20)]
            await wait_for(lambda: service.predlog.sent >= 20, timeout=20)

            broker.stop()
            during = [await client.post(path, json=v2([[4, 5, 6]], id=f"during-{i}")) for i in range(300)]
            assert all(r.status_code == 200 for r in before + during), "an outage never fails a prediction"
            await wait_for(lambda: service.predlog.spilled > 0, timeout=20)

            broker.start()  # the same port, but memory storage: recreate the topics a real Kafka would keep
            restore_topics(options, settings.kafka_partitions)
            await wait_for(lambda: service.predlog.sent + service.predlog.replayed >= 320, timeout=60)
            logged = await read_predictions(options, model, 300, timeout=30)
            assert {p.inference_id for p in logged} == {f"during-{i}" for i in range(300)}
            assert len(logged) == 300, "each prediction once"
            assert service.predlog.lost == 0
            metrics = (await client.get("/metrics")).text
            assert "driftloop_inference_prediction_log_lost 0.0" in metrics
    finally:
        service.stop()
        await asyncio.wait_for(task, 30)
        broker.stop()
