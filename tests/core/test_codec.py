"""Tests for bridge.core.codec: the traccar-json v1 frame codec."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from bridge.core.codec import (
    ALARM_TYPES,
    CANONICAL_EVENT_TYPES,
    CODEC_NAMES,
    EVENT_TYPES,
    REJECTION_REASONS,
    UNPARSED_REASONS,
    Decoded,
    FrameCodec,
    FrameRejection,
    Item,
    TraccarJsonCodec,
    codec_by_name,
)

CODEC = TraccarJsonCodec()

# The three examples of docs/wire-format.md.
POSITION: dict[str, Any] = {
    "id": 88123,
    "deviceId": 41,
    "fixTime": "2025-06-14T09:12:03.000Z",
    "latitude": 6.4521,
    "longitude": 3.3902,
    "altitude": 0.0,
    "speed": 12.4,
    "course": 181.0,
    "accuracy": 5.0,
    "valid": True,
    "attributes": {"seq": 17},
}
DEVICE: dict[str, Any] = {
    "id": 41,
    "name": "Van 7",
    "uniqueId": "864000000000001",
    "status": "online",
    "lastUpdate": "2025-06-14T09:12:04.000Z",
    "positionId": 88123,
    "attributes": {"seq": 18},
}
EVENT: dict[str, Any] = {
    "id": 5520,
    "type": "deviceOverspeed",
    "eventTime": "2025-06-14T09:12:04.000Z",
    "deviceId": 41,
    "positionId": 88123,
    "geofenceId": 0,
    "attributes": {"speed": 48.6, "speedLimit": 40, "seq": 19},
}
T_03 = 1_749_892_323_000  # 2025-06-14T09:12:03.000Z in epoch ms
T_04 = T_03 + 1000


def frame(**sections: Any) -> bytes:
    """Encode a frame object."""
    return orjson.dumps(sections)


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """Copy ``base`` with ``changes``; a value of ``...`` deletes the key."""
    item = copy.deepcopy(base)
    for key, value in changes.items():
        if value is ...:
            item.pop(key, None)
        else:
            item[key] = value
    return item


def decode_one(section: str, item: dict[str, Any]) -> Item:
    """Decode a one-item frame that must be fully understood."""
    decoded = CODEC.decode(frame(**{section: [item]}))
    assert decoded.rejection is None
    assert len(decoded.items) == 1
    return decoded.items[0]


def rejection_of(raw: bytes) -> FrameRejection:
    """Decode a frame that must be rejected and return the rejection."""
    decoded = CODEC.decode(raw)
    assert decoded.rejection is not None
    return decoded.rejection


# --------------------------------------------------------------------------
# The three kinds


def test_position_example_is_normalised() -> None:
    """The documented position example becomes the documented record value."""
    item = decode_one("positions", POSITION)
    assert item == Item(
        kind="position",
        event_type=None,
        device_id="41",
        event_id="position:88123",
        event_time="2025-06-14T09:12:03.000Z",
        event_time_ms=T_03,
        data={
            "deviceId": "41",
            "positionId": "88123",
            "fixTime": "2025-06-14T09:12:03.000Z",
            "latitude": 6.4521,
            "longitude": 3.3902,
            "altitude": 0.0,
            "speedKnots": 12.4,
            "speedKph": 22.965,
            "course": 181.0,
            "accuracy": 5.0,
            "valid": True,
            "attributes": {"seq": 17},
        },
    )


def test_device_example_is_normalised() -> None:
    """The documented device example becomes a device_status item."""
    item = decode_one("devices", DEVICE)
    assert item == Item(
        kind="device_status",
        event_type=None,
        device_id="41",
        event_id=f"device:41:{T_04}:online",
        event_time="2025-06-14T09:12:04.000Z",
        event_time_ms=T_04,
        data={
            "deviceId": "41",
            "name": "Van 7",
            "uniqueId": "864000000000001",
            "status": "online",
            "lastUpdate": "2025-06-14T09:12:04.000Z",
            "positionId": "88123",
            "attributes": {"seq": 18},
        },
    )


def test_event_example_is_normalised() -> None:
    """The documented event example becomes a canonical overspeed item."""
    item = decode_one("events", EVENT)
    assert item == Item(
        kind="event",
        event_type="overspeed",
        device_id="41",
        event_id="event:5520",
        event_time="2025-06-14T09:12:04.000Z",
        event_time_ms=T_04,
        data={
            "eventId": "5520",
            "eventType": "overspeed",
            "upstreamType": "deviceOverspeed",
            "eventTime": "2025-06-14T09:12:04.000Z",
            "deviceId": "41",
            "positionId": "88123",
            "geofenceId": None,
            "attributes": {"speed": 48.6, "speedLimit": 40, "seq": 19},
        },
    )


def test_mixed_frame_keeps_frame_order() -> None:
    """Items come out in frame order: section by section, item by item."""
    raw = frame(
        events=[EVENT],
        positions=[POSITION, with_(POSITION, id=88124)],
        devices=[DEVICE],
    )
    decoded = CODEC.decode(raw)
    assert decoded.rejection is None
    assert not decoded.keepalive
    assert [item.event_id for item in decoded.items] == [
        "event:5520",
        "position:88123",
        "position:88124",
        f"device:41:{T_04}:online",
    ]


@pytest.mark.parametrize(("upstream", "canonical"), sorted(EVENT_TYPES.items()))
def test_every_upstream_event_type_maps(upstream: str, canonical: str) -> None:
    """Every upstream type in the table decodes to its canonical event type."""
    item = decode_one("events", with_(EVENT, type=upstream))
    assert item.event_type == canonical
    assert item.data["eventType"] == canonical
    assert item.data["upstreamType"] == upstream


@pytest.mark.parametrize(("alarm", "canonical"), sorted(ALARM_TYPES.items()))
def test_alarm_maps_through_its_attribute(alarm: str, canonical: str) -> None:
    """A Traccar ``alarm`` event maps by ``attributes.alarm``."""
    item = decode_one("events", with_(EVENT, type="alarm", attributes={"alarm": alarm}))
    assert item.event_type == canonical
    assert item.data["upstreamType"] == "alarm"


def test_event_tables_cover_exactly_the_canonical_types() -> None:
    """Each of the six canonical event types is reachable, and nothing else."""
    reachable = set(EVENT_TYPES.values()) | set(ALARM_TYPES.values())
    assert reachable == CANONICAL_EVENT_TYPES
    assert len(CANONICAL_EVENT_TYPES) == 6


def test_geofence_event_keeps_geofence_id() -> None:
    """A geofence event carries its geofence id as a string."""
    item = decode_one("events", with_(EVENT, type="geofenceExit", geofenceId=7))
    assert item.event_type == "geofence_out"
    assert item.data["geofenceId"] == "7"


def test_keepalive() -> None:
    """``{}`` is a keep-alive: no items and no rejection."""
    assert CODEC.decode(b"{}") == Decoded(items=(), rejection=None, keepalive=True)
    assert CODEC.decode(b" { } \n").keepalive


def test_empty_sections_are_neither_keepalive_nor_rejected() -> None:
    """Empty arrays are understood: nothing to publish, nothing to dead-letter."""
    decoded = CODEC.decode(frame(positions=[], devices=[], events=[]))
    assert decoded == Decoded(items=(), rejection=None, keepalive=False)


# --------------------------------------------------------------------------
# Field normalisation


def test_position_optional_fields_absent() -> None:
    """Absent optional position fields become null; absent times are omitted."""
    minimal = {
        "id": 1,
        "deviceId": 2,
        "fixTime": "2025-06-14T09:12:03.000Z",
        "latitude": 0,
        "longitude": 0,
    }
    data = decode_one("positions", minimal).data
    assert data == {
        "deviceId": "2",
        "positionId": "1",
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


def test_position_null_fields_are_absent() -> None:
    """A JSON null reads like an absent field."""
    item = with_(POSITION, speed=None, valid=None, attributes=None, deviceTime=None)
    data = decode_one("positions", item).data
    assert data["speedKnots"] is None
    assert data["speedKph"] is None
    assert data["valid"] is None
    assert data["attributes"] == {}
    assert "deviceTime" not in data


def test_position_keeps_device_and_server_time() -> None:
    """deviceTime and serverTime are normalised and kept alongside fixTime."""
    item = with_(
        POSITION,
        deviceTime="2025-06-14T10:12:02+01:00",
        serverTime="2025-06-14T09:12:05.250Z",
    )
    data = decode_one("positions", item).data
    assert data["fixTime"] == "2025-06-14T09:12:03.000Z"
    assert data["deviceTime"] == "2025-06-14T09:12:02.000Z"
    assert data["serverTime"] == "2025-06-14T09:12:05.250Z"


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        (
            {
                "deviceTime": "2025-06-14T09:12:01Z",
                "serverTime": "2025-06-14T09:12:02Z",
            },
            "2025-06-14T09:12:01.000Z",
        ),
        ({"serverTime": "2025-06-14T09:12:02Z"}, "2025-06-14T09:12:02.000Z"),
    ],
)
def test_position_time_fallback(present: dict[str, str], expected: str) -> None:
    """Without fixTime, the event time falls back to deviceTime, then serverTime."""
    item = decode_one("positions", with_(POSITION, fixTime=..., **present))
    assert item.event_time == expected
    assert item.data["fixTime"] == expected


@pytest.mark.parametrize(
    ("knots", "kph"),
    [(0, 0.0), (1, 1.852), (12.4, 22.965), (100, 185.2), (0.0003, 0.001)],
)
def test_speed_in_kph(knots: float, kph: float) -> None:
    """Speed is kept in knots and converted to km/h with three decimals."""
    data = decode_one("positions", with_(POSITION, speed=knots)).data
    assert data["speedKnots"] == knots
    assert data["speedKph"] == kph


def test_unknown_item_keys_go_to_extra() -> None:
    """Keys a kind does not model are kept whole under ``extra``."""
    extras = {"protocol": "osmand", "network": {"cells": [1, 2]}, "outdated": False}
    for section, base in (
        ("positions", POSITION),
        ("devices", DEVICE),
        ("events", EVENT),
    ):
        data = decode_one(section, {**base, **extras}).data
        assert data["extra"] == extras


def test_attributes_are_kept_whole() -> None:
    """Nested attributes pass through untouched."""
    attributes = {"seq": 1, "nested": {"a": [1, {"b": None}]}, "text": "é"}
    data = decode_one("positions", with_(POSITION, attributes=attributes)).data
    assert data["attributes"] == attributes


@pytest.mark.parametrize(
    ("upstream", "expected"),
    [(41, "41"), ("6651bb20cd34ef56a1b2c3d4", "6651bb20cd34ef56a1b2c3d4"), (0, "0")],
)
def test_ids_become_strings(upstream: object, expected: str) -> None:
    """Integer and string ids both become strings (key, ce_subject, data)."""
    item = decode_one("positions", with_(POSITION, deviceId=upstream, id=upstream))
    assert item.device_id == expected
    assert item.data["deviceId"] == expected
    assert item.event_id == f"position:{expected}"


@pytest.mark.parametrize("ref", [0, None, ...])
def test_reference_ids_zero_or_absent_are_null(ref: object) -> None:
    """Traccar's ``0`` (and absence) for a referenced id becomes null."""
    device = decode_one("devices", with_(DEVICE, positionId=ref)).data
    event = decode_one("events", with_(EVENT, positionId=ref, geofenceId=ref)).data
    assert device["positionId"] is None
    assert event["positionId"] is None
    assert event["geofenceId"] is None


