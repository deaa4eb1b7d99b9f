"""Tests for bridge/core/commands.py: the command contract, pure and synchronous.

The JSON Schemas in ``bridge/schemas/commands/`` and the type table in
``docs/commands.md`` are rendered from the catalogue
(``bridge/core/command_types.py``) whose specs validate payloads; this file
checks that the shipped files are current, that an independent validator
(below, for the subset of draft 2020-12 the schemas use) agrees with
``parse_command`` on every example and on a table of broken payloads, and
that one catalogue entry is all a new type needs. Regenerate the files after
changing an entry::

    .venv/bin/python -m tests.core.test_commands
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings, strategies as st

import bridge
from bridge.core import command_specs as specs
from bridge.core.command_catalogue import Catalogue, CommandType, Reconcile
from bridge.core.commands import (
    CATALOGUE,
    COMMAND_TYPES,
    DATA_SCHEMA,
    ENVELOPE_SCHEMA_ID,
    EXAMPLES,
    QUERY_TYPES,
    REJECTION_REASONS,
    REPEATABLE_TYPES,
    RESULT_CE_TYPE,
    Command,
    Outcome,
    Rejection,
    RestRequest,
    classify,
    command_dead_letter,
    envelope_schema,
    ordering_key,
    outcome_error,
    parse_command,
    payload_schema,
    reconciled,
    rejection_error,
    result_record,
    result_schema,
    to_request,
)
from bridge.core.records import iso_ms
from tests.core.test_schemas import DLQ_HEADERS
from tests.schema_check import schema_errors

SCHEMA_DIR = Path(bridge.__file__).parent / "schemas" / "commands"
DOCS = Path(bridge.__file__).parent.parent / "docs" / "commands.md"
TABLE_BEGIN = (
    "<!-- BEGIN command type table: generated from bridge/core/command_types.py"
    " by `.venv/bin/python -m tests.core.test_commands`; do not edit -->\n"
)
TABLE_END = "<!-- END command type table -->\n"
NOW = 1_750_062_000.0  # 2025-06-16T08:20:00Z
MAX = 1_048_576
DROP = "6650aa10bc12de34f0a1b2c1"


def _file(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads((SCHEMA_DIR / name).read_bytes())
    return loaded


def rendered_files(catalogue: Catalogue = CATALOGUE) -> dict[str, bytes]:
    """What ``bridge/schemas/commands/`` must contain, rendered from the specs."""
    schemas = {
        f"{name}.v1.json": payload_schema(name, catalogue=catalogue)
        for name in catalogue
    }
    schemas["envelope.v1.json"] = envelope_schema(catalogue=catalogue)
    schemas["result.v1.json"] = result_schema()
    return {
        name: orjson.dumps(schema, option=orjson.OPT_INDENT_2) + b"\n"
        for name, schema in schemas.items()
    }


def rendered_docs(catalogue: Catalogue = CATALOGUE) -> str:
    """``docs/commands.md`` with its type table rendered from the catalogue."""
    head, rest = DOCS.read_text().split(TABLE_BEGIN)
    _, tail = rest.split(TABLE_END)
    return head + TABLE_BEGIN + catalogue.docs_table() + TABLE_END + tail


try:
    PAYLOADS = {name: _file(f"{name}.v1.json") for name in COMMAND_TYPES}
    ENVELOPE = _file("envelope.v1.json")
    RESULT = _file("result.v1.json")
except FileNotFoundError:  # not rendered yet; the first test says how
    PAYLOADS, ENVELOPE, RESULT = {}, {}, {}
REFS = {schema["$id"]: schema for schema in PAYLOADS.values()}


def envelope(command_type: str, payload: object = None, **extra: Any) -> bytes:
    """A command message; ``payload`` None means the type's example."""
    message: dict[str, Any] = {"commandId": "cmd-1", "type": command_type}
    message["payload"] = EXAMPLES[command_type] if payload is None else payload
    message.update(extra)
    return orjson.dumps(message)


def parse(raw: bytes, now: float = NOW) -> Command | Rejection:
    """``parse_command`` with the test defaults."""
    return parse_command(raw, max_bytes=MAX, now=now)


def command(command_type: str, payload: object = None, **extra: Any) -> Command:
    """A parsed command that must be valid."""
    parsed = parse(envelope(command_type, payload, **extra))
    assert isinstance(parsed, Command), parsed
    return parsed


