"""aiokafka below ``producer.send()``: the one module that leans on its internals.

Why: ``KafkaRecordSink`` builds its own batches instead of calling
``AIOKafkaProducer.send()`` per record, because per-record ``send()`` costs a
future, a done callback, the partitioner and three awaits per record,
more than all the rest of the sink's work. Measured side by side in one run
(``python -m bench.sink_paths``: 200,000 position records a pass, 1,000 keys,
4 partitions, acks=all, Tansu, passes a/b/a/b, medians; 2026-12-06, 2 vCPU
shared with other jobs): the sink on these batches 107,598 records/s and
0.60 CPU-s per 100k records; the same contract on ``send()`` 50,409 records/s
and 1.91 CPU-s per 100k: **2.13x** the throughput (rounds 1.61x and 2.63x)
for a third of the CPU (3.2x less). An earlier run, before this module was
split out: 2.26x and 3.25x. Re-run that benchmark before deciding otherwise.

What this relies on, beyond aiokafka's documented surface. Every item is
checked by ``test_aiokafka_internals_the_batches_rely_on`` (and the closed
batch by ``test_a_closed_batch_skips_the_producers_linger``) in
``tests/adapters/test_kafka_producer.py``, so an aiokafka upgrade that changes
one fails in CI, with aiokafka's version and the missing piece named:

* ``AIOKafkaProducer.create_batch()`` returns a builder (``BatchBuilder``,
  whose import path ``aiokafka.producer.message_accumulator`` is private, so
  it is never imported here) with ``append(*, timestamp, key, value,
  headers)`` that returns ``None`` when the batch is full or closed and always
  takes the first record of an empty batch, however large; ``headers`` must
  be a ``list`` (the C builder refuses tuples); and ``close()``.
* ``AIOKafkaProducer.send_batch(batch, topic, *, partition)``, a coroutine
  returning a future that completes on Kafka's ack or fails; its exception
  must be retrieved (aiokafka leaves that to batch API users). A builder can
  be sent once (sending builds its buffer): after a failure, `rebuild`.
* A *closed* builder is sent at once, without lingering again for the
  producer's ``linger_ms`` (``MessageBatch.remaining_linger`` checks
  ``closed()``), although ``BatchBuilder.close``'s docstring says closing has
  no effect on when a batch is sent.
* ``aiokafka.partitioner.DefaultPartitioner()`` called as
  ``(key, all_partitions, available)``: murmur2 of the key, as the Java client.
"""

from __future__ import annotations

import asyncio
from importlib import metadata
from typing import Any

from aiokafka import AIOKafkaProducer

from bridge.core.records import OutboundRecord

try:
    from aiokafka.partitioner import DefaultPartitioner
except ImportError as exc:  # an aiokafka upgrade moved it: say so at startup
    raise ImportError(
        f"aiokafka {metadata.version('aiokafka')} has no "
        "aiokafka.partitioner.DefaultPartitioner, which "
        "bridge/adapters/kafka_batches.py relies on (see its docstring)"
    ) from exc

__all__ = ["RecordBatch", "partition_for", "rebuild"]

_partitioner = DefaultPartitioner()


def partition_for(key: bytes, partitions: list[int]) -> int:
    """The partition aiokafka's (and Java's) default partitioner gives ``key``.

    Args:
        key: The record key.
        partitions: The topic's partition ids, sorted.
    """
    partition: int = _partitioner(key, partitions, partitions)
    return partition


class RecordBatch:
    """Records in one aiokafka batch builder, in order, with their byte count."""

    __slots__ = ("_builder", "bytes", "created", "records")

    def __init__(self, producer: AIOKafkaProducer, created: float) -> None:
        self._builder: Any = producer.create_batch()
        self.records: list[OutboundRecord] = []
        self.bytes = 0
        self.created = created  # loop time of the oldest record's admission

    def append(self, record: OutboundRecord, size: int) -> bool:
        """Add ``record``; ``False`` if the batch is full (an empty one takes any).

        Raises:
            RuntimeError: if an empty batch refuses a record (aiokafka changed).
        """
        if (
            self._builder.append(
                timestamp=None,
                key=record.key,
                value=record.value,
                headers=list(record.headers),
            )
            is None
        ):
            if not self.records:
                raise RuntimeError(
                    f"aiokafka {metadata.version('aiokafka')}: an empty batch "
                    "refused a record; bridge/adapters/kafka_batches.py expects "
                    "BatchBuilder.append to take the first record of any batch"
                )
            return False
        self.records.append(record)
        self.bytes += size
        return True

    async def send(
        self, producer: AIOKafkaProducer, topic: str, partition: int
    ) -> asyncio.Future[Any]:
        """Hand the batch to ``producer``; the future completes on Kafka's ack.

        Closed first, so aiokafka sends it at once instead of lingering on it
        again. Once only: re-send a failed batch's records with `rebuild`.
        """
        self._builder.close()
        future: asyncio.Future[Any] = await producer.send_batch(
            self._builder, topic, partition=partition
        )
        return future


def rebuild(producer: AIOKafkaProducer, old: RecordBatch) -> list[RecordBatch]:
    """Fresh batches with ``old``'s records, in order (a sent one cannot go again)."""
    out: list[RecordBatch] = []
    batch: RecordBatch | None = None
    for record in old.records:
        size = record.size
        if batch is None or not batch.append(record, size):
            batch = RecordBatch(producer, old.created)
            out.append(batch)
            batch.append(record, size)
    return out
