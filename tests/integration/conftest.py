"""Fixtures of the integration tests: a broker of the module's own, a FileStore, a publisher."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shared.broker import EmbeddedBroker
from shared.bus import KafkaOptions, Publisher, all_topics_with_dlq, ensure_topics
from shared.store import FileStore


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A broker for one test module, so services under test never see other modules' events."""
    broker = EmbeddedBroker(log_path=tmp_path_factory.mktemp("broker") / "tansu.log")
    broker.start()
    asyncio.run(
        ensure_topics(KafkaOptions(bootstrap=broker.bootstrap, idempotence=False), all_topics_with_dlq(), partitions=4)
    )
    yield broker
    broker.stop()


@pytest.fixture
def options(own_broker: EmbeddedBroker) -> KafkaOptions:
    """Client options for the module's broker."""
    return KafkaOptions(bootstrap=own_broker.bootstrap, client_id="tests", idempotence=False)


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    """An empty FileStore."""
    return FileStore(tmp_path / "store")


@pytest.fixture
async def publisher(options: KafkaOptions) -> AsyncIterator[Publisher]:
    """A started publisher on the module's broker."""
    pub = Publisher(options)
    await pub.start(max_wait_s=10)
    yield pub
    await pub.stop()
