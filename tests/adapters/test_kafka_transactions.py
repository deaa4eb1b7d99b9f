"""Fenced publishing: per-account transactional producers (virtual time).

The sink is driven through its producer port (``TransactionalProducer``)
against an in-memory transaction coordinator that does what Kafka's does
with a ``transactional.id``: each InitProducerId bumps the id's epoch and
aborts its open transaction; a producer of an older epoch is fenced. The
same sink against a real broker is in ``tests/e2e/test_fencing.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, ProducerFenced
from prometheus_client import CollectorRegistry

from bridge.adapters.kafka_transactions import TransactionalRecordSink
from bridge.core.records import OutboundRecord
from bridge.core.retry import Backoff
from bridge.metrics import SinkMetrics
from bridge.workers.stream_roles import AccountOf
from tests.workers.fakes import until

pytestmark = pytest.mark.looptime


class Coordinator:
    """Kafka's transaction coordinator and log, in memory."""

    def __init__(self) -> None:
        self.epochs: dict[str, int] = {}
        self.committed: list[tuple[str, bytes]] = []  # (transactional id, value)
        self.fail_commits = 0  # the next commits time out (then abort)
        self.fail_aborts = 0  # the next aborts fail too (the producer is done)
        self.down = False  # InitProducerId fails

    def init(self, tid: str) -> int:
        if self.down:
            raise KafkaTimeoutError()
        self.epochs[tid] = self.epochs.get(tid, 0) + 1
        return self.epochs[tid]


class FakeProducer:
    """``TransactionalProducer`` on the coordinator."""

    def __init__(self, coordinator: Coordinator, tid: str) -> None:
        self.c = coordinator
        self.tid = tid
        self.epoch: int | None = None
        self.pending: list[bytes] = []
        self.stopped = False

    def _check(self) -> None:
        if self.epoch is not None and self.c.epochs[self.tid] != self.epoch:
            raise ProducerFenced()

    async def start(self) -> None:
        await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.stopped = True

    async def begin_transaction(self) -> None:
        if self.epoch is None:
            self.epoch = self.c.init(self.tid)
        self._check()
        self.pending = []

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Any = None,
    ) -> asyncio.Future[Any]:
        self._check()
        assert value is not None
        self.pending.append(value)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def commit_transaction(self) -> None:
        await asyncio.sleep(0.005)
        self._check()
        if self.c.fail_commits:
            self.c.fail_commits -= 1
            self.pending = []  # aborted: never visible
            raise KafkaTimeoutError()
        self.c.committed += [(self.tid, v) for v in self.pending]
        self.pending = []

    async def abort_transaction(self) -> None:
        self.pending = []
        if self.c.fail_aborts:
            self.c.fail_aborts -= 1
            raise KafkaTimeoutError()


def rec(n: int, account: str = "alpha") -> OutboundRecord:
    return OutboundRecord(
        topic="positions",
        key=b"d1",
        value=f"{account}-{n}".encode(),
        headers=(("bridge_account", account.encode()),),
        dedupe_id=f"{account}-{n}",
        event_time_ms=None,
    )


class Replica:
    """One replica's sink, with what it was told."""

    def __init__(
        self, coordinator: Coordinator, name: str, max_records: int = 1000
    ) -> None:
        self.name = name
        self.acked: list[str] = []
        self.released: list[tuple[str, str]] = []
        self.fenced: list[str] = []
        self.leads = True  # what the group confirms (``confirmed``)
        self.metrics = SinkMetrics(CollectorRegistry(), kinds=("position",))
        self.sink = TransactionalRecordSink(
            lambda account: FakeProducer(coordinator, f"bridge.{account}"),
            account_of=AccountOf(["alpha", "beta"]),
            max_records=max_records,
            max_bytes=10**6,
            commit_interval=0.1,
            retry_backoff=Backoff(initial=0.5, maximum=2.0, jitter=0.0),
            metrics=self.metrics,
            topic_kinds={"positions": "position"},
            on_batch_ack=self._acked,
            on_released=self._released,
            on_fenced=self.fenced.append,
            confirmed=lambda _account: self.leads,
        )

    def _acked(self, records: Sequence[OutboundRecord]) -> None:
        self.acked += [r.dedupe_id or "" for r in records]

    def _released(self, account: str, records: Sequence[OutboundRecord]) -> None:
        self.released += [(account, r.dedupe_id or "") for r in records]

    def errors(self, name: str) -> float:
        value = self.metrics.kafka_errors.labels(name)._value.get()
        return float(value)