def test_device_optional_strings_absent() -> None:
    """A device without name and uniqueId has them as null."""
    data = decode_one("devices", with_(DEVICE, name=..., uniqueId=None)).data
    assert data["name"] is None
    assert data["uniqueId"] is None


def test_device_event_id_uses_update_instant_and_status() -> None:
    """A device update's id is device, lastUpdate (epoch ms) and status."""
    offline = decode_one(
        "devices",
        with_(DEVICE, status="offline", lastUpdate="2025-06-14T10:12:04.5+01:00"),
    )
    assert offline.event_id == f"device:41:{T_04 + 500}:offline"


# --------------------------------------------------------------------------
# Timestamps


@pytest.mark.parametrize(
    ("upstream", "iso", "epoch_ms"),
    [
        ("2025-06-14T09:12:03.000Z", "2025-06-14T09:12:03.000Z", T_03),
        ("2025-06-14T09:12:03.123Z", "2025-06-14T09:12:03.123Z", T_03 + 123),
        ("2025-06-14T09:12:03Z", "2025-06-14T09:12:03.000Z", T_03),
        ("2025-06-14T09:12:03.000+00:00", "2025-06-14T09:12:03.000Z", T_03),
        ("2025-06-14T09:12:03.789+00:00", "2025-06-14T09:12:03.789Z", T_03 + 789),
        ("2025-06-14T09:12:03.789-00:00", "2025-06-14T09:12:03.789Z", T_03 + 789),
        ("2025-06-14T09:12:03+00:00", "2025-06-14T09:12:03.000Z", T_03),
        ("2025-06-14T10:12:03.000+01:00", "2025-06-14T09:12:03.000Z", T_03),
        ("2025-06-14T03:42:03-05:30", "2025-06-14T09:12:03.000Z", T_03),
        ("2025-06-14T10:12:03+0100", "2025-06-14T09:12:03.000Z", T_03),
        ("2025-06-14T09:12:03.1Z", "2025-06-14T09:12:03.100Z", T_03 + 100),
        ("2025-06-14T09:12:03.123999Z", "2025-06-14T09:12:03.123Z", T_03 + 123),
        ("2025-06-14 09:12:03.5Z", "2025-06-14T09:12:03.500Z", T_03 + 500),
        ("2025-06-15T00:30:00.000+02:00", "2025-06-14T22:30:00.000Z", None),
        ("1970-01-01T00:00:00.000Z", "1970-01-01T00:00:00.000Z", 0),
        ("1969-12-31T23:59:59.999Z", "1969-12-31T23:59:59.999Z", -1),
        ("0999-01-01T00:00:00+00:00", "0999-01-01T00:00:00.000Z", None),
    ],
)
def test_timestamps_normalise(upstream: str, iso: str, epoch_ms: int | None) -> None:
    """Every accepted ISO-8601 form normalises to UTC ``...sssZ`` and epoch ms."""
    item = decode_one("events", with_(EVENT, eventTime=upstream))
    assert item.event_time == iso
    assert item.data["eventTime"] == iso
    expected_ms = epoch_ms
    if expected_ms is None:
        parsed = datetime.fromisoformat(iso)
        expected_ms = (parsed - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
            milliseconds=1
        )
    assert item.event_time_ms == expected_ms


