"""KafkaRecordSink on aiokafka's batch API, against the real broker (no mocks)."""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
from collections import defaultdict
from collections.abc import Sequence
from importlib import metadata
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from bridge.adapters.kafka_batches import partition_for
from bridge.adapters.kafka_producer import KafkaRecordSink, build_producer
from bridge.core.codec import TraccarJsonCodec
from bridge.core.records import OutboundRecord, Topics, to_record
from bridge.core.retry import Backoff
from bridge.metrics import SinkMetrics, StreamMetrics
from bridgelab.tansu import TansuBroker, create_topics, start_tansu
from tests.core.test_codec import DEVICE, EVENT, POSITION, frame
from tests.e2e.verifier import read_all, wait_for
from tests.kafka_broker import Broker, unique_topic


def sink_for(
    bootstrap: str,
    *,
    metrics: SinkMetrics | None = None,
    topic_kinds: dict[str, str] | None = None,
    max_records: int = 10_000,
    max_bytes: int = 16 * 1024 * 1024,
    **kwargs: Any,
) -> KafkaRecordSink:
    """A sink with the bridge's producer settings; ``producer_*`` go to aiokafka."""
    producer = {
        "bootstrap_servers": bootstrap,
        "enable_idempotence": False,
        "acks": "all",
    }
    producer.update(
        {
            k.removeprefix("producer_"): kwargs.pop(k)
            for k in list(kwargs)
            if k.startswith("producer_")
        }
    )
    return KafkaRecordSink(
        functools.partial(build_producer, **producer),
        max_records=max_records,
        max_bytes=max_bytes,
        retry_backoff=Backoff(initial=0.05, maximum=0.5),
        metrics=metrics or StreamMetrics(CollectorRegistry()).sink,
        topic_kinds=topic_kinds or {},
        **kwargs,
    )


def record(topic: str, key: bytes | None, n: int) -> OutboundRecord:
    return OutboundRecord(
        topic, key, b'{"n":%d}' % n, (("n", str(n).encode()),), f"id-{n}", None
    )


def numbers(records: Sequence[Any]) -> list[int]:
    return [int(dict(r.headers)["n"]) for r in records]


async def test_partitions_are_the_ones_aiokafka_picks_for_the_same_key(
    broker: Broker,
) -> None:
    """Keys land where aiokafka's (and Java's) default murmur2 partitioner puts them."""
    ours, theirs = unique_topic("part"), unique_topic("part")
    await create_topics(broker.bootstrap, [ours, theirs], partitions=6)
    keys = [f"device-{i}".encode() for i in range(60)] + ["vän-7".encode(), b"1"]
    sink = sink_for(broker.bootstrap)
    await sink.start()
    try:
        for n, key in enumerate(keys):
            await sink.send(record(ours, key, n))
        assert await sink.flush(10)
    finally:
        await sink.stop()
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        for n, key in enumerate(keys):
            await producer.send(theirs, b"x", key=key, headers=[("n", b"%d" % n)])
        await producer.flush()
    finally:
        await producer.stop()
    consumed = await read_all(broker.bootstrap, [ours, theirs])
    where: dict[str, dict[bytes, int]] = {ours: {}, theirs: {}}
    for topic in (ours, theirs):
        for r in consumed.records[topic]:
            assert r.key is not None
            where[topic][r.key] = r.partition
    assert where[ours] == where[theirs]
    assert len(set(where[ours].values())) == 6, "62 keys should use every partition"
    for key, partition in where[ours].items():
        assert partition_for(key, list(range(6))) == partition


async def test_per_key_order_holds_across_many_batches(broker: Broker) -> None:
    """Small batches, many keys, sends from the very first (unknown) topic state."""
    topic = unique_topic("order")
    await create_topics(broker.bootstrap, [topic], partitions=3)
    acked: list[OutboundRecord] = []
    batches: list[int] = []
    sink = sink_for(
        broker.bootstrap,
        on_ack=acked.append,
        on_batch_ack=lambda records: batches.append(len(records)),
        producer_max_batch_size=2_048,  # ~40 records: many batches per partition
    )
    await sink.start()
    sent: dict[bytes, list[int]] = defaultdict(list)
    try:
        for n in range(3_000):
            key = f"d{n % 23}".encode()
            sent[key].append(n)
            await sink.send(record(topic, key, n))
        assert await sink.flush(20)
    finally:
        await sink.stop()
    assert len(batches) > 20
    assert sum(batches) == len(acked) == 3_000
    assert sink.statistics().acked == 3_000
    consumed = await read_all(broker.bootstrap, [topic])
    got: dict[bytes, list[int]] = defaultdict(list)
    for r in consumed.records[topic]:
        assert r.key is not None
        got[r.key].append(int(dict(r.headers)["n"]))
    assert got == sent
    acked_by_key: dict[bytes, list[int]] = defaultdict(list)
    for r in acked:
        assert r.key is not None
        acked_by_key[r.key] += numbers([r])
    assert acked_by_key == sent, "on_ack follows each key's order"