def with_(base: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """A deep copy of ``base`` with ``path`` (dots, [i]) set, or deleted for ``...``."""
    out = copy.deepcopy(base)
    target: Any = out
    keys: list[str | int] = [
        int(k) if k.isdigit() else k for k in re.split(r"\.|\[|\]\.?", path) if k
    ]
    for key in keys[:-1]:
        target = target[key]
    if value is ...:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return out


# --------------------------------------------------------------------------
# Schema files


def test_schema_files_are_rendered_from_the_specs() -> None:
    """Every shipped command schema is exactly what the validating specs render."""
    expected = rendered_files()
    present = {p.name for p in SCHEMA_DIR.glob("*.json")}
    assert present == set(expected)
    stale = [
        name
        for name, text in expected.items()
        if (SCHEMA_DIR / name).read_bytes() != text
    ]
    assert stale == [], "run: .venv/bin/python -m tests.core.test_commands"


def test_docs_type_table_is_rendered_from_the_catalogue() -> None:
    """docs/commands.md carries exactly the type table the catalogue renders."""
    assert DOCS.read_text() == rendered_docs(), (
        "run: .venv/bin/python -m tests.core.test_commands"
    )


def test_every_schema_declares_its_identity() -> None:
    """Each schema names the 2020-12 dialect and a unique versioned URN."""
    ids = [s["$id"] for s in (*PAYLOADS.values(), ENVELOPE, RESULT)]
    assert len(set(ids)) == len(ids)
    assert ENVELOPE["$id"] == ENVELOPE_SCHEMA_ID
    assert RESULT["$id"] == DATA_SCHEMA
    for schema in (*PAYLOADS.values(), ENVELOPE, RESULT):
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert re.fullmatch(r"urn:sendstack-bridge:schema:[a-z_:]+:v1", schema["$id"])


@pytest.mark.parametrize("command_type", COMMAND_TYPES)
def test_example_is_valid_for_both_validators(command_type: str) -> None:
    """Each type's example passes the schema file and parse_command alike."""
    payload = EXAMPLES[command_type]
    assert PAYLOADS[command_type]["examples"] == [payload]
    assert schema_errors(PAYLOADS[command_type], payload, REFS) == []
    message = orjson.loads(envelope(command_type))
    assert schema_errors(ENVELOPE, message, REFS) == []
    assert isinstance(parse(envelope(command_type)), Command)


# (type, path to change, new value or ... to delete, expected detail)
INVALID: list[tuple[str, str, object, str]] = [
    ("book_delivery", "externalOrderId", ..., "payload.externalOrderId: is required"),
    (
        "book_delivery",
        "externalOrderId",
        "",
        "payload.externalOrderId: must not be empty",
    ),
    ("book_delivery", "externalOrderId", "a\nb", "printable"),
    ("book_delivery", "orderType", "EXPRESS", "must be one of PROCESSING, FULFILLMENT"),
    ("book_delivery", "pickup", ..., "payload.pickup: is required"),
    ("book_delivery", "pickup.address", ..., "payload.pickup.address: is required"),
    ("book_delivery", "pickup.pickupName", ..., "pickup.pickupName: is required"),
    ("book_delivery", "pickup.locationCode", ..., "needs a locationCode, lat and long"),
    ("book_delivery", "pickup.pickupDate", "17/06/2025", "must be a date YYYY-MM-DD"),
    ("book_delivery", "drops", [], "payload.drops: must have at least 1 item"),
    ("book_delivery", "drops[0].address", ..., "payload.drops[0].address: is required"),
    ("book_delivery", "drops[0].locationCode", ..., "payload.drops[0]: needs"),
    ("book_delivery", "drops[0].podAmount", -1, "podAmount: must be at least 0"),
    ("book_delivery", "drops[0].lat", 91, "lat: must be within -90..90"),
    ("book_delivery", "surprise", 1, "payload: unknown field 'surprise'"),
    ("book_delivery", "drops[0].lat", "north", "must be a number or a decimal string"),
    ("book_delivery", "drops[0].long", True, "must be a number or a decimal string"),
    ("price_estimate", "drop", ..., "payload.drop: is required"),
    ("price_estimate", "drop.weight", 0, "weight: must be greater than 0"),
    ("price_estimate", "pickup.custom", 1, "payload.pickup: unknown field 'custom'"),
    ("generate_pod_account", "dropId", "../wallet", "payload.dropId: must be 1 to 64"),
    ("update_delivery", "recipientNumber", ..., None),  # still has note
    ("update_delivery", "dropId", ..., "payload.dropId: is required"),
    ("cancel_drops", "dropIds", [], "payload.dropIds: must have at least 1 item"),
    ("cancel_drops", "dropIds", [DROP] * 101, "must have at most 100 items"),
    ("cancel_drops", "dropIds", "6650", "payload.dropIds: must be an array"),
    ("cancel_drops", "batchId", "Q2-WX", "payload.batchId: must be 1 to 32"),
    ("reschedule_delivery", "pickupDate", ..., "payload.pickupDate: is required"),
    ("reschedule_delivery", "pickupDate", "2025-6-18", "must be a date YYYY-MM-DD"),
    ("update_delivery_window", "estimatedDropoffWindow", ..., "is required"),
    ("update_delivery_window", "estimatedPickupWindow.end", ..., "end: is required"),
    (
        "update_delivery_window",
        "estimatedPickupWindow.start",
        "2025-06-18T08:00:00",
        "must be 'YYYY-MM-DD HH:mm:ss'",
    ),
    ("assign_drop", "partnerId", ..., "payload.partnerId: is required"),
    ("assign_drop", "dropIds[0]", 7, "payload.dropIds[0]: must be a string"),
    ("add_private_note", "note", "", "payload.note: must not be empty"),
    ("add_private_note", "note", ..., "payload.note: is required"),
    ("create_tracker_event", "eventConfig", ..., "payload.eventConfig: is required"),
    ("create_tracker_event", "eventConfig", {}, "eventConfig.speedLimit: is required"),
    ("create_tracker_event", "eventConfig.speedLimit", 0, "must be greater than 0"),
    ("create_tracker_event", "eventType", "overspeed", "UPPER_SNAKE_CASE"),
    (
        "create_tracker_event",
        "eventNotification.acceptedMediums[0].channel",
        "fax",
        "must be one of email, sms, inApp",
    ),
    ("create_tracker_event", "eventNotification.status", "on", "active, inactive"),
    ("track_delivery", "batchId", ..., "needs exactly one of batchId or trackingId"),
    ("track_delivery", "trackingId", "T7HM2D", "needs exactly one of"),
    ("fetch_deliveries", "page", 0, "payload.page: must be at least 1"),
    ("fetch_deliveries", "limit", 1001, "payload.limit: must be at most 1000"),
    ("fetch_deliveries", "limit", 2.5, "payload.limit: must be an integer"),
    ("fetch_deliveries", "limit", True, "payload.limit: must be an integer"),
    ("wallet_balance", "currency", "NGN", "payload: unknown field 'currency'"),
]


@pytest.mark.parametrize(
    ("command_type", "path", "value", "detail"),
    INVALID,
    ids=[f"{t}-{p}-{i}" for i, (t, p, _, _) in enumerate(INVALID)],
)
def test_validators_agree_on_broken_payloads(
    command_type: str, path: str, value: object, detail: str | None
) -> None:
    """A changed example is judged the same by the schema file and the parser."""
    payload = with_(EXAMPLES[command_type], path, value)
    by_schema = schema_errors(PAYLOADS[command_type], payload, REFS)
    parsed = parse(envelope(command_type, payload))
    if detail is None:
        assert by_schema == []
        assert isinstance(parsed, Command)
        return
    assert by_schema != []
    assert isinstance(parsed, Rejection)
    assert parsed.reason == "invalid_payload"
    assert detail in parsed.detail
    # The envelope schema reaches the payload schema through its $ref.
    assert schema_errors(ENVELOPE, orjson.loads(envelope(command_type, payload)), REFS)


def test_parser_also_checks_calendar_dates() -> None:
    """The one rule beyond the schema: a date must exist (format is annotation)."""
    payload = with_(EXAMPLES["reschedule_delivery"], "pickupDate", "2025-02-30")
    assert schema_errors(PAYLOADS["reschedule_delivery"], payload, REFS) == []
    assert (
        PAYLOADS["reschedule_delivery"]["properties"]["pickupDate"]["format"] == "date"
    )
    parsed = parse(envelope("reschedule_delivery", payload))
    assert isinstance(parsed, Rejection)
    assert parsed.detail == "payload.pickupDate: must be a real date"


@pytest.mark.parametrize(
    ("payload", "valid"),
    [
        ({"eventType": "NO_MOVEMENT_ALERT", "eventConfig": {"speedLimit": 5}}, False),
        (
            {
                "eventType": "NO_MOVEMENT_ALERT",
                "eventConfig": {"minimumParkingDuration": 5},
            },
            True,
        ),
        ({"eventType": "GEOFENCE_OUT"}, False),
        ({"eventType": "GEOFENCE_OUT", "geofenceIds": ["g1"]}, True),
        ({"eventType": "GEOFENCE_IN", "geofenceIds": []}, False),
        ({"eventType": "LOW_BATTERY"}, True),
    ],
)
def test_tracker_event_rules_per_event_type(
    payload: dict[str, Any], valid: bool
) -> None:
    """Each documented event type needs its own config, in both validators."""
    full = {"trackerId": "6651bb20cd34ef56a1b2c3d4", **payload}
    assert (schema_errors(PAYLOADS["create_tracker_event"], full, REFS) == []) is valid
    assert isinstance(parse(envelope("create_tracker_event", full)), Command) is valid


@pytest.mark.parametrize(
    "place",
    [
        {"address": "a", "lat": 6.45, "long": 3.39},
        {"address": "a", "lat": "6.4521", "long": "-3.3902"},
        {"address": "a", "country": "NG", "city": "Ibadan"},
    ],
)
def test_every_documented_locator_is_accepted(place: dict[str, Any]) -> None:
    """A drop may be located by code, coordinates (numbers or strings) or city."""
    payload = with_(EXAMPLES["book_delivery"], "drops[0]", place)
    assert schema_errors(PAYLOADS["book_delivery"], payload, REFS) == []
    assert isinstance(parse(envelope("book_delivery", payload)), Command)


def test_custom_fields_pass_through_to_the_booking_body() -> None:
    """Dashboard custom fields on pickup and drops reach Sendstack unchanged."""
    payload = with_(EXAMPLES["book_delivery"], "drops[0].dropoff_house_number", 3)
    request = to_request(command("book_delivery", payload))
    assert request.body is not None
    assert request.body["pickup"]["pickup_house_number"] == 12
    assert request.body["drops"][0]["dropoff_house_number"] == 3


def test_documented_examples_are_valid() -> None:
    """Each command message in docs/commands.md parses, and its result validates."""
    blocks = re.findall(r"```json\n(.*?)```", DOCS.read_text(), re.DOTALL)
    messages = [orjson.loads(b) for b in blocks if '"commandId"' in b]
    commands = [
        m for m in messages if "outcome" not in m and "..." not in m.get("payload", {})
    ]
    assert sorted(m["type"] for m in commands) == sorted(COMMAND_TYPES)
    for message in commands:
        assert isinstance(parse(orjson.dumps(message)), Command), message["type"]
        assert schema_errors(ENVELOPE, message, REFS) == []
    (result,) = [m for m in messages if "outcome" in m]
    assert schema_errors(RESULT, result, REFS) == []


# --------------------------------------------------------------------------
# Envelope


ENVELOPE_CASES: list[tuple[bytes, str, str]] = [
    (b"{", "malformed_json", "not valid UTF-8 JSON"),
    (b"\xff\xfe", "malformed_json", "not valid UTF-8 JSON"),
    (b"[1]", "not_an_object", "a JSON array"),
    (b'"x"', "not_an_object", "a JSON string"),
    (b"true", "not_an_object", "a JSON boolean"),
    (b"null", "not_an_object", "a JSON null"),
    (b"1.5", "not_an_object", "a JSON number"),
    (b'{"type": "wallet_balance"}', "missing_field", "commandId: is required"),
    (b'{"commandId": "c"}', "missing_field", "type: is required"),
    (b'{"commandId": "c", "type": "fly"}', "unknown_type", "type: must be one of"),
    (b'{"commandId": "c", "type": 3}', "unknown_type", "type: must be one of"),
    (
        b'{"commandId": "a b", "type": "wallet_balance"}',
        "invalid_envelope",
        "commandId",
    ),
    (b'{"commandId": "", "type": "wallet_balance"}', "invalid_envelope", "commandId"),
    (
        b'{"commandId": "c", "type": "wallet_balance", "deadLine": 1}',
        "invalid_envelope",
        "unknown field 'deadLine'",
    ),
    (
        b'{"commandId": "c", "type": "wallet_balance", "replyTopic": "a/b"}',
        "invalid_envelope",
        "replyTopic: must be a Kafka topic name",
    ),
    (
        b'{"commandId": "c", "type": "wallet_balance", "deadline": "tomorrow"}',
        "invalid_envelope",
        "deadline: must be an RFC 3339",
    ),
    (
        b'{"commandId": "c", "type": "wallet_balance",'
        b' "deadline": "2025-06-16T10:00:00"}',
        "invalid_envelope",
        "deadline: must be an RFC 3339",
    ),
    (
        b'{"commandId": "c", "type": "wallet_balance",'
        b' "deadline": "2025-06-31T10:00:00Z"}',
        "invalid_envelope",
        "deadline: not a valid instant",
    ),
    (
        b'{"commandId": "c", "type": "wallet_balance", "timeoutSeconds": 0}',
        "invalid_envelope",
        "timeoutSeconds: must be greater than 0",
    ),
    (
        b'{"commandId": "c", "type": "wallet_balance", "version": 2}',
        "invalid_envelope",
        "version: only 1 is supported",
    ),
    (b'{"commandId": "c", "type": "track_delivery"}', "missing_field", "payload"),
    (
        b'{"commandId": "c", "type": "wallet_balance", "payload": []}',
        "invalid_payload",
        "payload: must be an object",
    ),
    (
        b'{"commandId": "c", "type": "wallet_balance",'
        b' "deadline": "2025-06-16T08:19:59Z"}',
        "expired",
        "the deadline passed 1.000 s ago",
    ),
    (
        b'{"commandId": "c", "type": "wallet_balance", "timeoutSeconds": 60,'
        b' "createdAt": "2025-06-16T09:18:00+01:00"}',
        "expired",
        "the deadline passed 60.000 s ago",
    ),
]


@pytest.mark.parametrize(("raw", "reason", "detail"), ENVELOPE_CASES)
def test_envelope_problems_become_rejections(
    raw: bytes, reason: str, detail: str
) -> None:
    """Each envelope problem yields its reason and a detail naming the field."""
    parsed = parse(raw)
    assert isinstance(parsed, Rejection)
    assert parsed.reason == reason
    assert parsed.reason in REJECTION_REASONS
    assert detail in parsed.detail
    message = None if reason == "malformed_json" else orjson.loads(raw)
    # The schema cannot see time, nor calendar validity (format is annotation).
    if isinstance(message, dict) and reason != "expired" and "instant" not in detail:
        assert schema_errors(ENVELOPE, message, REFS) != []


def test_too_large_is_rejected_before_parsing() -> None:
    """A message over max_bytes is rejected whatever it contains."""
    parsed = parse_command(envelope("wallet_balance"), max_bytes=10, now=NOW)
    assert parsed == Rejection("too_large", parsed.detail)
    assert "over 10" in parsed.detail


def test_rejection_salvages_what_it_can_for_the_result() -> None:
    """A rejected message still yields its id, type, reply topic and correlation."""
    raw = envelope(
        "book_delivery",
        {"externalOrderId": "x"},
        replyTopic="team.results",
        correlationId="corr-9",
    )
    parsed = parse(raw)
    assert parsed == Rejection(
        "invalid_payload",
        "payload.orderType: is required",
        command_id="cmd-1",
        command_type="book_delivery",
        reply_topic="team.results",
        correlation_id="corr-9",
    )


def test_details_never_repeat_payload_values() -> None:
    """A rejection names the field but not the (possibly personal) value."""
    secretish = "+234-PRIVATE-NUMBER-" + "9" * 600
    payload = with_(EXAMPLES["book_delivery"], "pickup.pickupNumber", secretish)
    parsed = parse(envelope("book_delivery", payload))
    assert isinstance(parsed, Rejection)
    assert "PRIVATE" not in parsed.detail
    assert "payload.pickup.pickupNumber" in parsed.detail
    unknown = parse(envelope("wallet_balance", {"k" * 500: 1}))
    assert isinstance(unknown, Rejection)
    assert len(unknown.detail) <= 300


def test_command_fields_from_a_full_envelope() -> None:
    """The envelope's optional fields land on the command as documented."""
    parsed = command(
        "reschedule_delivery",
        replyTopic="team.results",
        correlationId="corr-1",
        createdAt="2025-06-16T09:00:00+01:00",
        timeoutSeconds=3600,
        deadline="2025-06-16T08:30:00Z",
        version=1,
    )
    assert parsed == Command(
        command_id="cmd-1",
        type="reschedule_delivery",
        payload=EXAMPLES["reschedule_delivery"],
        reply_topic="team.results",
        deadline=NOW + 600,  # the deadline is earlier than createdAt + 1 h
        correlation_id="corr-1",
        ordering_key="6650aa10bc12de34f0a1b2c3",
        created_at="2025-06-16T09:00:00+01:00",
    )


def test_defaults_of_a_minimal_envelope() -> None:
    """Without options: no deadline, correlation = command id, payload {}."""
    parsed = parse(b'{"commandId": "w-1", "type": "wallet_balance"}')
    assert parsed == Command(
        command_id="w-1",
        type="wallet_balance",
        payload={},
        reply_topic=None,
        deadline=None,
        correlation_id="w-1",
        ordering_key="w-1",
        created_at=None,
    )


def test_timeout_without_created_at_counts_from_now() -> None:
    """timeoutSeconds alone gives a deadline relative to arrival."""
    assert command("wallet_balance", {}, timeoutSeconds=30).deadline == NOW + 30


@given(st.binary(max_size=2_000))
def test_parse_never_raises_on_bytes(raw: bytes) -> None:
    """Arbitrary bytes give a Command or a Rejection, never an exception."""
    assert isinstance(parse(raw), Command | Rejection)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
_keys = st.sampled_from(
    [
        "commandId",
        "type",
        "payload",
        "deadline",
        "timeoutSeconds",
        "createdAt",
        "replyTopic",
        "correlationId",
        "version",
    ]
)


@given(
    st.sampled_from(COMMAND_TYPES),
    st.dictionaries(_keys, _json, max_size=5),
    st.dictionaries(
        st.sampled_from(
            ["externalOrderId", "pickup", "drops", "dropIds", "eventType", "batchId"]
        ),
        _json,
        max_size=4,
    ),
)
@settings(max_examples=300)
def test_parse_never_raises_on_odd_envelopes(
    command_type: str, fields: dict[str, Any], payload: dict[str, Any]
) -> None:
    """Known keys with values of any JSON type give a Command or a Rejection."""
    message = {"commandId": "c", "type": command_type, "payload": payload, **fields}
    parsed = parse(orjson.dumps(message))
    assert isinstance(parsed, Command | Rejection)
    if isinstance(parsed, Rejection):
        assert parsed.reason in REJECTION_REASONS
        assert len(parsed.detail) <= 300


# --------------------------------------------------------------------------
# Requests and ordering


EXPECTED_REQUESTS: dict[str, tuple[str, str, tuple[tuple[str, str], ...], bool]] = {
    # type: (method, path, query, has body)
    "book_delivery": ("POST", "/deliveries", (), True),
    "price_estimate": ("POST", "/deliveries/offers", (), True),
    "generate_pod_account": ("POST", "/drops/payOnDelivery", (), True),
    "update_delivery": ("PUT", f"/deliveries/drops/{DROP}", (), True),
    "cancel_drops": ("POST", "/drops/cancel", (), True),
    "reschedule_delivery": (
        "POST",
        "/deliveries/6650aa10bc12de34f0a1b2c3/reschedule",
        (),
        True,
    ),
    "update_delivery_window": ("POST", "/drops/updateDeliveryWindow", (), True),
    "assign_drop": ("POST", "/drops/assign", (), True),
    "add_private_note": ("POST", "/drops/internalNotes", (), True),
    "create_tracker_event": ("POST", "/tracker/event", (), True),
    "track_delivery": ("GET", "/deliveries/track", (("batchId", "Q2WX7L"),), False),
    "fetch_deliveries": (
        "GET",
        "/deliveries",
        (("externalOrderId", "ORD-1001"), ("page", "1"), ("limit", "15")),
        False,
    ),
    "wallet_balance": ("GET", "/wallet/balance", (), False),
}


@pytest.mark.parametrize("command_type", COMMAND_TYPES)
def test_each_type_maps_to_its_documented_endpoint(command_type: str) -> None:
    """Every type's example becomes the method, path and query of api doc §14/§15.3."""
    request = to_request(command(command_type))
    method, path, query, has_body = EXPECTED_REQUESTS[command_type]
    assert (request.method, request.path, request.query) == (method, path, query)
    assert (request.body is not None) is has_body
    assert request.idempotency_key == "cmd-1"
    assert (request.reconcile is not None) is (command_type == "book_delivery")


def test_bodies_leave_path_parameters_out() -> None:
    """Ids that go into the path are not repeated in the JSON body."""
    assert to_request(command("update_delivery")).body == {
        "recipientNumber": "09055550124",
        "note": "Call on arrival",
    }
    assert to_request(command("reschedule_delivery")).body == {
        "pickupDate": "2025-06-18"
    }
    assert to_request(command("generate_pod_account")).body == {"dropId": DROP}


def test_booking_sends_external_order_id_and_reconciles_by_it() -> None:
    """book_delivery carries externalOrderId and a reconcile read filtered by it."""
    request = to_request(command("book_delivery"))
    assert request.body == EXAMPLES["book_delivery"]
    assert request.reconcile == RestRequest(
        method="GET",
        path="/deliveries",
        query=(("externalOrderId", "ORD-1001"),),
        idempotency_key="cmd-1#reconcile",
    )


def test_assign_method_is_configurable() -> None:
    """Assign Drop goes out as GET when configured (the docs show both)."""
    request = to_request(command("assign_drop"), assign_method="GET")
    assert (request.method, request.body) == ("GET", EXAMPLES["assign_drop"])
    with pytest.raises(ValueError, match="assign_method"):
        to_request(command("assign_drop"), assign_method="PATCH")


def test_to_request_refuses_an_unknown_type() -> None:
    """A hand-built command of an unknown type is a programming error."""
    odd = Command(
        command_id="c",
        type="teleport",
        payload={},
        reply_topic=None,
        deadline=None,
        correlation_id="c",
        ordering_key="c",
        created_at=None,
    )
    with pytest.raises(ValueError, match="unknown command type"):
        to_request(odd)


def test_query_and_repeatable_types_are_consistent() -> None:
    """Queries are a subset of the repeatable types, which are all known types."""
    assert QUERY_TYPES <= REPEATABLE_TYPES <= set(COMMAND_TYPES)
    assert "book_delivery" not in REPEATABLE_TYPES
    assert "add_private_note" not in REPEATABLE_TYPES


@given(
    st.sampled_from(COMMAND_TYPES),
    st.from_regex(r"[A-Za-z0-9._:-]{1,128}", fullmatch=True),
)
def test_to_request_is_deterministic_with_a_stable_key(
    command_type: str, command_id: str
) -> None:
    """The same command always maps to the same request keyed by its id."""
    raw = orjson.dumps(
        {
            "commandId": command_id,
            "type": command_type,
            "payload": EXAMPLES[command_type],
        }
    )
    first, second = parse(raw), parse(raw)
    assert isinstance(first, Command)
    assert isinstance(second, Command)
    assert to_request(first) == to_request(second)
    assert to_request(first).idempotency_key == command_id


ORDERING: list[tuple[str, dict[str, Any], str]] = [
    ("book_delivery", EXAMPLES["book_delivery"], "ORD-1001"),
    (
        "reschedule_delivery",
        EXAMPLES["reschedule_delivery"],
        "6650aa10bc12de34f0a1b2c3",
    ),
    ("update_delivery", EXAMPLES["update_delivery"], DROP),
    ("generate_pod_account", EXAMPLES["generate_pod_account"], DROP),
    ("cancel_drops", {"dropIds": ["d2", "d1"], "batchId": "B1"}, "d2"),
    ("assign_drop", EXAMPLES["assign_drop"], DROP),
    ("add_private_note", EXAMPLES["add_private_note"], DROP),
    ("update_delivery_window", EXAMPLES["update_delivery_window"], DROP),
    (
        "create_tracker_event",
        EXAMPLES["create_tracker_event"],
        "6651bb20cd34ef56a1b2c3d4",
    ),
    ("track_delivery", {"trackingId": "T7HM2D"}, "T7HM2D"),
    ("fetch_deliveries", {"externalOrderId": "ORD-7"}, "ORD-7"),
    ("fetch_deliveries", {"page": 2}, "cmd-1"),
    ("wallet_balance", {}, "cmd-1"),
    ("price_estimate", EXAMPLES["price_estimate"], "cmd-1"),
]


@pytest.mark.parametrize(("command_type", "payload", "key"), ORDERING)
def test_ordering_key_is_the_named_delivery(
    command_type: str, payload: dict[str, Any], key: str
) -> None:
    """Commands touching one delivery share a key; the rest fall back to their id."""
    assert ordering_key(command_type, payload, "cmd-1") == key


# --------------------------------------------------------------------------
# The catalogue: one entry per type


def test_exported_type_sets_are_the_catalogue_flags() -> None:
    """COMMAND_TYPES, QUERY_TYPES, REPEATABLE_TYPES and EXAMPLES read the entries."""
    assert tuple(CATALOGUE) == COMMAND_TYPES
    assert {n for n, e in CATALOGUE.items() if e.query} == QUERY_TYPES
    assert {n for n, e in CATALOGUE.items() if e.repeatable} == REPEATABLE_TYPES
    assert {n: e.example for n, e in CATALOGUE.items()} == dict(EXAMPLES)
    assert [n for n, e in CATALOGUE.items() if e.reconcile] == ["book_delivery"]


@pytest.mark.parametrize("command_type", COMMAND_TYPES)
def test_command_flags_come_from_its_entry(command_type: str) -> None:
    """A parsed command carries its entry, whose flags the executor reads."""
    parsed = command(command_type)
    assert parsed.entry is CATALOGUE[command_type]
    assert parsed.query is (command_type in QUERY_TYPES)
    assert parsed.repeatable is (command_type in REPEATABLE_TYPES)
    hand_built = dataclasses.replace(parsed, entry=None)
    assert hand_built.entry is CATALOGUE[command_type]
    assert hand_built == parsed


def test_a_hand_built_command_of_an_unknown_type_has_no_flags() -> None:
    """Without an entry a command is neither a query nor repeatable (never resent)."""
    odd = dataclasses.replace(command("wallet_balance"), type="teleport", entry=None)
    assert (odd.entry, odd.query, odd.repeatable) == (None, False, False)
    with pytest.raises(ValueError, match="is not type"):
        dataclasses.replace(odd, entry=CATALOGUE["wallet_balance"])


#: A type that does not exist (nor ships): the entry
#: docs/adding-a-command-type.md walks through.
UPDATE_DELIVERY_STATUS = CommandType(
    name="update_delivery_status",
    title="Update Delivery Status",
    section="hypothetical",
    method="PUT",
    path="/drops/{dropId}/status",
    ordering=("dropId",),
    repeatable=True,
    spec=specs.Obj(
        {
            "dropId": specs.sendstack_id("The drop (goes in the path)."),
            "status": specs.Str(
                "The new status.", enum=("PICKED_UP", "DELIVERED", "FAILED")
            ),
            "note": specs.text("Why.", 2000),
        },
        required=("dropId", "status"),
    ),
    example={"dropId": DROP, "status": "DELIVERED", "note": "Left at reception"},
)


def test_one_entry_is_all_a_new_type_needs() -> None:
    """One extra entry is validated, mapped, ordered, rendered and documented."""
    name = "update_delivery_status"
    extended = CATALOGUE.extended(UPDATE_DELIVERY_STATUS)
    example = UPDATE_DELIVERY_STATUS.example
    assert name not in COMMAND_TYPES  # the fake type does not ship

    # Validation: unknown to the shipped catalogue, checked by its spec here.
    raw = envelope(name, example)
    unknown = parse(raw)
    assert isinstance(unknown, Rejection)
    assert unknown.reason == "unknown_type"
    parsed = parse_command(raw, max_bytes=MAX, now=NOW, catalogue=extended)
    assert isinstance(parsed, Command)
    for payload, reason, detail in [
        (
            with_(example, "status", ...),
            "invalid_payload",
            "payload.status: is required",
        ),
        (
            with_(example, "status", "LOST"),
            "invalid_payload",
            "payload.status: must be one of PICKED_UP, DELIVERED, FAILED",
        ),
        (with_(example, "dropId", "../x"), "invalid_payload", "payload.dropId: must"),
    ]:
        rejected = parse_command(
            envelope(name, payload), max_bytes=MAX, now=NOW, catalogue=extended
        )
        assert isinstance(rejected, Rejection)
        assert (rejected.reason, rejected.command_type) == (reason, name)
        assert rejected.detail.startswith(detail)
    bare = parse_command(
        b'{"commandId": "c", "type": "update_delivery_status"}',
        max_bytes=MAX,
        now=NOW,
        catalogue=extended,
    )
    assert bare == Rejection(
        "missing_field",
        "payload: is required for update_delivery_status",
        command_id="c",
        command_type=name,
    )

    # Request, ordering key and flags.
    assert to_request(parsed) == RestRequest(
        method="PUT",
        path=f"/drops/{DROP}/status",
        body={"status": "DELIVERED", "note": "Left at reception"},
        idempotency_key="cmd-1",
    )
    assert parsed.ordering_key == DROP
    assert ordering_key(name, example, "cmd-1", catalogue=extended) == DROP
    assert (parsed.query, parsed.repeatable) == (False, True)

    # Schemas: one new file, the envelope refers to it, the rest unchanged.
    files = rendered_files(extended)
    shipped = rendered_files()
    assert set(files) - set(shipped) == {f"{name}.v1.json"}
    assert [n for n in shipped if files[n] != shipped[n]] == ["envelope.v1.json"]
    schema = orjson.loads(files[f"{name}.v1.json"])
    assert schema["description"] == (
        "Update Delivery Status: PUT /drops/{dropId}/status (hypothetical)."
    )
    refs = {**REFS, schema["$id"]: schema}
    assert schema_errors(schema, example, refs) == []
    assert schema_errors(schema, with_(example, "status", "LOST"), refs) != []
    extended_envelope = orjson.loads(files["envelope.v1.json"])
    assert schema_errors(extended_envelope, orjson.loads(raw), refs) == []
    assert schema_errors(ENVELOPE, orjson.loads(raw), REFS) != []

    # Docs: the type table gains exactly the new row.
    diff = difflib.ndiff(
        rendered_docs().splitlines(), rendered_docs(extended).splitlines()
    )
    changed = [line for line in diff if line[:2] in ("+ ", "- ")]
    assert changed == [
        "+ | `update_delivery_status` | `PUT /drops/{dropId}/status` (hypothetical)"
        " | body: payload less `dropId` | `dropId` | repeatable write | sent again"
        " | [update_delivery_status.v1.json]"
        "(../bridge/schemas/commands/update_delivery_status.v1.json) |"
    ]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"name": "Update-Status"}, "lower snake case"),
        ({"method": "FETCH"}, "unknown method"),
        ({"path": "/drops/{note}/status"}, "path field 'note' must be a required"),
        ({"ordering": ("dropIds",)}, "'dropIds' is not a payload field"),
        ({"params": ("page",)}, "'page' is not a payload field"),
        ({"query": True, "repeatable": False}, "a query is repeatable"),
        (
            {"reconcile": Reconcile("/deliveries", "dropId")},
            "a repeatable type is sent again, never reconciled",
        ),
        ({"example": {"dropId": DROP}}, "the example is invalid: payload.status"),
        (
            {"spec": specs.Obj({}, description="Set here.")},
            "must not carry a description",
        ),
    ],
)
def test_an_inconsistent_entry_is_refused(change: dict[str, Any], problem: str) -> None:
    """An entry whose parts disagree fails when defined, not at run time."""
    with pytest.raises(ValueError, match=r"^command type ") as info:
        dataclasses.replace(UPDATE_DELIVERY_STATUS, **change)
    assert problem in str(info.value)


