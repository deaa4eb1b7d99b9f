"""In-process micro-benchmark of the stream hot path, for quick iteration.

``python -m bench._micro [--frames N] [--no-sink] [--repeat K]``

Frames come from the emulator's own fleet (load mode, 50 items each) and are
pre-encoded, so no websocket or emulator is involved. Stages, in CPU µs per
item (``time.process_time``, this process only):

* ``decode``: ``codec.decode`` of every frame;
* ``to_record``: ``to_record`` of every decoded item;
* ``pipeline``: what ``StreamPump._handle`` does for a frame (decode, dedupe,
  metrics, ``to_record``, ``await sink.send``, a yield between frames) into a
  real ``KafkaRecordSink`` (Tansu on loopback, 3 partitions per topic, the
  bridge's producer settings), until every record is acknowledged; and the
  wall-clock rate (``rate_k``), this process and Tansu pinned apart as in the
  benchmark.

Not the benchmark (``bench.stream_throughput`` is): no socket reads, no
contention with the emulator, and Tansu shares the machine. It sizes a change
in seconds instead of minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import importlib
import resource
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from prometheus_client import CollectorRegistry

from bench._procs import Pinning, create_topics, pin_self, start_tansu, stop_process
from bridge.adapters.kafka_producer import KafkaRecordSink, build_producer
from bridge.core.codec import codec_by_name
from bridge.core.dedupe import RecentIds
from bridge.core.records import Topics, iso_ms, to_record
from bridge.core.retry import Backoff
from bridge.metrics import StreamMetrics
from bridgelab.emulator.fleet import Fleet, load_fixtures

FRAME_KEYS = {"positions": "positions", "devices": "devices", "events": "events"}


def frames(n: int, items: int) -> list[bytes]:
    fleet = Fleet(
        load_fixtures(), devices=1000, seed=7, events_ratio=0.05, status_ratio=0.02
    )
    return [fleet.burst(items).encode(FRAME_KEYS) for _ in range(n)]


def cpu_us_per(n: int, started: float) -> float:
    return (time.process_time() - started) / n * 1e6


def stages(raw: list[bytes]) -> dict[str, float]:
    codec = codec_by_name("traccar-json", max_frame_bytes=1_048_576)
    topics = Topics()
    t = time.process_time()
    decoded = [codec.decode(f) for f in raw]
    items = [i for d in decoded for i in d.items]
    out = {"decode": cpu_us_per(len(items), t)}
    received = iso_ms(time.time())
    t = time.process_time()
    for item in items:
        to_record(item, topics, received_at=received)
    out["to_record"] = cpu_us_per(len(items), t)
    return out


async def pipeline(
    raw: list[bytes], bootstrap: str, partitions: int, sink_module: str | None
) -> tuple[float, float]:
    u = uuid.uuid4().hex[:8]
    topics = Topics(*(f"micro.{u}.{k}" for k in ("pos", "dev", "ev", "dlq")))
    await create_topics(
        bootstrap,
        [topics.positions, topics.device_status, topics.events, topics.dead_letter],
        partitions,
    )
    metrics = StreamMetrics(CollectorRegistry()).sink
    sink_class = KafkaRecordSink
    if sink_module:
        sink_class = importlib.import_module(sink_module).KafkaRecordSink
    sink = sink_class(
        functools.partial(
            build_producer,
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=False,
            linger_ms=5,
            max_batch_size=65_536,
        ),
        max_records=10_000,
        max_bytes=16 * 1024 * 1024,
        retry_backoff=Backoff(initial=0.1, maximum=1.0),
        metrics=metrics,
        topic_kinds={
            topics.positions: "position",
            topics.device_status: "device_status",
            topics.events: "event",
            topics.dead_letter: "dead_letter",
        },
    )
    await sink.start()
    codec = codec_by_name("traccar-json", max_frame_bytes=1_048_576)
    seen = RecentIds(200_000)
    m_items = {
        k: metrics.items.labels(k) for k in ("position", "device_status", "event")
    }
    try:
        t = time.process_time()
        wall = time.perf_counter()
        n = 0
        for frame in raw:
            decoded = codec.decode(frame)
            received_at = iso_ms(time.time())
            for item in decoded.items:
                if not seen.add(item.event_id):
                    continue
                n += 1
                m_items[item.kind].inc()
                await sink.send(to_record(item, topics, received_at=received_at))
            await asyncio.sleep(0)  # as StreamPump does between frames
        if not await sink.flush(30):
            raise RuntimeError("not flushed")
        return cpu_us_per(n, t), n / (time.perf_counter() - wall)
    finally:
        await sink.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench._micro")
    p.add_argument("--frames", type=int, default=4_000)
    p.add_argument("--items", type=int, default=50)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--no-sink", action="store_true")
    p.add_argument("--gc-freeze", action="store_true")
    p.add_argument(
        "--sink-module",
        help="experiments: take KafkaRecordSink from this module instead",
    )
    a = p.parse_args(argv)
    raw = frames(a.frames, a.items)
    if a.gc_freeze:
        gc.freeze()
    results: dict[str, list[float]] = {}
    for _ in range(a.repeat):
        for k, v in stages(raw).items():
            results.setdefault(k, []).append(v)
    if not a.no_sink:
        logdir = Path(tempfile.mkdtemp(prefix="micro-"))
        pinning = Pinning.plan()
        broker = start_tansu(logdir, pinning.harness, "micro")
        pin_self(pinning.measured)
        try:
            for _ in range(a.repeat):
                cpu, rate = asyncio.run(
                    pipeline(raw, broker.bootstrap, a.partitions, a.sink_module)
                )
                results.setdefault("pipeline", []).append(cpu)
                results.setdefault("rate_k", []).append(rate / 1000)
        finally:
            assert broker.watched is not None
            stop_process(broker.watched)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB")
    for k, vs in results.items():
        print(
            f"{k:10s} median {statistics.median(vs):6.2f} "
            f"{'k rec/s (wall)' if k == 'rate_k' else 'µs/item'}  "
            f"(runs: {', '.join(f'{v:.2f}' for v in vs)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
