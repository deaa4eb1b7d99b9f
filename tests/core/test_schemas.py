"""Tests for bridge/schemas: every record the bridge writes matches its schema.

``jsonschema`` is not a dependency, so this file carries a validator for the
small subset of JSON Schema 2020-12 the schemas use. It refuses any keyword
outside that subset, so a schema cannot silently rely on an unchecked rule.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import orjson
import pytest
from hypothesis import given

from bridge.core.codec import (
    CANONICAL_EVENT_TYPES,
    REJECTION_REASONS,
    FrameRejection,
    TraccarJsonCodec,
)
from bridge.core.records import (
    DATA_SCHEMAS,
    OutboundRecord,
    Topics,
    ce_type,
    dead_letter_record,
    iso_ms,
    to_record,
)
from tests.core.test_codec import DEVICE, EVENT, POSITION, frame, valid_frames, with_
from tests.schema_check import check_schema, schema_errors

CODEC = TraccarJsonCodec()
TOPICS = Topics()
RECEIVED_AT = iso_ms(1_749_892_325.5)


def errors(schema: dict[str, Any], instance: object) -> list[str]:
    """The problems of ``instance`` against ``schema`` (jsonschema, 2020-12)."""
    return schema_errors(schema, instance)


def load(name: str) -> dict[str, Any]:
    """Load a schema shipped as package data."""
    text = resources.files("bridge").joinpath("schemas", name).read_bytes()
    schema: dict[str, Any] = orjson.loads(text)
    return schema


SCHEMA_FILES = [
    "position.v1.json",
    "device_status.v1.json",
    "event.v1.json",
    "headers.v1.json",
    "dead_letter_headers.v1.json",
]
BY_URN = {load(name)["$id"]: load(name) for name in SCHEMA_FILES}
HEADERS = load("headers.v1.json")
DLQ_HEADERS = load("dead_letter_headers.v1.json")


def assert_record_matches_contract(record: OutboundRecord) -> None:
    """A published record's headers and value validate; every value key is declared."""
    headers = {name: value.decode() for name, value in record.headers}
    assert errors(HEADERS, headers) == []
    schema = BY_URN[headers["ce_dataschema"]]
    value = orjson.loads(record.value)
    assert errors(schema, value) == []
    # The shipped schemas tolerate unknown properties (additive evolution); the
    # bridge itself must only emit documented ones.
    assert set(value) <= set(schema["properties"])


