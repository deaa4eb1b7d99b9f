"""KafkaElection and KafkaProgressLog against the real broker (no mocks)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

from bridge.adapters.kafka_coordination import (
    MEMBER_HEADER,
    KafkaElection,
    KafkaProgressLog,
    StandbyAssignor,
)
from bridge.core.progress import decode_progress, encode_progress
from bridge.errors import ConfigError, PublishError
from bridgelab.tansu import create_topics
from tests.e2e.verifier import read_all, wait_for
from tests.kafka_broker import Broker, unique_topic

ACCOUNTS = ("acct-a", "acct-b", "acct-c")
ALL = frozenset(ACCOUNTS)
REPO = Path(__file__).resolve().parents[2]


def session_ms(broker: Broker) -> int:
    """3 s on Tansu; Apache Kafka refuses less than its 6 s minimum by default."""
    return 6000 if broker.external else 3000


def member_factory(broker: Broker, group: str) -> Callable[[], AIOKafkaConsumer]:
    timeout = session_ms(broker)

    def build() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap,
            group_id=group,
            enable_auto_commit=False,
            session_timeout_ms=timeout,
            heartbeat_interval_ms=timeout // 3,
            retry_backoff_ms=100,
        )

    return build


@dataclass
class Roles:
    """A ``RoleHandler`` that records every call, with the time it happened."""

    name: str
    events: list[tuple[float, str, str, frozenset[str]]]
    leading: frozenset[str] = frozenset()
    takeover_blocks: bool = False
    on_deposed_hook: Callable[[frozenset[str]], None] | None = None
    cancelled: list[frozenset[str]] = field(default_factory=list)

    async def on_leading(self, accounts: frozenset[str]) -> None:
        self.events.append((time.monotonic(), self.name, "leading", accounts))
        self.leading = accounts
        if self.takeover_blocks:
            try:
                await asyncio.Event().wait()  # a takeover that never ends
            except asyncio.CancelledError:
                self.cancelled.append(accounts)
                self.events.append((time.monotonic(), self.name, "cancelled", accounts))
                raise

    async def on_fenced(self, accounts: frozenset[str]) -> None:
        self.leading -= accounts
        self.events.append((time.monotonic(), self.name, "fenced", accounts))

    async def on_deposed(self, accounts: frozenset[str]) -> None:
        if self.on_deposed_hook is not None:
            self.on_deposed_hook(accounts)
        await asyncio.sleep(0.05)  # stopping the publisher takes a moment
        self.leading -= accounts
        self.events.append((time.monotonic(), self.name, "deposed", accounts))


def assert_one_leader_at_a_time(
    events: Sequence[tuple[float, str, str, frozenset[str]]],
) -> None:
    """No account was led by two handlers at once (from leading to deposed or
    fenced: a fenced member only journals, its ``on_deposed`` comes later)."""
    for account in ACCOUNTS:
        holder: str | None = None
        fenced: set[str] = set()
        for _, name, kind, accounts in sorted(events, key=lambda e: e[0]):
            if account not in accounts or kind == "cancelled":
                continue
            if kind == "deposed" and name in fenced:
                fenced.discard(name)  # the fence ended without it
                continue
            if kind == "leading":
                assert holder is None, f"{account}: {name} leads while {holder} does"
                holder = name
                fenced.discard(name)
            else:
                assert holder == name, f"{account}: {name} {kind}, {holder} led"
                holder = None
                if kind == "fenced":
                    fenced.add(name)


@contextlib.asynccontextmanager
async def running(
    election: KafkaElection, roles: Roles
) -> AsyncIterator[asyncio.Task[None]]:
    """Start the election and run it until the block ends; then stop it."""
    await election.start(roles)
    task = asyncio.create_task(election.run())
    try:
        yield task
    finally:
        await election.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def settled(*elections: KafkaElection) -> bool:
    """Every member leads some accounts, all of them, none twice."""
    held = [e.leading() for e in elections]
    return (
        all(held)
        and frozenset().union(*held) == ALL
        and sum(len(h) for h in held) == len(ALL)
    )


async def coordination_topic(broker: Broker, partitions: int = 3) -> str:
    topic = unique_topic("coord")
    await create_topics(broker.bootstrap, [topic], partitions=partitions)
    return topic


def group_name() -> str:
    return f"standby-{uuid.uuid4().hex[:10]}"


# -- the election --


async def test_two_members_split_the_accounts_and_a_leaver_hands_over(
    broker: Broker,
) -> None:
    """Two members lead disjoint accounts covering all; a stopped member is
    deposed before it leaves, and the other takes its accounts over."""
    topic, group = await coordination_topic(broker), group_name()
    events: list[tuple[float, str, str, frozenset[str]]] = []
    one, two = Roles("one", events), Roles("two", events)
    first = KafkaElection(member_factory(broker, group), topic=topic, accounts=ACCOUNTS)
    second = KafkaElection(
        member_factory(broker, group), topic=topic, accounts=ACCOUNTS
    )
    async with running(first, one):
        await wait_for(lambda: first.leading() == ALL == one.leading, within=30)
        async with running(second, two):
            await wait_for(lambda: settled(first, second), within=30)
            await wait_for(lambda: two.leading == second.leading(), within=5)
            assert one.leading == first.leading()

            handed = first.leading()
            seen_by_leaver: list[frozenset[str]] = []
            one.on_deposed_hook = lambda _: seen_by_leaver.append(second.leading())
            stopped = time.monotonic()
            await first.stop()
            await wait_for(lambda: second.leading() == ALL == two.leading, within=30)
            print(f"\nhand-over after stop: {time.monotonic() - stopped:.2f}s")

            # The leaver was deposed while the other did not lead its accounts.
            assert seen_by_leaver, "stop() did not depose the leaver"
            assert not seen_by_leaver[-1] & handed
            assert first.leading() == frozenset() == one.leading
            deposed_at = max(t for t, n, k, _ in events if n == "one")
            took_over_at = min(
                t
                for t, n, k, a in events
                if n == "two" and k == "leading" and a & handed and t > stopped
            )
            assert deposed_at < took_over_at
    assert_one_leader_at_a_time(events)
    assert second.generation >= 2


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from aiokafka import AIOKafkaConsumer
    from bridge.adapters.kafka_coordination import KafkaElection

    bootstrap, topic, group, session_ms, accounts = sys.argv[1:6]

    class Say:
        async def on_leading(self, accounts):
            print("leading", ",".join(sorted(accounts)), flush=True)

        async def on_deposed(self, accounts):
            print("deposed", ",".join(sorted(accounts)), flush=True)

    def member():
        return AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
            session_timeout_ms=int(session_ms),
            heartbeat_interval_ms=int(session_ms) // 3,
        )

    async def main():
        election = KafkaElection(member, topic=topic, accounts=accounts.split(","))
        await election.start(Say())
        await election.run()

    asyncio.run(main())
    """
)


