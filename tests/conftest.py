"""Shared fixtures: the real Kafka-protocol broker and topic helpers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.kafka_broker import Broker, run_broker


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    """One broker for the whole test session (Tansu, or the external Kafka)."""
    with run_broker() as b:
        yield b


async def create_topics(bootstrap: str, names: list[str], partitions: int = 3) -> None:
    """Create topics explicitly: Tansu would auto-create them with other counts."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        await admin.close()