def test_type_names_are_unique_in_a_catalogue() -> None:
    """Two entries with one name cannot make a catalogue."""
    with pytest.raises(ValueError, match="unique"):
        CATALOGUE.extended(CATALOGUE["wallet_balance"])


# --------------------------------------------------------------------------
# Replies


def _body(obj: object) -> bytes:
    return orjson.dumps(obj)


CLASSIFY: list[tuple[int, bytes, dict[str, str], Outcome]] = [
    (
        200,
        _body({"status": True, "message": "Deliveries cancelled", "data": {}}),
        {},
        Outcome(
            kind="succeeded",
            status=200,
            reason="ok",
            message="Deliveries cancelled",
            data={},
            body={"status": True, "message": "Deliveries cancelled", "data": {}},
        ),
    ),
    (
        200,
        b"",
        {},
        Outcome(kind="succeeded", status=200, reason="ok", message="HTTP 200 OK"),
    ),
    (
        200,
        _body({"status": False, "message": "Invalid dropId"}),
        {},
        Outcome(
            kind="rejected",
            status=200,
            reason="status_false",
            message="Invalid dropId",
            body={"status": False, "message": "Invalid dropId"},
        ),
    ),
    (
        200,
        b"<html>proxy</html>",
        {},
        Outcome(
            kind="unavailable",
            status=200,
            reason="unreadable_reply",
            message="HTTP 200 OK without a Sendstack envelope",
        ),
    ),
    (
        400,
        _body({"status": False, "message": "Invalid dropId"}),
        {},
        Outcome(
            kind="rejected",
            status=400,
            reason="http_400",
            message="Invalid dropId",
            body={"status": False, "message": "Invalid dropId"},
        ),
    ),
    (
        422,
        _body({"status": False, "message": "Low wallet balance"}),
        {},
        Outcome(
            kind="rejected",
            status=422,
            reason="http_422",
            message="Low wallet balance",
            body={"status": False, "message": "Low wallet balance"},
        ),
    ),
    (
        404,
        b"Not Found",
        {},
        Outcome(
            kind="rejected", status=404, reason="http_404", message="HTTP 404 Not Found"
        ),
    ),
    (
        401,
        b"",
        {},
        Outcome(
            kind="reauth",
            status=401,
            reason="http_401",
            message="HTTP 401 Unauthorized",
        ),
    ),
    (
        429,
        b"",
        {"Retry-After": "7"},
        Outcome(
            kind="retry",
            status=429,
            reason="http_429",
            message="HTTP 429 Too Many Requests",
            retry_after=7.0,
        ),
    ),
    (
        429,
        b"",
        {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"},
        Outcome(
            kind="retry",
            status=429,
            reason="http_429",
            message="HTTP 429 Too Many Requests",
        ),
    ),
    (
        503,
        b"",
        {"retry-after": "2"},
        Outcome(
            kind="unavailable",
            status=503,
            reason="http_503",
            message="HTTP 503 Service Unavailable",
            retry_after=2.0,
        ),
    ),
    (
        599,
        b"",
        {"Retry-After": "inf"},
        Outcome(kind="unavailable", status=599, reason="http_599", message="HTTP 599"),
    ),
    (
        500,
        b"",
        {},
        Outcome(
            kind="unavailable",
            status=500,
            reason="http_500",
            message="HTTP 500 Internal Server Error",
        ),
    ),
    (
        302,
        b"",
        {},
        Outcome(
            kind="rejected", status=302, reason="http_302", message="HTTP 302 Found"
        ),
    ),
]


@pytest.mark.parametrize(("status", "body", "headers", "expected"), CLASSIFY)
def test_classify_checks_status_code_and_envelope(
    status: int, body: bytes, headers: dict[str, str], expected: Outcome
) -> None:
    """Each reply maps to the outcome the contract documents."""
    outcome = classify(status, body, headers)
    assert outcome == expected
    assert outcome.retryable is (expected.kind in ("retry", "unavailable"))


def test_classify_reads_the_long_error_form() -> None:
    """The long error form's top-level message is used (api doc §3)."""
    body = {
        "status": False,
        "message": '"dropoffCode" is required',
        "data": {"statusCode": 400, "message": '"dropoffCode" is required'},
    }
    outcome = classify(400, _body(body), {})
    assert (outcome.kind, outcome.message, outcome.body) == (
        "rejected",
        '"dropoffCode" is required',
        body,
    )


def _fetch_reply(*drops: dict[str, Any]) -> bytes:
    return _body(
        {
            "status": True,
            "message": "Deliveries successfully retrieved",
            "data": {"drops": list(drops)},
        }
    )


def test_reconciled_finds_a_booking_that_echoes_its_external_order_id() -> None:
    """A drop echoing our externalOrderId is the booking, even among others."""
    booking = command("book_delivery")
    drop = {
        "id": DROP,
        "deliveryId": "d1",
        "batchId": "Q2WX7L",
        "externalOrderId": "ORD-1001",
    }
    other = {**drop, "id": "x", "externalOrderId": "ORD-9"}
    found = reconciled(booking, 200, _fetch_reply(other, drop))
    assert (found.verdict, found.matched_by) == ("found", "echo")
    assert found.booking == {
        "id": "d1",
        "batchId": "Q2WX7L",
        "externalOrderId": "ORD-1001",
        "drops": [drop],
    }


def test_reconciled_trusts_the_filter_when_the_reply_echoes_nothing() -> None:
    """Documented reply (no externalOrderId field): a non-empty list is the booking."""
    drop = {"id": DROP, "deliveryId": "d1", "batchId": "Q2WX7L", "status": "PENDING"}
    found = reconciled(command("book_delivery"), 200, _fetch_reply(drop))
    assert (found.verdict, found.matched_by) == ("found", "filter")
    assert found.booking is not None
    assert found.booking["id"] == "d1"
    assert found.booking["drops"] == [drop]


@pytest.mark.parametrize(
    "drops",
    [
        # More drops than the command booked (it booked one).
        [{"id": "a", "deliveryId": "d1"}, {"id": "b", "deliveryId": "d1"}],
        # Drops of two deliveries.
        [{"id": "a", "deliveryId": "d1"}, {"id": "b", "deliveryId": "d2"}],
    ],
)
def test_a_list_that_cannot_be_this_one_booking_proves_nothing(
    drops: list[dict[str, Any]],
) -> None:
    """Filter ignored (or a duplicate booking): unknown, never 'found'."""
    found = reconciled(command("book_delivery"), 200, _fetch_reply(*drops))
    assert (found.verdict, found.reason) == ("unknown", "filter_unproven")


def test_reconciled_says_absent_for_an_empty_list() -> None:
    """An empty filtered list is 'absent' (the executor decides when that is proof)."""
    assert reconciled(command("book_delivery"), 200, _fetch_reply()).verdict == "absent"


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (200, _fetch_reply({"id": DROP, "externalOrderId": "ORD-9"}), "filter_ignored"),
        (200, _body({"status": False, "message": "no"}), "unreadable_reply"),
        (500, _fetch_reply({"externalOrderId": "ORD-1001"}), "http_500"),
        (200, b"not json", "unreadable_reply"),
        (200, _body({"status": True, "data": "odd"}), "unreadable_reply"),
    ],
)
def test_reconciled_is_unknown_when_the_reply_cannot_tell(
    status: int, body: bytes, reason: str
) -> None:
    """Only other orders echoed (filter ignored), or no good reply: unknown."""
    found = reconciled(command("book_delivery"), status, body)
    assert (found.verdict, found.reason) == ("unknown", reason)