async def test_a_killed_member_loses_its_accounts_after_the_session_timeout(
    broker: Broker, tmp_path: Path
) -> None:
    """A member killed with SIGKILL (no LeaveGroup) loses its accounts to the
    other member once its session times out."""
    topic, group = await coordination_topic(broker), group_name()
    script = tmp_path / "member.py"
    script.write_text(CHILD)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        broker.bootstrap,
        topic,
        group,
        str(session_ms(broker)),
        ",".join(ACCOUNTS),
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    child_leads: list[frozenset[str]] = [frozenset()]

    async def follow() -> None:
        assert child.stdout is not None
        async for line in child.stdout:
            kind, _, names = line.decode().strip().partition(" ")
            accounts = frozenset(names.split(",")) if names else frozenset()
            if kind == "leading":
                child_leads[0] = accounts
            elif kind == "deposed":
                child_leads[0] -= accounts

    reader = asyncio.create_task(follow())
    events: list[tuple[float, str, str, frozenset[str]]] = []
    survivor = KafkaElection(
        member_factory(broker, group), topic=topic, accounts=ACCOUNTS
    )
    try:
        await wait_for(lambda: child_leads[0] == ALL, within=30)
        async with running(survivor, Roles("survivor", events)):
            await wait_for(
                lambda: (
                    survivor.leading()
                    and child_leads[0]
                    and child_leads[0] | survivor.leading() == ALL
                    and not child_leads[0] & survivor.leading()
                ),
                within=30,
            )
            killed = time.monotonic()
            child.send_signal(signal.SIGKILL)
            await wait_for(lambda: survivor.leading() == ALL, within=30)
            takeover = time.monotonic() - killed
            print(f"\ntakeover after SIGKILL: {takeover:.2f}s")
            # Not at once (nobody said goodbye), but about a session timeout.
            assert takeover > session_ms(broker) / 1000 / 2
    finally:
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
        await child.wait()
        await reader


