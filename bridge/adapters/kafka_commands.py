"""Kafka for the command worker: the consuming group, acked publishing, the state log.

* ``KafkaCommandSource``: the command topic in a consumer group, auto-commit
  off; partition moves are handed to the worker's ``RebalanceHandler`` so it
  can finish and commit before giving a partition away (aiokafka's guidance
  for at-least-once with manual commits).
* ``KafkaAckingPublisher``: one record at a time, returning only after Kafka
  acknowledged it (the worker's exactly-once protocol needs that order).
* ``KafkaStateLog``: reads the compacted state topic and the results topic
  from the beginning and then incrementally, without a group, to learn which
  commands were started or finished by any worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import TopicPartition

from bridge.core.records import OutboundRecord
from bridge.core.retry import Backoff
from bridge.errors import PublishError
from bridge.ports import RebalanceHandler, SourceMessage


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # untyped base
    def __init__(self, topic: str, handler: RebalanceHandler) -> None:
        self._topic = topic
        self._handler = handler

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._handler.on_revoked(
            {tp.partition for tp in revoked if tp.topic == self._topic}
        )

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._handler.on_assigned(
            {tp.partition for tp in assigned if tp.topic == self._topic}
        )


class KafkaCommandSource:
    """``CommandSource`` over an ``AIOKafkaConsumer`` in a group."""

    def __init__(
        self,
        consumer_factory: Callable[[], AIOKafkaConsumer],
        *,
        topic: str,
        handler: RebalanceHandler,
    ) -> None:
        self._factory = consumer_factory
        self._topic = topic
        self._handler = handler
        self._consumer: AIOKafkaConsumer | None = None
        self._next: dict[int, int] = {}

    async def start(self) -> None:
        consumer = self._factory()
        consumer.subscribe(
            [self._topic], listener=_Listener(self._topic, self._handler)
        )
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def fetch(self, max_records: int, wait: float) -> list[SourceMessage]:
        assert self._consumer is not None  # noqa: S101 - started first
        batches = await self._consumer.getmany(
            timeout_ms=int(wait * 1000), max_records=max_records
        )
        out: list[SourceMessage] = []
        for tp, records in batches.items():
            for r in records:
                out.append(
                    SourceMessage(tp.topic, tp.partition, r.offset, r.value or b"")
                )
                self._next[tp.partition] = r.offset + 1
        return out

    async def commit(self, offsets: dict[int, int]) -> None:
        if self._consumer is None or not offsets:
            return
        # CommitFailedError: the group moved on (we lost the partition); the
        # new owner re-reads from the last commit and the state log stops repeats.
        with contextlib.suppress(CommitFailedError):
            await self._consumer.commit(
                {TopicPartition(self._topic, p): o for p, o in offsets.items()}
            )

    def assignment(self) -> set[int]:
        if self._consumer is None:
            return set()
        return {
            tp.partition
            for tp in self._consumer.assignment()
            if tp.topic == self._topic
        }

    def lag(self) -> dict[int, int]:
        if self._consumer is None:
            return {}
        lags: dict[int, int] = {}
        for p in self.assignment():
            high = self._consumer.highwater(TopicPartition(self._topic, p))
            if high is not None:
                lags[p] = max(0, high - self._next.get(p, high))
        return lags


class KafkaAckingPublisher:
    """``AckingPublisher``: send, await the ack, retry retriable failures."""

    def __init__(
        self,
        producer_factory: Callable[[], AIOKafkaProducer],
        *,
        timeout: float,
        retry: Backoff,
    ) -> None:
        self._factory = producer_factory
        self._timeout = timeout
        self._retry = retry
        self._producer: AIOKafkaProducer | None = None

    @property
    def connected(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        producer = self._factory()
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, record: OutboundRecord) -> None:
        assert self._producer is not None  # noqa: S101 - started first
        deadline = time.monotonic() + self._timeout
        attempt = 0
        while True:
            try:
                future = await self._producer.send(
                    record.topic,
                    record.value,
                    key=record.key,
                    headers=list(record.headers),
                )
                await future
            except KafkaError as exc:
                delay = self._retry.delay(attempt, random.random())
                if time.monotonic() + delay > deadline:
                    raise PublishError(
                        f"Kafka did not acknowledge a record for {record.topic}: "
                        f"{type(exc).__name__}"
                    ) from exc
                attempt += 1
                await asyncio.sleep(delay)
            else:
                return


class KafkaStateLog:
    """``StateLog`` over a group-less consumer assigned to every partition."""

    def __init__(
        self, consumer_factory: Callable[[], AIOKafkaConsumer], topics: list[str]
    ) -> None:
        self._factory = consumer_factory
        self._topics = topics
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []

    async def start(self) -> None:
        consumer = self._factory()
        try:
            await consumer.start()
            await consumer.topics()  # loads metadata for partitions_for_topic
            parts = [
                TopicPartition(topic, p)
                for topic in self._topics
                for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self._partitions = parts

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def catch_up(self) -> list[tuple[str, str, bytes]]:
        try:
            return await self._catch_up()
        except KafkaError as exc:
            raise PublishError(
                f"could not read the state log: {type(exc).__name__}"
            ) from exc

    async def _catch_up(self) -> list[tuple[str, str, bytes]]:
        consumer = self._consumer
        assert consumer is not None  # noqa: S101 - started first
        ends = await consumer.end_offsets(self._partitions)
        out: list[tuple[str, str, bytes]] = []
        while True:
            behind = [
                tp for tp in self._partitions if await consumer.position(tp) < ends[tp]
            ]
            if not behind:
                return out
            batches = await consumer.getmany(*behind, timeout_ms=500)
            for tp, records in batches.items():
                out.extend(
                    (tp.topic, r.key.decode(), r.value or b"")
                    for r in records
                    if r.key is not None
                )
