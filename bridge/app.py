"""The composition root of the ``stream`` process: tracking socket → Kafka.

With ``stream_sinks.py`` (the sink chain) and ``stream_standby.py`` (the hot
standby), the only modules that know the concrete adapters of this process.
It builds them from settings, wires the session keeper and the stream pump,
and hands them to the shared `Lifecycle` (``bridge.bootstrap``): start once
Kafka answers, run both workers in one ``asyncio.TaskGroup``, and on ``stop``
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
import dataclasses
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx
import structlog
from prometheus_client import CollectorRegistry

from bridge.adapters.account_files import Account, read_accounts
from bridge.adapters.auth_api import HttpSessionSource
from bridge.adapters.clock import SystemClock
from bridge.adapters.journal_store import JournalError
from bridge.adapters.journaled_sink import JournaledSink
from bridge.adapters.kafka_client import until_kafka_answers
from bridge.adapters.mapping_files import stream_codec
from bridge.adapters.ops_http import Readiness
from bridge.adapters.upstream_connectors import stream_connector
from bridge.bootstrap import Deadline, Lifecycle, Tasks, Worker
from bridge.config import (
    KafkaSettings,
    SendstackSettings,
    Settings,
)
from bridge.core.records import (
    DEFAULT_SOURCE,
    OutboundRecord,
    Topics,
    received_epoch,
)
from bridge.core.retry import Backoff, FailureBudget
from bridge.core.session import RotationPolicy
from bridge.metrics import (
    AccountLabelled,
    IntakeMetrics,
    OutputMetrics,
    StreamMetrics,
)
from bridge.ports import Clock, RecordSink, SessionGrant, SessionSource
from bridge.stream_sinks import KafkaSink, SinkHooks, build_sinks
from bridge.stream_standby import HotStandby
from bridge.workers.session_keeper import SessionKeeper
from bridge.workers.stream_pump import PumpOptions, StreamPump
from bridge.workers.stream_roles import LIVE_ROLES

log = structlog.get_logger("bridge.app")


def topics_of(settings: Settings) -> Topics:
    k = settings.require(KafkaSettings)
    return Topics(
        positions=k.topic_positions,
        device_status=k.topic_device_status,
        events=k.topic_events,
        dead_letter=k.topic_dead_letter,
    )


class HeldSessionSource:
    """A cold standby's ``SessionSource``: it asks Sendstack only while this
    replica leads the account. The upstream allows one session: a standby's
    request, or a deposed leader's re-login after the new leader's session
    ended its own, would end the leader's session."""

    def __init__(
        self, inner: SessionSource, may_request: Callable[[], bool], clock: Clock
    ) -> None:
        self._inner = inner
        self._may_request = may_request
        self._clock = clock

    async def obtain(self) -> SessionGrant:
        while not self._may_request():
            await self._clock.sleep(0.05)
        return await self._inner.obtain()


class AccountStream:
    """One account's intake: its session keeper and its stream pump."""

    def __init__(
        self,
        account: Account,
        settings: Settings,
        *,
        http: httpx.AsyncClient,
        clock: SystemClock,
        sink: RecordSink,
        metrics: IntakeMetrics,
        tagged: bool,
        may_request: Callable[[], bool] | None = None,
    ) -> None:
        """*may_request*: a cold standby's keeper asks for a session only
        while it says yes (None: always)."""
        s = settings
        sendstack = s.require(SendstackSettings)
        self.account = account
        source: SessionSource = HttpSessionSource(
            http,
            base_url=account.base_url or sendstack.base_url,
            app_id=account.app_id,
            app_secret=account.app_secret,
            header_style=sendstack.session_header_style,
            send_source=sendstack.send_source_header,
        )
        if may_request is not None:
            source = HeldSessionSource(source, may_request, clock)
        self.keeper = SessionKeeper(
            source,
            clock=clock,
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
            metrics=metrics,
        )
        st = s.stream
        if account.stream_url is not None:
            st = dataclasses.replace(st, url=account.stream_url)
        self.pump = StreamPump(
            self.keeper,
            stream_connector(st),
            stream_codec(st.codec, st.mapping_file, max_frame_bytes=st.max_frame_bytes),
            sink,
            topics=account.topics,
            clock=clock,
            options=PumpOptions(
                reconnect=Backoff(
                    initial=st.reconnect_initial_seconds,
                    maximum=st.reconnect_max_seconds,
                ),
                dedupe_capacity=st.dedupe_capacity,
                overlap_max=st.rotation_overlap_max_seconds,
                stale_after=st.stale_after_seconds,
                single_session=st.single_session,
                # One account keeps the records it always made; several say
                # whose each record is.
                source=account.source if tagged else DEFAULT_SOURCE,
                account=account.name if tagged else None,
            ),
            metrics=metrics,
        )
        metrics.session_expires_in.set_function(self.keeper.expires_in)

    def workers(self, suffix: str) -> dict[str, Worker]:
        """Its two loops, named with *suffix* (the account, when several)."""
        return {
            f"session-keeper{suffix}": self.keeper.run,
            f"stream-pump{suffix}": self.pump.run,
        }