@pytest.mark.parametrize(
    ("upstream", "detail"),
    [
        ("2025-06-14T09:12:03.000", "timestamp has no UTC offset"),
        ("2025-06-14", "timestamp has no UTC offset"),
        ("yesterday", "not an ISO-8601 timestamp"),
        ("2025-13-14T09:12:03.000Z", "not an ISO-8601 timestamp"),
        ("2025-06-14T24:12:03.000Z", "not an ISO-8601 timestamp"),
        ("2025-06-14T09:12:03.12ZZ", "not an ISO-8601 timestamp"),
        ("2025-06-14T09:12:03.12Z+00:00", "not an ISO-8601 timestamp"),
        ("2025-06-14T09:12:03.1x3+00:00", "not an ISO-8601 timestamp"),
        ("2025-06-14T09:12:03.000Z" + " " * 60, "not an ISO-8601 timestamp"),
        ("0001-01-01T00:30:00+01:00", "timestamp out of range"),
        ("9999-12-31T23:30:00-01:00", "timestamp out of range"),
        (1749892323000, "must be an ISO-8601 string"),
        ("", "not an ISO-8601 timestamp"),
    ],
)
def test_bad_timestamps_are_rejected(upstream: object, detail: str) -> None:
    """Unparseable, offset-less or out-of-range timestamps make the item invalid."""
    rejection = rejection_of(frame(events=[with_(EVENT, eventTime=upstream)]))
    assert rejection == FrameRejection("invalid_item", f"events[0].eventTime: {detail}")