async def test_a_slow_takeover_does_not_stall_the_group(broker: Broker) -> None:
    """A takeover that outlasts the session timeout keeps the member in the
    group, and is cancelled before the member is deposed."""
    topic, group = await coordination_topic(broker), group_name()
    events: list[tuple[float, str, str, frozenset[str]]] = []
    slow = Roles("slow", events, takeover_blocks=True)
    first = KafkaElection(member_factory(broker, group), topic=topic, accounts=ACCOUNTS)
    second = KafkaElection(
        member_factory(broker, group), topic=topic, accounts=ACCOUNTS
    )
    async with running(first, slow):
        await wait_for(lambda: slow.leading == ALL, within=30)
        # Outlast the session timeout: an inline takeover would get expelled.
        await asyncio.sleep(session_ms(broker) / 1000 * 1.5)
        assert first.leading() == ALL
        assert first.generation == 1
        assert not [e for e in events if e[2] != "leading"]
        async with running(second, Roles("quick", events)):
            await wait_for(lambda: settled(first, second), within=30)
    kinds = [(n, k) for _, n, k, _ in sorted(events, key=lambda e: e[0])]
    # The first takeover was cancelled, then its accounts deposed.
    assert kinds[:3] == [
        ("slow", "leading"),
        ("slow", "cancelled"),
        ("slow", "deposed"),
    ]
    assert_one_leader_at_a_time(events)


async def test_a_member_cut_off_from_the_coordinator_fences_itself(
    broker: Broker,
) -> None:
    """Members that cannot reach the coordinator for ``fence_after`` depose
    themselves and say they are out of contact, and lead again once it
    answers."""
    if broker.external:
        pytest.skip("pausing needs the broker process")
    topic, group = await coordination_topic(broker), group_name()
    fence_after = session_ms(broker) / 1000 * 2 / 3
    events: list[tuple[float, str, str, frozenset[str]]] = []
    first, second = (
        KafkaElection(
            member_factory(broker, group),
            topic=topic,
            accounts=ACCOUNTS,
            fence_after=fence_after,
        )
        for _ in range(2)
    )
    async with running(first, Roles("one", events)):
        await wait_for(lambda: first.leading() == ALL, within=30)
        async with running(second, Roles("two", events)):
            await wait_for(lambda: settled(first, second), within=30)
            assert first.in_contact()
            assert second.in_contact()
            broker.pause()
            paused = time.monotonic()
            try:
                # Both deposed while the broker is still frozen.
                await wait_for(lambda: first.fences and second.fences, within=30)
                fenced = time.monotonic() - paused
                assert first.leading() == second.leading() == frozenset()
                assert not first.in_contact()
                assert not second.in_contact()
            finally:
                broker.resume()
            print(f"\nself-fenced {fenced:.2f}s after the broker froze")
            assert fenced >= fence_after * 0.7
            resumed = time.monotonic()
            await wait_for(lambda: settled(first, second), within=60)
            print(f"leading again {time.monotonic() - resumed:.2f}s after it thawed")
    assert_one_leader_at_a_time(events)


class Broken(Roles):
    async def on_leading(self, accounts: frozenset[str]) -> None:
        await super().on_leading(accounts)
        raise RuntimeError("takeover failed")


async def test_a_failed_takeover_ends_run_and_stop_still_deposes(
    broker: Broker,
) -> None:
    """An error from ``on_leading`` is raised by ``run`` (aiokafka would only log
    it), and ``stop`` then deposes the accounts."""
    topic, group = await coordination_topic(broker), group_name()
    events: list[tuple[float, str, str, frozenset[str]]] = []
    broken = Broken("broken", events)
    election = KafkaElection(
        member_factory(broker, group), topic=topic, accounts=ACCOUNTS
    )
    await election.start(broken)
    try:
        with pytest.raises(RuntimeError, match="takeover failed"):
            await asyncio.wait_for(election.run(), 30)
        assert election.leading() == ALL
    finally:
        await election.stop()
    assert [(k, a) for _, _, k, a in events] == [("leading", ALL), ("deposed", ALL)]


async def test_an_election_needs_a_partition_per_account(broker: Broker) -> None:
    """Start refuses a coordination topic with fewer partitions than accounts."""
    topic, group = await coordination_topic(broker, partitions=2), group_name()
    election = KafkaElection(
        member_factory(broker, group), topic=topic, accounts=ACCOUNTS
    )
    with pytest.raises(ConfigError, match="2 partitions"):
        await election.start(Roles("x", []))


# -- the progress log --


def progress_log(
    broker: Broker,
    topic: str,
    *,
    backfill: int = 1000,
    member: str | None = None,
    timeout: float = 10.0,
) -> KafkaProgressLog:
    return KafkaProgressLog(
        lambda: AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        ),
        lambda: AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap, enable_idempotence=False, acks="all"
        ),
        topic=topic,
        accounts=ACCOUNTS,
        window=60.0,
        backfill=backfill,
        member=member,
        timeout=timeout,
    )


