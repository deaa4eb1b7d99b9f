"""Kafka for the hot standby: who leads which account, and the leaders' progress.

Both live on one coordination topic with one partition per account (account
``i`` of the sorted account list is partition ``i``).

* :class:`KafkaElection` (the ``Election`` port) is a member of a consumer
  group subscribed to that topic; the member that holds an account's
  partition leads the account, as Kafka Connect and Schema Registry elect
  their leaders. It never reads a record: every partition it holds stays
  paused, and it polls only so that the group keeps it (``max.poll.interval``).
* :class:`KafkaProgressLog` (the ``ProgressLog`` port) writes a leader's
  progress messages to its account's partition and reads every partition,
  without a group, into one acked window per account.

Handler calls (theory of operation). aiokafka runs the rebalance listener
inside its rebalance and awaits it:

* On revocation, ``on_deposed`` is awaited before the listener returns, so the
  group hands the partition on only after the old leader stopped publishing.
  aiokafka's protocol is eager: a revocation covers the whole assignment, and
  every rebalance (a member joining or leaving) deposes and then re-appoints
  the leaders, even of the accounts that stay where they are.
* On assignment, ``on_leading`` runs as a task, not inline: a takeover that
  catches up and publishes a backlog may take longer than the session
  timeout, and aiokafka starts the heartbeat only after the listener returns,
  so awaiting it inline would get this member expelled by its own takeover
  (and hold up the whole group's rebalance). The task is cancelled (and
  awaited) before ``on_deposed`` is called for the same accounts, on
  revocation, self-fencing and ``stop``. A handler that raises makes ``run``
  raise (aiokafka itself would only log a listener's error).

Self-fencing. If the member cannot reach its group coordinator for a session
timeout, the group has given its partitions away, but aiokafka tells nobody:
its heartbeat task keeps the time of the last good heartbeat in a local
variable, marks the coordinator dead, and retries the lookup until the
coordinator answers; only then does a rejected heartbeat lead to a rejoin and
the listener's revocation. So the election probes the coordinator itself with
the public ``committed()`` call (an OffsetFetch to the group coordinator, on
the same connection as the heartbeats) every ``fence_after / 4`` seconds;
when no probe has succeeded for ``fence_after`` seconds, it deposes what it
leads and subscribes again, which makes aiokafka rejoin the group as soon as
the coordinator answers (whether or not the group expelled this member), and
the new assignment appoints the leaders again.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from aiokafka.errors import ConsumerStoppedError, KafkaError
from aiokafka.structs import TopicPartition

from bridge.core.progress import ProgressCorrupt, decode_progress, encode_progress
from bridge.core.retry import Backoff
from bridge.core.standby import AckedDigests
from bridge.errors import ConfigError, PublishError
from bridge.ports import RoleHandler

__all__ = ["MEMBER_HEADER", "KafkaElection", "KafkaProgressLog", "StandbyAssignor"]

log = structlog.get_logger("bridge.coordination")

MEMBER_HEADER = "bridge_member"


def _check_accounts(accounts: Sequence[str]) -> tuple[str, ...]:
    if not accounts:
        raise ValueError("at least one account is needed")
    if len(set(accounts)) != len(accounts):
        raise ValueError("accounts must be distinct")
    return tuple(accounts)


def _check_partitions(consumer: AIOKafkaConsumer, topic: str, needed: int) -> None:
    """The coordination topic must have a partition for every account.

    Uses the metadata the consumer loaded when it started (every topic).
    """
    partitions = consumer.partitions_for_topic(topic)
    if partitions is None:
        raise ConfigError([f"coordination topic {topic} does not exist"])
    if not set(range(needed)) <= set(partitions):
        raise ConfigError(
            [
                f"coordination topic {topic} has {len(partitions)} partitions; "
                f"{needed} accounts need one each"
            ]
        )


class _RoleListener(ConsumerRebalanceListener):  # type: ignore[misc]  # untyped base
    def __init__(self, election: KafkaElection) -> None:
        self._election = election

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._election._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._election._on_assigned(assigned)


class StandbyAssignor(AbstractPartitionAssignor):  # type: ignore[misc]  # untyped
    """Who leads an account: the member that just led it, else the member whose
    buffer reaches back furthest.

    The group's default assignors know nothing of buffers: on an eager
    rebalance (any member joining) round-robin may hand an account to a member
    that has just started, whose buffer begins after the old leader stopped
    publishing, and what arrived in between is lost. So each member tells the
    group (in its JoinGroup metadata) which accounts it led until this
    rebalance and since when its socket has been open without a break; the
    group leader's member then assigns each account to:

    1. the member that led it until now, if its socket is open (no move, no
       takeover backlog) and it leads fewer than its share so far (the
       accounts over the members with an open socket, rounded up): a replica
       that joins takes over its share, from a buffer that began before the
       old leader stopped, so the move leaves no gap;
    2. otherwise, among members with an open socket, the one with the fewest
       accounts so far, then the oldest buffer (the widest takeover window);
    3. otherwise (no socket open anywhere) the member with the fewest accounts.

    Two members may claim an account (one fenced itself while the other took
    over): the most recent claim wins.

    Args:
        state: This member's ``(partitions it led until now, wall time that
            leadership began or None, for each partition the wall time its
            account's socket has been open since, or None)``, read at each
            join. (Members of an older version sent one time for all.)
    """

    name = "sendstack-standby"
    version = 1

    def __init__(
        self,
        state: Callable[
            [], tuple[frozenset[int], float | None, Mapping[int, float | None]]
        ],
    ) -> None:
        self._state = state

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        led, led_at, since = self._state()
        opened = {str(p): t for p, t in sorted(since.items()) if t is not None}
        user_data = json.dumps(
            {"led": sorted(led), "led_at": led_at, "since": opened}
        ).encode()
        return ConsumerProtocolMemberMetadata(self.version, sorted(topics), user_data)

    def assign(
        self,
        cluster: Any,
        members: Mapping[str, ConsumerProtocolMemberMetadata],
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        claims = {member: _claim(meta.user_data) for member, meta in members.items()}
        owned: dict[str, dict[str, list[int]]] = {m: {} for m in members}
        topics = sorted({t for meta in members.values() for t in meta.subscription})
        for topic in topics:
            subscribed = sorted(m for m in members if topic in members[m].subscription)
            partitions = sorted(cluster.partitions_for_topic(topic) or ())
            reading = sum(
                1 for m in subscribed if any(claims[m].opened(p) for p in partitions)
            )
            share = -(-len(partitions) // max(1, reading))
            for partition in partitions:
                member = _choose(partition, subscribed, claims, owned, share)
                owned[member].setdefault(topic, []).append(partition)
        return {
            member: ConsumerProtocolMemberAssignment(
                self.version, sorted(parts.items()), b""
            )
            for member, parts in owned.items()
        }

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        del assignment  # the rebalance listener does the work


class _Claim(NamedTuple):
    led: frozenset[int]
    led_at: float
    # Per partition: since when its account's socket has been open.
    since: Mapping[int, float]
    # One time for every partition (a member of the older version).
    since_all: float | None = None

    def opened(self, partition: int) -> float | None:
        return self.since.get(partition, self.since_all)


def _claim(user_data: bytes) -> _Claim:
    try:
        data = json.loads(user_data or b"{}")
        led = frozenset(int(p) for p in data.get("led", ()))
        led_at, since = data.get("led_at"), data.get("since")
        led_at = 0.0 if led_at is None else float(led_at)
        if isinstance(since, dict):
            return _Claim(led, led_at, {int(p): float(t) for p, t in since.items()})
        return _Claim(led, led_at, {}, None if since is None else float(since))
    except (ValueError, TypeError, AttributeError):
        return _Claim(frozenset(), 0.0, {})  # foreign: no claim


def _choose(
    partition: int,
    members: Sequence[str],
    claims: Mapping[str, _Claim],
    owned: Mapping[str, Mapping[str, list[int]]],
    share: int,
) -> str:
    def load(member: str) -> int:
        return sum(len(parts) for parts in owned[member].values())

    open_ = [m for m in members if claims[m].opened(partition) is not None]
    claimants = [m for m in open_ if partition in claims[m].led and load(m) < share]
    if claimants:  # it led this account until now: keep it there
        return max(claimants, key=lambda m: (claims[m].led_at, m))
    pool = open_ or list(members)
    return min(pool, key=lambda m: (load(m), claims[m].opened(partition) or 0.0, m))


class KafkaElection:
    """``Election`` over a consumer group on the coordination topic.

    ``consumer_factory`` builds the member: ``group_id``, session timeout and
    heartbeat come from it (``enable_auto_commit=False``: it never consumes).
    ``fence_after`` (seconds, None: off) turns self-fencing on; pass the
    consumer's session timeout minus one heartbeat interval, so that this
    member stops leading before the group can have appointed another.
    """

    def __init__(
        self,
        consumer_factory: Callable[[], AIOKafkaConsumer],
        *,
        topic: str,
        accounts: Sequence[str],
        fence_after: float | None = None,
        poll_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if fence_after is not None and fence_after <= 0:
            raise ValueError("fence_after must be > 0")
        self._factory = consumer_factory
        self._topic = topic
        self._accounts = _check_accounts(accounts)
        self._fence_after = fence_after
        self._poll_ms = max(1, int(poll_interval * 1000))
        self._clock = clock
        self._listener = _RoleListener(self)
        self._consumer: AIOKafkaConsumer | None = None
        self._handler: RoleHandler | None = None
        self._lock = asyncio.Lock()  # one handler transition at a time
        self._leading: frozenset[str] = frozenset()
        self._takeover: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._stopping = False
        self._contact = clock()  # last time the coordinator surely answered
        self._generation = 0
        self.fences = 0  # how many times this member fenced itself
        # Partitions this member led until the last revocation (what it
        # claims in StandbyAssignor's metadata at the next join).
        self._led: frozenset[int] = frozenset()
        self._led_at: float | None = None  # wall time that leadership began
        # Accounts it led when it fenced itself: still journaled, until the
        # next assignment says whether they are its own again.
        self._fenced: frozenset[str] = frozenset()
        # The last assignment (our generation count) that gave each account
        # to this member.
        self._assigned_in: dict[str, int] = {}

    @property
    def generation(self) -> int:
        """Assignments this member received (aiokafka keeps the group's
        generation id private); for logs."""
        return self._generation

    def leading(self) -> frozenset[str]:
        return self._leading

    def assigned_in(self, account: str) -> int:
        """The last assignment (``generation``) that gave ``account`` to
        this member; 0 if none did."""
        return self._assigned_in.get(account, 0)

    def in_contact(self) -> bool:
        """Whether the group coordinator answered within the self-fencing
        bound (always, without self-fencing): only then does ``leading``
        speak for the group and not just for this member's memory."""
        if self._fence_after is None:
            return True
        return self._clock() - self._contact <= self._fence_after

    def claim(self) -> tuple[frozenset[int], float | None]:
        """The partitions this member led until now and since when (wall
        time): kept across a revocation and a self-fence, forgotten when it
        leaves. What :class:`StandbyAssignor` tells the group."""
        return self._led, self._led_at

    async def start(self, handler: RoleHandler) -> None:
        """Connect and subscribe; the group join then runs in the background."""
        self._handler = handler
        consumer = self._factory()
        try:
            await consumer.start()
            _check_partitions(consumer, self._topic, len(self._accounts))
            consumer.subscribe([self._topic], listener=self._listener)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self._contact = self._clock()

    async def run(self) -> None:
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("start the election first")
        probe = (
            asyncio.create_task(self._probe(consumer))
            if self._fence_after is not None
            else None
        )
        try:
            while True:
                self._raise_failure()
                if probe is not None and probe.done():
                    probe.result()  # it only ends by failing
                self._pause_all(consumer)
                try:
                    # Nothing is fetched (every partition is paused); polling
                    # tells aiokafka that this member is alive.
                    await consumer.getmany(timeout_ms=self._poll_ms)
                except ConsumerStoppedError:
                    if self._stopping:
                        return
                    raise
                self._raise_failure()
                await self._maybe_fence(consumer)
        finally:
            if probe is not None:
                probe.cancel()
                await asyncio.wait([probe])

    async def stop(self) -> None:
        """Depose this replica, then leave the group (the others take over at once)."""
        self._stopping = True
        self._led, self._led_at = frozenset(), None
        consumer = self._consumer
        if consumer is None:
            return
        self._consumer = None
        try:
            async with self._lock:
                await self._depose()
                await self._end_fence(frozenset())
        finally:
            await consumer.stop()  # sends LeaveGroup
            log.info("election_left", generation=self._generation)

    # -- the rebalance listener (called inside aiokafka's rebalance) --

    async def _on_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        # aiokafka's protocol is eager: ``revoked`` is the whole assignment.
        del revoked
        try:
            async with self._lock:
                await self._depose()
        except Exception as exc:  # noqa: BLE001 - aiokafka would only log it
            self._failure = exc

    async def _on_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        mine = [tp for tp in assigned if tp.topic == self._topic]
        consumer = self._consumer
        if consumer is not None:
            consumer.pause(*mine)  # before the fetcher gets to them
        accounts = frozenset(
            self._accounts[tp.partition]
            for tp in mine
            if tp.partition < len(self._accounts)
        )
        try:
            async with self._lock:
                if self._stopping:
                    return
                await self._depose()  # nothing, unless a revocation failed
                await self._end_fence(accounts)
                self._generation += 1
                self._contact = self._clock()  # the group just answered
                for account in accounts:
                    self._assigned_in[account] = self._generation
                log.info(
                    "election_assigned",
                    accounts=sorted(accounts),
                    generation=self._generation,
                )
                led = frozenset(
                    tp.partition for tp in mine if tp.partition < len(self._accounts)
                )
                if led != self._led or self._led_at is None:
                    self._led_at = time.time() if led else None
                self._led = led
                if accounts:
                    self._leading = accounts
                    self._takeover = asyncio.create_task(self._lead(accounts))
        except Exception as exc:  # noqa: BLE001 - aiokafka would only log it
            self._failure = exc

    # -- transitions (called with the lock held) --

    async def _end_fence(self, assigned: frozenset[str]) -> None:
        """The group answered: fenced accounts not assigned again are lost."""
        lost, self._fenced = self._fenced - assigned, frozenset()
        if lost:
            assert self._handler is not None  # noqa: S101 - set by start
            await self._handler.on_deposed(lost)
            log.info("election_fence_ended", deposed=sorted(lost))

    async def _lead(self, accounts: frozenset[str]) -> None:
        assert self._handler is not None  # noqa: S101 - set by start
        try:
            await self._handler.on_leading(accounts)
        except Exception as exc:  # surfaces from run()
            log.exception("election_takeover_failed")
            self._failure = exc

    async def _fence(self) -> None:
        """Tell the handler it may have lost what it leads (it keeps journaling);
        the claim stays, so the group can give it back (Kafka was down for all)."""
        task, self._takeover = self._takeover, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
        accounts, self._leading = self._leading, frozenset()
        self._fenced = accounts
        assert self._handler is not None  # noqa: S101 - set by start
        await self._handler.on_fenced(accounts)

    async def _depose(self) -> None:
        """Stop the takeover if it still runs, then depose what this replica leads."""
        task, self._takeover = self._takeover, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])  # propagates our own cancellation only
        accounts = self._leading
        if not accounts:
            return
        assert self._handler is not None  # noqa: S101 - set by start
        try:
            await self._handler.on_deposed(accounts)
        finally:
            self._leading = frozenset()
            log.info(
                "election_deposed",
                accounts=sorted(accounts),
                generation=self._generation,
            )

    # -- liveness --

    def _raise_failure(self) -> None:
        if self._failure is not None:
            exc, self._failure = self._failure, None
            raise exc

    def _pause_all(self, consumer: AIOKafkaConsumer) -> None:
        unpaused = consumer.assignment() - consumer.paused()
        if unpaused:
            consumer.pause(*unpaused)

    async def _probe(self, consumer: AIOKafkaConsumer) -> None:
        """Ask the group coordinator something, every ``fence_after / 4`` s."""
        assert self._fence_after is not None  # noqa: S101 - only started then
        interval = self._fence_after / 4
        tp = TopicPartition(self._topic, 0)
        while True:
            asked = self._clock()
            try:
                await consumer.committed(tp)  # an OffsetFetch to the coordinator
            except (KafkaError, ConsumerStoppedError) as exc:
                log.debug("election_probe_failed", error=type(exc).__name__)
            else:
                # The answer proves the coordinator was there when we asked.
                self._contact = max(self._contact, asked)
            await asyncio.sleep(interval)

    async def _maybe_fence(self, consumer: AIOKafkaConsumer) -> None:
        if self._fence_after is None or not self._leading:
            return
        silent = self._clock() - self._contact
        if silent <= self._fence_after:
            return
        async with self._lock:
            if not self._leading or self._stopping:
                return
            log.warning(
                "election_self_fenced",
                accounts=sorted(self._leading),
                silent_for=round(silent, 3),
                generation=self._generation,
            )
            await self._fence()
            self.fences += 1
            # A new subscription makes aiokafka rejoin once the coordinator
            # answers, even if the group never noticed this member was gone.
            consumer.subscribe([self._topic], listener=self._listener)