# --------------------------------------------------------------------------
# Rejections


def _unit_frame(reason: str) -> bytes:
    """A frame whose only problem has the given reason."""
    return {
        "oversize": b"{" + b" " * 2_000_000 + b"}",
        "empty": b"",
        "malformed_json": b'{"positions": [',
        "not_an_object": b"[]",
        "unknown_field": frame(geofences=[]),
        "not_an_array": frame(positions={"id": 1}),
        "invalid_item": frame(positions=[with_(POSITION, latitude=91)]),
        "unknown_event_type": frame(events=[with_(EVENT, type="ignitionOn")]),
    }[reason]


@pytest.mark.parametrize("reason", REJECTION_REASONS)
def test_every_rejection_reason(reason: str) -> None:
    """Each documented reason code is produced by a frame with that problem."""
    decoded = CODEC.decode(_unit_frame(reason))
    assert decoded.rejection is not None
    assert decoded.rejection.reason == reason
    assert decoded.items == ()
    assert not decoded.keepalive
    assert (reason in UNPARSED_REASONS) == (
        reason in {"oversize", "empty", "malformed_json"}
    )


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b"", "frame is empty or whitespace"),
        (b" \r\n\t", "frame is empty or whitespace"),
        (b"nope", "not JSON: *(byte 0)"),
        (b'{"secret": "hunter2"', "not JSON: *(byte 20)"),
        (b'{"a": NaN}', None),
        (b"\xff\xfe", None),
        (b"[" * 2000, None),
        (b"[1]", "top level is an array, expected an object"),
        (b"null", "top level is null, expected an object"),
        (b"true", "top level is a boolean, expected an object"),
        (b'"x"', "top level is a string, expected an object"),
        (b"1.5", "top level is a number, expected an object"),
    ],
)
def test_frame_level_rejections(raw: bytes, detail: str | None) -> None:
    """Bytes that are not a JSON object are rejected with a precise detail."""
    rejection = rejection_of(raw)
    if detail is not None:
        # orjson's wording is not ours to pin; the frame around it is.
        prefix, star, suffix = detail.partition("*")
        if star:
            assert rejection.detail.startswith(prefix)
            assert rejection.detail.endswith(suffix)
            assert "hunter2" not in rejection.detail
        else:
            assert rejection.detail == detail
    assert len(rejection.detail) <= 300


