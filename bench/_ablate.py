"""``python -m bridge stream`` with chosen costs removed, to size a fix first.

    BENCH_ABLATE=gc,nometrics make bench ARGS="--bridge-module bench._ablate"

Comma-separated switches in ``BENCH_ABLATE``:

* ``nometrics``: ``Gauge.set`` and ``Histogram.observe`` do nothing (counters
  stay, the benchmark counts ``bridge_records_published_total``);
* ``gc``: generation-0 threshold 100,000 and ``gc.freeze()`` after imports;
* ``gcstats``: time every collection (``gc.callbacks``) and print the totals
  on stderr at exit (``--keep-logs`` keeps ``bridge.stderr.log``);
* ``memdump``: every 15 s, print the RSS, pymalloc's allocated blocks
  and the most numerous object types on stderr;
* ``memtrace``: ``memdump`` plus the top allocation sites (``tracemalloc``:
  several times slower, the figures are not the benchmark's).

An experiment, never a configuration: nothing here is how the bridge runs.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import time
from typing import Any


def _no_metrics() -> None:
    from prometheus_client import metrics

    def set_gauge(self: metrics.Gauge, value: float) -> None:
        return None

    def observe(self: metrics.Histogram, amount: float, exemplar: Any = None) -> None:
        return None

    metrics.Gauge.set = set_gauge  # type: ignore[method-assign]
    metrics.Histogram.observe = observe  # type: ignore[method-assign]


def _gc_stats() -> None:
    totals = {g: [0, 0.0] for g in range(3)}
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        entry = totals[info["generation"]]
        entry[0] += 1
        entry[1] += time.perf_counter() - started[0]

    def report() -> None:
        cpu = time.process_time()
        spent = sum(t for _, t in totals.values())
        gens = " ".join(f"gen{g}: n={n} t={t:.2f}s" for g, (n, t) in totals.items())
        print(
            f"GCSTATS cpu={cpu:.2f}s gc={spent:.2f}s ({spent / cpu:.1%}) {gens}",
            file=sys.stderr,
            flush=True,
        )

    gc.callbacks.append(on_gc)
    atexit.register(report)


def _mem_dump(trace: bool) -> None:
    import collections
    import threading
    import tracemalloc

    import psutil  # type: ignore[import-untyped]

    def dump() -> None:
        counts = collections.Counter(type(o).__name__ for o in gc.get_objects())
        rss = psutil.Process().memory_info().rss / 2**20
        print(
            f"MEMDUMP rss={rss:.0f}MB blocks={sys.getallocatedblocks()} "
            f"tracked={sum(counts.values())} top={counts.most_common(15)}",
            file=sys.stderr,
            flush=True,
        )
        if trace:
            for stat in tracemalloc.take_snapshot().statistics("lineno")[:15]:
                print(f"MEMDUMP {stat}", file=sys.stderr, flush=True)

    if trace:
        tracemalloc.start(3)

    def every_15s() -> None:
        dump()
        timer = threading.Timer(15.0, every_15s)
        timer.daemon = True
        timer.start()

    first = threading.Timer(15.0, every_15s)
    first.daemon = True
    first.start()


def main() -> int:
    switches = set(filter(None, os.environ.get("BENCH_ABLATE", "").split(",")))
    unknown = switches - {"nometrics", "gc", "gcstats", "memdump", "memtrace"}
    if unknown:
        print(f"unknown BENCH_ABLATE switches: {sorted(unknown)}", file=sys.stderr)
        return 2
    if "nometrics" in switches:
        _no_metrics()
    import bridge.app  # noqa: F401 - import everything before freezing
    from bridge.cli import main as cli_main

    if "gc" in switches:
        gc.set_threshold(100_000, 50, 1000)
        gc.freeze()
    if "gcstats" in switches:
        _gc_stats()
    if switches & {"memdump", "memtrace"}:
        _mem_dump(trace="memtrace" in switches)
    return cli_main(["stream"])


if __name__ == "__main__":
    sys.exit(main())
