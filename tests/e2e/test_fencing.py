"""Fenced publishing (``BRIDGE_HA_TRANSACTIONAL_ID``) against the real broker.

On a Kafka with transactions (``BRIDGE_TEST_KAFKA_BOOTSTRAP`` pointing at an
Apache Kafka), a successor's producer fences the old leader's, and
read_committed consumers see nothing the old leader sent afterwards. On a
broker without them (Tansu, the default here) those tests are skipped, and
what runs instead shows that fencing configured against such a broker
publishes nothing and loses nothing.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bridge.adapters.kafka_producer import build_producer
from bridge.adapters.kafka_transactions import (
    TransactionalProducer,
    TransactionalRecordSink,
)
from bridge.core.records import OutboundRecord
from bridge.core.retry import Backoff
from bridge.metrics import SinkMetrics
from bridge.workers.stream_roles import AccountOf
from bridgelab.emulator import Emulator, EmulatorConfig
from bridgelab.tansu import create_topics
from tests.e2e.harness import (
    RunningBridge,
    bridge_env,
    fresh_topics,
    journal_dir,
    running_bridge,
)
from tests.e2e.standby_harness import the_leader, two_replicas
from tests.e2e.verifier import read_all, wait_for
from tests.kafka_broker import Broker, unique_topic

pytestmark = pytest.mark.e2e


class _Replica:
    """A replica's sink on the real broker, and what it was told."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.acked: list[bytes] = []
        self.released: list[bytes] = []
        self.fenced: list[str] = []
        self.leads = True  # what its group membership would confirm
        self.metrics = SinkMetrics(CollectorRegistry(), kinds=("position",))

        def producer(account: str) -> TransactionalProducer:
            built: TransactionalProducer = build_producer(
                bootstrap_servers=bootstrap,
                transactional_id=f"{prefix}.{account}",
                request_timeout_ms=5000,
            )
            return built

        self.sink = TransactionalRecordSink(
            producer,
            account_of=AccountOf(["alpha"]),
            max_records=1000,
            max_bytes=10**7,
            commit_interval=0.05,
            retry_backoff=Backoff(initial=0.2, maximum=1.0),
            metrics=self.metrics,
            topic_kinds={},
            on_batch_ack=lambda rs: self.acked.extend(r.value for r in rs),
            on_released=self._released,
            on_fenced=self.fenced.append,
            confirmed=lambda _account: self.leads,
        )

    def _released(self, account: str, records: Sequence[OutboundRecord]) -> None:
        self.released += [r.value for r in records]


def _published(bridge: RunningBridge) -> float:
    return sum(
        bridge.sample("bridge_records_published_total", {"kind": kind})
        for kind in ("position", "device_status", "event", "dead_letter")
    )


def _rec(topic: str, n: int) -> OutboundRecord:
    return OutboundRecord(
        topic=topic,
        key=b"d1",
        value=str(n).encode(),
        headers=(("bridge_account", b"alpha"),),
        dedupe_id=str(n),
        event_time_ms=None,
    )


async def test_a_successor_fences_the_old_leader_on_a_real_kafka(
    broker: Broker, transactions: bool
) -> None:
    """Replica b claims the account while a still publishes: a's later records
    are released, not committed, and a read_committed consumer sees a's
    records before the claim and b's after, each once."""
    if not transactions:
        pytest.skip("the broker has no transactions (Tansu); needs Apache Kafka")
    topic = unique_topic("fenced")
    await create_topics(broker.bootstrap, [topic], partitions=1)
    prefix = unique_topic("txn")
    a, b = _Replica(broker.bootstrap, prefix), _Replica(broker.bootstrap, prefix)
    await a.sink.start()
    await b.sink.start()
    try:
        assert await a.sink.claim("alpha", 20.0)
        for n in range(10):
            await a.sink.send(_rec(topic, n))
        await wait_for(lambda: len(a.acked) == 10, 20)
        assert await b.sink.claim("alpha", 20.0)
        a.leads = False  # paused: its membership is stale, it cannot confirm
        for n in range(10, 15):
            await a.sink.send(_rec(topic, n))  # a has not heard of b yet
        await wait_for(lambda: a.fenced == ["alpha"], 20)
        for n in range(15, 20):
            await b.sink.send(_rec(topic, n))
        await wait_for(lambda: len(b.acked) == 5, 20)
    finally:
        await a.sink.stop()
        await b.sink.stop()
    consumed = await read_all(broker.bootstrap, [topic], committed_only=True)
    seen = [int(r.value or b"-1") for r in consumed.records.get(topic, [])]
    assert a.released == [str(n).encode() for n in range(10, 15)]
    assert seen == [*range(10), *range(15, 20)]