def test_oversize_is_not_parsed() -> None:
    """A frame one byte over the limit is refused; one at the limit is decoded."""
    codec = TraccarJsonCodec(max_frame_bytes=len(b"{}"))
    assert codec.decode(b"{}").keepalive
    assert codec.decode(b"{} ").rejection == FrameRejection(
        "oversize", "frame is 3 bytes; limit 2"
    )
    # Not parsed: an oversize non-JSON frame is still "oversize", not malformed.
    rejection = codec.decode(b"\xff" * 10).rejection
    assert rejection is not None
    assert rejection.reason == "oversize"


NOT_AN_ID = "must be an integer or a non-empty string"
NOT_A_LATITUDE = "must be a number in [-90, 90]"
NOT_A_LONGITUDE = "must be a number in [-180, 180]"


def pos(**changes: Any) -> tuple[str, dict[str, Any]]:
    """A position section name and a changed copy of POSITION."""
    return "positions", with_(POSITION, **changes)


def dev(**changes: Any) -> tuple[str, dict[str, Any]]:
    """A device section name and a changed copy of DEVICE."""
    return "devices", with_(DEVICE, **changes)


def evt(**changes: Any) -> tuple[str, dict[str, Any]]:
    """An event section name and a changed copy of EVENT."""
    return "events", with_(EVENT, **changes)


@pytest.mark.parametrize(
    ("case", "detail"),
    [
        (pos(deviceId=...), "deviceId: missing"),
        (pos(deviceId=4.5), f"deviceId: {NOT_AN_ID}"),
        (pos(deviceId=True), f"deviceId: {NOT_AN_ID}"),
        (pos(deviceId=""), f"deviceId: {NOT_AN_ID}"),
        (pos(deviceId="x" * 129), f"deviceId: {NOT_AN_ID}"),
        (pos(id=[1]), f"id: {NOT_AN_ID}"),
        (pos(fixTime=...), "fixTime: missing (no deviceTime/serverTime)"),
        (pos(fixTime=None), "fixTime: missing (no deviceTime/serverTime)"),
        (pos(deviceTime="later"), "deviceTime: not an ISO-8601 timestamp"),
        (pos(serverTime=5), "serverTime: must be an ISO-8601 string"),
        (pos(latitude=...), f"latitude: {NOT_A_LATITUDE}"),
        (pos(latitude=90.0001), f"latitude: {NOT_A_LATITUDE}"),
        (pos(latitude=-91), f"latitude: {NOT_A_LATITUDE}"),
        (pos(latitude="6.45"), f"latitude: {NOT_A_LATITUDE}"),
        (pos(latitude=True), f"latitude: {NOT_A_LATITUDE}"),
        (pos(longitude=180.5), f"longitude: {NOT_A_LONGITUDE}"),
        (pos(longitude=None), f"longitude: {NOT_A_LONGITUDE}"),
        (pos(altitude="0"), "altitude: must be a number"),
        (pos(speed=False), "speed: must be a number"),
        (pos(course={}), "course: must be a number"),
        (pos(accuracy=[5]), "accuracy: must be a number"),
        (pos(valid="yes"), "valid: must be a boolean"),
        (pos(attributes=[]), "attributes: must be an object"),
        (dev(id=...), "id: missing"),
        (dev(status=...), "status: must be a non-empty string"),
        (dev(status=""), "status: must be a non-empty string"),
        (dev(status=1), "status: must be a non-empty string"),
        (dev(lastUpdate=...), "lastUpdate: missing"),
        (dev(name=7), "name: must be a string"),
        (dev(uniqueId=864000000000001), "uniqueId: must be a string"),
        (dev(positionId=-0.0), f"positionId: {NOT_AN_ID}"),
        (dev(attributes="x"), "attributes: must be an object"),
        (evt(type=...), "type: must be a non-empty string"),
        (evt(type=""), "type: must be a non-empty string"),
        (evt(attributes=1), "attributes: must be an object"),
        (evt(deviceId=...), "deviceId: missing"),
        (evt(id=False), f"id: {NOT_AN_ID}"),
        (evt(eventTime=...), "eventTime: missing"),
        (evt(geofenceId=False), f"geofenceId: {NOT_AN_ID}"),
    ],
)
def test_invalid_items(case: tuple[str, dict[str, Any]], detail: str) -> None:
    """An item missing or mistyping a field is ``invalid_item``, naming the field."""
    section, item = case
    rejection = rejection_of(frame(**{section: [item]}))
    assert rejection == FrameRejection("invalid_item", f"{section}[0].{detail}")