@contextlib.asynccontextmanager
async def reading(log: KafkaProgressLog) -> AsyncIterator[KafkaProgressLog]:
    """Start the log and read it until the block ends; then stop it."""
    await log.start()
    task = asyncio.create_task(log.run())
    try:
        yield log
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await log.stop()


async def test_progress_published_by_one_log_is_read_by_another(
    broker: Broker,
) -> None:
    """A progress message lands on its account's partition, keyed and signed,
    and another replica's window holds its digests once caught up."""
    topic = await coordination_topic(broker)
    writer = progress_log(broker, topic, member="writer-1")
    await writer.start()
    try:
        async with reading(progress_log(broker, topic)) as reader:
            await writer.publish("acct-b", [1, 2**64 - 1, 3])
            assert await reader.caught_up("acct-b", within=10)
            assert all(d in reader.acked("acct-b") for d in (1, 2**64 - 1, 3))
            assert len(reader.acked("acct-a")) == len(reader.acked("acct-c")) == 0
            assert await reader.caught_up("acct-a", within=10)  # nothing to read
    finally:
        await writer.stop()
    [record] = (await read_all(broker.bootstrap, [topic], quiet=0.5)).records[topic]
    assert record.partition == 1
    assert record.key == b"acct-b"
    assert dict(record.headers)[MEMBER_HEADER] == b"writer-1"
    assert record.value is not None
    assert decode_progress(record.value) == (1, 2**64 - 1, 3)


async def test_corrupt_progress_is_counted_and_skipped(broker: Broker) -> None:
    """Records that are not progress messages of their partition's account are
    counted and skipped; the good ones around them still count."""
    topic = await coordination_topic(broker)
    async with reading(progress_log(broker, topic)) as reader:
        raw = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap, enable_idempotence=False
        )
        await raw.start()
        try:
            await raw.send_and_wait(topic, b"not progress", key=b"acct-a", partition=0)
            # A valid message, but under another account's key.
            await raw.send_and_wait(
                topic, encode_progress([5]), key=b"acct-b", partition=0
            )
        finally:
            await raw.stop()
        writer = progress_log(broker, topic)
        await writer.start()
        try:
            await writer.publish("acct-a", [7])
            await writer.publish("acct-b", [6])
        finally:
            await writer.stop()
        assert await reader.caught_up("acct-a", within=10)
        assert await reader.caught_up("acct-b", within=10)
        assert reader.corrupt == 2
        assert 7 in reader.acked("acct-a")
        assert 5 not in reader.acked("acct-a")
        assert 5 not in reader.acked("acct-b")
        assert 6 in reader.acked("acct-b")
        assert reader.read == 2


async def test_a_late_log_backfills_only_recent_progress(broker: Broker) -> None:
    """A replica started later reads the last ``backfill`` messages per account."""
    topic = await coordination_topic(broker)
    writer = progress_log(broker, topic)
    await writer.start()
    try:
        for n in range(5):
            await writer.publish("acct-c", [100 + n])
        await writer.publish("acct-a", [1])
    finally:
        await writer.stop()
    async with reading(progress_log(broker, topic, backfill=2)) as late:
        assert await late.caught_up("acct-c", within=10)
        assert await late.caught_up("acct-a", within=10)
        assert [d for d in range(100, 105) if d in late.acked("acct-c")] == [103, 104]
        assert 1 in late.acked("acct-a")
        assert late.read == 3


async def test_caught_up_is_false_when_nothing_reads(broker: Broker) -> None:
    """``caught_up`` gives up after ``within`` when the reader does not run."""
    topic = await coordination_topic(broker)
    idle = progress_log(broker, topic)
    await idle.start()
    try:
        await idle.publish("acct-a", [1])
        started = time.monotonic()
        assert not await idle.caught_up("acct-a", within=0.5)
        assert time.monotonic() - started < 5
        assert await idle.caught_up("acct-b", within=0.5)  # nothing was written
    finally:
        await idle.stop()


async def test_publish_fails_when_kafka_does_not_acknowledge(broker: Broker) -> None:
    """``publish`` raises ``PublishError`` once its deadline passes unacknowledged."""
    if broker.external:
        pytest.skip("pausing needs the broker process")
    topic = await coordination_topic(broker)
    log = progress_log(broker, topic, timeout=1.0)
    await log.start()
    try:
        broker.pause()
        try:
            started = time.monotonic()
            with pytest.raises(PublishError):
                await log.publish("acct-a", [1])
            assert time.monotonic() - started < 5
        finally:
            broker.resume()
    finally:
        await log.stop()