def accounts_of(settings: Settings) -> tuple[Account, ...]:
    """The account of ``BRIDGE_SENDSTACK_APP_ID``, then those of
    ``BRIDGE_STREAM_ACCOUNTS_DIR``."""
    sendstack = settings.require(SendstackSettings)
    primary = Account(
        name=settings.ha.account,
        app_id=sendstack.app_id,
        app_secret=sendstack.app_secret,
        topics=topics_of(settings),
    )
    directory = settings.stream.accounts_dir
    if directory is None:
        return (primary,)
    return read_accounts(Path(directory), primary)


class StreamApp:
    """The ``stream`` process: Sendstack tracking sockets → Kafka."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
        accounts: Sequence[Account] = (),
    ) -> None:
        """*accounts*: as `accounts_of` reads them (read here if not given)."""
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.clock = SystemClock()
        s = settings
        sendstack = s.require(SendstackSettings)
        kafka = s.require(KafkaSettings)
        accounts = tuple(accounts) or accounts_of(s)
        # With BRIDGE_STREAM_ACCOUNTS_DIR, records and intake metrics say
        # their account; without, they look as they always did.
        self.tagged = s.stream.accounts_dir is not None
        intake: Callable[[str], IntakeMetrics]
        if self.tagged:
            self.output = OutputMetrics(self.registry)
            labelled = AccountLabelled()
            self.registry.register(labelled)
            intake = labelled.add
        else:
            self.metrics = StreamMetrics(self.registry)
            self.output = self.metrics
            intake = lambda _account: self.metrics  # noqa: E731 - one account
        self.topics = accounts[0].topics
        self._http = httpx.AsyncClient(timeout=sendstack.http_timeout_seconds)
        topic_kinds: dict[str, str] = {}
        for account in accounts:
            t = account.topics
            topic_kinds |= {
                t.positions: "position",
                t.device_status: "device_status",
                t.events: "event",
                t.dead_letter: "dead_letter",
            }
        self.chain = build_sinks(
            s,
            kafka,
            accounts=[a.name for a in accounts],
            topic_kinds=topic_kinds,
            metrics=self.output.sink,
            registry=self.registry,
            hooks=SinkHooks(
                acked=self._batch_acked,
                released=lambda account, n: self._standby().released(account, n),
                fenced=lambda account: self._standby().fenced(account),
                confirmed=lambda account: self._standby().confirmed(account),
            ),
        )
        self.journal: JournaledSink | None = self.chain.journal
        self.sink: RecordSink = self.chain.sink
        self.kafka: KafkaSink = self.chain.kafka
        self.standby: HotStandby | None = None
        if s.ha.enabled:
            self.standby = HotStandby(
                s.ha,
                kafka,
                [a.name for a in accounts],
                self.sink,
                self.registry,
                self.clock,
                socket_open=lambda name: self.streams[name].pump.statistics().connected,
                cold=s.stream.single_session,
                fencing=self.chain.fencing,
            )
        standby = self.standby
        # A cold standby (the upstream allows one session): an account's
        # keeper asks for a session only while this replica leads it, and a
        # deposed leader closes its socket (see _cold).
        self.cold = standby is not None and s.stream.single_session

        def account_stream(account: Account) -> AccountStream:
            gate = None if standby is None else standby.gates[account.name]
            return AccountStream(
                account,
                s,
                http=self._http,
                clock=self.clock,
                sink=self.sink if gate is None else gate,
                metrics=intake(account.name),
                tagged=self.tagged,
                may_request=(lambda: gate.role in LIVE_ROLES)
                if gate is not None and self.cold
                else None,
            )

        self._account_stream = account_stream
        self.streams = {account.name: account_stream(account) for account in accounts}
        self._accounts = {account.name: account for account in accounts}
        self._stopping = asyncio.Event()  # the drain began
        self.lifecycle = Lifecycle(s, self.registry, self.readiness, clock=self.clock)
        self.lifecycle.close_last(self._http.aclose)
        if self.standby is not None:
            self.lifecycle.close_last(self.standby.close)
        self.ops = self.lifecycle.ops
        self._end_to_end = self.output.end_to_end
        self._receive_to_ack = self.output.receive_to_ack

    @property
    def keeper(self) -> SessionKeeper:
        """The first account's session keeper."""
        return next(iter(self.streams.values())).keeper

    @property
    def pump(self) -> StreamPump:
        """The first account's stream pump."""
        return next(iter(self.streams.values())).pump

    def _standby(self) -> HotStandby:
        assert self.standby is not None  # noqa: S101 - fencing comes with HA
        return self.standby

    def _batch_acked(self, records: Sequence[OutboundRecord]) -> None:
        if self.standby is not None:
            self.standby.reporter.acked(records)
        # One observation per batch, of its first record: per record, the
        # clock read and the observation cost as much as publishing it.
        now = time.time()
        for record in records:
            if record.event_time_ms is not None:
                self._end_to_end.observe(max(0.0, now - record.event_time_ms / 1000))
                received = received_epoch(record)
                if received is not None:
                    self._receive_to_ack.observe(max(0.0, now - received))
                return

    def readiness(self) -> Mapping[str, bool]:
        """Ready: a valid session and an open socket for every account, and a
        writable journal (else a connected producer).

        Details (not checks): the session policy rotations follow, the role,
        and with several accounts each one's checks and role.
        """
        roles = {} if self.standby is None else self.standby.roles_now()
        # A cold standby holds no session or socket for the accounts it does
        # not lead: it is ready as a standby all the same.
        streams = [
            a
            for name, a in self.streams.items()
            if not self.cold or roles[name] in LIVE_ROLES
        ]
        policy = self.pump.session_policy()
        checks = {
            "session_valid": all(a.keeper.current() is not None for a in streams),
            "socket_open": all(a.pump.statistics().connected for a in streams),
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
            details["role"] = roles[self.standby.accounts[0]]
        if self.tagged:
            details["accounts"] = {
                name: {
                    "session_valid": a.keeper.current() is not None,
                    "socket_open": a.pump.statistics().connected,
                    "session_policy": a.pump.session_policy().policy,
                    **({"role": roles[name]} if roles else {}),
                }
                for name, a in self.streams.items()
            }
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
        workers: dict[str, Worker] = {}
        for name, account in self.streams.items():
            suffix = self._suffix(name)
            if self.cold:
                workers[f"cold-standby{suffix}"] = functools.partial(self._cold, name)
            else:
                workers |= account.workers(suffix)
        return await self.lifecycle.run(
            stop,
            start=self._start_journal
            if self.journal is not None
            else lambda: until_kafka_answers(self.kafka.start, stop=stop),
            workers={
                **workers,
                **(self.standby.workers(stop) if self.standby is not None else {}),
            },
            drain=self._drain,
        )

    def _suffix(self, name: str) -> str:
        """What an account's worker names end with (nothing with one account,
        as they always were)."""
        return f"[{name}]" if self.tagged else ""

    async def _cold(self, name: str) -> None:
        """One account of a cold standby: its keeper and pump, restarted fresh
        after each leadership term.

        They run from the start, but the keeper asks for no session until
        this replica leads the account (`HeldSessionSource`), so a standby
        holds no socket. A leader deposed by a rebalance keeps its socket
        until the rebalance ends: if the account came back (an eager
        rebalance revokes everything) there is no gap; if it went to another
        replica, this one closes its socket then, so that an upstream which
        refuses a second socket lets the new leader in.
        """
        assert self.standby is not None  # noqa: S101 - only with HA
        standby, index = self.standby, self.standby.accounts.index(name)
        gate = standby.gates[name]
        while not self._stopping.is_set():
            stream = self.streams[name]
            keeper = asyncio.create_task(stream.keeper.run())
            pump = asyncio.create_task(stream.pump.run())
            deposed_in: int | None = None  # the generation it was deposed in
            try:
                while not (pump.done() or keeper.done()):
                    await self.clock.sleep(0.05)
                    if self._stopping.is_set():
                        break
                    if (
                        gate.role in LIVE_ROLES
                        or not stream.pump.statistics().connected
                    ):
                        deposed_in = None
                        continue
                    if deposed_in is None:
                        deposed_in = standby.election.generation
                    settled = (
                        standby.election.generation > deposed_in
                        and index not in standby.election.claim()[0]
                    )
                    if settled:
                        break
                for task in (keeper, pump):
                    if task.done() and not task.cancelled():
                        task.result()  # a worker's failure ends the process
            finally:
                keeper.cancel()
                await stream.pump.stop()
                await asyncio.wait({pump}, timeout=5.0)
                pump.cancel()
                await asyncio.gather(keeper, pump, return_exceptions=True)
            log.info("cold_standby_disconnected", account=name, role=gate.role)
            self.streams[name] = self._account_stream(self._accounts[name])

    async def _start_journal(self) -> None:
        # Only local disk: reading starts whether or not Kafka answers.
        assert self.journal is not None  # noqa: S101 - run() checked
        assert self.chain.lock is not None  # noqa: S101 - set with it
        self.chain.lock.acquire()
        try:
            await self.journal.start()
        except BaseException:
            self.chain.lock.release()
            raise
        self.lifecycle.close_last(self._close_journal)

    async def _close_journal(self) -> None:
        assert self.journal is not None  # noqa: S101 - run() checked
        assert self.chain.lock is not None  # noqa: S101 - set with it
        try:
            await self.journal.stop()
        except JournalError as exc:  # failing already: keep the first cause
            log.warning("journal_close_failed", error=str(exc))
        finally:
            self.chain.lock.release()

    async def _drain(self, deadline: Deadline, tasks: Tasks) -> Mapping[str, object]:
        # No session request after the signal: each failed one counts toward
        # Sendstack's lockout, and nothing left to do needs a new session.
        for name, task in tasks.items():
            if name.startswith("session-keeper"):
                task.cancel()
        self._stopping.set()
        if self.standby is not None:
            # Hand over first: the standby's socket is open and its buffer
            # covers what we stop publishing from here on.
            await self.standby.hand_over(deadline.left())
        if self.cold:
            # Deposed by the hand-over, each account's loop closes its socket.
            cold = {t for n, t in tasks.items() if n.startswith("cold-standby")}
            await asyncio.wait(cold, timeout=deadline.left())
            for task in cold:
                task.cancel()
            return await self._drain_sink(deadline)
        pumps = set()
        for name, account in self.streams.items():
            await account.pump.stop()
            pump = tasks[f"stream-pump{self._suffix(name)}"]
            if not account.pump.statistics().connected:
                # Parked waiting for a session or a reconnect: nothing to drain.
                pump.cancel()
            pumps.add(pump)
        # wait() rather than awaiting the tasks: a cancelled pump is no error.
        await asyncio.wait(pumps, timeout=deadline.left())
        for pump in pumps:
            if not pump.done():
                pump.cancel()
        return await self._drain_sink(deadline)

    async def _drain_sink(self, deadline: Deadline) -> Mapping[str, object]:
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
