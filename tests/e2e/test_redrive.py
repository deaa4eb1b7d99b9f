"""End to end: frames a mapping did not understand are redriven after the fix.

The stream runs with a mapping that does not know the ``events`` section, so
every frame holding events is dead-lettered (its positions and device updates
still published). Then ``redrive`` runs with the shipped mapping, twice.
"""

from __future__ import annotations

import asyncio
import io
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from bridge.adapters.mapping_files import shipped_mapping_text
from bridge.app_redrive import RedriveOptions, redrive
from bridge.config import Settings
from bridge.core.codec import FrameRejection
from bridge.core.records import Topics, dead_letter_record
from bridge.core.redrive import RedriveFilter
from bridgelab.emulator import Emulator, EmulatorConfig
from bridgelab.tansu import create_topics
from tests.e2e.harness import StreamTopics, bridge_env, fresh_topics, running_bridge
from tests.e2e.verifier import read_all, wait_for
from tests.kafka_broker import Broker, unique_topic

pytestmark = pytest.mark.e2e


def without_events(path: Path) -> Path:
    """The shipped mapping with the events section taken out."""
    text = shipped_mapping_text().replace("      events: {each: {rule: event}}\n", "")
    text = text[: text.index("  event:\n    kind: event")]
    path.write_text(text)
    return path


async def run_redrive(env: dict[str, str], **options: object) -> tuple[int, str]:
    """One in-process redrive of the tracking dead letters; published count, text."""
    out = io.StringIO()
    summary = await redrive(
        Settings.from_env(env),
        RedriveOptions(
            selection=RedriveFilter(origin="stream"),
            group=None,
            reset=bool(options.get("reset", False)),
            dry_run=bool(options.get("dry_run", False)),
        ),
        out,
    )
    return summary.published, out.getvalue()


async def stream_without_events(
    broker: Broker, tmp_path: Path, config: EmulatorConfig, *, unknown: bool
) -> tuple[StreamTopics, dict[str, str], set[int]]:
    """Run the stream ~3 s on the mapping without events, then stop it quietly.

    Returns the topics, the bridge's environment with the shipped mapping
    back (the fix), and the seqs the emulator wrote.
    """
    topics = await fresh_topics(broker.bootstrap)
    async with Emulator(config) as emu:
        env = bridge_env(
            emu,
            broker.bootstrap,
            topics,
            BRIDGE_STREAM_MAPPING_FILE=str(without_events(tmp_path / "partial.yaml")),
        )
        async with running_bridge(env) as bridge:
            await wait_for(lambda: bridge.sample("bridge_ws_open_connections") >= 1, 10)
            await asyncio.sleep(3.0)
            if unknown:
                emu.send_unknown()  # a frame no mapping of ours understands
                await asyncio.sleep(0.5)
            emu.pause()
            await asyncio.sleep(0.5)
        written = emu.written_seqs()
    env.pop("BRIDGE_STREAM_MAPPING_FILE")
    return topics, env, written


async def test_redrive_publishes_each_missed_item_once_and_twice_publishes_nothing(
    broker: Broker, tmp_path: Path
) -> None:
    """Dead-lettered events are redriven once with live ce_ids; a rerun adds none."""
    config = EmulatorConfig(devices=20, max_frames_per_second=20.0, events_ratio=0.3)
    topics, env, written = await stream_without_events(
        broker, tmp_path, config, unknown=True
    )

    live = await read_all(broker.bootstrap, topics.all)
    dead = live.records[topics.dead_letter]
    assert live.count(topics.events) == 0
    assert len(dead) >= 5
    partial = [r for r in dead if dict(r.headers).get("bridge_dlq_published_ids")]
    assert partial, "some frames held positions as well as events"

    published, text = await run_redrive(env)
    assert "still failing" in text
    assert "unknown_field" in text
    again, text_again = await run_redrive(env)
    assert again == 0, text_again
    assert "read 0 dead letter(s)" in text_again

    after = await read_all(broker.bootstrap, topics.all)
    # Nothing was written back to the dead-letter topic.
    assert after.count(topics.dead_letter) == len(dead)
    # Every item the emulator wrote is on the data topics exactly once.
    seqs = after.seqs(topics.data)
    assert set(seqs) == written
    assert [s for s, n in seqs.items() if n > 1] == []
    assert published == after.count(topics.events)
    # Redriven events carry the ce_id they would have had live.
    for record in after.records[topics.events]:
        value = orjson.loads(record.value or b"")
        assert dict(record.headers)["ce_id"] == f"event:{value['eventId']}".encode()
    # And come in per-device order (the emulator's seq grows per device).
    by_device: dict[bytes, list[int]] = defaultdict(list)
    for record in after.records[topics.events]:
        by_device[record.key or b""].append(
            orjson.loads(record.value or b"")["attributes"]["seq"]
        )
    assert all(s == sorted(s) for s in by_device.values())


