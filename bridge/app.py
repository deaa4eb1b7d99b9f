"""The composition root of the ``stream`` process: tracking socket → Kafka.

The only module that knows the concrete adapters of this process. It builds
them from settings, wires the session keeper and the stream pump, and hands
them to the shared `Lifecycle` (``bridge.bootstrap``): start once Kafka
answers, run both workers in one ``asyncio.TaskGroup``, and on ``stop``
drain in order within the grace period: stop intake (close the sockets),
flush the producer, stop it.

With the journal (the default), the pump's sink is the ``JournaledSink``:
records go to local disk first and a forwarder hands them to the Kafka sink,
which it connects itself, retrying until Kafka answers. So the process starts
reading as soon as the journal is open, Kafka up or not, and on shutdown what
Kafka has not acknowledged stays journaled for the next start.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Callable, Mapping, Sequence

import httpx
import structlog
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry

from bridge.adapters.auth_api import HttpSessionSource
from bridge.adapters.clock import SystemClock
from bridge.adapters.journal_dir import JournalLock, journal_directory
from bridge.adapters.journal_store import JournalError, JournalStore
from bridge.adapters.journaled_sink import JournaledSink
from bridge.adapters.kafka_client import (
    client_settings,
    ensure_topic,
    producer_settings,
    until_kafka_answers,
)
from bridge.adapters.kafka_coordination import (
    KafkaElection,
    KafkaProgressLog,
    StandbyAssignor,
)
from bridge.adapters.kafka_producer import KafkaRecordSink, build_producer
from bridge.adapters.mapping_files import stream_codec
from bridge.adapters.ops_http import Readiness
from bridge.adapters.upstream_connectors import stream_connector
from bridge.bootstrap import Deadline, Lifecycle, Tasks, Worker
from bridge.config import (
    HaSettings,
    JournalSettings,
    KafkaSettings,
    SendstackSettings,
    Settings,
)
from bridge.core.records import OutboundRecord, Topics
from bridge.core.retry import Backoff, FailureBudget
from bridge.core.session import RotationPolicy
from bridge.core.standby import RecentRecords
from bridge.journal_metrics import JournalMetrics
from bridge.metrics import RoleMetrics, StreamMetrics
from bridge.ports import RecordSink
from bridge.workers.session_keeper import SessionKeeper
from bridge.workers.stream_pump import PumpOptions, StreamPump
from bridge.workers.stream_roles import (
    ROLE_VALUES,
    AccountGate,
    AccountOf,
    ProgressReporter,
    StreamRoles,
    Takeover,
)

log = structlog.get_logger("bridge.app")

BatchAck = Callable[[Sequence[OutboundRecord]], None]


def topics_of(settings: Settings) -> Topics:
    k = settings.require(KafkaSettings)
    return Topics(
        positions=k.topic_positions,
        device_status=k.topic_device_status,
        events=k.topic_events,
        dead_letter=k.topic_dead_letter,
    )


class StreamApp:
    """The ``stream`` process: Sendstack tracking socket → Kafka."""

    def __init__(
        self, settings: Settings, *, registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = StreamMetrics(self.registry)
        self.clock = SystemClock()
        s = settings
        sendstack = s.require(SendstackSettings)
        kafka = s.require(KafkaSettings)
        self.topics = topics_of(s)
        self._http = httpx.AsyncClient(timeout=sendstack.http_timeout_seconds)
        source = HttpSessionSource(
            self._http,
            base_url=sendstack.base_url,
            app_id=sendstack.app_id,
            app_secret=sendstack.app_secret,
            header_style=sendstack.session_header_style,
            send_source=sendstack.send_source_header,
        )
        self.keeper = SessionKeeper(
            source,
            clock=self.clock,
            policy=RotationPolicy(
                margin=s.session.refresh_before_seconds,
                jitter=s.session.refresh_jitter_seconds,
            ),
            backoff=Backoff(
                initial=s.session.auth_backoff_initial_seconds,
                maximum=s.session.auth_backoff_max_seconds,
            ),
            budget=FailureBudget(
                max_failures=s.session.auth_max_failures,
                window=s.session.auth_failure_window_seconds,
            ),
            metrics=self.metrics,
        )
        kafka_sink = functools.partial(
            KafkaRecordSink,
            functools.partial(build_producer, **producer_settings(kafka)),
            max_records=s.buffer.max_records,
            max_bytes=s.buffer.max_bytes,
            retry_backoff=Backoff(
                initial=s.buffer.publish_retry_initial_seconds,
                maximum=s.buffer.publish_retry_max_seconds,
            ),
            metrics=self.metrics.sink,
            topic_kinds={
                self.topics.positions: "position",
                self.topics.device_status: "device_status",
                self.topics.events: "event",
                self.topics.dead_letter: "dead_letter",
            },
            linger=kafka.linger_ms / 1000,
        )
        self.journal: JournaledSink | None = None
        self._journal_lock: JournalLock | None = None
        self.sink: RecordSink
        self.kafka: KafkaRecordSink
        if s.journal.enabled:
            self.journal, self.kafka = self._journaled(s.journal, kafka_sink)
            self.sink = self.journal
        else:
            self.kafka = kafka_sink(on_batch_ack=self._batch_acked)
            self.sink = self.kafka
        self.standby: HotStandby | None = None
        pump_sink: RecordSink = self.sink
        if s.ha.enabled:
            self.standby = HotStandby(s.ha, kafka, self.sink, self.registry, self.clock)
            pump_sink = self.standby.gate
        st = s.stream
        self.pump = StreamPump(
            self.keeper,
            stream_connector(st),
            stream_codec(st.codec, st.mapping_file, max_frame_bytes=st.max_frame_bytes),
            pump_sink,
            topics=self.topics,
            clock=self.clock,
            options=PumpOptions(
                reconnect=Backoff(
                    initial=st.reconnect_initial_seconds,
                    maximum=st.reconnect_max_seconds,
                ),
                dedupe_capacity=st.dedupe_capacity,
                overlap_max=st.rotation_overlap_max_seconds,
                stale_after=st.stale_after_seconds,
                single_session=st.single_session,
            ),
            metrics=self.metrics,
        )
        if self.standby is not None:
            pump = self.pump
            self.standby.socket_open = lambda: pump.statistics().connected
        self.lifecycle = Lifecycle(s, self.registry, self.readiness, clock=self.clock)
        self.lifecycle.close_last(self._http.aclose)
        if self.standby is not None:
            self.lifecycle.close_last(self.standby.close)
        self.ops = self.lifecycle.ops
        self.metrics.session_expires_in.set_function(self.keeper.expires_in)
        self._end_to_end = self.metrics.end_to_end

    def _journaled(
        self, j: JournalSettings, kafka_sink: functools.partial[KafkaRecordSink]
    ) -> tuple[JournaledSink, KafkaRecordSink]:
        directory = journal_directory(j.dir, os.environ)
        self._journal_lock = JournalLock(directory)
        self.journal_metrics = JournalMetrics(self.registry)

        built: list[KafkaRecordSink] = []

        def inner(journal_acked: BatchAck) -> KafkaRecordSink:
            def acked(records: Sequence[OutboundRecord]) -> None:
                journal_acked(records)
                self._batch_acked(records)

            built.append(kafka_sink(on_batch_ack=acked))
            return built[0]

        journal = JournaledSink(
            JournalStore(directory),
            inner,
            max_bytes=j.max_bytes,
            durability=j.durability,
            flush_interval=j.flush_interval_ms / 1000,
            when_full=j.when_full,
            metrics=self.journal_metrics,
            connect=lambda: until_kafka_answers(self.kafka.start),
            disconnect=lambda: self.kafka.stop(),
        )
        return journal, built[0]

    def _batch_acked(self, records: Sequence[OutboundRecord]) -> None:
        if self.standby is not None:
            self.standby.reporter.acked(records)
        # One observation per batch, of its first record: per record, the
        # clock read and the observation cost as much as publishing it.
        for record in records:
            if record.event_time_ms is not None:
                self._end_to_end.observe(
                    max(0.0, time.time() - record.event_time_ms / 1000)
                )
                return

    def readiness(self) -> Mapping[str, bool]:
        """Ready: a valid session, an open socket and a connected producer.

        Details (not checks): the session policy rotations follow.
        """
        policy = self.pump.session_policy()
        checks = {
            "session_valid": self.keeper.current() is not None,
            "socket_open": self.pump.statistics().connected,
        }
        details: dict[str, object] = {
            "session_policy": policy.policy,
            "session_policy_basis": policy.basis,
            "session_policy_cause": policy.cause,
        }
        if self.standby is not None:
            # A replica counts once the group has assigned it (a role, maybe
            # none): a rolling update then stops the next pod only after this
            # one can take over.
            checks["in_coordination_group"] = self.standby.election.generation > 0
            details["role"] = self.standby.gate.role
        if self.journal is None:
            checks["producer_connected"] = self.kafka.statistics().connected
        else:
            # Reading goes on while Kafka is away: that is the journal's job,
            # so Kafka is a detail here and the journal's age alert covers it.
            checks["journal_writable"] = self.journal.failure is None
            details["producer_connected"] = self.journal.statistics().connected
        return Readiness(checks, details=details)

    async def run(self, stop: asyncio.Event) -> int:
        """Run until ``stop`` is set, then shut down within the grace period."""
        return await self.lifecycle.run(
            stop,
            start=self._start_journal
            if self.journal is not None
            else lambda: until_kafka_answers(self.kafka.start, stop=stop),
            workers={
                "session-keeper": self.keeper.run,
                "stream-pump": self.pump.run,
                **(self.standby.workers(stop) if self.standby is not None else {}),
            },
            drain=self._drain,
        )

    async def _start_journal(self) -> None:
        # Only local disk: reading starts whether or not Kafka answers.
        assert self.journal is not None  # noqa: S101 - run() checked
        assert self._journal_lock is not None  # noqa: S101 - set with it
        self._journal_lock.acquire()
        try:
            await self.journal.start()
        except BaseException:
            self._journal_lock.release()
            raise
        self.lifecycle.close_last(self._close_journal)

    async def _close_journal(self) -> None:
        assert self.journal is not None  # noqa: S101 - run() checked
        assert self._journal_lock is not None  # noqa: S101 - set with it
        try:
            await self.journal.stop()
        except JournalError as exc:  # failing already: keep the first cause
            log.warning("journal_close_failed", error=str(exc))
        finally:
            self._journal_lock.release()

    async def _drain(self, deadline: Deadline, tasks: Tasks) -> Mapping[str, object]:
        # No session request after the signal: each failed one counts toward
        # Sendstack's lockout, and nothing left to do needs a new session.
        tasks["session-keeper"].cancel()
        if self.standby is not None:
            # Hand over first: the standby's socket is open and its buffer
            # covers what we stop publishing from here on.
            await self.standby.hand_over(deadline.left())
        await self.pump.stop()
        pump = tasks["stream-pump"]
        if not self.pump.statistics().connected:
            # Parked waiting for a session or a reconnect: nothing to drain.
            pump.cancel()
        # wait() rather than awaiting the task: a cancelled pump is not an error.
        await asyncio.wait({pump}, timeout=deadline.left())
        if not pump.done():
            pump.cancel()
        if self.journal is not None:
            return await self._drain_journal(deadline)
        flushed = await self.kafka.flush(deadline.left())
        stats = self.kafka.statistics()
        if not flushed:
            log.error("shutdown_unflushed", records=stats.in_flight_records)
        try:
            async with asyncio.timeout(deadline.left()):
                await self.kafka.stop()
        except TimeoutError:
            log.exception("producer_stop_timed_out")
        await self._report_last_progress(deadline)
        return {"flushed": flushed, "acked": stats.acked}

    async def _report_last_progress(self, deadline: Deadline) -> None:
        # What Kafka acknowledged in the drain: the new leader need not repeat it.
        if self.standby is not None:
            try:
                async with asyncio.timeout(max(0.0, deadline.left())):
                    await self.standby.reporter.report()
            except TimeoutError:
                log.warning("last_progress_not_reported")

    async def _drain_journal(self, deadline: Deadline) -> Mapping[str, object]:
        journal = self.journal
        assert journal is not None  # noqa: S101 - only called with a journal
        # Forward what Kafka will take within the grace; with Kafka away there
        # is no point waiting: the journal keeps it for the next start.
        flushed = journal.statistics().connected and await journal.flush(
            deadline.left()
        )
        try:
            async with asyncio.timeout(deadline.left()):
                await journal.stop()
        except TimeoutError:
            log.exception("journal_stop_timed_out")
        stats = journal.statistics()
        await self._report_last_progress(deadline)
        if not flushed:
            log.warning(
                "shutdown_journal_kept",
                records=stats.in_flight_records,
                bytes=stats.in_flight_bytes,
            )
        return {
            "flushed": flushed,
            "acked": stats.acked,
            "journaled": stats.in_flight_records,
        }


class HotStandby:
    """This replica's part in the hot standby (``BRIDGE_HA_ENABLED``): the gate
    between the pump and ``target``, the election, the progress log and its
    reporter, and their metrics."""

    def __init__(
        self,
        ha: HaSettings,
        kafka: KafkaSettings,
        target: RecordSink,
        registry: CollectorRegistry,
        clock: SystemClock,
    ) -> None:
        self._ha = ha
        self._kafka = kafka
        self.accounts = (ha.account,)
        account = ha.account
        self.metrics = RoleMetrics(registry)
        self.progress = KafkaProgressLog(
            functools.partial(
                AIOKafkaConsumer,
                **client_settings(kafka),
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
            ),
            functools.partial(build_producer, **producer_settings(kafka)),
            topic=ha.coordination_topic,
            accounts=self.accounts,
            window=ha.buffer_seconds,
        )
        # Set while the pump's socket has been open without a break: the
        # group gives a takeover to the member whose buffer reaches back most.
        self._socket_since: float | None = None
        assignor = StandbyAssignor(lambda: (*self.election.claim(), self._socket_since))
        self.election = KafkaElection(
            functools.partial(
                AIOKafkaConsumer,
                **client_settings(kafka),
                partition_assignment_strategy=(assignor,),
                group_id=ha.group_id,
                session_timeout_ms=ha.session_timeout_ms,
                heartbeat_interval_ms=ha.heartbeat_interval_ms,
                enable_auto_commit=False,
                auto_offset_reset="latest",
            ),
            topic=ha.coordination_topic,
            accounts=self.accounts,
            fence_after=(ha.session_timeout_ms - ha.heartbeat_interval_ms) / 1000,
        )
        self.gate = AccountGate(
            account,
            target,
            RecentRecords(max_age=ha.buffer_seconds, max_bytes=ha.buffer_bytes),
            clock,
        )
        self.roles = StreamRoles(
            {account: self.gate},
            self.progress,
            catch_up_within=ha.catch_up_seconds,
            on_takeover=self._took_over,
        )
        self.reporter = ProgressReporter(
            self.progress,
            AccountOf(self.accounts),
            clock,
            interval=ha.progress_interval_ms / 1000,
        )
        gate, m = self.gate, self.metrics
        # Series at 0 from the start, so increase() sees a pod's first takeover.
        m.takeovers.labels(account)
        m.takeover_published.labels(account)
        m.role.labels(account).set_function(lambda: ROLE_VALUES[gate.role])
        m.standby_records.labels(account).set_function(lambda: len(gate.recent))
        m.standby_bytes.labels(account).set_function(lambda: gate.recent.bytes)
        m.standby_age.labels(account).set_function(
            lambda: gate.recent.oldest_age(clock.monotonic())
        )
        self._clock = clock
        # Whether the pump's socket is open; the app sets it once the pump exists.
        self.socket_open: Callable[[], bool] = lambda: False

    def _took_over(self, done: Takeover) -> None:
        if not done.resumed:  # a rebalance that gave the account back is not one
            self.metrics.takeovers.labels(done.account).inc()
        self.metrics.takeover_seconds.observe(done.seconds)
        self.metrics.takeover_published.labels(done.account).inc(done.published)

    def workers(self, stop: asyncio.Event) -> dict[str, Worker]:
        """The tasks it runs beside the pump."""
        return {
            "election": lambda: self._elect(stop),
            "progress": lambda: self._follow(stop),
            "progress-reporter": self._report,
            "socket-watch": self._watch_socket,
        }

    async def _watch_socket(self) -> None:
        # Sampled, not hooked into the pump: a few hundred ms of error only
        # makes the group prefer one standby over another a little less well.
        while True:
            if not self.socket_open():
                self._socket_since = None
            elif self._socket_since is None:
                self._socket_since = self._clock.time()
            await self._clock.sleep(0.05)

    async def _elect(self, stop: asyncio.Event) -> None:
        # Join only once the socket is open: a member must tell the group
        # since when it reads, or the group may give the first leadership to
        # the replica whose socket opened later (what arrived in between is
        # then lost). Kafka may be down at start: this replica stays a
        # standby (holding records) until it joins.
        while self._socket_since is None:
            await self._clock.sleep(0.05)
        await until_kafka_answers(self._ensure_topic, stop=stop)
        await until_kafka_answers(lambda: self.election.start(self.roles), stop=stop)
        await self.election.run()

    async def _ensure_topic(self) -> None:
        await ensure_topic(
            self._kafka,
            self._ha.coordination_topic,
            len(self.accounts),
            # Progress older than any buffer is of no use to anyone.
            config={"retention.ms": "3600000"},
        )

    async def _follow(self, stop: asyncio.Event) -> None:
        await until_kafka_answers(self.progress.start, stop=stop)
        await self.progress.run()

    async def _report(self) -> None:
        before = 0
        while True:
            await self._clock.sleep(self._ha.progress_interval_ms / 1000)
            await self.reporter.report()
            self.metrics.progress_digests.inc(self.reporter.published - before)
            before = self.reporter.published

    async def hand_over(self, within: float) -> None:
        """Stop publishing and leave the group, so a standby takes over now."""
        try:
            async with asyncio.timeout(max(0.0, within)):
                await self.election.stop()
        except TimeoutError:
            log.warning("hand_over_timed_out")
        await self.roles.stop()
        self.gate.depose()

    async def close(self) -> None:
        """Leave the group if still in it, stop reading progress (after the
        drain reported the last one)."""
        await self.election.stop()
        await self.progress.stop()