def values(c: Coordinator, tid: str = "bridge.alpha") -> list[str]:
    return [v.decode() for t, v in c.committed if t == tid]


async def test_records_are_acknowledged_only_when_their_transaction_commits() -> None:
    """Nothing is acked before the commit; then all of it, in order, once."""
    c = Coordinator()
    a = Replica(c, "a")
    await a.sink.start()
    assert await a.sink.claim("alpha", 5.0) is True
    for n in range(5):
        await a.sink.send(rec(n))
    await asyncio.sleep(0.05)
    assert a.acked == []
    assert c.committed == []
    await until(lambda: len(a.acked) == 5)
    assert a.acked == [f"alpha-{n}" for n in range(5)]
    assert values(c) == [f"alpha-{n}" for n in range(5)]
    assert a.sink.statistics().in_flight_records == 0
    await a.sink.stop()


async def test_a_successor_fences_the_old_leader_and_gets_its_records() -> None:
    """Once replica b claims the account, nothing replica a sends reaches the
    log; a's held records are released (not acked), a is told, and records
    of the account that reach a later are released at once."""
    c = Coordinator()
    a, b = Replica(c, "a"), Replica(c, "b")
    await a.sink.start()
    await b.sink.start()
    await a.sink.claim("alpha", 5.0)
    for n in range(3):
        await a.sink.send(rec(n))
    await until(lambda: len(a.acked) == 3)
    assert await b.sink.claim("alpha", 5.0) is True  # a paused, b took over
    a.leads = False  # a's group membership is stale: it cannot confirm
    for n in range(3, 5):
        await a.sink.send(rec(n))  # a does not know yet
    await until(lambda: a.fenced == ["alpha"])
    assert a.acked == ["alpha-0", "alpha-1", "alpha-2"]
    assert a.released == [("alpha", "alpha-3"), ("alpha", "alpha-4")]
    await a.sink.send(rec(5))
    assert a.released[-1] == ("alpha", "alpha-5")
    await b.sink.send(rec(6))
    await until(lambda: b.acked == ["alpha-6"])
    assert values(c) == ["alpha-0", "alpha-1", "alpha-2", "alpha-6"]
    assert a.sink.statistics().in_flight_records == 0
    await a.sink.stop()
    await b.sink.stop()


async def test_a_failed_commit_is_aborted_and_retried_in_order() -> None:
    """An aborted transaction leaves nothing visible; its records go again,
    first, in the next one, with the same producer (no new epoch that could
    fence a successor); none is released or lost."""
    c = Coordinator()
    a = Replica(c, "a")
    await a.sink.start()
    await a.sink.claim("alpha", 5.0)
    c.fail_commits = 2
    for n in range(4):
        await a.sink.send(rec(n))
    await until(lambda: len(a.acked) == 4, within=30)
    assert values(c) == [f"alpha-{n}" for n in range(4)]
    assert a.released == []
    assert a.fenced == []
    assert a.errors("KafkaTimeoutError") == 2
    assert c.epochs["bridge.alpha"] == 1
    await a.sink.stop()


async def test_an_unclaimed_accounts_records_wait_then_go_to_whoever_leads() -> None:
    """A journal backlog of an account not claimed yet is neither published
    nor released; claiming publishes it, disowning releases it."""
    c = Coordinator()
    a = Replica(c, "a")
    await a.sink.start()
    await a.sink.send(rec(0, "alpha"))
    await a.sink.send(rec(0, "beta"))
    await asyncio.sleep(10)
    assert c.committed == []
    assert a.released == []
    assert await a.sink.flush(1.0) is True  # not this replica's to wait for
    a.sink.disown("alpha")
    assert a.released == [("alpha", "alpha-0")]
    await a.sink.claim("beta", 5.0)
    await until(lambda: a.acked == ["beta-0"])
    assert values(c, "bridge.beta") == ["beta-0"]
    await a.sink.stop()


