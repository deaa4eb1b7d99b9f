"""Consumes commands, runs them in order per delivery, publishes one result each.

The loop fetches command messages and schedules each as a task:

* **Validation** first: an invalid command never reaches Sendstack; it gets a
  ``rejected`` result and a dead-letter record.
* **Ordering**: commands that share an ordering key (the delivery they touch)
  form a chain: each waits for the previous one. Different keys run at once;
  the executor bounds the calls in flight.
* **Ownership** (``core.command_ledger``): Kafka's group assigns partitions;
  a per-partition lease in the state topic says who may *call*. A worker
  runs a partition's commands only under a verified lease, taken once the
  previous holder released it or let it expire, and renews it while it owns
  the partition. When a partition is revoked the worker stops starting its
  commands at once, cancels those not yet started, waits (bounded by
  ``revoke_grace``) only for calls already in flight, commits, and releases
  the lease.
* **Exactly once per command id**: a command whose result exists is skipped;
  before its first write call a ``started`` marker (owner, lease deadline)
  is written and acked; the result is written and acked before the offset
  can be committed. A command found ``started`` is settled by the executor
  (reconcile, settle window, or ``ambiguous``), never simply sent again.
* **Commits**: only the contiguous prefix of finished offsets per partition
  (``core.offsets``), periodically and when partitions are revoked.
* **Backpressure**: at most ``max_outstanding`` commands taken and not finished.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import orjson
import structlog

from bridge.core.command_ledger import (
    Claim,
    CommandLedger,
    CommandState,
    Marker,
    claim_key,
    claim_value,
    started_value,
)
from bridge.core.commands import (
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
from bridge.errors import CommandReleased, PublishError
from bridge.metrics import CommandMetrics
from bridge.ports import (
    AckingPublisher,
    Clock,
    CommandRunner,
    CommandSource,
    Execution,
    SourceMessage,
    StateLog,
)

log = structlog.get_logger("bridge.commands")

_JSON = (("content-type", b"application/json"),)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerOptions:
    command_topic: str
    results_topic: str
    dead_letter_topic: str
    state_topic: str
    owner: str
    max_outstanding: int = 256
    default_deadline: float = 120.0
    max_message_bytes: int = 1_048_576
    assign_method: str = "POST"
    commit_interval: float = 1.0
    #: How long a partition lease lasts; renewed every third of it.
    lease_seconds: float = 40.0
    #: The longest one call can take (the request timeout plus a margin): a
    #: call starts only if it ends before the lease does.
    call_budget: float = 16.0
    #: How long a revoked partition's calls in flight are awaited.
    revoke_grace: float = 5.0
    #: How often a worker waiting for another's lease looks again.
    lease_poll: float = 0.25


@dataclass(frozen=True, slots=True)
class WorkerStatistics:
    assigned: int
    outstanding: int
    finished: int
    skipped: int


@dataclass(eq=False)
class _Partition:
    """One assigned partition: its offsets, its tasks, and the lease we hold."""

    number: int
    offsets: PartitionOffsets = field(default_factory=PartitionOffsets)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    critical: set[asyncio.Task[None]] = field(default_factory=set)  # past the marker
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    revoked: bool = False
    held: bool = False  # our lease is verified
    claimed: bool = False  # we wrote a hold record at least once
    until: float = 0.0  # our verified lease deadline (epoch s)
    acquired_at: float = 0.0
    keeper: asyncio.Task[None] | None = None


class _Permit:
    """``CallPermit`` for one command: ownership checks and its started marker."""

    def __init__(
        self, worker: CommandWorker, part: _Partition, command: Command
    ) -> None:
        self._worker = worker
        self._part = part
        self._command = command
        self._marked = False

    async def before_call(self, deadline: float) -> bool:
        worker, part = self._worker, self._part
        if not await worker.wait_for_lease(part, deadline):
            return False
        if not self._marked:
            task = asyncio.current_task()
            if task is not None:
                part.critical.add(task)
            await worker.write_started(self._command, part)
            self._marked = True
            # The ack may have taken a while: the call still has to fit.
            return await worker.wait_for_lease(part, deadline)
        return True


class CommandWorker:
    """The ``commands`` process's one loop (plus a task per command and partition)."""

    def __init__(
        self,
        executor: CommandRunner,
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
        self._parts: dict[int, _Partition] = {}
        self._chains: dict[str, asyncio.Task[None]] = {}
        self._room = asyncio.Event()
        self._room.set()
        self._outstanding = 0
        self._finished = 0
        self._skipped = 0
        self._last_commit = clock.monotonic()
        self._stopping = asyncio.Event()
        self._read_lock = asyncio.Lock()
        self._reads_started = 0
        self._reads_done = 0

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
        # Commands of a partition wait for its lease, whose keeper first reads
        # the state log: fetched records may already be waiting (aiokafka can
        # fetch a partition before this callback runs).
        for p in partitions:
            part = self._parts.get(p)
            if part is None or part.revoked:
                part = self._parts[p] = _Partition(p)
            if part.keeper is None:
                part.keeper = asyncio.create_task(self._keep_lease(part))
        log.info("commands_partitions_assigned", partitions=sorted(partitions))

    async def on_revoked(self, partitions: set[int]) -> None:
        await self._let_go(
            [self._parts[p] for p in partitions if p in self._parts],
            grace=self._opts.revoke_grace,
        )

    async def _let_go(self, parts: list[_Partition], *, grace: float) -> None:
        """Stop starting, cancel what has not started, bound the wait for the rest."""
        for part in parts:
            part.revoked = True
            if part.keeper is not None:
                part.keeper.cancel()
            for task in part.tasks - part.critical:
                task.cancel()
        in_flight = [t for part in parts for t in part.critical]
        if in_flight:
            log.info("commands_draining_before_revoke", in_flight=len(in_flight))
            with contextlib.suppress(TimeoutError):
                async with self._clock.timeout(grace):
                    await asyncio.wait(in_flight)  # cancelling wait spares the tasks
            for task in in_flight:
                if not task.done():
                    task.cancel()
        pending = [t for part in parts for t in part.tasks]
        if pending:
            await asyncio.wait(pending)
        await self._commit({part.number for part in parts})
        for part in parts:
            if part.keeper is not None:
                await asyncio.gather(part.keeper, return_exceptions=True)
            if self._parts.get(part.number) is part:
                del self._parts[part.number]
            if part.held:
                log.info(
                    "commands_partition_released",
                    partition=part.number,
                    owner=self._opts.owner,
                    at=self._clock.time(),
                )
            if part.claimed:
                await self._release(part)
        log.info(
            "commands_partitions_revoked", partitions=sorted(p.number for p in parts)
        )

    # -- the partition lease ------------------------------------------------------

    async def _keep_lease(self, part: _Partition) -> None:
        """Take the partition's lease once it is free, then renew it."""
        owner, lease_s = self._opts.owner, self._opts.lease_seconds
        waiting_logged = False
        while not part.revoked:
            try:
                await self.refresh()
                now = self._clock.time()
                lease = self._ledger.lease(part.number)
                if lease is not None and not lease.free_for(owner, now):
                    self._lose(part)
                    if not waiting_logged:
                        log.info(
                            "commands_partition_waiting",
                            partition=part.number,
                            holder=lease.owner,
                            holder_until=lease.until,
                        )
                        waiting_logged = True
                    await self._clock.sleep(self._opts.lease_poll)
                    continue
                until = now + lease_s
                part.claimed = True
                await self._publisher.publish(
                    self._claim_record(part.number, Claim("hold", owner, now, until))
                )
                await self.refresh()
                lease = self._ledger.lease(part.number)
                if lease is None or lease.owner != owner or lease.until != until:
                    self._lose(part)
                    await self._clock.sleep(self._opts.lease_poll)
                    continue
                part.until = until
                if not part.held and not part.revoked:
                    part.held = True
                    part.acquired_at = now
                    part.ready.set()
                    log.info(
                        "commands_partition_acquired",
                        partition=part.number,
                        owner=owner,
                        at=now,
                        lease_until=until,
                    )
                await self._clock.sleep(lease_s / 3)
            except PublishError as exc:
                log.warning(
                    "commands_lease_renewal_failed",
                    partition=part.number,
                    error=type(exc).__name__,
                )
                await self._clock.sleep(min(1.0, lease_s / 10))

    def _lose(self, part: _Partition) -> None:
        if part.held:
            part.held = False
            part.until = 0.0
            part.ready.clear()
            log.warning(
                "commands_partition_lost",
                partition=part.number,
                owner=self._opts.owner,
                at=self._clock.time(),
            )

    async def _release(self, part: _Partition) -> None:
        now = self._clock.time()
        record = self._claim_record(
            part.number, Claim("release", self._opts.owner, now, now)
        )
        try:
            async with self._clock.timeout(2.0):
                await self._publisher.publish(record)
        except (PublishError, TimeoutError):
            # The lease then simply expires; the next owner waits for that.
            log.warning("commands_lease_release_failed", partition=part.number)

    async def lease_to_publish(self, part: _Partition) -> None:
        """Wait until a result may be published for ``part`` (a second of lease).

        Raises ``CommandReleased`` once the partition is lost, or revoked with
        its lease running out: the next owner settles the command then.
        A renewal that is merely late (a busy loop, Kafka slow) is waited for:
        giving up would leave the command unfinished on a partition we own.
        """
        while True:
            if not part.held:
                raise CommandReleased(f"partition {part.number} is no longer ours")
            if self._clock.time() + 1.0 < part.until:
                return
            if part.revoked:
                raise CommandReleased(f"the lease on partition {part.number} ran out")
            await self._clock.sleep(0.05)

    async def wait_for_lease(self, part: _Partition, deadline: float) -> bool:
        """Wait until a call would end inside our lease; False past ``deadline``."""
        while True:
            if part.revoked or not part.held:
                raise CommandReleased(f"partition {part.number} is no longer ours")
            now = self._clock.time()
            if now + self._opts.call_budget < part.until:
                return True
            if now >= deadline:
                return False
            await self._clock.sleep(0.1)  # a renewal is under way (or Kafka is down)

    async def write_started(self, command: Command, part: _Partition) -> None:
        now = self._clock.time()
        await self._publisher.publish(
            OutboundRecord(
                topic=self._opts.state_topic,
                key=command.command_id.encode(),
                value=started_value(command.type, self._opts.owner, now, part.until),
                headers=_JSON,
                dedupe_id=None,
                event_time_ms=None,
            )
        )
        self._ledger.mark_started(
            command.command_id, Marker(self._opts.owner, now, part.until)
        )

    async def refresh(self) -> None:
        """Fold everything written to the state log before this call."""
        needed = self._reads_started + 1  # a read that starts after now
        async with self._read_lock:
            if self._reads_done >= needed:
                return  # a read that began after our call has finished
            self._reads_started += 1
            number = self._reads_started
            self._apply(await self._state_log.catch_up())
            self._reads_done = number

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
            now = self._clock.monotonic()
            if now - self._last_commit >= self._opts.commit_interval:
                self._update_lag(source)
                await self._commit(set(self._parts))

    async def stop(self, grace: float) -> None:
        """Stop taking commands; calls in flight get ``grace``; commit; release."""
        self._stopping.set()
        await self._let_go(list(self._parts.values()), grace=grace)

    def _take(self, message: SourceMessage) -> None:
        part = self._parts.get(message.partition)
        if part is None or part.revoked:
            return  # no longer ours: its next owner reads it from the commit
        part.offsets.take(message.offset)
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
        task = asyncio.create_task(self._process(part, message, parsed, previous))
        part.tasks.add(task)
        if isinstance(parsed, Command):
            self._chains[parsed.ordering_key] = task
        task.add_done_callback(lambda t: self._done(t, part, message, parsed))

    def _done(
        self,
        task: asyncio.Task[None],
        part: _Partition,
        message: SourceMessage,
        parsed: object,
    ) -> None:
        part.tasks.discard(task)
        part.critical.discard(task)
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
        if isinstance(exc, CommandReleased):
            log.debug("command_released", offset=message.offset, reason=str(exc))
            return
        if exc is not None:
            # A result could not be written (Kafka down past the publish
            # timeout): leave the offset uncommitted so it is retried.
            log.error(
                "command_not_finished", error=type(exc).__name__, offset=message.offset
            )
            return
        self._finished += 1
        part.offsets.finish(message.offset)

    async def _process(
        self,
        part: _Partition,
        message: SourceMessage,
        parsed: Command | Rejection,
        previous: asyncio.Task[None] | None,
    ) -> None:
        started = self._clock.monotonic()
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)  # per-delivery order
        await part.ready.wait()
        if isinstance(parsed, Rejection):
            await self._reject(part, message, parsed)
            return
        command = parsed
        state = self._ledger.state(command.command_id)
        if state is CommandState.DONE:
            self._skipped += 1
            self._metrics.duplicates.inc()
            return
        deadline = command.deadline or (
            self._clock.time() + self._opts.default_deadline
        )
        request = to_request(command, assign_method=self._opts.assign_method)
        since = None
        marker = self._ledger.marker(command.command_id)
        if state is CommandState.STARTED and marker is not None:
            # Every call under an earlier lease ended before ours began.
            since = max(marker.at, part.acquired_at)
        execution = await self._executor.execute(
            command,
            request,
            deadline=deadline,
            permit=_Permit(self, part, command),
            ambiguous_since=since,
        )
        await self._finish(part, message, command, execution, started)

    async def _finish(
        self,
        part: _Partition,
        message: SourceMessage,
        command: Command,
        execution: Execution,
        started: float,
    ) -> None:
        # Publish only under a live lease: once it has run out the next owner
        # may be settling this command, and it must find one result or none.
        await self.lease_to_publish(part)
        now = self._clock.time()
        duration_ms = (self._clock.monotonic() - started) * 1000
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

    async def _reject(
        self, part: _Partition, message: SourceMessage, rejection: Rejection
    ) -> None:
        await self.lease_to_publish(part)
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

    def _claim_record(self, partition: int, claim: Claim) -> OutboundRecord:
        return OutboundRecord(
            topic=self._opts.state_topic,
            key=claim_key(partition).encode(),
            value=claim_value(claim),
            headers=_JSON,
            dedupe_id=None,
            event_time_ms=None,
        )

    def _apply(self, entries: list[tuple[str, str, bytes]]) -> None:
        for topic, key, value in entries:
            if topic == self._opts.results_topic:
                self._ledger.mark_done(key)
            elif topic == self._opts.state_topic:
                self._ledger.apply_state(key, value)

    async def _commit(self, partitions: set[int]) -> None:
        if self._source is None:
            return
        offsets: dict[int, int] = {}
        for p in partitions:
            part = self._parts.get(p)
            if part is not None:
                point = part.offsets.committable()
                if point is not None:
                    offsets[p] = point
        self._last_commit = self._clock.monotonic()
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