def test_reconciled_reads_the_legacy_results_shape() -> None:
    """Legacy replies list deliveries under data.results (api doc §14.8)."""
    delivery = {"id": "d1", "externalOrderId": "ORD-1001", "totalAmount": "2750"}
    body = _body({"status": True, "data": {"results": [delivery], "page": 1}})
    assert reconciled(command("book_delivery"), 200, body).booking == delivery
    other = _body(
        {"status": True, "data": {"results": [{"id": "d2", "externalOrderId": "X"}]}}
    )
    assert reconciled(command("book_delivery"), 200, other).verdict == "unknown"


def test_reconciled_is_unknown_for_other_types() -> None:
    """Only bookings can be reconciled."""
    body = _fetch_reply({"externalOrderId": "ORD-1001"})
    assert reconciled(command("cancel_drops"), 200, body).verdict == "unknown"


# --------------------------------------------------------------------------
# Records


def _result(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "command_id": "cmd-1",
        "outcome": "succeeded",
        "response": {"id": "d1"},
        "error": None,
        "attempts": 2,
        "first_attempt_at": iso_ms(NOW),
        "finished_at": iso_ms(NOW + 1.5),
        "duration_ms": 1500.25,
        "topic": "sendstack.commands.results",
        "source_topic": "sendstack.commands",
        "partition": 3,
        "offset": 42,
    }
    base.update(overrides)
    return base


