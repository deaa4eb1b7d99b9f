"""Delivers records to Kafka with aiokafka: bounded, acknowledged, never dropped.

``send`` admits a record into a buffer bounded by count and bytes and returns;
it blocks while the buffer is full, which is how a slow or absent Kafka stops
the websocket reader instead of growing memory. A record leaves the buffer
only when Kafka acknowledges it.

Batching is ours, on aiokafka's batch API (``create_batch`` / ``send_batch``):
per-record ``producer.send`` costs a future, a callback and three awaits per
record, more than all of our own work (over 2x the throughput for a third of
the CPU, in ``python -m bench.sink_paths``). Everything that leans on aiokafka's
internals for it is in ``bridge/adapters/kafka_batches.py``, which says what
and why. ``send`` picks the partition with aiokafka's ``DefaultPartitioner``
(murmur2 of the key, as the Java client does; keyless records go to a random
partition) and appends the record to that partition's open batch. A batch is
handed to the producer when it is full or ``linger`` after its first record,
and only while no other batch of the same partition is in flight: one
in-flight batch per partition is what aiokafka does anyway (a partition is
muted while its request is out), and it keeps per-key order even when a batch
fails. Kafka's ack completes the whole batch:
one callback, then ``on_batch_ack`` with its records and ``on_ack`` for each.

A failed batch (broker paused past ``request_timeout_ms``, leader moves, ...)
goes back to the front of its partition, ahead of everything that partition
accepted since, and is re-sent after a capped backoff while failures continue;
nothing is retried in a hot loop and nothing is dropped. A topic whose
partitions are not known yet holds its records, in order, until they are.

Re-sending after a timeout can duplicate a record that the broker did write
(with idempotence off); every record carries a deterministic ``ce_id`` so
consumers can tell.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, UnknownTopicOrPartitionError
from prometheus_client import Counter

from bridge.adapters.kafka_batches import RecordBatch, partition_for, rebuild
from bridge.core.records import OutboundRecord
from bridge.core.retry import Backoff
from bridge.metrics import SinkMetrics
from bridge.ports import SinkStatistics

log = structlog.get_logger("bridge.kafka")

AckCallback = Callable[[OutboundRecord], None]
BatchAckCallback = Callable[[Sequence[OutboundRecord]], None]

#: Keys (device ids) whose partition is remembered per topic; murmur2 is pure
#: Python in aiokafka and costs more than the rest of the routing.
_KEY_CACHE_MAX = 65_536
#: How often known topics are checked for added partitions (aiokafka's own
#: metadata refresh is every 5 minutes by default).
_PARTITIONS_REFRESH_SECONDS = 30.0


class _Partition:
    """One topic-partition: batches not yet handed over, and the one in flight."""

    __slots__ = (
        "full",
        "in_flight",
        "not_before",
        "open",
        "partition",
        "published",
        "topic",
    )

    def __init__(self, topic: str, partition: int, published: Any) -> None:
        self.topic = topic
        self.partition = partition
        self.published = published  # the bound ``published{kind}`` child
        self.full: deque[RecordBatch] = deque()  # closed, oldest first
        self.open: RecordBatch | None = None  # being filled: the newest records
        self.in_flight: RecordBatch | None = None
        self.not_before = 0.0  # loop time; backoff after a failure

    def waiting(self) -> bool:
        return bool(self.full) or self.open is not None


class _Route:
    """A topic's partitions and the partition each recent key maps to."""

    __slots__ = ("by_id", "by_key", "ids", "parts")

    def __init__(self) -> None:
        self.ids: list[int] = []  # sorted, as DefaultPartitioner expects
        self.by_id: dict[int, _Partition] = {}
        self.parts: list[_Partition] = []
        self.by_key: dict[bytes, _Partition] = {}

    def pick(self, key: bytes | None) -> _Partition:
        if key is None:
            return random.choice(self.parts)
        part = self.by_key.get(key)
        if part is None:
            if len(self.by_key) >= _KEY_CACHE_MAX:
                self.by_key.clear()
            part = self.by_id[partition_for(key, self.ids)]
            self.by_key[key] = part
        return part


