"""Per-record acknowledgement on top of ``KafkaRecordSink``, for webhooks.

A webhook may be answered 2xx only once Kafka holds its record, so the
receiver needs to *wait* for one record's ack, which ``KafkaRecordSink`` (a
fire-and-forget buffer with an ``on_ack`` callback) does not offer by itself.
`AckingSink` builds the sink with its own ``on_ack`` and hands out one future
per record, resolved when Kafka acknowledges that record.

The sink keeps its guarantees: an accepted record is retried until Kafka
acknowledges it and is never dropped, so a future may resolve long after its
webhook was answered 503 (the receiver then remembers the ``webhookId`` and
Sendstack's retry is recognised as a duplicate). ``KafkaRecordSink.send`` is
never cancelled half-way (that would leave its accounting wrong): each record
is handed over by its own task, and waiters only ever wait on the future.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from bridge.adapters.kafka_producer import AckCallback, KafkaRecordSink
from bridge.core.records import OutboundRecord
from bridge.errors import PublishError
from bridge.ports import SinkStatistics

log = structlog.get_logger("bridge.webhook_sink")


class AckingSink:
    """``submit`` a record, get a future that resolves on Kafka's ack.

    Args:
        make_sink: Builds the ``KafkaRecordSink`` with the ``on_ack``
            callback it is given (the composition root supplies the rest).
    """

    def __init__(self, make_sink: Callable[[AckCallback], KafkaRecordSink]) -> None:
        self.sink = make_sink(self._acked)
        # id(record) -> (record, future); holding the record keeps its id unique.
        self._waiting: dict[int, tuple[OutboundRecord, asyncio.Future[None]]] = {}
        self._senders: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Connect the producer (raises aiokafka's error if Kafka is unreachable)."""
        await self.sink.start()

    def is_connected(self) -> bool:
        """Started, and the last send did not fail (no failure streak)."""
        return self.sink.statistics().connected

    def statistics(self) -> SinkStatistics:
        """The underlying sink's statistics."""
        return self.sink.statistics()

    def submit(self, record: OutboundRecord) -> asyncio.Future[None]:
        """Hand ``record`` to Kafka; the future resolves when Kafka acks it.

        The future fails with `PublishError` only if the record never reached
        the sink (the sink was not started, or we are shutting down); once in
        the sink the record is retried until acknowledged.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._waiting[id(record)] = (record, future)
        task = loop.create_task(self._send(record), name="webhook-send")
        self._senders.add(task)
        task.add_done_callback(self._senders.discard)
        return future

    async def drain(self, grace: float) -> bool:
        """Wait for every submitted record to be acknowledged; False on timeout."""
        deadline = time.monotonic() + grace
        if self._senders:
            await asyncio.wait(set(self._senders), timeout=max(0.0, grace))
        return await self.sink.flush(max(0.0, deadline - time.monotonic()))

    async def stop(self) -> None:
        """Stop handing over, fail the waiters left, stop the producer."""
        senders = set(self._senders)
        for task in senders:
            task.cancel()
        if senders:
            await asyncio.wait(senders)
        left = len(self._waiting)
        for record, _ in list(self._waiting.values()):
            self._fail(record, PublishError("the bridge stopped before Kafka's ack"))
        if left:
            log.warning("webhook_records_unacknowledged_at_stop", records=left)
        await self.sink.stop()

    async def _send(self, record: OutboundRecord) -> None:
        try:
            await self.sink.send(record)
        except asyncio.CancelledError:
            self._fail(record, PublishError("cancelled before the sink took it"))
            raise
        except Exception as exc:
            # Not a Kafka error (the sink retries those): not started, or a bug.
            log.exception("webhook_send_failed", error=type(exc).__name__)
            self._fail(
                record, PublishError(f"not handed to Kafka: {type(exc).__name__}")
            )

    def _acked(self, record: OutboundRecord) -> None:
        entry = self._waiting.pop(id(record), None)
        if entry is not None and not entry[1].done():
            entry[1].set_result(None)

    def _fail(self, record: OutboundRecord, error: PublishError) -> None:
        entry = self._waiting.pop(id(record), None)
        if entry is not None and not entry[1].done():
            entry[1].set_exception(error)
