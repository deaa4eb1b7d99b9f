"""An independent consumer that reads what the bridge published.

It knows nothing of the bridge's code: it reads topics from the earliest
offset with aiokafka and classifies each emulator sequence number (carried
in ``attributes.seq``) as delivered once, duplicated or missing.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord


@dataclass
class Consumed:
    """Everything read from the topics, by topic."""

    records: dict[str, list[ConsumerRecord[bytes, bytes]]] = field(default_factory=dict)

    def seqs(self, topics: list[str]) -> Counter[int]:
        counts: Counter[int] = Counter()
        for topic in topics:
            for record in self.records.get(topic, []):
                assert record.value is not None
                value = orjson.loads(record.value)
                counts[int(value["attributes"]["seq"])] += 1
        return counts

    def count(self, topic: str) -> int:
        return len(self.records.get(topic, []))


async def read_all(
    bootstrap: str,
    topics: list[str],
    *,
    quiet: float = 1.5,
    within: float = 60.0,
    committed_only: bool = False,
) -> Consumed:
    """Read every record of ``topics`` until nothing new arrives for ``quiet`` s
    (with ``committed_only``, as a ``read_committed`` consumer)."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed" if committed_only else "read_uncommitted",
    )
    await consumer.start()
    consumed = Consumed()
    try:
        deadline = time.monotonic() + within
        last_new = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last_new < quiet:
            batch = await consumer.getmany(timeout_ms=300)
            for tp, records in batch.items():
                if records:
                    consumed.records.setdefault(tp.topic, []).extend(records)
                    last_new = time.monotonic()
    finally:
        await consumer.stop()
    return consumed


async def wait_for(predicate: object, within: float, interval: float = 0.05) -> None:
    """Poll ``predicate()`` until true; fail the test after ``timeout`` s."""
    assert callable(predicate)
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)
