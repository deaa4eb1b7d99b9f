"""Sink paths: KafkaRecordSink's own batches vs aiokafka's public ``send()``, one run.

``make bench`` or ``.venv/bin/python -m bench.sink_paths [flags]``

The question it answers: is ``KafkaRecordSink``'s batch accumulator (records
appended to ``producer.create_batch()`` builders, handed over with
``send_batch``, one future per batch) worth owning, against the plain public
path (``await producer.send()`` per record, one future per record)?

One process, one Tansu broker, the same records through both paths:

* **a, accumulator**: ``KafkaRecordSink`` exactly as ``python -m bridge stream``
  builds it: bounded buffer (10,000 records / 16 MiB), ``on_batch_ack`` (the
  stream's end-to-end latency observation), the sink's own ``linger``.
* **b, send()**: `SendSink` below, the same contract on the public API: the
  same bounded buffer and backpressure, a record leaves it only on Kafka's
  ack (at least once: a failed future re-sends the record after a backoff),
  the same metrics, ``on_batch_ack`` once per group of acks that complete
  together (one loop iteration, i.e. one aiokafka batch) and ``on_ack`` per
  record. Simplified: a re-sent record goes behind later ones of its key.

Both use the bridge's producer settings (acks=all, idempotence off, linger
5 ms, 64 KiB batches, no compression). The records are real position records
(``to_record`` of emulator positions: ~236-byte JSON value, 10 CloudEvents
headers, ~530 bytes in all) keyed by 1,000 device ids, into one topic of 4
partitions; a pool of distinct records is cycled to ``--records``. They are
fed as the stream pump does: 50 a frame, ``await sink.send`` each, one loop
yield between frames. Each pass has a topic of its own and a new producer;
the window runs from the first ``send`` to ``flush`` returning (every record
acknowledged). Passes alternate a, b, a, b, ... so that drift (the broker's
memory grows) falls on both; after a short untimed warm-up of each.

records/s is wall clock; CPU-s/100k is ``time.process_time`` of this process
(the sink, aiokafka, the feeding loop: everything but the broker) per 100k
records; the broker's CPU over the same window is shown beside. This process
runs on one CPU and Tansu on the other when there are two. Every pass checks
that the acks counted equal the records sent and the topic's end offsets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Histogram

from bench._procs import (
    Broker,
    OffsetProbe,
    Pinning,
    create_topics,
    pin_self,
    start_tansu,
    stop_process,
)
from bridge.adapters.kafka_producer import (
    AckCallback,
    BatchAckCallback,
    KafkaRecordSink,
    build_producer,
)
from bridge.core.codec import codec_by_name
from bridge.core.records import OutboundRecord, Topics, iso_ms, to_record
from bridge.core.retry import Backoff
from bridge.metrics import SinkMetrics, StreamMetrics
from bridge.ports import SinkStatistics
from bridgelab.emulator.fleet import Fleet, load_fixtures

FRAME_ITEMS = 50  # items per emulator frame in load mode, as in the stream bench
LINGER_MS = 5  # BRIDGE_KAFKA_LINGER_MS default
PRODUCER: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": False,  # Tansu has no idempotent producer
    "linger_ms": LINGER_MS,
    "max_batch_size": 65_536,
}
BUFFER_RECORDS = 10_000  # BRIDGE_BUFFER_MAX_RECORDS default
BUFFER_BYTES = 16 * 1024 * 1024  # BRIDGE_BUFFER_MAX_BYTES default
RETRY = Backoff(initial=0.2, maximum=10.0)  # BRIDGE_PUBLISH_RETRY_* defaults
PATHS = {"a": "accumulator (KafkaRecordSink)", "b": "send() (SendSink)"}


def log(msg: str) -> None:
    """Progress goes to stderr; the result table to stdout."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the public-API contender ----------------------------------------------------