async def test_a_reset_republishes_with_the_same_ids_and_a_dry_run_publishes_nothing(
    broker: Broker, tmp_path: Path
) -> None:
    """--dry-run commits nothing; --reset redrives again with identical ce_ids."""
    config = EmulatorConfig(devices=5, max_frames_per_second=20.0, events_ratio=0.5)
    topics, env, _ = await stream_without_events(
        broker, tmp_path, config, unknown=False
    )
    dry, dry_text = await run_redrive(env, dry_run=True)
    assert dry > 0
    assert "would publish" in dry_text
    assert (await read_all(broker.bootstrap, [topics.events])).count(topics.events) == 0
    first, _ = await run_redrive(env)
    assert first == dry
    second, _ = await run_redrive(env, reset=True)
    assert second == first
    events = (await read_all(broker.bootstrap, [topics.events])).records[topics.events]
    ids = Counter(dict(r.headers)["ce_id"] for r in events)
    assert set(ids.values()) == {2}  # each event twice, with one and the same id


async def test_webhook_dead_letters_an_older_version_could_not_classify_are_redriven(
    broker: Broker,
) -> None:
    """--origin webhook: a body classified now is published once, keyed as live."""
    deliveries, tracking, dlq = (unique_topic(p) for p in ("whd", "wht", "whq"))
    await create_topics(broker.bootstrap, [deliveries, tracking, dlq])
    body = orjson.dumps(
        {"webhookId": "wh-77", "eventType": "order.new", "data": {"batchId": "b-9"}}
    )
    junk = orjson.dumps({"webhookId": "wh-78", "eventType": "mystery.thing"})
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        for raw in (body, junk):
            record = dead_letter_record(
                raw,
                FrameRejection("unknown_event_type", "an older classification"),
                Topics(dead_letter=dlq),
                received_at="2026-12-01T08:00:00.000Z",
                origin="webhook",
            )
            await producer.send_and_wait(
                dlq, record.value, headers=list(record.headers)
            )
    finally:
        await producer.stop()
    env = {
        "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "BRIDGE_KAFKA_ENABLE_IDEMPOTENCE": "false",
        "BRIDGE_WEBHOOK_TOPIC_DELIVERIES": deliveries,
        "BRIDGE_WEBHOOK_TOPIC_TRACKING": tracking,
        "BRIDGE_WEBHOOK_TOPIC_DEAD_LETTER": dlq,
    }
    options = RedriveOptions(
        selection=RedriveFilter(origin="webhook"),
        group=None,
        reset=False,
        dry_run=False,
    )
    out = io.StringIO()
    first = await redrive(
        Settings.from_env(env, require=frozenset({"kafka"})), options, out
    )
    second = await redrive(
        Settings.from_env(env, require=frozenset({"kafka"})), options, io.StringIO()
    )
    assert first.published == 1
    assert [(r, s) for _, _, r, s in first.still_failing] == [
        ("unknown_event_type", first.still_failing[0][3])
    ]
    assert "still failing" in out.getvalue()
    assert second.published == 0
    consumed = await read_all(broker.bootstrap, [deliveries, dlq])
    (published,) = consumed.records[deliveries]
    headers = dict(published.headers)
    assert headers["ce_id"] == b"wh-77"
    assert headers["ce_bridgereceivedat"] == b"2026-12-01T08:00:00.000Z"
    assert published.value == body
    assert consumed.count(dlq) == 2  # read, never written
