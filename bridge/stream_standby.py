"""The stream's part in the hot standby (``BRIDGE_HA_ENABLED``), for every
account the process streams: one gate per account between its pump and the
shared sink, one election (a partition of the coordination topic per
account), the progress log and its reporter, and their metrics.

Part of the ``stream`` composition root (``bridge.app``), kept apart so that
the root stays about wiring.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping, Sequence

import structlog
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry

from bridge.adapters.clock import SystemClock
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
from bridge.adapters.kafka_producer import build_producer
from bridge.bootstrap import Worker
from bridge.config import HaSettings, KafkaSettings
from bridge.core.standby import RecentRecords
from bridge.metrics import RoleMetrics
from bridge.ports import Fencing, RecordSink
from bridge.workers.stream_roles import (
    ROLE_VALUES,
    AccountGate,
    AccountOf,
    ProgressReporter,
    StreamRoles,
    Takeover,
)

__all__ = ["HotStandby"]

log = structlog.get_logger("bridge.app")


class HotStandby:
    """This replica's part in the hot standby: a gate per account between its
    pump and ``target``, the election, the progress log and its reporter, and
    their metrics.

    Args:
        accounts: The accounts' names, in the order every replica uses (the
            coordination topic's partitions).
        socket_open: Whether an account's socket is open now.
        cold: A cold standby (``BRIDGE_STREAM_SINGLE_SESSION``): it opens an
            account's socket only once it leads it, so it joins the group
            without one.
        fencing: Kafka transactions (``BRIDGE_HA_TRANSACTIONAL_ID``): the
            sink whose per-account producers a takeover claims.
    """

    def __init__(
        self,
        ha: HaSettings,
        kafka: KafkaSettings,
        accounts: Sequence[str],
        target: RecordSink,
        registry: CollectorRegistry,
        clock: SystemClock,
        socket_open: Callable[[str], bool],
        *,
        cold: bool = False,
        fencing: Fencing | None = None,
    ) -> None:
        self._ha = ha
        self.fencing = fencing
        self._kafka = kafka
        self.accounts = tuple(accounts)
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
        # Per account, set while its socket has been open without a break:
        # the group gives a takeover to the member whose buffer reaches back
        # most.
        self._socket_since: dict[str, float | None] = dict.fromkeys(self.accounts)
        self._socket_open = socket_open
        # The upstream allows one session: the standby holds no socket.
        self.cold = cold
        assignor = StandbyAssignor(lambda: (*self.election.claim(), self._since()))
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
        self.gates = {
            account: AccountGate(
                account,
                target,
                RecentRecords(max_age=ha.buffer_seconds, max_bytes=ha.buffer_bytes),
                clock,
            )
            for account in self.accounts
        }
        self.roles = StreamRoles(
            self.gates,
            self.progress,
            catch_up_within=ha.catch_up_seconds,
            on_takeover=self._took_over,
            fencing=fencing,
        )
        self.reporter = ProgressReporter(
            self.progress,
            AccountOf(self.accounts),
            clock,
            interval=ha.progress_interval_ms / 1000,
        )
        for account, gate in self.gates.items():
            self._observe(account, gate, clock)
        self._clock = clock

    def _observe(self, account: str, gate: AccountGate, clock: SystemClock) -> None:
        m = self.metrics
        # Series at 0 from the start, so increase() sees a pod's first takeover.
        m.takeovers.labels(account)
        m.takeover_published.labels(account)
        m.fenced.labels(account)
        m.fenced_records.labels(account)
        m.role.labels(account).set_function(lambda: ROLE_VALUES[gate.role])
        m.standby_records.labels(account).set_function(lambda: len(gate.recent))
        m.standby_bytes.labels(account).set_function(lambda: gate.recent.bytes)
        m.standby_age.labels(account).set_function(
            lambda: gate.recent.oldest_age(clock.monotonic())
        )

    def _since(self) -> Mapping[int, float | None]:
        return {i: self._socket_since[a] for i, a in enumerate(self.accounts)}

    def roles_now(self) -> Mapping[str, str]:
        """Each account's role on this replica."""
        return {account: gate.role for account, gate in self.gates.items()}

    def _took_over(self, done: Takeover) -> None:
        if not done.resumed:  # a rebalance that gave the account back is not one
            self.metrics.takeovers.labels(done.account).inc()
        self.metrics.takeover_seconds.observe(done.seconds)
        self.metrics.takeover_published.labels(done.account).inc(done.published)

    def fenced(self, account: str) -> None:
        """The sink's producer for ``account`` was fenced by a successor."""
        self.metrics.fenced.labels(account).inc()
        self.roles.fenced_out(account)

    def confirmed(self, account: str) -> bool:
        """Whether the group confirms, now, that this replica leads
        ``account``: the only time its transactional id may be taken anew."""
        return (
            account in self.election.leading()
            and self.gates[account].role in ("taking_over", "leading")
            and self.election.in_contact()
        )

    def released(self, account: str, count: int) -> None:
        """The sink let ``count`` journaled records go to the account's leader."""
        self.metrics.fenced_records.labels(account).inc(count)

    def workers(self, stop: asyncio.Event) -> dict[str, Worker]:
        """The tasks it runs beside the pump."""
        workers: dict[str, Worker] = {
            "election": lambda: self._elect(stop),
            "progress": lambda: self._follow(stop),
            "progress-reporter": self._report,
            "socket-watch": self._watch_socket,
        }
        if self.fencing is not None:
            workers["fencing-watch"] = functools.partial(self._disown, self.fencing)
        return workers

    async def _disown(self, fencing: Fencing) -> None:
        # Journaled records of an account another replica leads (a backlog
        # replayed after a restart) wait in the sink for a claim: once an
        # assignment newer than the last one that gave the account here has
        # left it out, they are that replica's to publish (it held them in
        # its buffer). Not during a rebalance: the revoked accounts may come
        # straight back, and the newest assignment is still the old one.
        done: dict[str, int] = {}
        while True:
            await self._clock.sleep(0.5)
            generation = self.election.generation
            leading = self.election.leading()
            for account, gate in self.gates.items():
                if (
                    account not in leading
                    and gate.role == "standby"
                    and generation > self.election.assigned_in(account)
                    and done.get(account) != generation
                ):
                    fencing.disown(account)
                    done[account] = generation

    async def _watch_socket(self) -> None:
        # Sampled, not hooked into the pump: a few hundred ms of error only
        # makes the group prefer one standby over another a little less well.
        since = self._socket_since
        while True:
            for account in self.accounts:
                if not self._socket_open(account):
                    since[account] = None
                elif since[account] is None:
                    since[account] = self._clock.time()
            await self._clock.sleep(0.05)

    async def _elect(self, stop: asyncio.Event) -> None:
        # Join only once a socket is open: a member must tell the group since
        # when it reads, or the group may give the first leadership to the
        # replica whose socket opened later (what arrived in between is then
        # lost). One is enough: an account whose credentials fail here must
        # not keep the others from being led. Kafka may be down at start:
        # this replica stays a standby (holding records) until it joins.
        # A cold standby opens no socket before it leads: it joins at once.
        while not self.cold and all(t is None for t in self._socket_since.values()):
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
        for gate in self.gates.values():
            gate.depose()

    async def close(self) -> None:
        """Leave the group if still in it, stop reading progress (after the
        drain reported the last one)."""
        await self.election.stop()
        await self.progress.stop()
