"""Leader or standby per account: what each forwards, and takeovers (virtual time)."""

from __future__ import annotations

import asyncio

import pytest

from bridge.core.records import OutboundRecord
from bridge.core.standby import RecentRecords, digest
from bridge.workers.stream_roles import (
    AccountGate,
    AccountOf,
    ProgressReporter,
    StreamRoles,
)
from tests.workers.fakes import FakeProgressLog, FakeSink, GatedSink, LoopClock, until

pytestmark = pytest.mark.looptime


def rec(item: int, account: str | None = None) -> OutboundRecord:
    headers: tuple[tuple[str, bytes], ...] = (("ce_id", f"id-{item}".encode()),)
    if account is not None:
        headers += (("bridge_account", account.encode()),)
    return OutboundRecord(
        topic="positions",
        key=b"d1",
        value=b"{}",
        headers=headers,
        dedupe_id=f"id-{item}",
        event_time_ms=None,
    )


def gate(sink: FakeSink, account: str = "a") -> AccountGate:
    return AccountGate(
        account, sink, RecentRecords(max_age=60, max_bytes=10**7), LoopClock()
    )


def ids(records: list[OutboundRecord]) -> list[str | None]:
    return [r.dedupe_id for r in records]


async def test_a_standby_holds_everything_and_forwards_nothing() -> None:
    """In standby, records are held in the buffer and none reaches the journal."""
    sink = FakeSink()
    g = gate(sink)
    for i in range(5):
        await g.send(rec(i))
    assert sink.records == []
    assert len(g.recent) == 5
    assert await g.flush(1.0) is True


async def test_takeover_sends_what_the_old_leader_did_not_report_then_goes_live() -> (
    None
):
    """Reported records are skipped, the rest go out in receive order, then live."""
    sink = FakeSink()
    progress = FakeProgressLog()
    g = gate(sink)
    for i in range(10):
        await g.send(rec(i))
    progress.acked("a").add([digest(rec(i)) for i in range(6)], 0.0)
    done = await g.take_over(progress, catch_up_within=5)
    await g.send(rec(10))
    assert ids(sink.records) == [f"id-{i}" for i in range(6, 11)]
    assert g.role == "leading"
    assert (done.held, done.published, done.caught_up) == (10, 4, True)


async def test_records_arriving_during_a_slow_takeover_are_not_lost_or_doubled() -> (
    None
):
    """While the backlog goes out slowly, new records join it once, in order."""
    sink = GatedSink()
    progress = FakeProgressLog()
    g = gate(sink)
    for i in range(3):
        await g.send(rec(i))
    sink.open.clear()
    takeover = asyncio.create_task(g.take_over(progress, catch_up_within=5))
    await asyncio.sleep(0.1)  # stuck sending the first held record
    for i in range(3, 6):
        await g.send(rec(i))  # held, not forwarded: still taking over
    sink.open.set()
    await takeover
    await g.send(rec(6))
    assert ids(sink.records) == [f"id-{i}" for i in range(7)]


async def test_deposed_mid_takeover_stops_forwarding_at_once() -> None:
    """A depose during the takeover ends it: the rest is not sent, role standby."""
    sink = GatedSink()
    progress = FakeProgressLog()
    g = gate(sink)
    for i in range(5):
        await g.send(rec(i))
    sink.open.clear()
    takeover = asyncio.create_task(g.take_over(progress, catch_up_within=5))
    await asyncio.sleep(0.1)
    g.depose()
    sink.open.set()
    done = await takeover
    await g.send(rec(5))
    assert g.role == "standby"
    assert ids(sink.records) == ["id-0"]  # the one already handed over
    assert done.published == 1


async def test_progress_behind_publishes_anyway_after_the_wait() -> None:
    """If the progress log cannot be read to its end in time, duplicates beat a gap."""
    sink = FakeSink()
    progress = FakeProgressLog()
    progress.ready.clear()
    g = gate(sink)
    await g.send(rec(1))
    loop = asyncio.get_running_loop()
    started = loop.time()
    done = await g.take_over(progress, catch_up_within=5)
    assert loop.time() - started == pytest.approx(5, abs=0.1)
    assert done.caught_up is False
    assert ids(sink.records) == ["id-1"]