async def test_leading_again_after_a_successor_opens_a_new_epoch() -> None:
    """A replica given the account back claims it anew: its sends are not
    refused for an epoch a successor took in between, and the successor's
    producer is fenced in turn."""
    c = Coordinator()
    a, b = Replica(c, "a"), Replica(c, "b")
    await a.sink.start()
    await b.sink.start()
    await a.sink.claim("alpha", 5.0)
    await a.sink.send(rec(0))
    await until(lambda: a.acked == ["alpha-0"])
    await b.sink.claim("alpha", 5.0)
    b.leads = False
    await a.sink.claim("alpha", 5.0)  # the group gave it back
    await a.sink.send(rec(1))
    await until(lambda: a.acked == ["alpha-0", "alpha-1"])
    assert a.fenced == []
    assert a.released == []
    await b.sink.send(rec(2))
    await until(lambda: b.fenced == ["alpha"])
    assert values(c) == ["alpha-0", "alpha-1"]
    await a.sink.stop()
    await b.sink.stop()


async def test_a_claim_waits_for_kafka_and_publishes_nothing_unfenced() -> None:
    """While InitProducerId fails the claim reports False and records wait;
    once Kafka answers, they are published."""
    c = Coordinator()
    c.down = True
    a = Replica(c, "a")
    await a.sink.start()
    assert await a.sink.claim("alpha", 1.0) is False
    await a.sink.send(rec(0))
    await asyncio.sleep(3)
    assert c.committed == []
    assert a.released == []
    assert a.sink.statistics().connected is False
    c.down = False
    await until(lambda: a.acked == ["alpha-0"], within=30)
    assert a.sink.statistics().connected is True
    await a.sink.stop()


async def test_a_broken_producer_is_replaced_only_while_the_group_confirms() -> None:
    """A producer whose abort fails too is closed; a new epoch is asked for
    only once the group confirms this replica leads; until then the records
    wait (not released), and if the account goes elsewhere, disown lets
    them go."""
    c = Coordinator()
    a = Replica(c, "a")
    await a.sink.start()
    await a.sink.claim("alpha", 5.0)
    a.leads = False  # a paused leader: its group membership is stale
    c.fail_commits, c.fail_aborts = 1, 1
    await a.sink.send(rec(0))
    await asyncio.sleep(30)
    assert c.epochs["bridge.alpha"] == 1, "a new epoch without the group's word"
    assert a.released == []
    assert a.acked == []
    a.leads = True  # the group answered: still the leader
    await until(lambda: a.acked == ["alpha-0"], within=60)
    assert c.epochs["bridge.alpha"] == 2
    a.leads = False
    c.fail_commits, c.fail_aborts = 1, 1
    await a.sink.send(rec(1))
    await until(lambda: a.sink._lanes["alpha"].producer is None)
    a.sink.disown("alpha")  # the group gave the account to another replica
    assert a.released == [("alpha", "alpha-1")]
    assert c.epochs["bridge.alpha"] == 2
    await a.sink.stop()


async def test_fenced_by_a_transaction_timeout_while_leading_lets_nothing_go() -> None:
    """Kafka bumps the epoch of a transaction it timed out (Kafka away for
    minutes): the group still confirms this replica, so it takes a new epoch
    and publishes everything; nothing is released, the roles are not told."""
    c = Coordinator()
    a = Replica(c, "a")
    await a.sink.start()
    await a.sink.claim("alpha", 5.0)
    await a.sink.send(rec(0))
    await until(lambda: a.acked == ["alpha-0"])
    c.init("bridge.alpha")  # the coordinator's timeout, not a successor
    await a.sink.send(rec(1))
    await until(lambda: a.acked == ["alpha-0", "alpha-1"])
    assert a.fenced == []
    assert a.released == []
    assert c.epochs["bridge.alpha"] == 3
    assert values(c) == ["alpha-0", "alpha-1"]
    await a.sink.stop()


async def test_a_full_buffer_blocks_the_sender_and_counts_the_time() -> None:
    """Over max_records, send waits until records leave (here: disowned), and
    the wait is counted as the plain Kafka sink counts it."""
    c = Coordinator()
    a = Replica(c, "a", max_records=2)
    await a.sink.start()
    await a.sink.send(rec(0))
    await a.sink.send(rec(1))
    blocked = asyncio.create_task(a.sink.send(rec(2)))
    await asyncio.sleep(5)
    assert not blocked.done()
    a.sink.disown("alpha")
    await blocked
    waited = a.metrics.buffer_full_seconds._value.get()
    assert waited == pytest.approx(5.0, abs=0.1)
    assert a.released == [("alpha", f"alpha-{n}") for n in range(3)]
    await a.sink.stop()