async def test_acks_metrics_and_linger(broker: Broker) -> None:
    """Published counts are exact by kind; a lone record goes out after linger."""
    positions, dlq, unmapped = (unique_topic(t) for t in ("pos", "dlq", "other"))
    await create_topics(broker.bootstrap, [positions, dlq, unmapped])
    registry = CollectorRegistry()
    metrics = SinkMetrics(registry, kinds=("position", "dead_letter"))
    batch_sizes: list[int] = []
    sink = sink_for(
        broker.bootstrap,
        metrics=metrics,
        topic_kinds={positions: "position", dlq: "dead_letter"},
        on_batch_ack=lambda records: batch_sizes.append(len(records)),
        linger=0.05,
    )
    await sink.start()
    try:
        await sink.send(record(positions, b"k", 0))
        # Nothing else is sent: only the linger timer can hand the batch over.
        assert await sink.flush(5)
        for n in range(1, 251):
            await sink.send(record(positions, b"k%d" % (n % 7), n))
        for n in range(30):
            await sink.send(record(dlq, None, n))  # keyless: a random partition
        await sink.send(record(unmapped, b"k", 1))
        value = registry.get_sample_value
        assert value("bridge_buffer_records") == 281
        assert (
            value("bridge_buffer_bytes")
            == sum(record(positions, b"k%d" % (n % 7), n).size for n in range(1, 251))
            + sum(record(dlq, None, n).size for n in range(30))
            + record(unmapped, b"k", 1).size
        )
        assert await sink.flush(10)
    finally:
        await sink.stop()
    published = {
        kind: value("bridge_records_published_total", {"kind": kind})
        for kind in ("position", "dead_letter", "other")
    }
    assert published == {"position": 251, "dead_letter": 30, "other": 1}
    assert value("bridge_buffer_records") == 0
    assert value("bridge_buffer_bytes") == 0
    assert value("bridge_kafka_send_seconds_count") == len(batch_sizes)
    assert sum(batch_sizes) == 282
    consumed = await read_all(broker.bootstrap, [positions, dlq, unmapped])
    assert [consumed.count(t) for t in (positions, dlq, unmapped)] == [251, 30, 1]