async def test_roles_start_takeovers_without_blocking_the_group() -> None:
    """on_leading returns at once (the rebalance waits for it); on_deposed cancels."""
    sink_a, sink_b = FakeSink(), FakeSink()
    progress = FakeProgressLog()
    progress.ready.clear()  # catch-up hangs: the takeover stays running
    roles = StreamRoles(
        {"a": gate(sink_a, "a"), "b": gate(sink_b, "b")}, progress, catch_up_within=30
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    await roles.on_leading(frozenset({"a", "b"}))
    assert loop.time() - started < 0.01
    assert roles.gates["a"].role == "taking_over"
    await roles.on_deposed(frozenset({"a"}))
    assert roles.gates["a"].role == "standby"
    progress.ready.set()
    await until(lambda: roles.leading() == frozenset({"b"}))
    await roles.stop()


async def test_reporter_sends_acked_digests_per_account_and_survives_failures() -> None:
    """Acks become one progress message per account; a failed write is skipped."""
    progress = FakeProgressLog()
    reporter = ProgressReporter(
        progress, AccountOf(["a", "b"]), LoopClock(), interval=0.2, max_digests=2
    )
    reporter.acked([rec(1, "a"), rec(2, "b"), rec(3, "a"), rec(4, "a")])
    await reporter.report()
    assert progress.published == [
        ("a", [digest(rec(1)), digest(rec(3))]),
        ("a", [digest(rec(4))]),
        ("b", [digest(rec(2))]),
    ]
    progress.fail_publish = True
    reporter.acked([rec(5, "a")])
    await reporter.report()  # logged, not raised
    assert reporter.published == 4


def test_account_of_a_record_is_its_header_or_the_first_account() -> None:
    """The bridge_account header names the account; a record without one (one
    account, or journaled before more were configured) is the first's."""
    assert AccountOf(["solo"])(rec(1)) == "solo"
    assert AccountOf(["a", "b"])(rec(1, "b")) == "b"
    assert AccountOf(["a", "b"])(rec(1)) == "a"


async def test_a_fenced_leader_keeps_journaling_and_resumes_without_a_takeover() -> (
    None
):
    """Cut off from the group, the leader keeps forwarding to the journal; given
    the account back it goes on live (nothing republished); deposed, it stops."""
    sink = FakeSink()
    progress = FakeProgressLog()
    roles = StreamRoles({"a": gate(sink)}, progress)
    await roles.on_leading(frozenset({"a"}))
    await until(lambda: roles.gates["a"].role == "leading")
    await roles.gates["a"].send(rec(1))
    await roles.on_fenced(frozenset({"a"}))
    assert roles.gates["a"].role == "fenced"
    await roles.gates["a"].send(rec(2))  # Kafka away for all: the journal keeps it
    await roles.on_leading(frozenset({"a"}))
    assert roles.gates["a"].role == "leading"
    await roles.gates["a"].send(rec(3))
    assert ids(sink.records) == ["id-1", "id-2", "id-3"]  # none twice
    await roles.on_fenced(frozenset({"a"}))
    await roles.on_deposed(frozenset({"a"}))  # another member leads now
    await roles.gates["a"].send(rec(4))
    assert roles.gates["a"].role == "standby"
    assert ids(sink.records) == ["id-1", "id-2", "id-3"]
    assert len(roles.gates["a"].takeovers) == 1


async def test_a_leader_handed_its_account_straight_back_sends_only_the_gap() -> None:
    """An eager rebalance deposes and re-appoints the same leader: it sends just
    the records of the rebalance, none it had forwarded already."""
    sink = FakeSink()
    progress = FakeProgressLog()  # reports nothing: every old record "unacked"
    roles = StreamRoles({"a": gate(sink)}, progress)
    await roles.on_leading(frozenset({"a"}))
    await until(lambda: roles.gates["a"].role == "leading")
    for i in range(5):
        await roles.gates["a"].send(rec(i))
    await roles.on_deposed(frozenset({"a"}))  # the rebalance begins
    for i in range(5, 8):
        await roles.gates["a"].send(rec(i))  # held, not forwarded
    await roles.on_leading(frozenset({"a"}))  # and ends: the account is back
    await until(lambda: roles.gates["a"].role == "leading")
    await roles.gates["a"].send(rec(8))
    assert ids(sink.records) == [f"id-{i}" for i in range(9)]  # each once
    last = roles.gates["a"].takeovers[-1]
    assert (last.resumed, last.published) == (True, 3)


class FakeFencing:
    """``Fencing``: records claims; a claim completes when ``open`` is set."""

    def __init__(self, progress: FakeProgressLog) -> None:
        self.progress = progress
        self.claims: list[tuple[str, bool]] = []  # (account, progress ready then)
        self.open = asyncio.Event()
        self.open.set()
        self.disowned: list[str] = []

    async def claim(self, account: str, within: float) -> bool:
        self.claims.append((account, self.progress.ready.is_set()))
        try:
            async with asyncio.timeout(within):
                await self.open.wait()
        except TimeoutError:
            return False
        return True

    def disown(self, account: str) -> None:
        self.disowned.append(account)


async def test_a_takeover_fences_the_old_leader_before_it_reads_its_progress() -> None:
    """The claim comes first, so nothing the old leader commits afterwards can
    be missing from the progress the takeover reads; then the backlog goes."""
    sink = FakeSink()
    progress = FakeProgressLog()
    progress.ready.clear()
    fencing = FakeFencing(progress)
    g = gate(sink, "a")
    for i in range(3):
        await g.send(rec(i))
    roles = StreamRoles({"a": g}, progress, catch_up_within=5, fencing=fencing)
    await roles.on_leading(frozenset({"a"}))
    await until(lambda: fencing.claims)
    assert fencing.claims == [("a", False)]  # claimed while progress unread
    progress.ready.set()
    await until(lambda: roles.leading() == frozenset({"a"}))
    assert ids(sink.records) == ["id-0", "id-1", "id-2"]
    await roles.stop()


async def test_a_takeover_whose_claim_is_slow_publishes_into_the_waiting_sink() -> None:
    """A claim that does not finish in time does not stall the takeover: the
    backlog goes to the sink, which holds it until the producer is fenced-in."""
    sink = FakeSink()
    progress = FakeProgressLog()
    fencing = FakeFencing(progress)
    fencing.open.clear()
    g = gate(sink, "a")
    await g.send(rec(0))
    roles = StreamRoles({"a": g}, progress, catch_up_within=2, fencing=fencing)
    await roles.on_leading(frozenset({"a"}))
    await until(lambda: roles.leading() == frozenset({"a"}))
    assert ids(sink.records) == ["id-0"]
    assert g.takeovers[0].seconds == pytest.approx(2.0, abs=0.1)
    await roles.stop()


async def test_a_fenced_out_leader_stops_forwarding_at_once() -> None:
    """When Kafka says a successor took the account, the gate stops forwarding
    before the group tells this replica, and a running takeover is cancelled."""
    sink = FakeSink()
    roles = StreamRoles({"a": gate(sink, "a")}, FakeProgressLog())
    await roles.on_leading(frozenset({"a"}))
    await until(lambda: roles.leading() == frozenset({"a"}))
    await roles.gates["a"].send(rec(0))
    roles.fenced_out("a")
    await roles.gates["a"].send(rec(1))
    assert ids(sink.records) == ["id-0"]
    assert roles.gates["a"].role == "standby"
    await roles.stop()


async def test_a_fenced_leader_given_its_account_back_claims_a_new_epoch() -> None:
    """A leader that lost the group coordinator and gets its account back
    resumes without a takeover, but claims its transactional id anew (a
    successor may have fenced its producer meanwhile)."""
    sink = FakeSink()
    progress = FakeProgressLog()
    fencing = FakeFencing(progress)
    roles = StreamRoles({"a": gate(sink, "a")}, progress, fencing=fencing)
    await roles.on_leading(frozenset({"a"}))
    await until(lambda: roles.leading() == frozenset({"a"}))
    await roles.on_fenced(frozenset({"a"}))
    assert roles.gates["a"].role == "fenced"
    await roles.on_leading(frozenset({"a"}))
    assert roles.gates["a"].role == "leading"
    assert [account for account, _ in fencing.claims] == ["a", "a"]
    await roles.stop()