async def test_a_fenced_stream_publishes_only_through_transactions(
    broker: Broker, transactions: bool
) -> None:
    """With BRIDGE_HA_TRANSACTIONAL_ID the leader publishes through its
    account's transactional producer: on a Kafka with transactions every item
    arrives, committed; on a broker without them (Tansu) nothing is published
    and nothing is lost: the journal keeps it, and the same journal started
    without fencing delivers all of it."""
    topics = await fresh_topics(broker.bootstrap)
    coordination = unique_topic("coord")
    await create_topics(broker.bootstrap, [coordination], partitions=1)
    journal = journal_dir()
    fleet = EmulatorConfig(
        devices=200, report_interval_seconds=2.0, max_frames_per_second=4.0
    )
    async with Emulator(fleet) as emu:
        env = bridge_env(
            emu,
            broker.bootstrap,
            topics,
            BRIDGE_JOURNAL_DIR=journal,
            BRIDGE_SHUTDOWN_GRACE_SECONDS="3",
            BRIDGE_HA_ENABLED="true",
            BRIDGE_HA_COORDINATION_TOPIC=coordination,
            BRIDGE_HA_GROUP_ID=unique_topic("group"),
            BRIDGE_HA_SESSION_TIMEOUT_MS="2000",
            BRIDGE_HA_HEARTBEAT_INTERVAL_MS="500",
            BRIDGE_HA_BUFFER_SECONDS="30",
            BRIDGE_HA_CATCH_UP_SECONDS="2",
            BRIDGE_HA_TRANSACTIONAL_ID=unique_topic("txn"),
        )
        role = {"account": "default"}
        async with running_bridge(env) as bridge:
            await wait_for(lambda: bridge.sample("bridge_stream_role", role) == 2, 30)
            if transactions:
                await wait_for(
                    lambda: (
                        bridge.sample(
                            "bridge_records_published_total", {"kind": "position"}
                        )
                        > 200
                    ),
                    30,
                )
            else:
                await wait_for(
                    lambda: (
                        bridge.sample("bridge_journal_entries") > 200
                        and bridge.sample(
                            "bridge_kafka_send_errors_total", {"error": "UnknownError"}
                        )
                        > 0
                    ),
                    30,
                )
                published = bridge.sample(
                    "bridge_records_published_total", {"kind": "position"}
                )
                assert published == 0, "published without a transaction"
            emu.pause()
            await asyncio.sleep(1.0)
            fenced = bridge.sample(
                "bridge_ha_fenced_records_total", {"account": "default"}
            )
            kept = bridge.sample("bridge_journal_entries")
        written = emu.written_seqs()
        if not transactions:
            assert not (
                await read_all(broker.bootstrap, topics.data, quiet=1.0)
            ).records
            # The same journal, fencing off: what was kept goes out.
            plain = {k: v for k, v in env.items() if not k.startswith("BRIDGE_HA_")}
            async with running_bridge(plain) as bridge:
                # Entries read 0 until the journal is open: count what went out.
                await wait_for(lambda: _published(bridge) >= kept, 30)
    consumed = await read_all(broker.bootstrap, topics.all, committed_only=True)
    missing = written - set(consumed.seqs(topics.data))
    print(
        f"fencing {'on a Kafka with transactions' if transactions else 'on Tansu'}:"
        f" {len(written)} items written, {len(missing)} lost, {fenced:.0f} released;"
        f" {kept:.0f} records journaled at the stop"
    )
    assert written, "the fleet wrote nothing"
    assert not missing, f"{len(missing)} lost, e.g. {sorted(missing)[:10]}"
    assert fenced == 0, "a lone leader let records go"


async def test_a_paused_leader_is_fenced_and_nothing_is_lost(
    broker: Broker, transactions: bool, tmp_path: Path
) -> None:
    """The leader SIGSTOPped past its session: the standby takes over (and
    fences it); after SIGCONT the old leader stops leading, and a
    read_committed consumer has every item written, each ce_id unchanged."""
    if not transactions:
        pytest.skip("the broker has no transactions (Tansu); needs Apache Kafka")
    fencing = {
        "BRIDGE_HA_TRANSACTIONAL_ID": unique_topic("txn"),
        "BRIDGE_KAFKA_ENABLE_IDEMPOTENCE": "true",
    }
    async with two_replicas(broker, tmp_path, **fencing) as pair:
        await pair.start_one_after_the_other()
        leader = await the_leader(pair.replicas, pair.client, 30)
        standby = next(r for r in pair.replicas if r is not leader)
        assert leader.proc is not None
        await asyncio.sleep(2.0)
        leader.proc.send_signal(signal.SIGSTOP)
        try:
            await the_leader([standby], pair.client, 30)
            await asyncio.sleep(2.0)
        finally:
            leader.proc.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 30
        while await leader.role(pair.client) != 0:
            assert time.monotonic() < deadline, "the old leader still leads"
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)
        pair.emu.pause()
        await asyncio.sleep(3.0)
        written = pair.emu.written_seqs()
    consumed = await read_all(broker.bootstrap, pair.topics.all, committed_only=True)
    seqs = consumed.seqs(pair.topics.data)
    missing = written - set(seqs)
    fenced = leader.log.read_text().count('"stream_fenced_by_new_leader"')
    duplicates = sum(n - 1 for n in seqs.values() if n > 1)
    print(
        f"paused leader with fencing: {len(written)} items, {len(missing)} lost,"
        f" {duplicates} duplicates; the old leader was fenced {fenced} time(s)"
    )
    assert not missing, f"{len(missing)} items lost, e.g. {sorted(missing)[:10]}"