def has_room(
    records: int, nbytes: int, size: int, max_records: int, max_bytes: int
) -> bool:
    """Whether a buffer holding ``records`` / ``nbytes`` takes one more of
    ``size`` bytes; an empty one takes any record, even one over the bound."""
    if records == 0:
        return True
    return records < max_records and nbytes + size <= max_bytes


async def wait_for_room(
    room_for_it: Callable[[], bool], room: asyncio.Event, blocked_seconds: Counter
) -> None:
    """Wait until ``room_for_it()``, woken by ``room``; the time it took goes
    to ``blocked_seconds`` (``bridge_buffer_full_seconds_total``)."""
    loop = asyncio.get_running_loop()
    blocked_since = loop.time()
    while not room_for_it():
        room.clear()
        await room.wait()
    blocked_seconds.inc(loop.time() - blocked_since)


class KafkaRecordSink:
    """``RecordSink`` over an ``AIOKafkaProducer``'s batch API.

    Args:
        producer_factory: Builds a new producer (one per ``start``).
        max_records: Buffer bound, in records.
        max_bytes: Buffer bound, in bytes (``OutboundRecord.size``).
        retry_backoff: Delay before re-sending while sends keep failing.
        metrics: Where the Kafka and buffer metrics go.
        topic_kinds: Topic -> ``kind`` label of ``bridge_records_published_total``.
        on_ack: Called with each record Kafka acknowledged, in order.
        on_batch_ack: Called once per acknowledged batch with its records.
        linger: Seconds a batch waits for more records after its first one;
            the producer's ``linger_ms`` is not used (batches are ours).
    """

    def __init__(
        self,
        producer_factory: Callable[[], AIOKafkaProducer],
        *,
        max_records: int,
        max_bytes: int,
        retry_backoff: Backoff,
        metrics: SinkMetrics,
        topic_kinds: Mapping[str, str],
        on_ack: AckCallback | None = None,
        on_batch_ack: BatchAckCallback | None = None,
        linger: float = 0.005,
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
        self._on_batch_ack = on_batch_ack
        self._linger = max(0.0, linger)
        self._records = 0
        self._bytes = 0
        self._acked = 0
        self._retried = 0
        self._streak = 0  # consecutive failures; 0 once anything is acked
        self._room = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._routes: dict[str, _Route] = {}
        self._partitions: list[_Partition] = []
        # Records of topics whose partitions are not known yet, in order.
        self._unrouted: dict[str, deque[tuple[OutboundRecord, int]]] = {}
        self._wake = asyncio.Event()  # the dispatcher has something to look at
        self._timer: asyncio.TimerHandle | None = None
        self._resolve = asyncio.Event()  # the resolver has a topic to learn
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        # Read at scrape time: setting gauges per record cost more than the send.
        metrics.buffer_records.set_function(lambda: self._records)
        metrics.buffer_bytes.set_function(lambda: self._bytes)

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
        self._tasks = [
            asyncio.create_task(self._dispatch_loop(), name="kafka-dispatcher"),
            asyncio.create_task(self._resolve_loop(), name="kafka-topics"),
        ]
        for task in self._tasks:
            task.add_done_callback(self._task_ended)
        self._wake.set()  # batches left from an earlier producer, if any

    async def stop(self) -> None:
        """Stop handing batches over and stop the producer.

        The producer delivers what it holds (batches in flight) before it
        stops; records not handed over yet stay unacknowledged.
        """
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._started = False
        if self._producer is not None:
            await self._producer.stop()

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # A bug: nothing would be delivered any more, so stop being ready.
            self._started = False
            log.error("kafka_sink_task_failed", task=task.get_name(), exc_info=exc)

    def statistics(self) -> SinkStatistics:
        return SinkStatistics(
            in_flight_records=self._records,
            in_flight_bytes=self._bytes,
            acked=self._acked,
            retried=self._retried,
            connected=self._started and self._streak == 0,
        )

    async def send(self, record: OutboundRecord) -> None:
        if self._producer is None:
            raise RuntimeError("send() before start()")
        size = record.size
        # has_room, inlined: this runs for every record.
        if self._records and (
            self._records >= self._max_records or self._bytes + size > self._max_bytes
        ):
            await self._wait_for_room(size)
        self._accept(record, size)

    def offer(self, record: OutboundRecord) -> bool:
        """``send`` without waiting: False, and nothing done, when the buffer
        has no room (or the sink is not started)."""
        size = record.size
        if self._producer is None or not self._has_room(size):
            return False
        self._accept(record, size)
        return True

    def _accept(self, record: OutboundRecord, size: int) -> None:
        self._records += 1
        self._bytes += size
        self._drained.clear()
        route = self._routes.get(record.topic)
        if route is None:
            self._unrouted.setdefault(record.topic, deque()).append((record, size))
            self._resolve.set()
        else:
            self._append(route.pick(record.key), record, size)

    async def flush(self, grace: float) -> bool:
        try:
            async with asyncio.timeout(grace):
                await self._drained.wait()
        except TimeoutError:
            return False
        return True

    # -- admission -----------------------------------------------------------

    def _has_room(self, size: int) -> bool:
        return has_room(
            self._records, self._bytes, size, self._max_records, self._max_bytes
        )

    async def _wait_for_room(self, size: int) -> None:
        await wait_for_room(
            lambda: self._has_room(size), self._room, self._metrics.buffer_full_seconds
        )

    # -- batching ------------------------------------------------------------

    def _new_batch(self) -> RecordBatch:
        assert self._producer is not None  # noqa: S101 - only after start()
        return RecordBatch(self._producer, asyncio.get_running_loop().time())

    def _append(self, part: _Partition, record: OutboundRecord, size: int) -> None:
        batch = part.open
        if batch is None:
            batch = part.open = self._new_batch()
            if part.in_flight is None:
                self._wake_at(batch.created + self._linger)
        if not batch.append(record, size):
            # Full: it goes as soon as its partition has nothing in flight.
            part.full.append(batch)
            batch = part.open = self._new_batch()
            batch.append(record, size)  # an empty batch takes any record
            if part.in_flight is None:
                self._wake.set()

    # -- handing batches to the producer -------------------------------------

    def _wake_at(self, when: float) -> None:
        if self._timer is None or self._timer.when() > when:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._wake.set()

    async def _dispatch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            now = loop.time()
            for part in self._partitions:
                if part.in_flight is not None:
                    continue  # its ack or failure wakes us
                if part.not_before > now:
                    if part.waiting():
                        self._wake_at(part.not_before)
                    continue
                if part.full:
                    batch = part.full.popleft()
                elif part.open is not None:
                    due = part.open.created + self._linger
                    if due > now:
                        self._wake_at(due)
                        continue
                    batch, part.open = part.open, None
                else:
                    continue
                await self._hand_over(part, batch)

    async def _hand_over(self, part: _Partition, batch: RecordBatch) -> None:
        assert self._producer is not None  # noqa: S101 - only after start()
        part.in_flight = batch
        try:
            future = await batch.send(self._producer, part.topic, part.partition)
        except KafkaError as exc:
            self._failed(part, batch, exc)
            return
        future.add_done_callback(functools.partial(self._completed, part, batch))

    def _completed(
        self, part: _Partition, batch: RecordBatch, future: asyncio.Future[Any]
    ) -> None:
        part.in_flight = None
        if future.cancelled():
            self._failed(part, batch, asyncio.CancelledError())
            return
        exc = future.exception()
        if exc is not None:
            self._failed(part, batch, exc)
            return
        records = batch.records
        count = len(records)
        self._streak = 0
        self._acked += count
        self._records -= count
        self._bytes -= batch.bytes
        part.published.inc(count)
        # Once per batch, for its oldest record: per-record observations cost
        # as much as the send; the quantiles stay those of what waits longest.
        loop = asyncio.get_running_loop()
        self._metrics.kafka_send_seconds.observe(loop.time() - batch.created)
        if part.waiting():
            self._wake.set()  # first: the next batch goes before intake resumes
        self._room.set()
        if self._records == 0:
            self._drained.set()
        if self._on_batch_ack is not None:
            self._on_batch_ack(records)
        on_ack = self._on_ack
        if on_ack is not None:
            for record in records:
                on_ack(record)

    def _failed(self, part: _Partition, batch: RecordBatch, exc: BaseException) -> None:
        assert self._producer is not None  # noqa: S101 - only after start()
        part.in_flight = None
        count = len(batch.records)
        self._streak += 1
        self._retried += count
        self._metrics.kafka_errors.labels(type(exc).__name__).inc(count)
        # Ahead of everything this partition accepted since: per-key order holds.
        part.full.extendleft(reversed(rebuild(self._producer, batch)))
        # Still failing: slow down; the first ack resets the streak.
        part.not_before = asyncio.get_running_loop().time() + self._backoff.delay(
            self._streak - 1, random.random()
        )
        self._wake.set()

    # -- topics and partitions -----------------------------------------------

    async def _resolve_loop(self) -> None:
        """Learn the partitions of new topics; notice partitions added later."""
        loop = asyncio.get_running_loop()
        next_refresh = loop.time() + _PARTITIONS_REFRESH_SECONDS
        while True:
            if not self._unrouted:
                self._resolve.clear()
                try:
                    async with asyncio.timeout_at(next_refresh):
                        await self._resolve.wait()
                except TimeoutError:
                    await self._refresh_partitions()
                    next_refresh = loop.time() + _PARTITIONS_REFRESH_SECONDS
                    continue
            topic, held = next(iter(self._unrouted.items()))
            try:
                route = await self._learn(topic)
            except KafkaError as exc:
                self._streak += 1
                self._retried += len(held)
                self._metrics.kafka_errors.labels(type(exc).__name__).inc(len(held))
                self._unrouted[topic] = self._unrouted.pop(topic)  # others first
                await asyncio.sleep(
                    self._backoff.delay(self._streak - 1, random.random())
                )
                continue
            # No await from here on: records sent meanwhile queue behind these.
            del self._unrouted[topic]
            self._routes[topic] = route
            for record, size in held:
                self._append(route.pick(record.key), record, size)

    async def _partition_ids(self, topic: str) -> list[int]:
        assert self._producer is not None  # noqa: S101 - only after start()
        ids = sorted(await self._producer.partitions_for(topic))
        if not ids:
            raise UnknownTopicOrPartitionError(topic)
        return ids

    async def _learn(self, topic: str) -> _Route:
        route = _Route()
        self._add_partitions(topic, route, await self._partition_ids(topic))
        return route

    def _add_partitions(self, topic: str, route: _Route, ids: Iterable[int]) -> None:
        published = self._metrics.published.labels(
            self._topic_kinds.get(topic, "other")
        )
        for pid in ids:
            if pid not in route.by_id:
                part = _Partition(topic, pid, published)
                route.by_id[pid] = part
                route.parts.append(part)
                self._partitions.append(part)
        route.ids = sorted(route.by_id)
        route.by_key.clear()  # keys map by partition count, as in every client

    async def _refresh_partitions(self) -> None:
        for topic, route in list(self._routes.items()):
            try:
                ids = await self._partition_ids(topic)
            except KafkaError:
                continue  # sends to it fail and are retried; nothing to do here
            if ids != route.ids and set(ids) > set(route.ids):
                self._add_partitions(topic, route, ids)


def build_producer(**settings: Any) -> AIOKafkaProducer:
    """An ``AIOKafkaProducer``; built here so that workers never import aiokafka."""
    return AIOKafkaProducer(**settings)
