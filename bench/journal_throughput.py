"""Journal on vs off: JournaledSink in each durability mode beside its inner sink alone.

``.venv/bin/python -m bench.journal_throughput [--records N] [--runs R]``

The inner sink is an in-process fake that acknowledges everything it was sent
once per loop iteration (one ``on_batch_ack`` per batch, as the Kafka sink
does), so the figures isolate the journal's own cost: encoding, the SQLite
group commits (fsynced) on the writer thread, the forwarder and the ack
bookkeeping. Records are ~530-byte position-like records, fed as the stream
pump does (50 a frame, ``await send`` each, one loop yield between frames);
the window runs from the first ``send`` to ``flush`` returning (every record
acknowledged and deleted from the journal). records/s is wall clock;
CPU-us/record is ``time.process_time`` (both threads) per record. Medians of
``--runs`` alternating passes. The same against the real ``KafkaRecordSink``
on a Tansu broker, with latencies: ``bench/journal_kafka.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from bridge.adapters.journal_store import JournalStore
from bridge.adapters.journaled_sink import JournaledSink
from bridge.core.records import OutboundRecord
from bridge.ports import RecordSink, SinkStatistics

FRAME = 50
BatchAck = Callable[[Sequence[OutboundRecord]], None]


class AckingSink:
    """The inner sink: acks what it holds once per loop iteration."""

    def __init__(self, on_batch_ack: BatchAck | None = None) -> None:
        self._on_batch_ack = on_batch_ack
        self._held: list[OutboundRecord] = []
        self._drained = asyncio.Event()
        self._drained.set()
        self.acked = 0

    async def send(self, record: OutboundRecord) -> None:
        if not self._held:
            asyncio.get_running_loop().call_soon(self._ack)
            self._drained.clear()
        self._held.append(record)

    def _ack(self) -> None:
        batch, self._held = self._held, []
        self.acked += len(batch)
        if self._on_batch_ack is not None:
            self._on_batch_ack(batch)
        self._drained.set()

    async def flush(self, grace: float) -> bool:
        async with asyncio.timeout(grace):
            await self._drained.wait()
        return True

    def statistics(self) -> SinkStatistics:
        return SinkStatistics(len(self._held), 0, self.acked, 0, True)


def records(count: int) -> list[OutboundRecord]:
    """Distinct position-like records, ~530 bytes with headers."""
    value = b'{"deviceId":"dev","lat":52.1,"lon":4.3,"speed":12.5}'.ljust(236, b" ")
    out = []
    for i in range(count):
        key = f"dev-{i % 1000}".encode()
        out.append(
            OutboundRecord(
                topic="sendstack.tracking.positions",
                key=key,
                value=value,
                headers=(
                    ("ce_specversion", b"1.0"),
                    ("ce_id", f"position:{i}".encode()),
                    ("ce_source", b"/sendstack/tracking"),
                    ("ce_type", b"com.sendstack.tracking.position.v1"),
                    ("ce_time", b"2026-12-06T06:00:00.000Z"),
                    ("ce_subject", key),
                    ("ce_dataschema", b"urn:sendstack-bridge:schema:position:v1"),
                    ("content-type", b"application/json"),
                    ("ce_partitionkey", key),
                    ("ce_bridgereceivedat", b"2026-12-06T06:00:00.001Z"),
                ),
                dedupe_id=f"position:{i}",
                event_time_ms=i,
            )
        )
    return out


async def feed(sink: RecordSink, batch: list[OutboundRecord]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(batch), FRAME):
        for record in batch[start : start + FRAME]:
            await sink.send(record)
        await asyncio.sleep(0)
    assert await sink.flush(120.0)
    return time.perf_counter() - wall, time.process_time() - cpu


async def one_pass(mode: str, batch: list[OutboundRecord]) -> tuple[float, float]:
    if mode == "off":
        return await feed(AckingSink(), batch)
    with tempfile.TemporaryDirectory(prefix="journal-bench-") as directory:
        sink = JournaledSink(
            JournalStore(Path(directory)),
            AckingSink,
            max_bytes=1 << 30,
            durability="fsync" if mode == "fsync" else "interval",
            flush_interval=0.2 if mode == "interval" else 0.0,
        )
        await sink.start()
        try:
            return await feed(sink, batch)
        finally:
            await sink.stop()


def main() -> None:
    structlog.configure(  # the journal logs at info on open: warnings only
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING)
    )
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    batch = records(args.records)
    modes = ["off", "interval", "fsync"]
    results: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    for _ in range(args.runs):
        for mode in modes:
            results[mode].append(asyncio.run(one_pass(mode, batch)))
    n = args.records
    base = statistics.median(n / wall for wall, _ in results["off"])
    print(f"{n} records x {args.runs} runs (median); inner sink: in-process fake")
    print(f"{'path':<26}{'records/s':>12}{'CPU-us/rec':>12}{'vs off':>8}")
    for mode in modes:
        rate = statistics.median(n / wall for wall, _ in results[mode])
        cpu = statistics.median(c / n * 1e6 for _, c in results[mode])
        label = "journal off (inner alone)" if mode == "off" else f"journal {mode}"
        print(f"{label:<26}{rate:>12,.0f}{cpu:>12.2f}{rate / base:>8.2f}")


if __name__ == "__main__":
    main()