async def test_send_blocks_at_the_count_and_byte_bounds(broker: Broker) -> None:
    """With Kafka frozen, intake stops at either bound and resumes on acks."""
    if broker.external:
        pytest.skip("pausing needs the broker process")
    topic = unique_topic("bound")
    await create_topics(broker.bootstrap, [topic])
    size = record(topic, b"k", 0).size
    for max_records, max_bytes in ((5, 1_000_000), (1_000, 3 * size)):
        sink = sink_for(broker.bootstrap, max_records=max_records, max_bytes=max_bytes)
        await sink.start()
        broker.pause()
        try:
            admitted = min(max_records, max_bytes // size)
            for n in range(admitted):
                await asyncio.wait_for(sink.send(record(topic, b"k", n)), 1)
            blocked = asyncio.ensure_future(sink.send(record(topic, b"k", admitted)))
            await asyncio.sleep(0.3)
            assert not blocked.done(), "the bound should hold intake back"
            assert sink.statistics().in_flight_records == admitted
        finally:
            broker.resume()
        await asyncio.wait_for(blocked, 20)
        assert await sink.flush(20)
        await sink.stop()


async def test_offer_takes_a_record_only_while_there_is_room(broker: Broker) -> None:
    """offer() refuses before start and at the bound, without waiting or
    changing anything; what it took is delivered like what send() took."""
    topic = unique_topic("offer")
    await create_topics(broker.bootstrap, [topic])
    sink = sink_for(broker.bootstrap, max_records=3)
    assert not sink.offer(record(topic, b"k", 0))
    await sink.start()
    try:
        taken = [sink.offer(record(topic, b"k", n)) for n in range(5)]
        assert taken == [True, True, True, False, False]
        assert sink.statistics().in_flight_records == 3
        assert await sink.flush(10)
        assert sink.offer(record(topic, b"k", 5))
        assert await sink.flush(10)
        assert sink.statistics().acked == 4
    finally:
        await sink.stop()


async def test_a_record_larger_than_the_byte_bound_still_goes(broker: Broker) -> None:
    topic = unique_topic("big")
    await create_topics(broker.bootstrap, [topic])
    sink = sink_for(broker.bootstrap, max_bytes=10)
    await sink.start()
    try:
        await asyncio.wait_for(sink.send(record(topic, b"k", 1)), 5)
        assert await sink.flush(10)
    finally:
        await sink.stop()


async def test_failed_batches_are_resent_ahead_of_later_records(
    broker: Broker,
) -> None:
    """A broker that dies and comes back: failed batches go first, nothing is lost.

    Batches sent to a dead broker fail without being written, so the order in
    the new broker's log is the order in which the sink re-sent them.
    """
    if broker.external:
        pytest.skip("restarting needs a broker of our own")
    topic = unique_topic("retry")
    first = start_tansu()
    port = int(first.bootstrap.rsplit(":", 1)[1])
    second: TansuBroker | None = None
    await create_topics(first.bootstrap, [topic], partitions=1)
    sink = sink_for(
        first.bootstrap,
        producer_request_timeout_ms=1_000,
        producer_max_batch_size=1_024,  # ~20 records a batch
    )
    await sink.start()
    sent: dict[bytes, list[int]] = defaultdict(list)

    async def send(n: int) -> None:
        key = f"d{n % 5}".encode()
        await sink.send(record(topic, key, n))
        if n >= 50:  # what the second broker must hold
            sent[key].append(n)

    try:
        for n in range(50):
            await send(n)
        assert await sink.flush(10)
        first.stop()
        for n in range(50, 300):
            await send(n)
        await wait_for(lambda: sink.statistics().retried > 100, 20)
        assert not sink.statistics().connected
        second = start_tansu(port=port)
        # Tansu may create it on the producer's metadata request: either is fine.
        await create_topics(second.bootstrap, [topic], partitions=1)
        for n in range(300, 400):
            await send(n)
        assert await sink.flush(30)
        assert sink.statistics().connected
        assert sink.statistics().acked == 400
        consumed = await read_all(second.bootstrap, [topic])
    finally:
        await sink.stop()
        first.stop()
        if second is not None:
            second.stop()
    first_seen: dict[bytes, list[int]] = defaultdict(list)
    for r in consumed.records[topic]:
        assert r.key is not None
        n = int(dict(r.headers)["n"])
        if n not in first_seen[r.key]:
            first_seen[r.key].append(n)
    assert first_seen == sent, "nothing lost, and each key in order"


async def test_send_before_start_is_refused(broker: Broker) -> None:
    sink = sink_for(broker.bootstrap)
    with pytest.raises(RuntimeError, match="before start"):
        await sink.send(record("t", b"k", 1))
    assert sink.statistics().in_flight_records == 0


def test_to_record_knows_its_size() -> None:
    """to_record's precomputed size is what the header walk gives."""
    codec = TraccarJsonCodec()
    for section, raw in (
        ("positions", POSITION),
        ("devices", DEVICE),
        ("events", EVENT),
    ):
        (item,) = codec.decode(frame(**{section: [raw]})).items
        for source in ("/sendstack/tracking", "/elsewhere/ü"):
            r = to_record(
                item, Topics(), received_at="2025-06-14T09:12:05.123Z", source=source
            )
            walked = (
                len(r.value)
                + len(r.key or b"")
                + sum(len(name) + len(value) for name, value in r.headers)
            )
            assert r.size == walked
            again = OutboundRecord(
                r.topic, r.key, r.value, r.headers, r.dedupe_id, r.event_time_ms
            )
            assert again == r
            assert hash(again) == hash(r)
            assert again.size == walked


# -- aiokafka below send(): what bridge/adapters/kafka_batches.py relies on ----


def aiokafka_changed(what: str) -> str:
    """The failure message of an aiokafka upgrade that broke the batch path."""
    return (
        f"aiokafka {metadata.version('aiokafka')}: {what}. "
        "bridge/adapters/kafka_batches.py relies on it (see its docstring): adapt "
        "that module, or re-run `python -m bench.sink_paths` and move "
        "KafkaRecordSink to producer.send()"
    )


class Internals:
    """Collects what changed in aiokafka instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def lookup(self, owner: Any, name: str) -> Any:
        found = getattr(owner, name, None)
        if found is None:
            self.problems.append(f"{getattr(owner, '__name__', owner)}.{name} is gone")
        return found

    def callable_as(
        self, func: Any, name: str, *args: Any, coroutine: bool = False, **kw: Any
    ) -> None:
        """``func`` takes these arguments (and is a coroutine function if said)."""
        if func is None:
            return  # reported as gone
        try:
            inspect.signature(func).bind(*args, **kw)
        except TypeError as exc:
            self.problems.append(f"{name}{inspect.signature(func)} changed: {exc}")
        if coroutine and not inspect.iscoroutinefunction(func):
            self.problems.append(f"{name} is no longer a coroutine function")


def check_builder(found: Internals, producer: AIOKafkaProducer) -> None:
    """What ``create_batch()`` returns, with ``max_batch_size=1_024``."""
    builder = producer.create_batch()
    kind = type(builder).__name__  # BatchBuilder: its module is private
    found.callable_as(
        found.lookup(type(builder), "append"),
        f"{kind}.append",
        builder,
        timestamp=None,
        key=b"k",
        value=b"v",
        headers=[("h", b"v")],
    )
    found.callable_as(found.lookup(type(builder), "close"), f"{kind}.close", builder)
    if found.problems:
        return

    def append(batch: Any, value: bytes) -> Any:
        # A list: the C builder refuses a tuple of headers.
        return batch.append(
            timestamp=None, key=b"k", value=value, headers=[("ce_id", b"x:1")]
        )

    try:
        if append(builder, b"x" * 4_096) is None:
            found.problems.append(f"an empty {kind} refused a record larger than it")
        elif append(builder, b"v") is not None:
            found.problems.append(f"a full {kind}.append did not return None")
        small = producer.create_batch()
        taken = 0
        while taken < 1_000 and append(small, b"v" * 50) is not None:
            taken += 1
        if not 1 < taken < 1_000:
            found.problems.append(f"a 1,024-byte {kind} took {taken} records of ~70 B")
        closed = producer.create_batch()
        closed.close()
        if append(closed, b"v") is not None:
            found.problems.append(f"a closed {kind} still took a record")
    except (TypeError, ValueError, AttributeError) as exc:
        found.problems.append(f"{kind}.append raised {type(exc).__name__}: {exc}")


async def test_aiokafka_internals_the_batches_rely_on() -> None:
    """Every aiokafka import, signature and builder trait kafka_batches uses holds."""
    found = Internals()
    try:
        partitioner = importlib.import_module("aiokafka.partitioner")
    except ImportError:
        found.problems.append("the module aiokafka.partitioner is gone")
    else:
        default = found.lookup(partitioner, "DefaultPartitioner")
        found.callable_as(default, "DefaultPartitioner")  # no arguments
        if default is not None:
            call = default().__call__  # bound, whether a classmethod or not
            found.callable_as(call, "DefaultPartitioner()", b"k", [0, 1], [0, 1])
            if not found.problems and call(b"k", [0, 1], [0, 1]) not in (0, 1):
                found.problems.append("DefaultPartitioner() picked no given partition")
    create_batch = found.lookup(AIOKafkaProducer, "create_batch")
    found.callable_as(create_batch, "AIOKafkaProducer.create_batch", None)
    found.callable_as(
        found.lookup(AIOKafkaProducer, "send_batch"),
        "AIOKafkaProducer.send_batch",
        None,
        object(),
        "topic",
        partition=0,
        coroutine=True,
    )
    found.callable_as(
        found.lookup(AIOKafkaProducer, "partitions_for"),
        "AIOKafkaProducer.partitions_for",
        None,
        "topic",
        coroutine=True,
    )
    if create_batch is not None:
        # Never started: create_batch needs no connection.
        producer = AIOKafkaProducer(
            bootstrap_servers="127.0.0.1:9", max_batch_size=1_024
        )
        try:
            check_builder(found, producer)
        finally:
            await producer.stop()
    assert not found.problems, aiokafka_changed("; ".join(found.problems))


async def test_a_closed_batch_skips_the_producers_linger(broker: Broker) -> None:
    """A batch the sink hands over goes at once, not after the producer's linger_ms."""
    topic = unique_topic("closed")
    await create_topics(broker.bootstrap, [topic])
    sink = sink_for(broker.bootstrap, producer_linger_ms=10_000, linger=0.005)
    await sink.start()
    try:
        await sink.send(record(topic, b"k", 1))
        flushed = await sink.flush(3)
    finally:
        await sink.stop()
    assert flushed, aiokafka_changed(
        "a batch handed over was not acknowledged within 3 s with linger_ms=10000: "
        "a closed batch now waits for the producer's linger (does "
        "MessageBatch.remaining_linger still check closed()?), or the batch path "
        "failed (see test_aiokafka_internals_the_batches_rely_on)"
    )
    assert sink.statistics().acked == 1
