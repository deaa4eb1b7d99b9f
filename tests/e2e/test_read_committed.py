"""What an aborted Kafka transaction wrote is never acted on: commands, redrive.

A transactional producer's aborted records stay in the log; only a consumer
reading ``read_committed`` skips them. These need a Kafka with transactions
(``BRIDGE_TEST_KAFKA_BOOTSTRAP`` pointing at an Apache Kafka) and are skipped
on Tansu, which answers InitProducerId with an error.
"""

from __future__ import annotations

import io
import uuid
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from bridge.app_redrive import RedriveOptions, redrive
from bridge.config import Settings
from bridge.core.codec import FrameRejection
from bridge.core.records import Topics, dead_letter_record
from bridge.core.redrive import RedriveFilter
from bridgelab.emulator import Emulator, EmulatorConfig
from bridgelab.tansu import create_topics
from tests.e2e.commands_harness import (
    booking,
    commands_env,
    fresh_command_topics,
    running_worker,
)
from tests.e2e.verifier import read_all, wait_for
from tests.kafka_broker import Broker, unique_topic

pytestmark = pytest.mark.e2e


async def in_transactions(
    bootstrap: str,
    topic: str,
    aborted: list[tuple[bytes | None, bytes, Any]],
    committed: list[tuple[bytes | None, bytes, Any]],
) -> None:
    """Send ``aborted`` in a transaction that is aborted, then ``committed`` in one
    that commits: (key, value, headers) each."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=f"t.{uuid.uuid4().hex[:10]}"
    )
    await producer.start()
    try:
        for batch, commit in ((aborted, False), (committed, True)):
            await producer.begin_transaction()
            for key, value, headers in batch:
                await producer.send_and_wait(topic, value, key=key, headers=headers)
            if commit:
                await producer.commit_transaction()
            else:
                await producer.abort_transaction()
    finally:
        await producer.stop()


async def test_an_aborted_booking_command_is_never_executed(
    broker: Broker, transactions: bool
) -> None:
    """The worker books the committed command only, never the aborted one."""
    if not transactions:
        pytest.skip("the broker has no transactions (Tansu); needs Apache Kafka")
    topics = await fresh_command_topics(broker.bootstrap)
    aborted, kept = booking(), booking()
    async with Emulator(EmulatorConfig(start_paused=True)) as emu:
        env = commands_env(emu, broker.bootstrap, topics)
        async with running_worker(env) as worker:
            await in_transactions(
                broker.bootstrap,
                topics.commands,
                [(aborted["commandId"].encode(), orjson.dumps(aborted), [])],
                [(kept["commandId"].encode(), orjson.dumps(kept), [])],
            )
            await wait_for(
                lambda: (
                    worker.sample(
                        "bridge_commands_total",
                        {"type": "book_delivery", "outcome": "succeeded"},
                    )
                    == 1
                ),
                30,
            )
        executed_aborted = len(emu.deliveries.requests(aborted["commandId"]))
        executed_kept = len(emu.deliveries.requests(kept["commandId"]))
    results = await read_all(broker.bootstrap, [topics.results])
    ids = [
        orjson.loads(r.value or b"")["commandId"]
        for r in results.records[topics.results]
    ]
    assert ids == [kept["commandId"]]
    assert (executed_aborted, executed_kept) == (0, 1)


async def test_redrive_skips_a_dead_letter_of_an_aborted_transaction(
    broker: Broker, transactions: bool
) -> None:
    """A fenced leader's aborted dead letter is not redriven; a committed one is."""
    if not transactions:
        pytest.skip("the broker has no transactions (Tansu); needs Apache Kafka")
    deliveries, tracking, dlq = (unique_topic(p) for p in ("rcd", "rct", "rcq"))
    await create_topics(broker.bootstrap, [deliveries, tracking, dlq])

    def letter(webhook_id: str) -> tuple[None, bytes, Any]:
        raw = orjson.dumps(
            {"webhookId": webhook_id, "eventType": "order.new", "data": {}}
        )
        record = dead_letter_record(
            raw,
            FrameRejection("unknown_event_type", "an older classification"),
            Topics(dead_letter=dlq),
            received_at="2026-12-01T08:00:00.000Z",
            origin="webhook",
        )
        return None, record.value, list(record.headers)

    await in_transactions(
        broker.bootstrap, dlq, [letter("wh-aborted")], [letter("wh-kept")]
    )
    env = {
        "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "BRIDGE_WEBHOOK_TOPIC_DELIVERIES": deliveries,
        "BRIDGE_WEBHOOK_TOPIC_TRACKING": tracking,
        "BRIDGE_WEBHOOK_TOPIC_DEAD_LETTER": dlq,
    }
    summary = await redrive(
        Settings.from_env(env, require=frozenset({"kafka"})),
        RedriveOptions(
            selection=RedriveFilter(origin="webhook"),
            group=None,
            reset=False,
            dry_run=False,
        ),
        io.StringIO(),
    )
    consumed = await read_all(broker.bootstrap, [deliveries])
    ids = [dict(r.headers)["ce_id"] for r in consumed.records[deliveries]]
    assert (summary.published, ids) == (1, [b"wh-kept"])
