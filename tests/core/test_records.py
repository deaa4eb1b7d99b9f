"""Tests for bridge.core.records: our CloudEvents record contract and dead letters."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given, strategies as st

from bridge.core.codec import (
    CANONICAL_EVENT_TYPES,
    REJECTION_REASONS,
    UNPARSED_REASONS,
    FrameRejection,
    Item,
    TraccarJsonCodec,
)
from bridge.core.journal_entry import encode, encoded_size
from bridge.core.records import (
    ACCOUNT_HEADER,
    DATA_SCHEMAS,
    DEFAULT_SOURCE,
    OutboundRecord,
    Topics,
    ce_type,
    dead_letter_record,
    iso_ms,
    received_epoch,
    to_record,
)
from tests.core.test_codec import DEVICE, EVENT, POSITION, frame, valid_frames

TOPICS = Topics()
RECEIVED_AT = "2025-06-14T09:12:05.123Z"
CODEC = TraccarJsonCodec()


def item_of(section: str, raw_item: dict[str, object]) -> Item:
    """Decode one understood item."""
    decoded = CODEC.decode(frame(**{section: [raw_item]}))
    assert decoded.rejection is None
    (item,) = decoded.items
    return item


@pytest.mark.parametrize(
    ("section", "raw_item", "topic", "type_", "schema"),
    [
        (
            "positions",
            POSITION,
            "sendstack.tracking.positions",
            "com.sendstack.tracking.position.v1",
            "urn:sendstack-bridge:schema:position:v1",
        ),
        (
            "devices",
            DEVICE,
            "sendstack.tracking.device-status",
            "com.sendstack.tracking.device_status.v1",
            "urn:sendstack-bridge:schema:device_status:v1",
        ),
        (
            "events",
            EVENT,
            "sendstack.tracking.events",
            "com.sendstack.tracking.event.overspeed.v1",
            "urn:sendstack-bridge:schema:event:v1",
        ),
    ],
)
def test_to_record_per_kind(
    section: str, raw_item: dict[str, object], topic: str, type_: str, schema: str
) -> None:
    """Each kind becomes a binary-mode CloudEvent on its topic, keyed by device."""
    item = item_of(section, raw_item)
    record = to_record(item, TOPICS, received_at=RECEIVED_AT)
    assert record == OutboundRecord(
        topic=topic,
        key=b"41",
        value=orjson.dumps(item.data),
        headers=(
            ("ce_specversion", b"1.0"),
            ("ce_id", item.event_id.encode()),
            ("ce_source", b"/sendstack/tracking"),
            ("ce_type", type_.encode()),
            ("ce_time", item.event_time.encode()),
            ("ce_subject", b"41"),
            ("ce_dataschema", schema.encode()),
            ("content-type", b"application/json"),
            ("ce_partitionkey", b"41"),
            ("ce_bridgereceivedat", RECEIVED_AT.encode()),
        ),
        dedupe_id=item.event_id,
        event_time_ms=item.event_time_ms,
    )
    assert orjson.loads(record.value) == item.data


@pytest.mark.parametrize("canonical", sorted(CANONICAL_EVENT_TYPES))
def test_every_event_type_has_its_ce_type(canonical: str) -> None:
    """An event's ce_type names its canonical event type."""
    item = Item("event", canonical, "7", "event:1", "2025-06-14T09:12:04.000Z", 0, {})
    headers = dict(to_record(item, TOPICS, received_at=RECEIVED_AT).headers)
    assert headers["ce_type"] == f"com.sendstack.tracking.event.{canonical}.v1".encode()
    assert ce_type("event", canonical) == headers["ce_type"].decode()


def test_custom_topics_and_source() -> None:
    """Topic names and ce_source are configurable."""
    topics = Topics(positions="p", device_status="d", events="e", dead_letter="x")
    source = "/sendstack/tracking/eu-1"
    for section, raw_item, topic in (
        ("positions", POSITION, "p"),
        ("devices", DEVICE, "d"),
        ("events", EVENT, "e"),
    ):
        record = to_record(
            item_of(section, raw_item), topics, received_at=RECEIVED_AT, source=source
        )
        assert record.topic == topic
        assert dict(record.headers)["ce_source"] == source.encode()


def test_an_account_adds_its_header_and_counts_in_the_size() -> None:
    """With an account the record gains a bridge_account header, and its size
    still equals the size computed from its parts; without, no header."""
    item = item_of("positions", POSITION)
    plain = to_record(item, TOPICS, received_at=RECEIVED_AT)
    tagged = to_record(item, TOPICS, received_at=RECEIVED_AT, account=b"beta")
    assert ACCOUNT_HEADER not in dict(plain.headers)
    assert dict(tagged.headers)[ACCOUNT_HEADER] == b"beta"
    assert tagged.headers[:-1] == plain.headers
    rebuilt = OutboundRecord(
        topic=tagged.topic,
        key=tagged.key,
        value=tagged.value,
        headers=tagged.headers,
        dedupe_id=tagged.dedupe_id,
        event_time_ms=tagged.event_time_ms,
    )
    assert tagged.size == rebuilt.size
    # The journal sizes both from their size and header names alone.
    for record in (plain, tagged):
        assert encoded_size(record) == len(encode(0, record))