def test_validator_catches_violations() -> None:
    """The test validator rejects wrong types, enums, ranges, patterns and misses."""
    schema = load("position.v1.json")
    good: dict[str, object] = {
        "deviceId": "1",
        "positionId": None,
        "fixTime": "2025-06-14T09:12:03.000Z",
        "latitude": 0,
        "longitude": 0,
        "altitude": None,
        "speedKnots": None,
        "speedKph": None,
        "course": None,
        "accuracy": None,
        "valid": None,
        "attributes": {},
    }
    assert errors(schema, good) == []
    bad_cases = [
        {**good, "deviceId": 1},
        {**good, "deviceId": ""},
        {**good, "latitude": 90.5},
        {**good, "longitude": -181},
        {**good, "fixTime": "2025-06-14T09:12:03Z"},
        {**good, "valid": "true"},
        {**good, "extra": {}},
        {key: value for key, value in good.items() if key != "speedKph"},
    ]
    for bad in bad_cases:
        assert errors(schema, bad) != [], bad
    event_schema = load("event.v1.json")
    assert any("enum" in e for e in errors(event_schema, {"eventType": "sos"}))
    assert errors(HEADERS, {"ce_specversion": "0.3"}) != []
    assert errors({"additionalProperties": False}, {"x": 1}) != []


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_schema_files_are_well_formed(name: str) -> None:
    """Each schema is a valid 2020-12 schema with its file's URN as $id."""
    schema = load(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert (
        schema["$id"]
        == f"urn:sendstack-bridge:schema:{name.removesuffix('.v1.json')}:v1"
    )
    check_schema(schema)
    for sub in schema.get("properties", {}).values():
        assert "description" in sub


def test_data_schemas_exist_for_every_kind() -> None:
    """Every ce_dataschema URN the bridge emits is the $id of a shipped schema."""
    assert set(DATA_SCHEMAS.values()) <= set(BY_URN)


def test_enums_match_the_code() -> None:
    """Schema enums list exactly the canonical event types and ce_types."""
    assert (
        set(load("event.v1.json")["properties"]["eventType"]["enum"])
        == CANONICAL_EVENT_TYPES
    )
    ce_types = {ce_type("position"), ce_type("device_status")} | {
        ce_type("event", name) for name in CANONICAL_EVENT_TYPES
    }
    assert set(HEADERS["properties"]["ce_type"]["enum"]) == ce_types
    assert set(HEADERS["properties"]["ce_dataschema"]["enum"]) == set(
        DATA_SCHEMAS.values()
    )


VARIED_FRAMES = [
    frame(positions=[POSITION]),
    frame(devices=[DEVICE]),
    frame(events=[EVENT]),
    frame(
        positions=[
            with_(POSITION, id=..., speed=None, valid=..., attributes=...),
            with_(
                POSITION,
                fixTime=...,
                deviceTime="2025-06-14T10:12:03+01:00",
                serverTime="2025-06-14T09:12:04.5Z",
                protocol="osmand",
            ),
            {
                "deviceId": "abc",
                "fixTime": "2025-06-14T09:12:03Z",
                "latitude": -90,
                "longitude": 180,
            },
        ],
        devices=[
            with_(DEVICE, name=None, uniqueId=..., positionId=0, groupId=3),
            with_(DEVICE, id="6651bb20cd34ef56a1b2c3d4", status="offline"),
        ],
        events=[
            with_(EVENT, type="alarm", attributes={"alarm": "lowBattery"}),
            with_(EVENT, type="GEOFENCE_IN", geofenceId=12, id=...),
            with_(EVENT, type="NO_SIGNAL_ALERT", positionId=..., maintenanceId=0),
            with_(EVENT, type="deviceStopped", attributes=None),
            with_(EVENT, type="geofenceExit", geofenceId="gf-1"),
            with_(EVENT, type="LOW_BATTERY_ALERT"),
        ],
    ),
]


@pytest.mark.parametrize("raw", VARIED_FRAMES)
def test_records_validate_against_their_schemas(raw: bytes) -> None:
    """Records from a varied set of frames validate (headers and value)."""
    decoded = CODEC.decode(raw)
    assert decoded.rejection is None
    assert decoded.items
    for item in decoded.items:
        assert_record_matches_contract(to_record(item, TOPICS, received_at=RECEIVED_AT))


def test_every_kind_and_event_type_is_covered() -> None:
    """The varied frames exercise every kind and canonical event type."""
    items = [item for raw in VARIED_FRAMES for item in CODEC.decode(raw).items]
    assert {item.kind for item in items} == {"position", "device_status", "event"}
    assert {
        item.event_type for item in items if item.kind == "event"
    } == CANONICAL_EVENT_TYPES


@given(valid_frames)
def test_generated_records_validate(case: tuple[bytes, int]) -> None:
    """Records from any valid generated frame validate against their schemas."""
    raw, _ = case
    for item in CODEC.decode(raw).items:
        assert_record_matches_contract(to_record(item, TOPICS, received_at=RECEIVED_AT))


@pytest.mark.parametrize("reason", REJECTION_REASONS)
@pytest.mark.parametrize("max_value_bytes", [900_000, 4])
def test_dead_letter_headers_validate(reason: str, max_value_bytes: int) -> None:
    """Dead-letter headers, truncated or not, validate against their schema."""
    record = dead_letter_record(
        b'{"positions": 1}',
        FrameRejection(reason, "positions: a number, expected an array"),
        TOPICS,
        received_at=RECEIVED_AT,
        max_value_bytes=max_value_bytes,
    )
    headers = {name: value.decode() for name, value in record.headers}
    assert errors(DLQ_HEADERS, headers) == []
    assert set(headers) <= set(DLQ_HEADERS["properties"])


def test_real_rejections_validate_as_dead_letter_headers() -> None:
    """Rejections the codec produces fit the dead-letter header schema."""
    for raw in [
        b"",
        b"nope",
        b"[]",
        frame(x=1),
        frame(events=[with_(EVENT, type="sos")]),
    ]:
        rejection = CODEC.decode(raw).rejection
        assert rejection is not None
        record = dead_letter_record(raw, rejection, TOPICS, received_at=RECEIVED_AT)
        headers = {name: value.decode() for name, value in record.headers}
        assert errors(DLQ_HEADERS, headers) == []