def test_result_record_value_headers_and_key() -> None:
    """A result is keyed by command id, carries CloudEvents headers and validates."""
    cmd = command("book_delivery", correlationId="corr-1")
    record = result_record(cmd, reconciled=True, **_result())
    value = orjson.loads(record.value)
    assert schema_errors(RESULT, value, REFS) == []
    assert value == {
        "commandId": "cmd-1",
        "type": "book_delivery",
        "correlationId": "corr-1",
        "outcome": "succeeded",
        "reconciled": True,
        "response": {"id": "d1"},
        "error": None,
        "attempts": 2,
        "firstAttemptAt": "2025-06-16T08:20:00.000Z",
        "finishedAt": "2025-06-16T08:20:01.500Z",
        "durationMs": 1500.25,
        "source": {"topic": "sendstack.commands", "partition": 3, "offset": 42},
    }
    assert record.topic == "sendstack.commands.results"
    assert record.key == b"cmd-1"
    assert record.dedupe_id == "cmd-1"
    assert dict(record.headers) == {
        "ce_specversion": b"1.0",
        "ce_id": b"cmd-1",
        "ce_source": b"/sendstack/commands",
        "ce_type": RESULT_CE_TYPE.encode(),
        "ce_time": b"2025-06-16T08:20:01.500Z",
        "ce_subject": b"book_delivery",
        "ce_dataschema": DATA_SCHEMA.encode(),
        "content-type": b"application/json",
        "ce_partitionkey": b"cmd-1",
        "ce_correlationid": b"corr-1",
    }