def test_default_topics_and_source() -> None:
    """The default topic names and source are the documented ones."""
    assert Topics() == Topics(
        positions="sendstack.tracking.positions",
        device_status="sendstack.tracking.device-status",
        events="sendstack.tracking.events",
        dead_letter="sendstack.tracking.dlq",
    )
    assert DEFAULT_SOURCE == "/sendstack/tracking"


def test_non_ascii_device_id_is_utf8() -> None:
    """Keys and id headers are UTF-8."""
    item = item_of("positions", {**POSITION, "deviceId": "vän-7"})
    record = to_record(item, TOPICS, received_at=RECEIVED_AT)
    assert record.key == "vän-7".encode()
    assert dict(record.headers)["ce_subject"] == "vän-7".encode()


@pytest.mark.parametrize(
    ("kind", "event_type"),
    [("event", None), ("event", "ignition"), ("position", "overspeed")],
)
def test_to_record_refuses_items_without_a_type(
    kind: str, event_type: str | None
) -> None:
    """An item whose kind and event type have no ce_type is a programming error."""
    item = Item(kind, event_type, "7", "x:1", "2025-06-14T09:12:04.000Z", 0, {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no CloudEvents type"):
        to_record(item, TOPICS, received_at=RECEIVED_AT)


def test_ce_type_refuses_non_canonical_event_types() -> None:
    """ce_type only names the six canonical event types."""
    with pytest.raises(ValueError, match="not a canonical event type"):
        ce_type("event", "deviceOverspeed")
    assert ce_type("position") == "com.sendstack.tracking.position.v1"


def test_data_schemas_name_every_kind() -> None:
    """Every kind has a v1 data schema URN."""
    assert set(DATA_SCHEMAS) == {"position", "device_status", "event"}
    for kind, urn in DATA_SCHEMAS.items():
        assert urn == f"urn:sendstack-bridge:schema:{kind}:v1"


def test_size_counts_key_value_and_headers() -> None:
    """size adds value, key, header names and header values."""
    record = OutboundRecord(
        topic="t",
        key=b"ab",
        value=b"12345",
        headers=(("h1", b"xyz"), ("h", b"")),
        dedupe_id=None,
        event_time_ms=None,
    )
    assert record.size == 5 + 2 + (2 + 3) + (1 + 0)
    keyless = OutboundRecord("t", None, b"12345", (), None, None)
    assert keyless.size == 5


# --------------------------------------------------------------------------
# Dead letters


@pytest.mark.parametrize("reason", REJECTION_REASONS)
def test_dead_letter_record(reason: str) -> None:
    """A rejected frame goes verbatim to the DLQ with the reason in headers."""
    raw = b'{"positions": [{"id": 1}], "weird": true}'
    rejection = FrameRejection(reason, "positions[0].deviceId: missing")
    record = dead_letter_record(raw, rejection, TOPICS, received_at=RECEIVED_AT)
    content_type = (
        b"application/octet-stream"
        if reason in UNPARSED_REASONS
        else b"application/json"
    )
    assert record == OutboundRecord(
        topic="sendstack.tracking.dlq",
        key=None,
        value=raw,
        headers=(
            ("bridge_dlq_reason", reason.encode()),
            ("bridge_dlq_detail", b"positions[0].deviceId: missing"),
            ("bridge_dlq_origin", b"stream"),
            ("bridge_dlq_received_at", RECEIVED_AT.encode()),
            ("content-type", content_type),
        ),
        dedupe_id=None,
        event_time_ms=None,
    )


def test_dead_letter_for_webhook_origin_and_explicit_content_type() -> None:
    """The helper is generic: origin and content type can be given."""
    record = dead_letter_record(
        b"a=1",
        FrameRejection("bad_signature", "signature mismatch"),
        Topics(dead_letter="webhooks.dlq"),
        received_at=RECEIVED_AT,
        origin="webhook",
        content_type="application/x-www-form-urlencoded",
    )
    headers = dict(record.headers)
    assert record.topic == "webhooks.dlq"
    assert headers["bridge_dlq_origin"] == b"webhook"
    assert headers["bridge_dlq_reason"] == b"bad_signature"
    assert headers["content-type"] == b"application/x-www-form-urlencoded"


def test_dead_letter_truncates_with_evidence() -> None:
    """An input over the limit is cut, flagged, and fingerprinted in full."""
    raw = b'{"positions": "' + b"x" * 100 + b'"}'
    record = dead_letter_record(
        raw,
        FrameRejection("not_an_array", "positions: a string, expected an array"),
        TOPICS,
        received_at=RECEIVED_AT,
        max_value_bytes=50,
    )
    headers = dict(record.headers)
    assert record.value == raw[:50]
    assert headers["bridge_dlq_truncated"] == b"true"
    assert headers["bridge_dlq_original_bytes"] == str(len(raw)).encode()
    assert headers["bridge_dlq_sha256"] == hashlib.sha256(raw).hexdigest().encode()
    # Cut JSON is no longer JSON.
    assert headers["content-type"] == b"application/octet-stream"


def test_dead_letter_at_the_limit_is_not_truncated() -> None:
    """An input exactly at the limit is kept whole and unflagged."""
    raw = b"x" * 50
    record = dead_letter_record(
        raw,
        FrameRejection("malformed_json", "not JSON"),
        TOPICS,
        received_at=RECEIVED_AT,
        max_value_bytes=50,
    )
    assert record.value == raw
    assert "bridge_dlq_truncated" not in dict(record.headers)


def test_dead_letter_default_limit_fits_a_full_size_frame_prefix() -> None:
    """By default a maximum-size frame is cut to 900 000 bytes."""
    raw = b"{" + b" " * 1_048_574 + b"}"
    decoded = CODEC.decode(raw + b" ")
    assert decoded.rejection is not None
    record = dead_letter_record(
        raw + b" ", decoded.rejection, TOPICS, received_at=RECEIVED_AT
    )
    assert len(record.value) == 900_000
    assert dict(record.headers)["bridge_dlq_reason"] == b"oversize"


def test_dead_letter_refuses_negative_limit() -> None:
    """A negative value limit is a programming error."""
    with pytest.raises(ValueError, match="max_value_bytes"):
        dead_letter_record(
            b"",
            FrameRejection("empty", "x"),
            TOPICS,
            received_at=RECEIVED_AT,
            max_value_bytes=-1,
        )


@given(st.binary(max_size=200))
def test_any_frame_yields_publishable_records(raw: bytes) -> None:
    """Whatever the frame, decode plus records yields only well-formed records."""
    decoded = CODEC.decode(raw)
    records = [
        to_record(item, TOPICS, received_at=RECEIVED_AT) for item in decoded.items
    ]
    if decoded.rejection is not None:
        records.append(
            dead_letter_record(raw, decoded.rejection, TOPICS, received_at=RECEIVED_AT)
        )
        assert records[-1].value == raw
    for record in records:
        assert record.size >= len(record.value)
        for name, value in record.headers:
            assert isinstance(name, str)
            assert isinstance(value, bytes)


@given(valid_frames)
def test_records_are_deterministic(case: tuple[bytes, int]) -> None:
    """The same frame and receive time give byte-identical records."""
    raw, count = case
    first = [
        to_record(i, TOPICS, received_at=RECEIVED_AT) for i in CODEC.decode(raw).items
    ]
    again = [
        to_record(i, TOPICS, received_at=RECEIVED_AT) for i in CODEC.decode(raw).items
    ]
    assert first == again
    assert len(first) == count
    for record in first:
        headers = dict(record.headers)
        assert record.key == headers["ce_subject"] == headers["ce_partitionkey"]
        assert headers["ce_id"].decode() == record.dedupe_id


# --------------------------------------------------------------------------
# iso_ms


@pytest.mark.parametrize(
    ("epoch_seconds", "expected"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1_749_892_323, "2025-06-14T09:12:03.000Z"),
        (1_749_892_323.123, "2025-06-14T09:12:03.123Z"),
        (1_749_892_323.9996, "2025-06-14T09:12:04.000Z"),
        (-0.001, "1969-12-31T23:59:59.999Z"),
        (-62_135_596_800, "0001-01-01T00:00:00.000Z"),
        (253_402_300_799.999, "9999-12-31T23:59:59.999Z"),
    ],
)
def test_iso_ms(epoch_seconds: float, expected: str) -> None:
    """iso_ms renders UTC with zero-padded fields and rounded milliseconds."""
    assert iso_ms(epoch_seconds) == expected


@pytest.mark.parametrize(
    "epoch_seconds", [float("nan"), float("inf"), -float("inf"), 1e12, -62_135_596_801]
)
def test_iso_ms_refuses_impossible_instants(epoch_seconds: float) -> None:
    """Non-finite or out-of-range instants raise ValueError."""
    with pytest.raises(ValueError, match="instant"):
        iso_ms(epoch_seconds)


@given(st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_999))
def test_iso_ms_round_trips(epoch_ms: int) -> None:
    """iso_ms output parses back to the same millisecond."""
    text = iso_ms(epoch_ms / 1000)
    assert len(text) == 24
    assert text.endswith("Z")
    parsed = datetime.fromisoformat(text)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert (parsed - epoch) // timedelta(milliseconds=1) == epoch_ms


def test_received_epoch_reads_the_receipt_header_back() -> None:
    """received_epoch gives back, to the ms, the instant iso_ms wrote into
    ce_bridgereceivedat, and None for a record without it or with a bad one."""
    instant = 1_796_573_958.5937
    header = ("ce_bridgereceivedat", iso_ms(instant).encode())
    record = OutboundRecord("t", None, b"", (header,), None, None)
    received = received_epoch(record)
    assert received is not None
    assert received == pytest.approx(instant, abs=0.001)
    bare = OutboundRecord("t", None, b"", (), None, None)
    assert received_epoch(bare) is None
    garbled = OutboundRecord(
        "t", None, b"", (("ce_bridgereceivedat", b"\xffnot a time"),), None, None
    )
    assert received_epoch(garbled) is None