class KafkaProgressLog:
    """``ProgressLog`` on the coordination topic.

    ``consumer_factory`` must build a consumer without a group
    (``group_id=None``, ``auto_offset_reset="earliest"``); it is assigned
    every account's partition and starts ``backfill`` messages before each
    partition's end. ``producer_factory`` builds the producer progress
    messages go through. ``window`` is the acked windows' age (seconds on
    ``clock``). ``member`` names this replica in each message's
    ``bridge_member`` header (a random id by default). ``publish`` gives up
    with ``PublishError`` after ``timeout`` seconds.
    """

    def __init__(
        self,
        consumer_factory: Callable[[], AIOKafkaConsumer],
        producer_factory: Callable[[], AIOKafkaProducer],
        *,
        topic: str,
        accounts: Sequence[str],
        window: float,
        clock: Callable[[], float] = time.monotonic,
        backfill: int = 1000,
        member: str | None = None,
        timeout: float = 10.0,
        poll_interval: float = 0.2,
        retry: Backoff | None = None,
    ) -> None:
        if backfill < 0:
            raise ValueError("backfill must be >= 0")
        self._consumer_factory = consumer_factory
        self._producer_factory = producer_factory
        self._topic = topic
        self._accounts = _check_accounts(accounts)
        self._partition = {a: i for i, a in enumerate(self._accounts)}
        self._keys = [a.encode() for a in self._accounts]
        self._tps = [TopicPartition(topic, i) for i in range(len(self._accounts))]
        self._acked = {a: AckedDigests(max_age=window) for a in self._accounts}
        self._clock = clock
        self._backfill = backfill
        self.member = member or uuid.uuid4().hex
        self._timeout = timeout
        self._poll_ms = max(1, int(poll_interval * 1000))
        self._retry = retry or Backoff(initial=0.05, maximum=1.0)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._tick = asyncio.Event()  # set (and replaced) after every poll
        self.corrupt = 0  # records skipped: not a progress message of their account
        self.read = 0  # progress messages folded in

    async def start(self) -> None:
        consumer = self._consumer_factory()
        try:
            await consumer.start()
            _check_partitions(consumer, self._topic, len(self._tps))
            consumer.assign(self._tps)
            beginnings = await consumer.beginning_offsets(self._tps)
            ends = await consumer.end_offsets(self._tps)
            for tp in self._tps:
                consumer.seek(tp, max(beginnings[tp], ends[tp] - self._backfill))
            producer = self._producer_factory()
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self._producer = producer

    async def stop(self) -> None:
        consumer, producer = self._consumer, self._producer
        self._consumer = self._producer = None
        try:
            if producer is not None:
                await producer.stop()
        finally:
            if consumer is not None:
                await consumer.stop()

    def acked(self, account: str) -> AckedDigests:
        return self._acked[account]

    async def run(self) -> None:
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("start the progress log first")
        while True:
            batches = await consumer.getmany(timeout_ms=self._poll_ms)
            now = self._clock()
            for tp, records in batches.items():
                for r in records:
                    self._fold(tp.partition, r.key, r.value, now)
            for window in self._acked.values():
                window.expire(now)
            tick, self._tick = self._tick, asyncio.Event()
            tick.set()

    def _fold(
        self, partition: int, key: bytes | None, value: bytes | None, now: float
    ) -> None:
        account = self._accounts[partition]
        try:
            digests = decode_progress(value or b"")
        except ProgressCorrupt as exc:
            problem = str(exc)
        else:
            if key == self._keys[partition]:
                self._acked[account].add(digests, now)
                self.read += 1
                return
            problem = f"key {key!r} on the partition of {account}"
        self.corrupt += 1
        log.warning("progress_corrupt", account=account, error=problem)

    async def caught_up(self, account: str, within: float) -> bool:
        consumer = self._consumer
        if consumer is None:
            return False
        tp = self._tps[self._partition[account]]
        try:
            async with asyncio.timeout(within):
                end = (await consumer.end_offsets([tp]))[tp]
                while True:
                    tick = self._tick  # before the check: no missed wake-up
                    if await consumer.position(tp) >= end:
                        return True
                    await tick.wait()
        except TimeoutError:
            return False
        except KafkaError as exc:
            log.warning(
                "progress_catch_up_failed", account=account, error=type(exc).__name__
            )
            return False

    async def publish(self, account: str, digests: Sequence[int]) -> None:
        producer = self._producer
        if producer is None:
            raise PublishError("the progress log is not started")
        partition = self._partition[account]
        value = encode_progress(digests)
        headers = [(MEMBER_HEADER, self.member.encode())]
        deadline = time.monotonic() + self._timeout
        attempt = 0
        while True:
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    future = await producer.send(
                        self._topic,
                        value,
                        key=self._keys[partition],
                        partition=partition,
                        headers=headers,
                    )
                    await future
            except TimeoutError as exc:
                raise PublishError(
                    f"Kafka did not acknowledge progress for {account} "
                    f"within {self._timeout}s"
                ) from exc
            except KafkaError as exc:
                delay = self._retry.delay(attempt, random.random())
                if time.monotonic() + delay > deadline:
                    raise PublishError(
                        f"Kafka did not acknowledge progress for {account}: "
                        f"{type(exc).__name__}"
                    ) from exc
                attempt += 1
                await asyncio.sleep(delay)
            else:
                return