def test_result_of_a_rejected_message_uses_what_was_salvaged() -> None:
    """A rejection's type and correlation id reach the result; unknowns are null."""
    rejection = parse(envelope("cancel_drops", {"dropIds": []}, correlationId="c9"))
    assert isinstance(rejection, Rejection)
    record = result_record(
        rejection,
        **_result(
            outcome="rejected",
            response=None,
            error=rejection_error(rejection),
            attempts=0,
            first_attempt_at=None,
        ),
    )
    value = orjson.loads(record.value)
    assert schema_errors(RESULT, value, REFS) == []
    assert (value["type"], value["correlationId"]) == ("cancel_drops", "c9")
    assert value["error"] == {
        "reason": "invalid_payload",
        "message": "payload.dropIds: must have at least 1 item(s)",
        "status": None,
        "body": None,
    }
    bare = result_record(None, **_result(outcome="failed", response=None))
    headers = dict(bare.headers)
    assert "ce_subject" not in headers
    assert "ce_correlationid" not in headers
    assert schema_errors(RESULT, orjson.loads(bare.value), REFS) == []


def test_result_error_from_an_outcome() -> None:
    """A Sendstack rejection becomes an error object with status and body."""
    outcome = classify(
        422, _body({"status": False, "message": "Low wallet balance"}), {}
    )
    error = outcome_error(outcome)
    record = result_record(
        command("book_delivery"), **_result(outcome="rejected", error=error)
    )
    assert schema_errors(RESULT, orjson.loads(record.value), REFS) == []
    assert error == {
        "reason": "http_422",
        "message": "Low wallet balance",
        "status": 422,
        "body": {"status": False, "message": "Low wallet balance"},
    }


