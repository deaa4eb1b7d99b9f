"""Delivers records to Kafka with aiokafka: bounded, acknowledged, never dropped.

``send`` admits a record into a buffer bounded by count and bytes, hands it to
the producer and returns; it blocks while the buffer is full, which is how a
slow or absent Kafka stops the websocket reader instead of growing memory.
A record leaves the buffer only when Kafka acknowledges it. A failed send
(broker paused past ``request_timeout_ms``, leader moves, ...) goes to one
retrier that re-sends in arrival order, with capped backoff while failures
continue; nothing is retried forever in a hot loop and nothing is dropped.

Re-sending after a timeout can duplicate a record that the broker did write
(with idempotence off); every record carries a deterministic ``ce_id`` so
consumers can tell.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from bridge.core.records import OutboundRecord
from bridge.core.retry import Backoff
from bridge.metrics import StreamMetrics
from bridge.ports import SinkStatistics

AckCallback = Callable[[OutboundRecord], None]


class KafkaRecordSink:
    """``RecordSink`` over an ``AIOKafkaProducer``."""

    def __init__(
        self,
        producer_factory: Callable[[], AIOKafkaProducer],
        *,
        max_records: int,
        max_bytes: int,
        retry_backoff: Backoff,
        metrics: StreamMetrics,
        topic_kinds: Mapping[str, str],
        on_ack: AckCallback | None = None,
    ) -> None:
        # A producer whose start failed is closed for good: each start builds anew.
        self._factory = producer_factory
        self._producer: AIOKafkaProducer | None = None
        self._max_records = max_records
        self._max_bytes = max_bytes
        self._backoff = retry_backoff
        self._metrics = metrics
        self._topic_kinds = dict(topic_kinds)
        self._on_ack = on_ack
        self._records = 0
        self._bytes = 0
        self._acked = 0
        self._retried = 0
        self._streak = 0  # consecutive failures; 0 once anything is acked
        self._room = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._retry: deque[OutboundRecord] = deque()
        self._retry_wakeup = asyncio.Event()
        self._retrier: asyncio.Task[None] | None = None
        self._started = False

    async def start(self) -> None:
        """Connect a new producer (raises aiokafka's error if Kafka is unreachable)."""
        producer = self._factory()
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer
        self._started = True
        self._retrier = asyncio.create_task(self._retry_loop(), name="kafka-retrier")

    async def stop(self) -> None:
        """Stop retrying and stop the producer (which flushes its batches)."""
        if self._retrier is not None:
            self._retrier.cancel()
            await asyncio.gather(self._retrier, return_exceptions=True)
            self._retrier = None
        self._started = False
        if self._producer is not None:
            await self._producer.stop()

    def statistics(self) -> SinkStatistics:
        return SinkStatistics(
            in_flight_records=self._records,
            in_flight_bytes=self._bytes,
            acked=self._acked,
            retried=self._retried,
            connected=self._started and self._streak == 0,
        )

    async def send(self, record: OutboundRecord) -> None:
        size = record.size
        if not self._has_room(size):
            blocked_since = time.monotonic()
            while not self._has_room(size):
                self._room.clear()
                await self._room.wait()
            self._metrics.buffer_full_seconds.inc(time.monotonic() - blocked_since)
        self._records += 1
        self._bytes += size
        self._drained.clear()
        self._metrics.buffer_records.set(self._records)
        self._metrics.buffer_bytes.set(self._bytes)
        await self._dispatch(record)

    async def flush(self, grace: float) -> bool:
        try:
            async with asyncio.timeout(grace):
                await self._drained.wait()
        except TimeoutError:
            return False
        return True

    def _has_room(self, size: int) -> bool:
        if self._records == 0:
            return True  # one record larger than the byte bound still goes through
        return (
            self._records < self._max_records and self._bytes + size <= self._max_bytes
        )

    async def _dispatch(self, record: OutboundRecord) -> None:
        assert self._producer is not None, "send() before start()"  # noqa: S101
        started = time.monotonic()
        try:
            future = await self._producer.send(
                record.topic, record.value, key=record.key, headers=list(record.headers)
            )
        except KafkaError as exc:
            self._failed(record, exc)
            return
        future.add_done_callback(lambda f: self._completed(f, record, started))

    def _completed(
        self, future: asyncio.Future[Any], record: OutboundRecord, started: float
    ) -> None:
        if future.cancelled():
            self._failed(record, asyncio.CancelledError())
            return
        exc = future.exception()
        if exc is not None:
            self._failed(record, exc)
            return
        self._streak = 0
        self._acked += 1
        self._records -= 1
        self._bytes -= record.size
        self._metrics.buffer_records.set(self._records)
        self._metrics.buffer_bytes.set(self._bytes)
        self._metrics.kafka_send_seconds.observe(time.monotonic() - started)
        self._metrics.published.labels(
            self._topic_kinds.get(record.topic, "other")
        ).inc()
        self._room.set()
        if self._records == 0:
            self._drained.set()
        if self._on_ack is not None:
            self._on_ack(record)

    def _failed(self, record: OutboundRecord, exc: BaseException) -> None:
        self._streak += 1
        self._retried += 1
        self._metrics.kafka_errors.labels(type(exc).__name__).inc()
        self._retry.append(record)
        self._retry_wakeup.set()

    async def _retry_loop(self) -> None:
        while True:
            while not self._retry:
                self._retry_wakeup.clear()
                await self._retry_wakeup.wait()
            if self._streak:
                # Still failing: slow down; the first ack resets the streak.
                await asyncio.sleep(
                    self._backoff.delay(self._streak - 1, random.random())
                )
            if self._retry:
                await self._dispatch(self._retry.popleft())


def build_producer(**settings: Any) -> AIOKafkaProducer:
    """An ``AIOKafkaProducer``; built here so that workers never import aiokafka."""
    return AIOKafkaProducer(**settings)
