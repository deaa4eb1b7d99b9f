"""One lifecycle for every process: ops server, start-up, workers, bounded shutdown.

Each composition root (``app.py``, ``app_commands.py``, ``app_webhooks.py``)
builds its adapters and workers, then hands `Lifecycle.run` three things:

* ``start``: what must succeed before the workers run (e.g. connect Kafka,
  retried until it answers); if it fails, everything built is closed;
* ``workers``: the long-running loops, run in one ``asyncio.TaskGroup`` (a
  worker that crashes cancels the others and the process exits non-zero;
  Kubernetes restarts it);
* ``drain``: what to do, in order, within the grace period once ``stop`` is
  set (stop intake, flush, stop producers); it returns fields for the
  ``shutdown_complete`` log line.

The lifecycle owns the ops server (``/livez``, ``/readyz``, ``/metrics``),
the readiness metric, the deadline and the logs, so the three processes
start and stop the same way.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from bridge.adapters.ops_http import ReadinessCheck, ops_server
from bridge.config import Settings
from bridge.metrics import ReadyMetric
from bridge.ports import Clock

log = structlog.get_logger("bridge.app")

Worker = Callable[[], Coroutine[Any, Any, None]]
Tasks = Mapping[str, "asyncio.Task[None]"]


#: Young-generation threshold of the cyclic collector in the daemons (CPython's
#: default is 700). Each record costs a few allocations, and the journal and
#: the buffers keep records alive for milliseconds, long enough to survive a
#: young collection: at the default, collections ran every ~100 records and
#: promoted in-flight records, so the older generations (every buffered
#: record, the dedupe window) were traversed again and again. Almost nothing
#: here is cyclic garbage (reference counting frees records), so collecting
#: rarely costs no memory. `python -m bench.journal_stream`: see the README.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_collector() -> None:
    """Collect once, freeze what start-up built (modules, settings, the app's
    long-lived objects: never traversed again), and collect rarely from here
    on (`GC_THRESHOLDS`)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class Deadline:
    """The end of the grace period, and how much of it is left."""

    def __init__(self, clock: Clock, seconds: float) -> None:
        self._clock = clock
        self._end = clock.monotonic() + seconds

    def left(self, *, keep: float = 0.0) -> float:
        """Seconds left (at least 0.1), keeping ``keep`` seconds for later steps."""
        return max(0.1, self._end - keep - self._clock.monotonic())


Drain = Callable[[Deadline, Tasks], Awaitable[Mapping[str, object]]]


class Lifecycle:
    """Runs one process: ops server, start, workers, drain, close."""

    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry,
        readiness: ReadinessCheck,
        *,
        clock: Clock,
    ) -> None:
        self.clock = clock
        self.grace = settings.ops.shutdown_grace_seconds
        self.ops = ops_server(
            registry, readiness, host=settings.ops.host, port=settings.ops.port
        )
        ReadyMetric(registry).track(readiness)
        self._closers: list[Callable[[], Awaitable[None]]] = []

    def close_last(self, *closers: Callable[[], Awaitable[None]]) -> None:
        """Close these after the drain (or a failed start), in the order given."""
        self._closers.extend(closers)

    async def run(
        self,
        stop: asyncio.Event,
        *,
        start: Callable[[], Awaitable[None]],
        workers: Mapping[str, Worker],
        drain: Drain,
    ) -> int:
        """Run until ``stop`` is set, then shut down within the grace period."""
        try:
            await self.ops.start()
            log.info("ops_listening", port=self.ops.port)
            await start()
        except BaseException:
            await self._close()
            raise
        try:
            async with asyncio.TaskGroup() as group:
                tasks = {
                    name: group.create_task(factory(), name=name)
                    for name, factory in workers.items()
                }
                await stop.wait()
                log.info("shutdown_started", grace_seconds=self.grace)
                try:
                    summary = await drain(Deadline(self.clock, self.grace), tasks)
                finally:
                    for task in tasks.values():
                        task.cancel()
        except BaseException:
            # A worker failed (a full disk under the journal): still close
            # what was opened, so what can be kept is kept; then fail.
            await self._close()
            raise
        await self._close()
        log.info("shutdown_complete", **summary)
        return 0

    async def _close(self) -> None:
        for close in self._closers:
            await close()
        await self.ops.stop()