class SendSink:
    """``RecordSink`` on ``AIOKafkaProducer.send()``: one future per record.

    Same constructor (less ``linger``: the producer's ``linger_ms`` applies),
    same bound and backpressure, same metrics and callbacks as
    ``KafkaRecordSink``. Acks that complete together (aiokafka resolves a
    batch's futures in one go) are reported together, after them, with one
    ``call_soon``: one ``on_batch_ack``, one latency observation and one
    ``published`` increment per topic per group.
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
    ) -> None:
        self._factory = producer_factory
        self._producer: AIOKafkaProducer | None = None
        self._max_records = max_records
        self._max_bytes = max_bytes
        self._backoff = retry_backoff
        self._metrics = metrics
        self._published = {
            topic: metrics.published.labels(kind) for topic, kind in topic_kinds.items()
        }
        self._on_ack = on_ack
        self._on_batch_ack = on_batch_ack
        self._records = 0
        self._bytes = 0
        self._acked = 0
        self._retried = 0
        self._streak = 0
        self._room = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._group: list[OutboundRecord] = []  # acked, not reported yet
        self._group_bytes = 0
        self._group_since = 0.0  # admission time of the group's first record
        self._group_topics: dict[str, int] = {}
        self._retries: set[asyncio.Task[None]] = set()
        self._started = False
        metrics.buffer_records.set_function(lambda: self._records)
        metrics.buffer_bytes.set_function(lambda: self._bytes)

    async def start(self) -> None:
        producer = self._factory()
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer
        self._started = True

    async def stop(self) -> None:
        for task in self._retries:
            task.cancel()
        await asyncio.gather(*self._retries, return_exceptions=True)
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
        if self._producer is None:
            raise RuntimeError("send() before start()")
        size = record.size
        if self._records and (
            self._records >= self._max_records or self._bytes + size > self._max_bytes
        ):
            await self._wait_for_room(size)
        self._records += 1
        self._bytes += size
        self._drained.clear()
        await self._submit(record, size, asyncio.get_running_loop().time())

    async def flush(self, grace: float) -> bool:
        try:
            async with asyncio.timeout(grace):
                await self._drained.wait()
        except TimeoutError:
            return False
        return True

    async def _wait_for_room(self, size: int) -> None:
        loop = asyncio.get_running_loop()
        blocked_since = loop.time()
        while self._records and (
            self._records >= self._max_records or self._bytes + size > self._max_bytes
        ):
            self._room.clear()
            await self._room.wait()
        self._metrics.buffer_full_seconds.inc(loop.time() - blocked_since)

    async def _submit(self, record: OutboundRecord, size: int, since: float) -> None:
        assert self._producer is not None
        try:
            future = await self._producer.send(
                record.topic,
                record.value,
                key=record.key,
                headers=list(record.headers),  # aiokafka's C builder takes a list
            )
        except KafkaError as exc:
            self._failed(record, size, since, exc)
            return
        future.add_done_callback(functools.partial(self._done, record, size, since))

    def _done(
        self,
        record: OutboundRecord,
        size: int,
        since: float,
        future: asyncio.Future[Any],
    ) -> None:
        if future.cancelled():
            self._failed(record, size, since, asyncio.CancelledError())
            return
        exc = future.exception()
        if exc is not None:
            self._failed(record, size, since, exc)
            return
        group = self._group
        if not group:
            self._group_since = since
            asyncio.get_running_loop().call_soon(self._report)
        group.append(record)
        self._group_bytes += size
        topics = self._group_topics
        topics[record.topic] = topics.get(record.topic, 0) + 1

    def _report(self) -> None:
        records, self._group = self._group, []
        topics, self._group_topics = self._group_topics, {}
        count = len(records)
        self._streak = 0
        self._acked += count
        self._records -= count
        self._bytes -= self._group_bytes
        self._group_bytes = 0
        for topic, n in topics.items():
            published = self._published.get(topic)
            if published is None:
                published = self._published[topic] = self._metrics.published.labels(
                    "other"
                )
            published.inc(n)
        loop = asyncio.get_running_loop()
        self._metrics.kafka_send_seconds.observe(loop.time() - self._group_since)
        self._room.set()
        if self._records == 0:
            self._drained.set()
        if self._on_batch_ack is not None:
            self._on_batch_ack(records)
        if self._on_ack is not None:
            for record in records:
                self._on_ack(record)

    def _failed(
        self, record: OutboundRecord, size: int, since: float, exc: BaseException
    ) -> None:
        self._streak += 1
        self._retried += 1
        self._metrics.kafka_errors.labels(type(exc).__name__).inc()
        delay = self._backoff.delay(self._streak - 1, random.random())
        task = asyncio.create_task(self._resend(record, size, since, delay))
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _resend(
        self, record: OutboundRecord, size: int, since: float, delay: float
    ) -> None:
        await asyncio.sleep(delay)
        await self._submit(record, size, since)


# -- the run ---------------------------------------------------------------------


class Sink(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def send(self, record: OutboundRecord) -> None: ...
    async def flush(self, grace: float) -> bool: ...
    def statistics(self) -> SinkStatistics: ...


@dataclass(frozen=True)
class Pass:
    path: str
    records: int
    wall_s: float
    cpu_s: float
    broker_cpu_s: float
    acked: int  # counted by on_batch_ack
    batches: int  # on_batch_ack calls
    in_topic: int  # end offsets after the pass

    @property
    def per_s(self) -> float:
        return self.records / self.wall_s

    @property
    def cpu_per_100k(self) -> float:
        return self.cpu_s / self.records * 100_000

    @property
    def broker_per_100k(self) -> float:
        return self.broker_cpu_s / self.records * 100_000


def position_records(pool: int, devices: int) -> list[OutboundRecord]:
    """``pool`` position records, as the stream makes them from emulator frames."""
    fleet = Fleet(
        load_fixtures(), devices=devices, seed=7, events_ratio=0.0, status_ratio=0.0
    )
    codec = codec_by_name("traccar-json", max_frame_bytes=1_048_576)
    topics = Topics()
    keys = {"positions": "positions", "devices": "devices", "events": "events"}
    out: list[OutboundRecord] = []
    while len(out) < pool:
        decoded = codec.decode(fleet.burst(FRAME_ITEMS).encode(keys))
        received = iso_ms(time.time())
        out += [to_record(i, topics, received_at=received) for i in decoded.items]
    return out[:pool]


def build_sink(
    path: str, bootstrap: str, topic: str, on_batch_ack: BatchAckCallback
) -> Sink:
    factory = functools.partial(build_producer, bootstrap_servers=bootstrap, **PRODUCER)
    common: dict[str, Any] = {
        "max_records": BUFFER_RECORDS,
        "max_bytes": BUFFER_BYTES,
        "retry_backoff": RETRY,
        "metrics": StreamMetrics(CollectorRegistry()).sink,
        "topic_kinds": {topic: "position"},
        "on_batch_ack": on_batch_ack,
    }
    if path == "a":
        # As bridge.app builds it: the sink lingers for linger_ms too.
        return KafkaRecordSink(factory, linger=LINGER_MS / 1000, **common)
    return SendSink(factory, **common)


async def one_pass(
    path: str,
    pool: Sequence[OutboundRecord],
    n: int,
    broker: Broker,
    partitions: int,
) -> Pass:
    bootstrap = broker.bootstrap
    topic = f"bench.sinkpaths.{path}.{uuid.uuid4().hex[:8]}"
    await create_topics(bootstrap, [topic], partitions)
    # Addressed to this pass's topic; the pool's own topic name is not used.
    records = [
        OutboundRecord(topic, r.key, r.value, r.headers, r.dedupe_id, r.event_time_ms)
        for r in pool
    ]
    for r in records:
        r.size  # noqa: B018 - computed (and cached) before the window, as to_record does
    acked = [0, 0]  # records, calls
    end_to_end = Histogram("e2e_seconds", "", registry=CollectorRegistry())

    def batch_acked(batch: Sequence[OutboundRecord]) -> None:
        # What StreamApp._batch_acked does (one latency sample per batch), and
        # our count.
        acked[0] += len(batch)
        acked[1] += 1
        for r in batch:
            if r.event_time_ms is not None:
                end_to_end.observe(max(0.0, time.time() - r.event_time_ms / 1000))
                return

    sink = build_sink(path, bootstrap, topic, batch_acked)
    probe = OffsetProbe(bootstrap, [topic])
    await sink.start()
    try:
        await probe.start()
        gc.collect()
        size = len(records)
        broker_cpu0 = broker.watched.cpu_seconds() if broker.watched else 0.0
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        i = 0
        while i < n:
            end = min(n, i + FRAME_ITEMS)
            for j in range(i, end):
                await sink.send(records[j % size])
            i = end
            await asyncio.sleep(0)  # as StreamPump does between frames
        if not await sink.flush(120):
            raise RuntimeError(f"path {path}: not flushed within 120 s")
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        broker_cpu = (broker.watched.cpu_seconds() if broker.watched else 0.0) - (
            broker_cpu0
        )
        stats = sink.statistics()
    finally:
        await sink.stop()
    try:
        in_topic = sum((await probe.exact_per_partition()).values())
    finally:
        await probe.stop()
    if not (acked[0] == stats.acked == n):
        raise RuntimeError(f"path {path}: {acked[0]}/{stats.acked} acked of {n}")
    return Pass(path, n, wall, cpu, broker_cpu, acked[0], acked[1], in_topic)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.sink_paths",
        description="KafkaRecordSink's batch accumulator vs aiokafka's send().",
    )
    p.add_argument("--records", type=int, default=200_000, help="per pass")
    p.add_argument("--rounds", type=int, default=2, help="a/b pairs")
    p.add_argument("--warmup", type=int, default=10_000, help="records, untimed")
    p.add_argument("--pool", type=int, default=20_000, help="distinct records")
    p.add_argument("--devices", type=int, default=1_000, help="distinct keys")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--no-pin", action="store_true", help="no CPU affinity")
    a = p.parse_args(argv)
    if min(a.records, a.rounds, a.pool, a.devices, a.partitions) < 1:
        p.error("every count must be at least 1")
    return a


async def run(a: argparse.Namespace, broker: Broker) -> list[Pass]:
    pool = position_records(a.pool, a.devices)
    avg = statistics.fmean(r.size for r in pool)
    keys = len({r.key for r in pool})
    log(
        f"{len(pool):,} distinct position records ({avg:.0f} B avg, {keys:,} keys), "
        f"{a.records:,} per pass, {a.partitions} partitions"
    )
    if a.warmup:
        for path in PATHS:
            await one_pass(path, pool, a.warmup, broker, a.partitions)
        log(f"warm-up done ({a.warmup:,} records each)")
    passes: list[Pass] = []
    for _ in range(a.rounds):
        for path in PATHS:
            p = await one_pass(path, pool, a.records, broker, a.partitions)
            log(
                f"{path}: {p.per_s:,.0f} rec/s, {p.cpu_per_100k:.2f} CPU-s/100k, "
                f"{p.batches:,} acked groups"
            )
            passes.append(p)
    return passes


def report(a: argparse.Namespace, pinning: Pinning, passes: list[Pass]) -> None:
    by = {path: [p for p in passes if p.path == path] for path in PATHS}
    print(
        f"\nSink paths: {a.records:,} position records per pass (~{a.devices:,} keys), "
        f"1 topic x {a.partitions} partitions, acks=all, linger 5 ms, 64 KiB "
        f"batches, buffer {BUFFER_RECORDS:,} records; {pinning.note}"
    )
    print(
        f"{'pass':>4}  {'path':<30} {'records/s':>10} {'CPU-s/100k':>11} "
        f"{'broker CPU-s/100k':>18} {'acked':>8} {'in topic':>9} {'rec/ack':>8}"
    )
    for i, p in enumerate(passes, 1):
        print(
            f"{i:>4}  {p.path + ' ' + PATHS[p.path]:<30} {p.per_s:>10,.0f} "
            f"{p.cpu_per_100k:>11.2f} {p.broker_per_100k:>18.2f} {p.acked:>8,} "
            f"{p.in_topic:>9,} {p.acked / p.batches:>8.1f}"
        )
    rate = {k: statistics.median(p.per_s for p in v) for k, v in by.items()}
    cpu = {k: statistics.median(p.cpu_per_100k for p in v) for k, v in by.items()}
    pair_rates = [x.per_s / y.per_s for x, y in zip(by["a"], by["b"], strict=True)]
    pair_cpu = [
        y.cpu_per_100k / x.cpu_per_100k for x, y in zip(by["a"], by["b"], strict=True)
    ]
    print(
        f"\nmedian  a {PATHS['a']}: {rate['a']:,.0f} rec/s, {cpu['a']:.2f} CPU-s/100k"
    )
    print(f"median  b {PATHS['b']}: {rate['b']:,.0f} rec/s, {cpu['b']:.2f} CPU-s/100k")
    print(
        f"ratio a/b records/s: {rate['a'] / rate['b']:.2f} "
        f"(rounds: {', '.join(f'{r:.2f}' for r in pair_rates)}); "
        f"CPU per record b/a: {cpu['b'] / cpu['a']:.2f} "
        f"(rounds: {', '.join(f'{r:.2f}' for r in pair_cpu)})"
    )
    lost = [i for i, p in enumerate(passes, 1) if p.in_topic < p.records]
    print(
        "every acked record is in its topic"
        if not lost
        else f"MISSING records in passes {lost}"
    )


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    pinning = Pinning.plan(not a.no_pin)
    logdir = Path(tempfile.mkdtemp(prefix="sink-paths-"))
    broker = start_tansu(logdir, pinning.harness, "sink-paths")
    pin_self(pinning.measured)
    try:
        passes = asyncio.run(run(a, broker))
    finally:
        if broker.watched is not None:
            with contextlib.suppress(Exception):
                stop_process(broker.watched)
    report(a, pinning, passes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
