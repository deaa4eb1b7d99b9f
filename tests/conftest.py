"""Shared fixtures: the real Kafka-protocol broker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kafka_broker import Broker, run_broker


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    """One broker for the whole test session (Tansu, or the external Kafka)."""
    with run_broker() as b:
        yield b
