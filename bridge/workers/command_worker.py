"""Consumes commands, runs them in order per delivery, publishes one result each.

The loop fetches command messages and schedules each as a task:

* **Validation** first: an invalid command never reaches Sendstack; it gets a
  ``rejected`` result and a dead-letter record.
* **Ordering**: commands that share an ordering key (the delivery they touch)
  form a chain: each waits for the previous one. Different keys run at once,
  at most ``concurrency`` calls in flight (a semaphore).
* **Exactly once per command id** (``core.command_ledger``): a command whose
  result exists is skipped; before the first call a ``started`` marker is
  written and acked; the result is written and acked before the offset can
  be committed. A command found ``started`` is ambiguous and goes through
  the executor's reconciliation.
* **Commits**: only the contiguous prefix of finished offsets per partition
  (``core.offsets``), periodically and when partitions are revoked. On
  revocation the worker first lets the commands of those partitions finish,
  so no two workers ever run the same command at once.
* **Backpressure**: at most ``max_outstanding`` commands taken and not finished.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import orjson
import structlog

from bridge.core.command_ledger import CommandLedger, CommandState
from bridge.core.commands import (
    QUERY_TYPES,
    Command,
    Rejection,
    command_dead_letter,
    parse_command,
    rejection_error,
    result_record,
    to_request,
)
from bridge.core.offsets import PartitionOffsets
from bridge.core.records import OutboundRecord, iso_ms
from bridge.errors import PublishError
from bridge.metrics import CommandMetrics
from bridge.ports import AckingPublisher, Clock, CommandSource, SourceMessage, StateLog
from bridge.workers.command_executor import CommandExecutor, Execution

log = structlog.get_logger("bridge.commands")


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerOptions:
    command_topic: str
    results_topic: str
    dead_letter_topic: str
    state_topic: str
    concurrency: int = 8
    max_outstanding: int = 256
    default_deadline: float = 120.0
    max_message_bytes: int = 1_048_576
    assign_method: str = "POST"
    commit_interval: float = 1.0


@dataclass(frozen=True, slots=True)
class WorkerStatistics:
    assigned: int
    outstanding: int
    finished: int
    skipped: int


class CommandWorker:
    """The ``commands`` process's one loop (plus a task per command)."""

    def __init__(
        self,
        executor: CommandExecutor,
        publisher: AckingPublisher,
        state_log: StateLog,
        *,
        clock: Clock,
        options: WorkerOptions,
        metrics: CommandMetrics,
    ) -> None:
        self._executor = executor
        self._publisher = publisher
        self._state_log = state_log
        self._clock = clock
        self._opts = options
        self._metrics = metrics
        self._source: CommandSource | None = None
        self._ledger = CommandLedger()
        self._offsets: dict[int, PartitionOffsets] = {}
        self._tasks: dict[int, set[asyncio.Task[None]]] = {}
        self._chains: dict[str, asyncio.Task[None]] = {}
        self._calls = asyncio.Semaphore(options.concurrency)
        self._starting = asyncio.Semaphore(options.concurrency)
        self._room = asyncio.Event()
        self._room.set()
        self._outstanding = 0
        self._finished = 0
        self._skipped = 0
        self._last_commit = time.monotonic()
        self._stopping = asyncio.Event()
        self._restored = asyncio.Event()

    def attach(self, source: CommandSource) -> None:
        self._source = source

    def statistics(self) -> WorkerStatistics:
        return WorkerStatistics(
            assigned=len(self._source.assignment()) if self._source else 0,
            outstanding=self._outstanding,
            finished=self._finished,
            skipped=self._skipped,
        )

    # -- rebalancing (called by the source) -------------------------------------

    async def on_assigned(self, partitions: set[int]) -> None:
        # Hold every command until we know what other workers started or
        # finished (fetched records may already be waiting: aiokafka can fetch
        # a partition before this callback runs).
        self._restored.clear()
        for p in partitions:
            self._offsets.setdefault(p, PartitionOffsets())
            self._tasks.setdefault(p, set())
        attempt = 0
        while True:
            try:
                self._apply(await self._state_log.catch_up())
                break
            except PublishError as exc:
                attempt += 1
                log.warning("commands_state_catch_up_failed", error=type(exc).__name__)
                await asyncio.sleep(min(5.0, 0.2 * 2**attempt))
        self._restored.set()
        log.info("commands_partitions_assigned", partitions=sorted(partitions))

    async def on_revoked(self, partitions: set[int]) -> None:
        running = [t for p in partitions for t in self._tasks.get(p, ())]
        if running:
            log.info("commands_draining_before_revoke", commands=len(running))
            await asyncio.gather(*running, return_exceptions=True)
        await self._commit(partitions)
        for p in partitions:
            self._offsets.pop(p, None)
            self._tasks.pop(p, None)
        log.info("commands_partitions_revoked", partitions=sorted(partitions))

    # -- the loop ---------------------------------------------------------------

    async def run(self) -> None:
        source = self._source
        assert source is not None  # noqa: S101 - attach() first
        while not self._stopping.is_set():
            while self._outstanding >= self._opts.max_outstanding:
                self._room.clear()
                await self._room.wait()
            room = self._opts.max_outstanding - self._outstanding
            for message in await source.fetch(max_records=room, wait=0.2):
                self._take(message)
            if time.monotonic() - self._last_commit >= self._opts.commit_interval:
                self._update_lag(source)
                await self._commit(set(self._offsets))

    async def stop(self, grace: float) -> None:
        """Stop taking commands, let running ones finish within ``grace``, commit."""
        self._stopping.set()
        running = [t for ts in self._tasks.values() for t in ts]
        if running:
            _, late = await asyncio.wait(running, timeout=grace)
            for task in late:
                task.cancel()
        await self._commit(set(self._offsets))

    def _take(self, message: SourceMessage) -> None:
        offsets = self._offsets.setdefault(message.partition, PartitionOffsets())
        offsets.take(message.offset)
        self._outstanding += 1
        self._metrics.in_flight.set(self._outstanding)
        parsed = parse_command(
            message.value,
            max_bytes=self._opts.max_message_bytes,
            now=self._clock.time(),
        )
        previous = None
        if isinstance(parsed, Command):
            previous = self._chains.get(parsed.ordering_key)
        task = asyncio.create_task(self._process(message, parsed, previous))
        self._tasks.setdefault(message.partition, set()).add(task)
        if isinstance(parsed, Command):
            self._chains[parsed.ordering_key] = task
        task.add_done_callback(lambda t: self._done(t, message, parsed))

    def _done(
        self, task: asyncio.Task[None], message: SourceMessage, parsed: object
    ) -> None:
        self._tasks.get(message.partition, set()).discard(task)
        if (
            isinstance(parsed, Command)
            and self._chains.get(parsed.ordering_key) is task
        ):
            del self._chains[parsed.ordering_key]
        self._outstanding -= 1
        self._metrics.in_flight.set(self._outstanding)
        self._room.set()
        if task.cancelled():
            return  # not finished: its offset stays uncommitted
        exc = task.exception()
        if exc is not None:
            # A result could not be written (Kafka down past the publish
            # timeout): leave the offset uncommitted so it is retried.
            log.error(
                "command_not_finished", error=type(exc).__name__, offset=message.offset
            )
            return
        self._finished += 1
        offsets = self._offsets.get(message.partition)
        if offsets is not None:
            offsets.finish(message.offset)

    async def _process(
        self,
        message: SourceMessage,
        parsed: Command | Rejection,
        previous: asyncio.Task[None] | None,
    ) -> None:
        started = time.monotonic()
        if isinstance(parsed, Rejection):
            await self._restored.wait()
            await self._reject(message, parsed)
            return
        command = parsed
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)  # per-delivery order
        await self._restored.wait()
        state = self._ledger.state(command.command_id)
        if state is CommandState.DONE:
            self._skipped += 1
            self._metrics.duplicates.inc()
            return
        deadline = command.deadline or (
            self._clock.time() + self._opts.default_deadline
        )
        request = to_request(command, assign_method=self._opts.assign_method)
        # Reads are safe to repeat: they need no "started" marker. Writes get
        # theirs acked while holding a "starting" slot, not a call slot, so the
        # Kafka round trip overlaps other calls; both pools are `concurrency`
        # large, so a crash leaves at most 2x that many commands ambiguous.
        if state is CommandState.NEW and command.type not in QUERY_TYPES:
            async with self._starting:
                await self._publisher.publish(self._started_record(command))
                self._ledger.mark_started(command.command_id)
                await self._calls.acquire()
        else:
            await self._calls.acquire()
        try:
            execution = await self._executor.execute(
                command,
                request,
                deadline=deadline,
                previously_started=state is CommandState.STARTED,
            )
        finally:
            self._calls.release()
        await self._finish(message, command, execution, started)

    async def _finish(
        self,
        message: SourceMessage,
        command: Command,
        execution: Execution,
        started: float,
    ) -> None:
        now = self._clock.time()
        duration_ms = (time.monotonic() - started) * 1000
        result = result_record(
            command,
            command_id=command.command_id,
            outcome=execution.outcome,
            response=execution.response,
            error=execution.error,
            attempts=execution.attempts,
            first_attempt_at=(
                iso_ms(execution.first_attempt_at)
                if execution.first_attempt_at
                else None
            ),
            finished_at=iso_ms(now),
            duration_ms=duration_ms,
            topic=self._opts.results_topic,
            source_topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            reconciled=execution.reconciled,
        )
        if command.reply_topic:
            await self._publisher.publish(_retopic(result, command.reply_topic))
        if execution.outcome != "succeeded":
            reason = (execution.error or {}).get("reason", execution.outcome)
            await self._publisher.publish(
                command_dead_letter(
                    message.value,
                    reason=str(reason),
                    detail=orjson.dumps(execution.error).decode()[:300],
                    dead_letter_topic=self._opts.dead_letter_topic,
                    source_topic=message.topic,
                    partition=message.partition,
                    offset=message.offset,
                    attempts=execution.attempts,
                    received_at=iso_ms(now),
                    command_id=command.command_id,
                )
            )
            self._metrics.dead_lettered.labels(str(reason)).inc()
        # The result is the "done" marker: it goes last, after everything else.
        await self._publisher.publish(result)
        self._ledger.mark_done(command.command_id)
        self._metrics.commands.labels(command.type, execution.outcome).inc()
        self._metrics.duration.labels(command.type).observe(duration_ms / 1000)
        # Debug: the result record already says all of it, once per command.
        log.debug(
            "command_finished",
            command_type=command.type,
            outcome=execution.outcome,
            attempts=execution.attempts,
            reconciled=execution.reconciled,
        )

    async def _reject(self, message: SourceMessage, rejection: Rejection) -> None:
        now = iso_ms(self._clock.time())
        command_id = rejection.command_id
        if (
            command_id is not None
            and self._ledger.state(command_id) is CommandState.DONE
        ):
            self._skipped += 1
            return
        await self._publisher.publish(
            command_dead_letter(
                message.value,
                reason=rejection.reason,
                detail=rejection.detail,
                dead_letter_topic=self._opts.dead_letter_topic,
                source_topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                attempts=0,
                received_at=now,
                command_id=command_id,
            )
        )
        self._metrics.dead_lettered.labels(rejection.reason).inc()
        key = command_id or f"{message.topic}-{message.partition}-{message.offset}"
        await self._publisher.publish(
            result_record(
                rejection,
                command_id=key,
                outcome="rejected",
                response=None,
                error=rejection_error(rejection),
                attempts=0,
                first_attempt_at=None,
                finished_at=now,
                duration_ms=0.0,
                topic=self._opts.results_topic,
                source_topic=message.topic,
                partition=message.partition,
                offset=message.offset,
            )
        )
        self._ledger.mark_done(key)
        self._metrics.commands.labels("invalid", "rejected").inc()
        log.warning("command_rejected", reason=rejection.reason, offset=message.offset)

    # -- helpers ------------------------------------------------------------------

    def _started_record(self, command: Command) -> OutboundRecord:
        value = orjson.dumps(
            {"state": "started", "type": command.type, "at": iso_ms(self._clock.time())}
        )
        return OutboundRecord(
            topic=self._opts.state_topic,
            key=command.command_id.encode(),
            value=value,
            headers=(("content-type", b"application/json"),),
            dedupe_id=None,
            event_time_ms=None,
        )

    def _apply(self, entries: list[tuple[str, str, bytes]]) -> None:
        for topic, key, _ in entries:
            if topic == self._opts.results_topic:
                self._ledger.mark_done(key)
            elif (
                topic == self._opts.state_topic
                and self._ledger.state(key) is CommandState.NEW
            ):
                self._ledger.mark_started(key)

    async def _commit(self, partitions: set[int]) -> None:
        if self._source is None:
            return
        offsets: dict[int, int] = {}
        for p in partitions:
            tracker = self._offsets.get(p)
            if tracker is not None:
                point = tracker.committable()
                if point is not None:
                    offsets[p] = point
        self._last_commit = time.monotonic()
        await self._source.commit(offsets)

    def _update_lag(self, source: CommandSource) -> None:
        for partition, lag in source.lag().items():
            self._metrics.consumer_lag.labels(str(partition)).set(lag)


def _retopic(record: OutboundRecord, topic: str) -> OutboundRecord:
    return OutboundRecord(
        topic=topic,
        key=record.key,
        value=record.value,
        headers=record.headers,
        dedupe_id=record.dedupe_id,
        event_time_ms=record.event_time_ms,
    )


__all__ = ["CommandWorker", "PublishError", "WorkerOptions", "WorkerStatistics"]