def test_result_outcome_must_be_known() -> None:
    """An outcome outside the contract is a programming error."""
    with pytest.raises(ValueError, match="outcome"):
        result_record(None, **_result(outcome="maybe"))


def test_command_dead_letter_is_verbatim_with_source_headers() -> None:
    """A dead-lettered command keeps its bytes and says where it came from."""
    raw = b'{"commandId": "c", "type": "fly"}'
    record = command_dead_letter(
        raw,
        reason="unknown_type",
        detail="type: must be one of ...",
        dead_letter_topic="sendstack.commands.dlq",
        source_topic="sendstack.commands",
        partition=1,
        offset=7,
        attempts=0,
        received_at=iso_ms(NOW),
        command_id="c",
    )
    headers = {name: value.decode() for name, value in record.headers}
    assert record.value == raw
    assert record.topic == "sendstack.commands.dlq"
    assert record.key is None
    assert schema_errors(DLQ_HEADERS, headers) == []
    assert headers == {
        "bridge_dlq_reason": "unknown_type",
        "bridge_dlq_detail": "type: must be one of ...",
        "bridge_dlq_origin": "command",
        "bridge_dlq_received_at": "2025-06-16T08:20:00.000Z",
        "content-type": "application/json",
        "bridge_dlq_source_topic": "sendstack.commands",
        "bridge_dlq_source_partition": "1",
        "bridge_dlq_source_offset": "7",
        "bridge_dlq_attempts": "0",
        "bridge_dlq_command_id": "c",
    }


