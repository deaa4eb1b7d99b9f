"""Tests for bridge.core.redrive: what redriving one dead letter publishes."""

from __future__ import annotations

import orjson

from bridge.adapters.mapping_files import read_mapping
from bridge.core.codec import FrameRejection
from bridge.core.records import Topics, dead_letter_record
from bridge.core.redrive import (
    DeadLetter,
    Outcome,
    ReceiveOrderMerge,
    RedriveFilter,
    plan_dead_letter,
)
from bridge.core.webhooks import WebhookTopics
from tests.core.test_codec import EVENT, POSITION

CODEC, _ = read_mapping(None, max_frame_bytes=1_048_576)
TOPICS = Topics()
WEBHOOK_TOPICS = WebhookTopics()
AT = "2026-01-01T10:00:00.000Z"


def letter(
    raw: bytes,
    *,
    reason: str = "unknown_field",
    received_at: str = AT,
    origin: str = "stream",
    published: tuple[str, ...] = (),
    partition: int = 0,
    offset: int = 0,
    max_value_bytes: int = 900_000,
) -> DeadLetter:
    """A dead letter exactly as the bridge writes one."""
    record = dead_letter_record(
        raw,
        FrameRejection(reason, "detail"),
        TOPICS,
        received_at=received_at,
        origin=origin,
        published_ids=published,
        max_value_bytes=max_value_bytes,
    )
    return DeadLetter(partition, offset, record.value, dict(record.headers))


def plan(dead: DeadLetter, selection: RedriveFilter | None = None) -> Outcome:
    """Plan with the shipped mapping."""
    assert CODEC is not None
    return plan_dead_letter(
        dead,
        selection or RedriveFilter(),
        codec=CODEC,
        topics=TOPICS,
        webhook_topics=WEBHOOK_TOPICS,
        source="/sendstack/tracking",
    )


FRAME = orjson.dumps({"positions": [POSITION], "events": [EVENT]})


def test_a_now_understood_frame_gives_its_records_with_live_ids() -> None:
    """Both items come back with the ce_ids and receive time they had live."""
    outcome = plan(letter(FRAME))
    assert outcome.kind == "redriven"
    assert [dict(r.headers)["ce_id"] for r in outcome.records] == [
        b"position:88123",
        b"event:5520",
    ]
    assert all(
        dict(r.headers)["ce_bridgereceivedat"] == AT.encode() for r in outcome.records
    )


def test_items_published_live_are_not_published_again() -> None:
    """A partly understood frame: only the items not published live come back."""
    outcome = plan(letter(FRAME, published=("position:88123",)))
    assert [dict(r.headers)["ce_id"] for r in outcome.records] == [b"event:5520"]
    assert outcome.already_published == 1


def test_a_dead_letter_of_one_of_several_accounts_keeps_its_account() -> None:
    """A letter with a bridge_account header gives records with that header
    and that account's ce_source, as the live records had."""
    dead = letter(FRAME)
    dead = DeadLetter(0, 0, dead.value, {**dead.headers, "bridge_account": b"beta"})
    outcome = plan(dead)
    assert [dict(r.headers)["bridge_account"] for r in outcome.records] == [
        b"beta",
        b"beta",
    ]
    assert {dict(r.headers)["ce_source"] for r in outcome.records} == {
        b"/sendstack/accounts/beta/tracking"
    }


def test_a_still_failing_frame_is_reported_with_what_it_understood() -> None:
    """Understood items are published; the rest is reported, not re-queued."""
    raw = orjson.dumps({"positions": [POSITION], "geofences": []})
    outcome = plan(letter(raw))
    assert outcome.kind == "still_failing"
    assert outcome.rejection is not None
    assert outcome.rejection.reason == "unknown_field"
    assert len(outcome.records) == 1


def test_a_truncated_dead_letter_is_not_redrivable() -> None:
    """A cut frame is never decoded: it is reported as not redrivable."""
    outcome = plan(letter(FRAME, max_value_bytes=20))
    assert outcome.kind == "not_redrivable"
    assert outcome.records == ()


def test_filters_select_by_origin_time_and_reason() -> None:
    """Origin, [since, until) and reasons each exclude what they should."""
    dead = letter(FRAME, reason="unknown_field", received_at=AT)
    assert plan(dead, RedriveFilter(since=AT)).kind == "redriven"
    assert plan(dead, RedriveFilter(until=AT)).kind == "filtered_out"
    assert plan(dead, RedriveFilter(since="2026-01-01T10:00:00.001Z")).kind == (
        "filtered_out"
    )
    assert plan(dead, RedriveFilter(reasons=frozenset({"oversize"}))).kind == (
        "filtered_out"
    )
    assert plan(dead, RedriveFilter(origin="webhook")).kind == "filtered_out"


def test_a_webhook_dead_letter_classified_now_becomes_its_record() -> None:
    """A verified body an older bridge could not classify is published now."""
    body = orjson.dumps(
        {"webhookId": "wh-1", "eventType": "order.new", "data": {"batchId": "b1"}}
    )
    outcome = plan(
        letter(body, origin="webhook", reason="unknown_event_type"),
        RedriveFilter(origin="webhook"),
    )
    assert outcome.kind == "redriven"
    (record,) = outcome.records
    assert record.topic == WEBHOOK_TOPICS.deliveries
    assert dict(record.headers)["ce_id"] == b"wh-1"
    assert record.value == body


def test_receive_order_is_restored_across_partitions() -> None:
    """Records from two partitions come out in receive-time order."""
    merge = ReceiveOrderMerge([0, 1])
    times = {0: ["10:00:01", "10:00:04"], 1: ["10:00:02", "10:00:03"]}
    for partition, stamps in times.items():
        for offset, stamp in enumerate(stamps):
            merge.add(
                letter(
                    FRAME,
                    received_at=f"2026-01-01T{stamp}.000Z",
                    partition=partition,
                    offset=offset,
                )
            )
    merge.finish(0)
    merge.finish(1)
    order = [(d.partition, d.offset) for d in merge.ready()]
    assert order == [(0, 0), (1, 0), (1, 1), (0, 1)]


def test_merge_waits_for_a_partition_that_may_still_deliver() -> None:
    """Nothing is released while an unfinished partition has nothing buffered."""
    merge = ReceiveOrderMerge([0, 1])
    merge.add(letter(FRAME, partition=0))
    assert list(merge.ready()) == []
    merge.finish(1)
    assert [d.partition for d in merge.ready()] == [0]
