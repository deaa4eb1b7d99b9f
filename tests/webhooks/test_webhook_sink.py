"""AckingSink over the real KafkaRecordSink and broker: one future per record."""

from __future__ import annotations

import asyncio
import functools

import pytest
from prometheus_client import CollectorRegistry

from bridge.adapters.kafka_producer import AckCallback, KafkaRecordSink, build_producer
from bridge.adapters.webhook_sink import AckingSink
from bridge.core.records import OutboundRecord
from bridge.core.retry import Backoff
from bridge.errors import PublishError
from bridge.metrics import StreamMetrics
from bridgelab.tansu import create_topics
from tests.e2e.verifier import read_all
from tests.kafka_broker import Broker, unique_topic


def acking_sink(bootstrap: str) -> AckingSink:
    def make(on_ack: AckCallback) -> KafkaRecordSink:
        return KafkaRecordSink(
            functools.partial(
                build_producer,
                bootstrap_servers=bootstrap,
                enable_idempotence=False,
                acks="all",
            ),
            max_records=100,
            max_bytes=1_000_000,
            retry_backoff=Backoff(initial=0.1, maximum=0.5),
            metrics=StreamMetrics(CollectorRegistry()),
            topic_kinds={},
            on_ack=on_ack,
        )

    return AckingSink(make)


def record(topic: str, n: int) -> OutboundRecord:
    return OutboundRecord(topic, b"k", f'{{"n":{n}}}'.encode(), (), f"id-{n}", None)


async def test_each_future_resolves_when_kafka_holds_its_record(broker: Broker) -> None:
    """Futures resolve on ack, in any number, and the records are in the topic."""
    topic = unique_topic("ack")
    await create_topics(broker.bootstrap, [topic])
    sink = acking_sink(broker.bootstrap)
    await sink.start()
    try:
        assert sink.is_connected()
        futures = [sink.submit(record(topic, n)) for n in range(20)]
        await asyncio.wait_for(asyncio.gather(*futures), 10)
        assert await sink.drain(5)
        assert sink.statistics().acked == 20
    finally:
        await sink.stop()
    consumed = await read_all(broker.bootstrap, [topic])
    assert consumed.count(topic) == 20


async def test_a_record_submitted_before_start_fails_its_future() -> None:
    """Without a producer the record never reaches Kafka: PublishError, no hang."""
    sink = acking_sink("127.0.0.1:9")
    assert not sink.is_connected()
    future = sink.submit(record("t", 1))
    with pytest.raises(PublishError):
        await asyncio.wait_for(future, 5)
    await sink.stop()


async def test_stop_fails_what_kafka_never_acknowledged(broker: Broker) -> None:
    """Records still unacknowledged at stop fail their futures instead of hanging."""
    if broker.external:
        pytest.skip("pausing needs the broker process")
    topic = unique_topic("ack")
    await create_topics(broker.bootstrap, [topic])
    sink = acking_sink(broker.bootstrap)
    await sink.start()
    broker.pause()
    try:
        future = sink.submit(record(topic, 1))
        await asyncio.sleep(0.3)
        assert not future.done()
        assert not await sink.drain(0.2)
    finally:
        broker.resume()
    await sink.stop()
    assert isinstance(future.exception(), PublishError)
