"""The shipped mapping gives the hand-written codec's records, byte for byte.

Each frame goes through both codecs; the understood items must become the
same Kafka records (topic, key, value bytes, every header), keep-alives must
agree, and a rejected frame must be rejected by both with the same reason.
Details may differ on purpose: the mapping's name the rule that refused it.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from bridge.adapters.mapping_files import read_mapping
from bridge.core.codec import EVENT_TYPES, Decoded, TraccarJsonCodec
from bridge.core.mapping import MappingCodec
from bridge.core.records import Topics, to_record
from bridgelab.emulator.fleet import Fleet, load_fixtures
from tests.core.test_codec import (
    DEVICE,
    EVENT,
    POSITION,
    _timestamps,
    json_values,
    valid_devices,
    valid_events,
    valid_positions,
    with_,
)

OLD = TraccarJsonCodec(max_frame_bytes=4096)
TOPICS = Topics()


def _shipped() -> MappingCodec:
    codec, problems = read_mapping(None, max_frame_bytes=4096)
    assert problems == []
    assert codec is not None
    return codec


NEW = _shipped()


def _records(decoded: Decoded) -> list[object]:
    return [
        to_record(item, TOPICS, received_at="2026-01-01T00:00:00.000Z")
        for item in decoded.items
    ]


def assert_same(raw: bytes) -> None:
    """Both codecs agree on ``raw``: records, keep-alive and rejection reason."""
    old, new = OLD.decode(raw), NEW.decode(raw)
    assert _records(new) == _records(old)
    assert new.keepalive == old.keepalive
    assert (new.rejection is None) == (old.rejection is None)
    if old.rejection is not None and new.rejection is not None:
        assert new.rejection.reason == old.rejection.reason
        assert len(new.rejection.detail) <= 300


# Hand-picked frames: every rejection reason, every fallback and odd value the
# codec's own tests exercise.
CORPUS: list[object] = [
    {},
    {"positions": []},
    {"positions": [POSITION], "devices": [DEVICE], "events": [EVENT]},
    {"positions": [with_(POSITION, id=...)]},
    {
        "positions": [
            with_(POSITION, fixTime=..., deviceTime="2025-06-14T10:12:03+01:00")
        ]
    },
    {
        "positions": [
            with_(POSITION, fixTime=..., serverTime="2025-06-14T09:12:03.123456Z")
        ]
    },
    {"positions": [with_(POSITION, fixTime=...)]},
    {
        "positions": [
            with_(POSITION, speed=None, course=None, valid=None, attributes=None)
        ]
    },
    {"positions": [with_(POSITION, speed=7, extra_field={"a": 1})]},
    {"positions": [with_(POSITION, latitude=91)]},
    {"positions": [with_(POSITION, latitude=True)]},
    {"positions": [with_(POSITION, speed="12")]},
    {"positions": [with_(POSITION, valid="yes")]},
    {"positions": [with_(POSITION, attributes=[1])]},
    {"positions": [with_(POSITION, deviceId="")]},
    {"positions": [with_(POSITION, deviceId="x" * 129)]},
    {"positions": [with_(POSITION, fixTime="2025-06-14T09:12:03")]},
    {"positions": [with_(POSITION, fixTime="yesterday")]},
    {"positions": [with_(POSITION, fixTime="0001-01-01T00:00:00+01:00")]},
    {"positions": "nope"},
    {"positions": [1, POSITION]},
    {"other": [], "positions": [POSITION]},
    {"devices": [with_(DEVICE, status="")]},
    {"devices": [with_(DEVICE, lastUpdate=...)]},
    {"devices": [with_(DEVICE, positionId=0, name=None, uniqueId=7)]},
    {"devices": [with_(DEVICE, positionId="p-1", groupId=3)]},
    {"events": [with_(EVENT, type="alarm", attributes={"alarm": "lowBattery"})]},
    {"events": [with_(EVENT, type="alarm", attributes={"alarm": "sos"})]},
    {"events": [with_(EVENT, type="alarm", attributes={})]},
    {"events": [with_(EVENT, type="alarm", attributes=None)]},
    {"events": [with_(EVENT, type="ignitionOn")]},
    {"events": [with_(EVENT, type="ignitionOn", deviceId=None)]},
    {"events": [with_(EVENT, type=5)]},
    {"events": [with_(EVENT, attributes="x", type="nope")]},
    {"events": [with_(EVENT, id=..., geofenceId=12, maintenanceId=1)]},
    [POSITION],
    "text",
    None,
]


@pytest.mark.parametrize("document", CORPUS, ids=range(len(CORPUS)))
def test_corpus_frames_agree(document: object) -> None:
    """Every hand-picked frame decodes to the same records and reasons."""
    assert_same(orjson.dumps(document))


@pytest.mark.parametrize(
    "raw",
    [b"", b"   ", b"{", b"\xff\xfe", b"[1,", b"{}", b"x" * 5000],
)
def test_unparsed_frames_agree(raw: bytes) -> None:
    """Empty, malformed and oversize frames get the same outcome."""
    assert_same(raw)


@pytest.mark.parametrize("names", ["traccar", "sendstack"])
def test_emulator_frames_agree(names: Literal["traccar", "sendstack"]) -> None:
    """A thousand emulator frames (all three kinds, both event vocabularies) agree."""
    fleet = Fleet(
        load_fixtures(),
        devices=50,
        seed=7,
        events_ratio=0.3,
        status_ratio=0.2,
        event_names=names,
    )
    keys = {"positions": "positions", "devices": "devices", "events": "events"}
    for _ in range(1000):
        assert_same(fleet.burst(5).encode(keys))


valid_sections = st.fixed_dictionaries(
    {},
    optional={
        "positions": st.lists(valid_positions, max_size=3),
        "devices": st.lists(valid_devices, max_size=3),
        "events": st.lists(valid_events, max_size=3),
    },
)


@settings(max_examples=400)
@given(valid_sections)
def test_valid_generated_frames_agree(document: dict[str, Any]) -> None:
    """Generated frames of valid items give identical records."""
    assert_same(orjson.dumps(document))


_keys = st.sampled_from(
    [
        "id",
        "deviceId",
        "fixTime",
        "deviceTime",
        "serverTime",
        "latitude",
        "longitude",
        "altitude",
        "speed",
        "course",
        "accuracy",
        "valid",
        "attributes",
        "status",
        "lastUpdate",
        "type",
        "eventTime",
        "positionId",
        "geofenceId",
        "name",
        "uniqueId",
        "other",
    ]
)
_values = json_values | _timestamps | st.sampled_from([*sorted(EVENT_TYPES), "alarm"])


@settings(max_examples=600)
@given(
    valid_sections,
    st.lists(
        st.tuples(st.sampled_from(["positions", "devices", "events"]), _keys, _values),
        max_size=3,
    ),
)
def test_mutated_generated_frames_agree(
    document: dict[str, Any], mutations: list[tuple[str, str, object]]
) -> None:
    """Valid frames with fields overwritten by arbitrary values still agree."""
    for section, key, value in mutations:
        for item in document.get(section, []):
            item[key] = value
    assert_same(orjson.dumps(document))


@settings(max_examples=300)
@given(
    st.dictionaries(
        st.sampled_from(["positions", "devices", "events", "x"]), json_values
    )
)
def test_arbitrary_frame_shaped_json_agrees(document: dict[str, Any]) -> None:
    """Arbitrary JSON under the section keys gets the same outcome from both."""
    assert_same(orjson.dumps(document))
