"""The demo's independent consumer: what actually landed in Kafka.

It shares nothing with the bridge but the topic names: a plain aiokafka
consumer (no group, from the earliest offset) counts records per topic, keeps
a sample of the latest one, and counts the emulator's sequence numbers
(``attributes.seq``) on the data topics for the exactly-once check.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from bridgelab.demo.view import (
    describe_data,
    describe_dead_letter,
    header_value,
    seq_of,
)

__all__ = ["Watcher"]


class Watcher:
    """Reads the four topics and tallies them by kind."""

    def __init__(self, bootstrap: str, topics: Mapping[str, str]) -> None:
        self._kind_of = {topic: kind for kind, topic in topics.items()}
        self._consumer = AIOKafkaConsumer(
            *topics.values(),
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        self.totals: dict[str, int] = dict.fromkeys(topics, 0)
        self.latest: dict[str, str] = {}
        self.seqs: Counter[int] = Counter()
        self.last_reason: str | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def dead_letters(self) -> int:
        return self.totals.get("dead-letter", 0)

    async def start(self) -> None:
        """Connect and start reading in the background."""
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="demo-watcher")

    async def stop(self) -> None:
        """Stop reading and disconnect."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    async def caught_up(self, within: float) -> bool:
        """Wait until every assigned partition is read to its end offset."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            partitions = list(self._consumer.assignment())
            if partitions:
                ends = await self._consumer.end_offsets(partitions)
                positions = [await self._consumer.position(tp) for tp in partitions]
                if all(
                    p >= ends[tp] for tp, p in zip(partitions, positions, strict=True)
                ):
                    return True
            await asyncio.sleep(0.2)
        return False

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                for record in records:
                    self._take(self._kind_of[tp.topic], record)

    def _take(self, kind: str, record: Any) -> None:
        self.totals[kind] += 1
        if kind == "dead-letter":
            self.last_reason = header_value(record.headers, "bridge_dlq_reason")
            self.latest[kind] = describe_dead_letter(
                self.last_reason or "?", record.value
            )
            return
        try:
            data = orjson.loads(record.value or b"")
        except orjson.JSONDecodeError:
            data = None
        self.latest[kind] = describe_data(kind, record.key, data)
        seq = seq_of(data)
        if seq is not None:
            self.seqs[seq] += 1
