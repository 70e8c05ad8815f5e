"""Fixtures shared by every test: one embedded Kafka-protocol broker per test session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from shared.broker import EmbeddedBroker
from shared.bus import KafkaOptions


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A real Tansu broker on a free loopback port, shared by the whole session."""
    embedded = EmbeddedBroker(log_path=tmp_path_factory.mktemp("broker") / "tansu.log")
    embedded.start()
    yield embedded
    embedded.stop()


@pytest.fixture(scope="session")
def kafka(broker: EmbeddedBroker) -> KafkaOptions:
    """Client options for the session broker (idempotence off: Tansu lacks InitProducerId)."""
    return KafkaOptions(bootstrap=broker.bootstrap, client_id="tests", idempotence=False)


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic and group names, so tests never see each other's data."""
    return uuid.uuid4().hex[:10]