@pytest.mark.parametrize(
    ("item", "detail"),
    [
        (with_(EVENT, type="ignitionOn"), "type: 'ignitionOn' is not mapped"),
        (with_(EVENT, type="lowBattery"), "type: 'lowBattery' is not mapped"),
        (
            with_(EVENT, type="alarm", attributes={"alarm": "sos"}),
            "attributes.alarm: 'sos' is not mapped",
        ),
        (
            with_(EVENT, type="alarm", attributes={}),
            "attributes.alarm: missing for alarm",
        ),
        (
            with_(EVENT, type="alarm", attributes={"alarm": 3}),
            "attributes.alarm: missing for alarm",
        ),
        (with_(EVENT, type="ünknown\n" * 20), None),
    ],
)
def test_unknown_event_types(item: dict[str, Any], detail: str | None) -> None:
    """Events of a type outside the table are ``unknown_event_type``."""
    rejection = rejection_of(frame(events=[item]))
    assert rejection.reason == "unknown_event_type"
    if detail is not None:
        assert rejection.detail == f"events[0].{detail}"
    assert rejection.detail.isascii()
    assert "\n" not in rejection.detail


def test_non_object_items_are_invalid() -> None:
    """An array element that is not an object is ``invalid_item``."""
    rejection = rejection_of(frame(devices=[DEVICE, 41]))
    assert rejection == FrameRejection(
        "invalid_item", "devices[1]: a number, expected an object"
    )


def test_unknown_top_level_key_detail_is_bounded_and_ascii() -> None:
    """An unknown key is named, escaped and truncated, never dumped whole."""
    rejection = rejection_of(frame(**{"clé\x00" + "k" * 500: 1}))
    assert rejection.reason == "unknown_field"
    assert rejection.detail.startswith("unknown top-level key 'cl\\xe9\\x00kkk")
    assert rejection.detail.isascii()
    assert len(rejection.detail) < 80

    emoji = rejection_of(frame(**{"\U0001f600" * 40: 1})).detail
    assert emoji.endswith("...")
    assert len(emoji) < 80


def test_details_never_echo_payload_values() -> None:
    """FrameRejection details name fields, not the values that were wrong."""
    secret = "s3cr3t-value-from-payload"
    bad_items = [
        ("positions", with_(POSITION, latitude=secret)),
        ("positions", with_(POSITION, fixTime=secret)),
        ("devices", with_(DEVICE, name=[secret])),
        ("events", with_(EVENT, deviceId={"x": secret})),
    ]
    for section, item in bad_items:
        rejection = rejection_of(frame(**{section: [item]}))
        assert secret not in rejection.detail


def test_partial_frame_keeps_good_items() -> None:
    """Understood items of a partly bad frame are kept, and the frame is flagged."""
    raw = frame(
        positions=[POSITION, with_(POSITION, latitude=100), with_(POSITION, id=88124)],
        events=[with_(EVENT, type="ignitionOn"), EVENT],
        geofences=[],
        devices="nope",
    )
    decoded = CODEC.decode(raw)
    assert [item.event_id for item in decoded.items] == [
        "position:88123",
        "position:88124",
        "event:5520",
    ]
    assert decoded.rejection == FrameRejection(
        "invalid_item",
        "positions[1].latitude: must be a number in [-90, 90]; and 3 more problem(s)",
    )
    assert not decoded.keepalive


def test_missing_upstream_id_gets_a_digest_id() -> None:
    """Without an upstream id, the dedupe id is the kind plus a digest of the value."""
    position = decode_one("positions", with_(POSITION, id=...))
    event = decode_one("events", with_(EVENT, id=None))
    assert position.data["positionId"] is None
    assert event.data["eventId"] is None
    for item, kind in ((position, "position"), (event, "event")):
        prefix, digest = item.event_id.split(":")
        assert prefix == kind
        assert len(digest) == 32
        int(digest, 16)


def test_digest_id_is_stable_across_timestamp_spelling() -> None:
    """The digest covers the normalised value, so timestamp spelling does not matter."""
    a = decode_one("positions", with_(POSITION, id=...))
    b = decode_one(
        "positions", with_(POSITION, id=..., fixTime="2025-06-14T10:12:03+01:00")
    )
    c = decode_one("positions", with_(POSITION, id=..., latitude=6.4522))
    assert a.event_id == b.event_id
    assert a.event_id != c.event_id


# --------------------------------------------------------------------------
# Construction and registry


def test_max_frame_bytes_must_be_positive() -> None:
    """A non-positive frame limit is a configuration error."""
    with pytest.raises(ValueError, match="must be positive"):
        TraccarJsonCodec(max_frame_bytes=0)


