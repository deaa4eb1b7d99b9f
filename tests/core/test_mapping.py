"""Tests for bridge.core.mapping: the mapping language, compiled and applied."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import yaml
from hypothesis import given, settings, strategies as st

from bridge.adapters.mapping_files import mapping_schema
from bridge.core.codec import Decoded, Item
from bridge.core.mapping import MAPPING_REJECTION_REASONS, MappingCodec, load_mapping
from tests.core.test_codec import json_values

T_03 = 1_749_892_323_000  # 2025-06-14T09:12:03.000Z


def compile_(document: dict[str, Any]) -> MappingCodec:
    """Compile a mapping given as a Python document (through its YAML text)."""
    codec, problems = load_mapping(
        yaml.safe_dump(document), mapping_schema(), max_frame_bytes=65_536
    )
    assert problems == [], [str(p) for p in problems]
    assert codec is not None
    return codec


def problems_of(document: dict[str, Any]) -> list[str]:
    """The problems of a mapping that must not compile."""
    codec, problems = load_mapping(
        yaml.safe_dump(document), mapping_schema(), max_frame_bytes=65_536
    )
    assert codec is None
    return [str(p) for p in problems]


def decode(codec: MappingCodec, message: object) -> Decoded:
    """Decode one JSON message."""
    return codec.decode(orjson.dumps(message))


def only(decoded: Decoded) -> Item:
    """The one item of a fully understood message."""
    assert decoded.rejection is None, decoded.rejection
    assert len(decoded.items) == 1
    return decoded.items[0]


POSITION_FIELDS: dict[str, Any] = {
    "deviceId": "device.id",
    "positionId": "id",
    "fixTime": {"path": "recordedAt", "format": "epoch_ms"},
    "latitude": "coords.lat",
    "longitude": "coords.lng",
    "altitude": "coords.alt",
    "speed": {"path": "speedMs", "unit": "m/s"},
    "course": "heading",
    "attributes": "meta",
}
EVENT_FIELDS: dict[str, Any] = {
    "eventId": "alertId",
    "eventType": {
        "path": "code",
        "enum": {
            "OVER_SPEEDING_WARNING": "overspeed",
            "LOW_BATTERY_ALERT": "low_battery",
        },
    },
    "eventTime": {"path": "at", "format": "epoch_ms"},
    "deviceId": "device.id",
}
STATUS_FIELDS: dict[str, Any] = {
    "deviceId": "device.id",
    "uniqueId": "device.imei",
    "status": {"path": "state", "enum": {"ONLINE": "online", "OFFLINE": "offline"}},
    "lastUpdate": {"path": "changedAt", "format": "epoch_ms"},
}
TYPED = {
    "mapping": 1,
    "name": "typed-object",
    "message": {
        "select": {
            "switch": {
                "by": "type",
                "cases": {
                    "location": {"at": "payload", "rule": "position"},
                    "alert": {"at": "payload", "rule": "event"},
                    "status": {"at": "payload", "rule": "status"},
                    "heartbeat": "ignore",
                },
            }
        }
    },
    "rules": {
        "position": {"kind": "position", "fields": POSITION_FIELDS},
        "event": {"kind": "event", "fields": EVENT_FIELDS},
        "status": {"kind": "device_status", "fields": STATUS_FIELDS},
    },
}
LOCATION = {
    "type": "location",
    "payload": {
        "device": {"id": 41, "imei": "864000000000001"},
        "id": 88123,
        "recordedAt": T_03,
        "coords": {"lat": 6.4521, "lng": 3.3902, "alt": 12.5, "hdop": 0.9},
        "speedMs": 10.0,
        "heading": 181.0,
        "meta": {"seq": 17},
    },
}


def test_a_typed_object_message_becomes_one_position() -> None:
    """Discriminator, nested payload, epoch ms and m/s give a contract record."""
    item = only(decode(compile_(TYPED), LOCATION))
    assert item.kind == "position"
    assert item.device_id == "41"
    assert item.event_id == "position:88123"
    assert item.event_time == "2025-06-14T09:12:03.000Z"
    assert item.event_time_ms == T_03
    assert item.data == {
        "deviceId": "41",
        "positionId": "88123",
        "fixTime": "2025-06-14T09:12:03.000Z",
        "latitude": 6.4521,
        "longitude": 3.3902,
        "altitude": 12.5,
        "speedKnots": 19.438445,
        "speedKph": 36.0,
        "course": 181.0,
        "accuracy": None,
        "valid": None,
        "attributes": {"seq": 17},
        # Unmapped upstream fields are kept, nested where they were.
        "extra": {"device": {"imei": "864000000000001"}, "coords": {"hdop": 0.9}},
    }


def test_status_enum_maps_upstream_words_to_ours() -> None:
    """An enum table turns ONLINE into online; an unknown word is kept as is."""
    codec = compile_(TYPED)
    message = {
        "type": "status",
        "payload": {
            "device": {"id": 7, "imei": "x"},
            "state": "ONLINE",
            "changedAt": T_03,
        },
    }
    item = only(decode(codec, message))
    assert item.kind == "device_status"
    assert item.data["status"] == "online"
    assert item.event_id == f"device:7:{T_03}:online"
    message["payload"]["state"] = "PARKED"  # type: ignore[index]
    assert only(decode(codec, message)).data["status"] == "PARKED"


def test_an_ignored_case_is_neither_data_nor_a_dead_letter() -> None:
    """A case marked ignore yields nothing and no rejection."""
    decoded = decode(compile_(TYPED), {"type": "heartbeat", "payload": {}})
    assert decoded.items == ()
    assert decoded.rejection is None


def test_an_unknown_type_is_dead_lettered_with_the_switch_named() -> None:
    """A discriminator value without a case: reason unknown_type, switch named."""
    decoded = decode(compile_(TYPED), {"type": "geofence", "payload": {}})
    assert decoded.rejection is not None
    assert decoded.rejection.reason == "unknown_type"
    assert decoded.rejection.detail == "message: type 'geofence' has no case"


def test_a_failing_item_names_the_rule_and_the_field() -> None:
    """An item the rule refuses names the upstream path, our field and the rule."""
    message = {**LOCATION, "payload": {**LOCATION["payload"], "coords": {"lat": 91}}}
    decoded = decode(compile_(TYPED), message)
    assert decoded.rejection is not None
    assert decoded.rejection.reason == "invalid_item"
    assert decoded.rejection.detail == (
        "payload.coords.lat (latitude): must be a number in [-90, 90] (rule position)"
    )


def test_unknown_event_code_is_unknown_event_type() -> None:
    """An event code missing from the enum table is unknown_event_type."""
    message = {
        "type": "alert",
        "payload": {"alertId": 1, "code": "TOW", "at": T_03, "device": {"id": 1}},
    }
    decoded = decode(compile_(TYPED), message)
    assert decoded.rejection is not None
    assert decoded.rejection.reason == "unknown_event_type"


MIXED = {
    "mapping": 1,
    "message": {
        "select": {
            "each": {
                "switch": {
                    "by": "kind",
                    "cases": {"pos": {"rule": "position"}, "evt": {"rule": "event"}},
                }
            }
        }
    },
    "rules": {
        "position": {
            "kind": "position",
            "fields": {
                "deviceId": "deviceId",
                "fixTime": {"path": "ts", "format": "iso8601_utc_if_no_zone"},
                "latitude": "lat",
                "longitude": "lon",
                "speed": {"path": "speedKmh", "unit": "kph"},
                "attributes": {"path": "attrs", "default": {"source": "mixed"}},
            },
            "identity": ["deviceId", "fixTime"],
            "drop": ["kind"],
        },
        "event": {
            "kind": "event",
            "fields": {
                "eventType": {"path": "name", "enum": {"speeding": "overspeed"}},
                "eventTime": {"path": "ts", "format": "epoch_s"},
                "deviceId": "deviceId",
            },
            "drop": ["kind"],
        },
    },
}


def test_a_mixed_batch_array_becomes_items_in_order() -> None:
    """An array of mixed kinds: each element switched by its kind, in order."""
    decoded = decode(
        compile_(MIXED),
        [
            {
                "kind": "pos",
                "deviceId": "v7",
                "ts": "2025-06-14T09:12:03",
                "lat": 1,
                "lon": 2,
                "speedKmh": 36.0,
                "seq": 5,
            },
            {"kind": "evt", "deviceId": "v7", "ts": 1749892324.5, "name": "speeding"},
        ],
    )
    assert decoded.rejection is None
    position, event = decoded.items
    # A zone-less time read as UTC; identity from deviceId and the fix time.
    assert position.event_time == "2025-06-14T09:12:03.000Z"
    assert position.event_id == f"position:v7:{T_03}"
    assert position.data["speedKph"] == 36.0
    assert position.data["speedKnots"] == 19.438445
    assert position.data["attributes"] == {"source": "mixed"}
    assert position.data["extra"] == {"seq": 5}
    assert event.event_type == "overspeed"
    assert event.event_time == "2025-06-14T09:12:04.500Z"
    assert "extra" not in event.data


def test_a_bad_element_does_not_hide_its_neighbours() -> None:
    """One unknown kind in a batch: the others published, the batch dead-lettered."""
    decoded = decode(
        compile_(MIXED),
        [
            {
                "kind": "pos",
                "deviceId": "a",
                "ts": "2025-06-14T09:12:03",
                "lat": 1,
                "lon": 2,
            },
            {"kind": "dev"},
            {
                "kind": "pos",
                "deviceId": "b",
                "ts": "2025-06-14T09:12:03",
                "lat": 1,
                "lon": 2,
            },
        ],
    )
    assert [item.device_id for item in decoded.items] == ["a", "b"]
    assert decoded.rejection is not None
    assert decoded.rejection.reason == "unknown_type"
    assert decoded.rejection.detail == "[1]: kind 'dev' has no case"


def test_a_null_identity_part_falls_back_to_a_digest() -> None:
    """When an identity field is null the id is a digest of the whole value."""
    mapping = {**MIXED}
    decoded = decode(
        compile_(mapping),
        [{"kind": "evt", "deviceId": "v7", "ts": 1, "name": "speeding"}],
    )
    assert only(decoded).event_id.startswith("event:")
    assert len(only(decoded).event_id) == len("event:") + 32


SOCKETIO = {
    "mapping": 1,
    "message": {
        "envelope": "socketio",
        "select": {
            "switch": {
                "by": "$event",
                "cases": {"positions": {"each": {"rule": "position"}}},
            }
        },
    },
    "rules": {
        "position": {
            "kind": "position",
            "fields": {
                "deviceId": "deviceId",
                "fixTime": {"path": "t", "format": "epoch_us"},
                "latitude": "lat",
                "longitude": "lon",
                "speed": {"path": "mph", "unit": "mph"},
            },
        }
    },
}


def test_a_socketio_event_name_is_the_discriminator() -> None:
    """A Socket.IO event array is switched on its name; the payload is selected."""
    item = only(
        decode(
            compile_(SOCKETIO),
            [
                "positions",
                [
                    {
                        "deviceId": 1,
                        "t": T_03 * 1000 + 999,
                        "lat": 0,
                        "lon": 0,
                        "mph": 10,
                    }
                ],
            ],
        )
    )
    assert item.event_time_ms == T_03  # microseconds truncated to the ms
    assert item.data["speedKph"] == 16.093
    assert item.data["speedKnots"] == 8.689762


@pytest.mark.parametrize("message", [{"positions": []}, "positions", [], [1, {}]])
def test_a_non_event_is_not_a_socketio_event(message: object) -> None:
    """Anything but ["name", payload] under the socketio envelope is refused."""
    decoded = decode(compile_(SOCKETIO), message)
    assert decoded.rejection is not None
    assert decoded.rejection.reason == "not_a_socketio_event"


def test_an_unknown_event_name_is_unknown_type() -> None:
    """An event name with no case is dead-lettered as unknown_type."""
    decoded = decode(compile_(SOCKETIO), ["devices", []])
    assert decoded.rejection is not None
    assert decoded.rejection.reason == "unknown_type"
    assert decoded.rejection.detail == "message: $event 'devices' has no case"


def test_required_and_default_override_the_contract_where_allowed() -> None:
    """required makes an optional field mandatory; default fills a missing one."""
    mapping = {
        "mapping": 1,
        "message": {"select": {"rule": "position"}},
        "rules": {
            "position": {
                "kind": "position",
                "fields": {
                    "deviceId": "d",
                    "fixTime": {"path": "t", "format": "epoch_s"},
                    "latitude": "lat",
                    "longitude": "lon",
                    "course": {"path": "c", "required": True},
                    "valid": {"path": "ok", "default": True},
                },
            }
        },
    }
    codec = compile_(mapping)
    base = {"d": 1, "t": 0, "lat": 0, "lon": 0}
    missing = decode(codec, base)
    assert missing.rejection is not None
    assert missing.rejection.detail == "message.c (course): missing (rule position)"
    item = only(decode(codec, {**base, "c": 90}))
    assert item.data["valid"] is True
    assert item.event_time == "1970-01-01T00:00:00.000Z"


def test_paths_are_data_never_code() -> None:
    """A path full of quotes and code is read as a literal key."""
    key = "x');exec(chr(49)/0);('\\"
    mapping = {
        "mapping": 1,
        "message": {"select": {"rule": "p"}},
        "rules": {
            "p": {
                "kind": "position",
                "fields": {
                    "deviceId": key,
                    "fixTime": {"path": "t", "format": "epoch_s"},
                    "latitude": "lat",
                    "longitude": "lon",
                },
            }
        },
    }
    item = only(decode(compile_(mapping), {key: "dev", "t": 0, "lat": 0, "lon": 0}))
    assert item.device_id == "dev"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"fields": {"deviceId": "d"}}, "fixTime is required in position records"),
        ({"fields": {**POSITION_FIELDS, "colour": "c"}}, "no field 'colour'"),
        (
            {"fields": {**POSITION_FIELDS, "course": {"path": "h", "unit": "mph"}}},
            "unit applies to speed only",
        ),
        (
            {
                "fields": {
                    **POSITION_FIELDS,
                    "latitude": {"path": "l", "format": "epoch_s"},
                }
            },
            "format applies to time fields only",
        ),
        (
            {"fields": POSITION_FIELDS, "identity": ["attributes"]},
            "cannot be part of an identity",
        ),
        (
            {"fields": {**POSITION_FIELDS, "valid": {"path": "v", "default": "yes"}}},
            "a boolean field's default must be bool",
        ),
    ],
)
def test_semantic_mistakes_are_named(change: dict[str, Any], expected: str) -> None:
    """Mistakes a schema cannot see are reported with the field's place."""
    mapping = {
        "mapping": 1,
        "message": {"select": {"rule": "p"}},
        "rules": {"p": {"kind": "position", **change}},
    }
    problems = problems_of(mapping)
    assert any(expected in p for p in problems), problems
    assert all(p.startswith("line ") for p in problems), problems


