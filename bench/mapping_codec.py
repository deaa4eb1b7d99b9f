"""The shipped mapping beside the hand-written codec, measured in one run.

``python -m bench.mapping_codec [--rounds N] [--frames N]``

Both codecs decode the same pre-encoded emulator frames (load mode: 50 items
per frame; and one item per frame, where per-message overhead shows), and
every item becomes its Kafka record (``to_record``), as in the stream pump.
Rounds alternate between the codecs so that both see the same machine state;
the figures are medians over the rounds:

* throughput: records per second of wall time (``perf_counter``);
* CPU per record: µs of this process's CPU (``process_time``).

Target (issue 10): the mapping at >= 0.9x the hand-written codec on both.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Sequence

from bridge.adapters.mapping_files import read_mapping
from bridge.core.codec import FrameCodec, TraccarJsonCodec
from bridge.core.records import Topics, to_record
from bridgelab.emulator.fleet import Fleet, load_fixtures

FRAME_KEYS = {"positions": "positions", "devices": "devices", "events": "events"}
TOPICS = Topics()
RECEIVED_AT = "2026-01-01T00:00:00.000Z"


def frames(count: int, items: int) -> list[bytes]:
    fleet = Fleet(
        load_fixtures(), devices=1000, seed=7, events_ratio=0.05, status_ratio=0.02
    )
    return [fleet.burst(items).encode(FRAME_KEYS) for _ in range(count)]


def one_pass(codec: FrameCodec, batch: Sequence[bytes]) -> tuple[int, float, float]:
    """Records made, wall seconds, CPU seconds for one pass over ``batch``."""
    gc.collect()
    records = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for raw in batch:
        for item in codec.decode(raw).items:
            to_record(item, TOPICS, received_at=RECEIVED_AT)
            records += 1
    return records, time.perf_counter() - wall, time.process_time() - cpu


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--frames", type=int, default=2_000)
    args = parser.parse_args(argv)
    mapping, problems = read_mapping(None, max_frame_bytes=1_048_576)
    if mapping is None:
        raise SystemExit(f"the shipped mapping does not compile: {problems}")
    codecs: dict[str, FrameCodec] = {
        "hand-written": TraccarJsonCodec(max_frame_bytes=1_048_576),
        "mapping": mapping,
    }
    print(
        "mapping codec vs hand-written codec (decode + to_record), medians of "
        f"{args.rounds} alternating rounds"
    )
    worst = float("inf")
    for label, items in (("50 items/frame", 50), ("1 item/frame", 1)):
        batch = frames(args.frames if items > 1 else args.frames * 20, items)
        rates: dict[str, list[float]] = {name: [] for name in codecs}
        cpus: dict[str, list[float]] = {name: [] for name in codecs}
        for codec in codecs.values():
            one_pass(codec, batch[:100])  # warm up
        for _ in range(args.rounds):
            for name, codec in codecs.items():
                records, wall, cpu = one_pass(codec, batch)
                rates[name].append(records / wall)
                cpus[name].append(cpu / records * 1e6)
        rate = {n: statistics.median(v) for n, v in rates.items()}
        cpu = {n: statistics.median(v) for n, v in cpus.items()}
        throughput_ratio = rate["mapping"] / rate["hand-written"]
        cpu_ratio = cpu["hand-written"] / cpu["mapping"]  # >1: mapping cheaper
        worst = min(worst, throughput_ratio, cpu_ratio)
        print(f"  {label}:")
        for name in codecs:
            print(
                f"    {name:<13} {rate[name]:>10,.0f} records/s"
                f"   {cpu[name]:6.2f} µs CPU/record"
            )
        print(
            f"    ratio (mapping / hand-written): throughput {throughput_ratio:.2f}x,"
            f" CPU efficiency {cpu_ratio:.2f}x"
        )
    verdict = "meets" if worst >= 0.9 else "MISSES"
    print(f"  worst ratio {worst:.2f}x: {verdict} the 0.9x target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