def test_codec_by_name() -> None:
    """The registry builds the named codec with the given limit."""
    codec: FrameCodec = codec_by_name("traccar-json", max_frame_bytes=10)
    assert codec.name == "traccar-json"
    assert isinstance(codec, TraccarJsonCodec)
    assert codec.max_frame_bytes == 10
    assert CODEC_NAMES == ("traccar-json",)


def test_codec_by_name_unknown_lists_known_names() -> None:
    """An unknown codec name fails and lists the known names."""
    with pytest.raises(
        ValueError, match=r"unknown codec 'protobuf'; known codecs: traccar-json"
    ):
        codec_by_name("protobuf", max_frame_bytes=10)


# --------------------------------------------------------------------------
# Properties

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    _json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)

_timestamps = st.builds(
    lambda when, offset_minutes, style: (
        when.replace(tzinfo=UTC)
        .astimezone(timezone(timedelta(minutes=offset_minutes)))
        .isoformat(timespec=style)
        .replace("+00:00", "Z" if style == "milliseconds" else "+00:00")
    ),
    # Hypothesis takes naive bounds; the zone is applied above.
    st.datetimes(
        min_value=datetime(1971, 1, 1),  # noqa: DTZ001
        max_value=datetime(9998, 1, 1),  # noqa: DTZ001
    ),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
    st.sampled_from(["seconds", "milliseconds", "microseconds"]),
)
_ids = st.integers(min_value=0, max_value=2**63) | st.text(min_size=1, max_size=20)
_attributes = st.dictionaries(st.text(max_size=8), json_values, max_size=3)

valid_positions = st.fixed_dictionaries(
    {
        "deviceId": _ids,
        "fixTime": _timestamps,
        "latitude": st.floats(min_value=-90, max_value=90),
        "longitude": st.floats(min_value=-180, max_value=180),
    },
    optional={
        "id": _ids,
        "deviceTime": _timestamps,
        "serverTime": _timestamps,
        "altitude": st.floats(allow_nan=False, allow_infinity=False) | st.none(),
        "speed": st.floats(min_value=0, max_value=1000) | st.integers(0, 1000),
        "course": st.floats(min_value=0, max_value=360),
        "accuracy": st.floats(min_value=0, max_value=1e4),
        "valid": st.booleans(),
        "attributes": _attributes,
        "protocol": st.text(max_size=10),
    },
)
valid_devices = st.fixed_dictionaries(
    {
        "id": _ids,
        "status": st.sampled_from(["online", "offline", "unknown"]),
        "lastUpdate": _timestamps,
    },
    optional={
        "name": st.text(max_size=20),
        "uniqueId": st.text(max_size=20),
        "positionId": _ids,
        "attributes": _attributes,
        "groupId": st.integers(0, 100),
    },
)
valid_events = st.fixed_dictionaries(
    {
        "type": st.sampled_from(sorted(EVENT_TYPES)),
        "eventTime": _timestamps,
        "deviceId": _ids,
    },
    optional={
        "id": _ids,
        "positionId": _ids,
        "geofenceId": _ids,
        "attributes": _attributes,
        "maintenanceId": st.integers(0, 10),
    },
) | st.fixed_dictionaries(
    {
        "type": st.just("alarm"),
        "eventTime": _timestamps,
        "deviceId": _ids,
        "attributes": st.just({"alarm": "lowBattery", "seq": 3}),
    }
)
#: Frames made only of items the codec must understand, with their item count.
valid_frames = st.fixed_dictionaries(
    {},
    optional={
        "positions": st.lists(valid_positions, max_size=4),
        "devices": st.lists(valid_devices, max_size=4),
        "events": st.lists(valid_events, max_size=4),
    },
).map(lambda doc: (orjson.dumps(doc), sum(len(v) for v in doc.values())))


def _check_invariants(decoded: Decoded) -> None:
    """The structural promises every Decoded keeps."""
    assert isinstance(decoded, Decoded)
    if decoded.keepalive:
        assert decoded.items == ()
        assert decoded.rejection is None
    if decoded.rejection is not None:
        assert decoded.rejection.reason in REJECTION_REASONS
        assert 0 < len(decoded.rejection.detail) <= 300
    for item in decoded.items:
        assert item.event_time.endswith("Z")


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_decode_never_raises_on_bytes(raw: bytes) -> None:
    """Arbitrary bytes decode to a Decoded value without raising."""
    _check_invariants(CODEC.decode(raw))


@settings(max_examples=500)
@given(json_values)
def test_decode_never_raises_on_json(value: object) -> None:
    """Arbitrary JSON values decode to a Decoded value without raising."""
    _check_invariants(CODEC.decode(orjson.dumps(value)))