class _Cluster:
    """The one ClusterMetadata call an assignor makes."""

    def __init__(self, partitions: dict[str, int]) -> None:
        self._partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self._partitions.get(topic, 0)))


def _member(
    led: list[int],
    since: float | dict[int, float | None] | None,
    led_at: float | None = None,
    topic: str = "coord",
) -> ConsumerProtocolMemberMetadata:
    opened = since if isinstance(since, dict) else dict.fromkeys(range(3), since)
    state = (frozenset(led), led_at if led else None, opened)
    return StandbyAssignor(lambda: state).metadata([topic])


def _assigned(
    members: dict[str, ConsumerProtocolMemberMetadata], partitions: int = 1
) -> dict[str, list[int]]:
    result = StandbyAssignor(lambda: (frozenset(), None, {})).assign(
        _Cluster({"coord": partitions}), members
    )
    return {
        member: [p for _, parts in a.assignment for p in parts]
        for member, a in result.items()
    }


def test_assignor_keeps_an_account_with_the_member_that_led_it() -> None:
    """A member joining never takes an account from a leader whose socket is open."""
    assert _assigned(
        {"old": _member([0], since=100.0), "new": _member([], since=50.0)}
    ) == {"old": [0], "new": []}


def test_assignor_gives_a_free_account_to_the_oldest_open_buffer() -> None:
    """No previous leader: the member whose socket has been open longest leads."""
    assert _assigned(
        {
            "young": _member([], since=200.0),
            "old": _member([], since=100.0),
            "down": _member([], since=None),
        }
    ) == {"young": [], "old": [0], "down": []}


def test_assignor_moves_an_account_off_a_leader_whose_socket_is_down() -> None:
    """A claimed account goes to an open socket when its leader cannot read."""
    assert _assigned(
        {"leader": _member([0], since=None), "standby": _member([], since=10.0)}
    ) == {"leader": [], "standby": [0]}


def test_assignor_spreads_accounts_and_tolerates_foreign_metadata() -> None:
    """Three accounts over two members: 2 and 1; a member with unreadable
    user data is treated as claiming nothing, not as an error."""
    foreign = ConsumerProtocolMemberMetadata(0, ["coord"], b"\xff not json")
    got = _assigned(
        {"a": _member([], since=1.0), "b": _member([], since=2.0), "c": foreign},
        partitions=3,
    )
    assert sorted(len(v) for v in got.values()) == [0, 1, 2]
    assert sorted(p for v in got.values() for p in v) == [0, 1, 2]
    assert got["c"] == []  # no open socket claimed: only chosen if none has one


def test_assignor_gives_a_twice_claimed_account_to_the_newer_claim() -> None:
    """One member fenced itself while another took over: the later leader keeps it."""
    assert _assigned(
        {
            "fenced": _member([0], since=10.0, led_at=100.0),
            "successor": _member([0], since=20.0, led_at=160.0),
        }
    ) == {"fenced": [], "successor": [0]}


def test_assignor_judges_each_account_by_its_own_socket() -> None:
    """A member whose socket for one account is down keeps leading the others,
    and that account goes to the member whose socket for it is open."""
    got = _assigned(
        {
            "a": _member([0, 1], since={0: 5.0, 1: None}, led_at=50.0),
            "b": _member([], since={0: 9.0, 1: 9.0}),
        },
        partitions=2,
    )
    assert got == {"a": [0], "b": [1]}


def test_assignor_reads_the_older_versions_one_socket_time() -> None:
    """A member of the older version sent one time for all accounts: it counts
    as open for each, so a rolling upgrade keeps the leader where it is."""
    older = ConsumerProtocolMemberMetadata(
        1, ["coord"], json.dumps({"led": [0], "led_at": 10.0, "since": 5.0}).encode()
    )
    assert _assigned({"old": older, "new": _member([], since=1.0)}) == {
        "old": [0],
        "new": [],
    }


def test_assignor_hands_a_joining_member_its_share_of_the_accounts() -> None:
    """A member that led all three accounts keeps two and the member that
    joined with open sockets takes one: accounts spread over the replicas."""
    got = _assigned(
        {
            "old": _member([0, 1, 2], since=5.0, led_at=10.0),
            "new": _member([], since=20.0),
        },
        partitions=3,
    )
    assert got == {"old": [0, 1], "new": [2]}