def test_invalid_yaml_is_one_problem_with_its_line() -> None:
    """Text that is not YAML: one problem with the line, no traceback."""
    codec, problems = load_mapping(
        "mapping: 1\nrules: [\n", mapping_schema(), max_frame_bytes=10
    )
    assert codec is None
    assert len(problems) == 1
    assert str(problems[0]).startswith("line 3, $: not valid YAML")


@settings(max_examples=300)
@given(json_values)
def test_no_json_makes_a_mapping_raise(value: object) -> None:
    """Arbitrary JSON through a nested mapping never raises; reasons are known."""
    for codec in (compile_(TYPED), compile_(MIXED), compile_(SOCKETIO)):
        decoded = codec.decode(orjson.dumps(value))
        if decoded.rejection is not None:
            assert decoded.rejection.reason in MAPPING_REJECTION_REASONS
            assert len(decoded.rejection.detail) <= 300


@settings(max_examples=200)
@given(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["location", "alert", "status"]),
            "payload": st.dictionaries(
                st.sampled_from(
                    [
                        "device",
                        "id",
                        "recordedAt",
                        "coords",
                        "speedMs",
                        "heading",
                        "meta",
                        "code",
                        "at",
                        "alertId",
                        "state",
                        "changedAt",
                    ]
                ),
                json_values,
            ),
        }
    )
)
def test_typed_messages_with_any_values_never_raise(message: dict[str, Any]) -> None:
    """Typed messages with arbitrary field values decode without raising."""
    decoded = compile_(TYPED).decode(orjson.dumps(message))
    assert decoded.rejection is not None or len(decoded.items) == 1