@settings(max_examples=500)
@given(
    st.dictionaries(
        st.sampled_from(["positions", "devices", "events", "other"]),
        st.lists(
            st.dictionaries(
                st.sampled_from(
                    [
                        "id",
                        "deviceId",
                        "fixTime",
                        "deviceTime",
                        "latitude",
                        "longitude",
                        "speed",
                        "valid",
                        "attributes",
                        "status",
                        "lastUpdate",
                        "type",
                        "eventTime",
                        "positionId",
                        "name",
                    ]
                ),
                json_values | _timestamps | st.sampled_from(sorted(EVENT_TYPES)),
            )
            | json_values,
            max_size=3,
        )
        | json_values,
    )
)
def test_decode_never_raises_on_frame_shaped_json(document: dict[str, Any]) -> None:
    """Frame-shaped JSON with arbitrary field values never makes decode raise."""
    _check_invariants(CODEC.decode(orjson.dumps(document)))


@given(valid_frames)
def test_valid_frames_are_fully_understood(case: tuple[bytes, int]) -> None:
    """A frame of valid items yields one item each and no rejection."""
    raw, count = case
    decoded = CODEC.decode(raw)
    assert decoded.rejection is None
    assert len(decoded.items) == count
    assert decoded.keepalive == (raw == b"{}")


@given(valid_frames)
def test_decoding_is_deterministic(case: tuple[bytes, int]) -> None:
    """Decoding the same frame twice gives equal items and event ids."""
    raw, _ = case
    first, second = CODEC.decode(raw), CODEC.decode(raw)
    assert first == second
    assert [i.event_id for i in first.items] == [i.event_id for i in second.items]


@given(valid_frames)
def test_event_time_is_canonical_utc(case: tuple[bytes, int]) -> None:
    """Every event time ends with Z, parses, has ms precision and matches epoch ms."""
    raw, _ = case
    for item in CODEC.decode(raw).items:
        assert len(item.event_time) == 24
        assert item.event_time.endswith("Z")
        parsed = datetime.fromisoformat(item.event_time)
        assert parsed.utcoffset() == timedelta(0)
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        assert (parsed - epoch) // timedelta(milliseconds=1) == item.event_time_ms


@given(valid_frames, st.data())
def test_partial_frames_keep_good_items(
    case: tuple[bytes, int], data: st.DataObject
) -> None:
    """Adding a bad item to a frame keeps every good item and sets a rejection."""
    raw, count = case
    document = orjson.loads(raw)
    section = data.draw(st.sampled_from(["positions", "devices", "events"]))
    items = document.setdefault(section, [])
    bad = data.draw(st.sampled_from([{"id": None}, 7, {"type": "nope"}, []]))
    items.insert(data.draw(st.integers(0, len(items))), bad)
    decoded = CODEC.decode(orjson.dumps(document))
    assert decoded.rejection is not None
    assert decoded.rejection.reason in {"invalid_item", "unknown_event_type"}
    assert decoded.items == CODEC.decode(raw).items
    assert len(decoded.items) == count


def _reference_iso(when: datetime) -> str:
    """The expected normalised form of an aware datetime, built independently."""
    utc = when.astimezone(UTC)
    return f"{utc.year:04d}-{utc:%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


@given(_timestamps)
def test_timestamps_match_reference(upstream: str) -> None:
    """Any offset timestamp normalises to the same instant, truncated to ms."""
    item = decode_one("events", with_(EVENT, eventTime=upstream))
    assert item.event_time == _reference_iso(datetime.fromisoformat(upstream))


@given(
    st.sampled_from(["2025-06-14T09:12:03.456Z", "2025-06-14T09:12:03.456+00:00"]),
    st.lists(
        st.tuples(st.integers(0, 28), st.sampled_from("0123456789-:.TZ+ z\u0663x")),
        max_size=3,
    ),
)
def test_near_canonical_timestamps_are_never_misread(
    template: str, edits: list[tuple[int, str]]
) -> None:
    """Mangled canonical timestamps are rejected or read exactly as Python does."""
    chars = list(template)
    for index, char in edits:
        chars[index % len(chars)] = char
    upstream = "".join(chars)
    decoded = CODEC.decode(frame(events=[with_(EVENT, eventTime=upstream)]))
    try:
        reference = datetime.fromisoformat(upstream)
    except ValueError:
        reference = None
    if reference is None or reference.utcoffset() is None:
        assert decoded.rejection is not None
        return
    try:
        expected = _reference_iso(reference)
    except OverflowError:  # the instant is not representable in UTC
        assert decoded.rejection is not None
        return
    assert decoded.rejection is None
    assert decoded.items[0].event_time == expected