def test_command_dead_letter_of_unparsed_or_huge_input() -> None:
    """Unparsed or truncated input is octets, with size and hash when cut."""
    common: dict[str, Any] = {
        "dead_letter_topic": "dlq",
        "source_topic": "t",
        "partition": 0,
        "offset": 0,
        "attempts": 0,
        "received_at": iso_ms(NOW),
    }
    bad = command_dead_letter(b"{", reason="malformed_json", detail="x", **common)
    assert dict(bad.headers)["content-type"] == b"application/octet-stream"
    huge = command_dead_letter(
        b"x" * 20, reason="too_large", detail="y" * 400, max_value_bytes=8, **common
    )
    headers = dict(huge.headers)
    assert huge.value == b"x" * 8
    assert headers["bridge_dlq_original_bytes"] == b"20"
    assert len(headers["bridge_dlq_detail"]) == 300
    assert "bridge_dlq_command_id" not in headers


if __name__ == "__main__":
    for file_name, content in rendered_files().items():
        (SCHEMA_DIR / file_name).write_bytes(content)
    sys.stdout.write(f"wrote {len(rendered_files())} schemas to {SCHEMA_DIR}\n")
    DOCS.write_text(rendered_docs())
    sys.stdout.write(f"wrote the command type table to {DOCS}\n")
