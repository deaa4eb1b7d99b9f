"""Kafka for ``redrive``: read a dead-letter topic with group progress, publish acked.

* :class:`DeadLetterReader` reads every partition of a dead-letter topic up to
  the end it had when the run started (a bounded run), from the offsets its
  consumer group committed (or the beginning). It reads ``read_committed``:
  a stream with fencing (``BRIDGE_HA_TRANSACTIONAL_ID``) dead-letters inside
  its transactions, and a letter of an aborted one (a fenced leader's) must
  not be redriven; its successor dead-lettered the same frame. Without
  transactions that changes nothing. It assigns the partitions
  itself instead of joining the group's rebalances: a redrive is one process
  at a time, and the group is only where its progress is kept, as Kafka
  allows for manually assigned consumers. The topic is only ever read.
* :class:`RecordPublisher` publishes a batch and returns once Kafka
  acknowledged every record of it, so progress is committed only after.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from bridge.adapters.kafka_client import client_settings, producer_settings
from bridge.config import KafkaSettings
from bridge.core.records import OutboundRecord
from bridge.core.redrive import DeadLetter
from bridge.errors import PublishError

__all__ = ["DeadLetterReader", "RecordPublisher"]


class DeadLetterReader:
    """Reads a dead-letter topic from its group's committed offsets to the end."""

    def __init__(
        self, kafka: KafkaSettings, *, topic: str, group: str, reset: bool
    ) -> None:
        self._kafka = kafka
        self._topic = topic
        self._group = group
        self._reset = reset
        self._consumer: AIOKafkaConsumer | None = None
        self.end: dict[int, int] = {}
        self.start_offsets: dict[int, int] = {}
        self._confirmed: set[int] = set()

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            group_id=self._group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            **client_settings(self._kafka),
        )
        await consumer.start()
        self._consumer = consumer
        try:
            partitions = consumer.partitions_for_topic(self._topic)
            if not partitions:
                await consumer.force_metadata_update()
                partitions = consumer.partitions_for_topic(self._topic) or set()
            tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            beginnings = await consumer.beginning_offsets(tps)
            for tp in tps:
                committed = None if self._reset else await consumer.committed(tp)
                start = beginnings[tp] if committed is None else committed
                consumer.seek(tp, start)
                self.start_offsets[tp.partition] = start
                self.end[tp.partition] = ends[tp]
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    def _live(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("DeadLetterReader is not started")
        return self._consumer

    async def _pending(self) -> list[TopicPartition]:
        """Partitions not yet at their end, or whose end is not yet confirmed."""
        consumer = self._live()
        pending = []
        for partition, end in self.end.items():
            tp = TopicPartition(self._topic, partition)
            if partition not in self._confirmed or await consumer.position(tp) < end:
                pending.append(tp)
        return pending

    async def fetch(self, max_records: int) -> list[DeadLetter]:
        """The next records of the partitions not yet at their end.

        The end taken at the start (the last stable offset, read_committed)
        is confirmed by that of a fetch response: Tansu answers the latest
        offset one short when the last batch holds several records.
        """
        consumer = self._live()
        pending = await self._pending()
        if not pending:
            return []
        batches = await consumer.getmany(
            *pending, timeout_ms=1000, max_records=max_records
        )
        for tp in pending:
            stable = consumer.last_stable_offset(tp)
            if stable is not None and tp.partition not in self._confirmed:
                self._confirmed.add(tp.partition)
                self.end[tp.partition] = max(self.end[tp.partition], stable)
        letters: list[DeadLetter] = []
        for tp, messages in batches.items():
            end = self.end[tp.partition]
            letters.extend(
                DeadLetter(tp.partition, m.offset, m.value or b"", dict(m.headers))
                for m in messages
                if m.offset < end
            )
        return letters

    async def finished(self) -> set[int]:
        """Partitions whose position reached the (confirmed) end of this run."""
        pending = {tp.partition for tp in await self._pending()}
        return set(self.end) - pending

    async def commit(self, offsets: dict[int, int]) -> None:
        """Record progress: ``offsets`` are the next offsets to read."""
        if offsets:
            await self._live().commit(
                {
                    TopicPartition(self._topic, p): OffsetAndMetadata(o, "")
                    for p, o in offsets.items()
                }
            )


class RecordPublisher:
    """Publishes batches of records, each returning once all are acknowledged."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self._settings: dict[str, Any] = producer_settings(kafka)
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        producer = AIOKafkaProducer(**self._settings)
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, records: Sequence[OutboundRecord]) -> None:
        """Send ``records`` in order; return when Kafka acknowledged them all."""
        if self._producer is None:
            raise RuntimeError("RecordPublisher is not started")
        send = self._producer.send
        futures = [
            await send(r.topic, r.value, key=r.key, headers=list(r.headers))
            for r in records
        ]
        try:
            await asyncio.gather(*futures)
        except Exception as exc:
            raise PublishError(f"redrive publish failed: {type(exc).__name__}") from exc
