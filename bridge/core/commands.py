"""The command contract: Kafka command messages in, Sendstack REST calls out.

Theory of operation
-------------------
A command is one JSON object on the command topic (``docs/commands.md``)::

    {"commandId": "ord-1001-book", "type": "book_delivery",
     "payload": {...}, "timeoutSeconds": 120}

This module turns its bytes into values and back, with no I/O:

1. :func:`parse_command` validates the envelope and the payload of its type
   and returns a :class:`Command`, or a :class:`Rejection` naming the first
   problem. It never raises: a bad message must not stop the worker (per
   message problems are values, as in ``bridge.core.codec``).
2. :func:`to_request` maps a command to the one :class:`RestRequest` that
   carries it out (api doc §14, §15.3), plus, when possible, a *reconcile*
   read that tells whether an earlier attempt already took effect.
3. :func:`classify` judges Sendstack's reply by the HTTP code *and* the
   envelope's ``status`` (api doc §3) and returns an :class:`Outcome`.
   :func:`reconciled` reads the reconcile reply.
4. :func:`result_record` and :func:`command_dead_letter` build the records
   the worker publishes.

Payload validation is declarative: each type has a spec tree built from the
small ``_Str``/``_Num``/``_Obj``... classes below. The same tree validates a
payload (:meth:`check`, first problem wins) and renders the JSON Schema
shipped in ``bridge/schemas/commands/`` (:func:`payload_schema`), so the
published schemas and the validator cannot drift apart; a test checks that
the files are current and that an independent schema validator agrees with
this one on every example.

What Sendstack does not document is our contract, stated as such:

* ``book_delivery`` must carry ``externalOrderId``. Fetch Deliveries filters
  by it (api doc §14.8) but New Booking does not list it (§14.6); we send it
  as a top-level body field so that a booking whose reply was lost can be
  found again (``GET /deliveries?externalOrderId=...``) instead of booked
  twice.
* ``Idempotency-Key`` (the command id) is sent on every call. Sendstack does
  not document one, so nothing here relies on it being honoured.
* Detail texts name fields and positions but never repeat payload values.
"""

from __future__ import annotations

import dataclasses
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from http import HTTPStatus
from types import MappingProxyType
from typing import Any, Final, Literal
from urllib.parse import quote

import orjson

from bridge.core import codec
from bridge.core.records import OutboundRecord, Topics, dead_letter_record

__all__ = [
    "COMMAND_TYPES",
    "DATA_SCHEMA",
    "DEFAULT_SOURCE",
    "ENVELOPE_SCHEMA_ID",
    "EXAMPLES",
    "QUERY_TYPES",
    "REJECTION_REASONS",
    "REPEATABLE_TYPES",
    "RESULT_CE_TYPE",
    "RESULT_OUTCOMES",
    "Command",
    "Outcome",
    "OutcomeKind",
    "Reconciliation",
    "Rejection",
    "RestRequest",
    "classify",
    "command_dead_letter",
    "envelope_schema",
    "ordering_key",
    "outcome_error",
    "parse_command",
    "payload_schema",
    "reconciled",
    "rejection_error",
    "result_record",
    "result_schema",
    "to_request",
]

#: Every command type, in the order of ``docs/commands.md``.
COMMAND_TYPES: Final[tuple[str, ...]] = (
    "book_delivery",
    "price_estimate",
    "generate_pod_account",
    "update_delivery",
    "cancel_drops",
    "reschedule_delivery",
    "update_delivery_window",
    "assign_drop",
    "add_private_note",
    "create_tracker_event",
    "track_delivery",
    "fetch_deliveries",
    "wallet_balance",
)

#: Read-only types: repeating one changes nothing at Sendstack.
QUERY_TYPES: Final[frozenset[str]] = frozenset(
    {"track_delivery", "fetch_deliveries", "wallet_balance", "price_estimate"}
)

#: Types whose repetition ends in the same state as one execution: the
#: queries, and updates that set absolute values. A retry after an ambiguous
#: failure is safe for these (though its reply may differ, e.g. a 400 once a
#: drop moved on). Not in here: bookings, notes, tracker events and POD
#: accounts create something each time; cancelling twice may answer 400.
REPEATABLE_TYPES: Final[frozenset[str]] = QUERY_TYPES | frozenset(
    {"update_delivery", "reschedule_delivery", "update_delivery_window", "assign_drop"}
)

#: Why :func:`parse_command` rejects a message.
REJECTION_REASONS: Final[frozenset[str]] = frozenset(
    {
        "too_large",  # longer than max_bytes; not even parsed
        "malformed_json",  # not UTF-8 JSON
        "not_an_object",  # JSON, but not an object
        "missing_field",  # commandId, type, or a payload the type needs
        "invalid_envelope",  # an envelope field is wrong or unknown
        "unknown_type",  # type is not one of COMMAND_TYPES
        "invalid_payload",  # the payload breaks its type's schema
        "expired",  # the deadline had passed on arrival
    }
)

#: ``outcome`` of a result record.
RESULT_OUTCOMES: Final[tuple[str, ...]] = (
    "succeeded",
    "failed",
    "rejected",
    "ambiguous",
)

#: CloudEvents attributes of result records.
RESULT_CE_TYPE: Final = "com.sendstack.command.result.v1"
DEFAULT_SOURCE: Final = "/sendstack/commands"
DATA_SCHEMA: Final = "urn:sendstack-bridge:schema:command_result:v1"
ENVELOPE_SCHEMA_ID: Final = "urn:sendstack-bridge:schema:command_envelope:v1"
_PAYLOAD_SCHEMA_ID: Final = "urn:sendstack-bridge:schema:command:{}:v1"
_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"

_DETAIL_LIMIT: Final = 300
_NAME_LIMIT: Final = 40
_MAX_TIMEOUT_SECONDS: Final = 7 * 24 * 3600.0
_RECONCILE_SUFFIX: Final = "#reconcile"  # '#' cannot occur in a command id

# Patterns are ECMA-262 compatible (they go into the JSON Schemas verbatim)
# and are applied with re.fullmatch here; [0-9] rather than \d, which in
# Python also matches non-ASCII digits.
_COMMAND_ID = r"^[A-Za-z0-9._:-]{1,128}$"
_TOPIC = r"^(?!\.{1,2}$)[A-Za-z0-9._-]{1,249}$"  # "." and ".." are not topics
_PRINTABLE_128 = r"^[^\u0000-\u001f\u007f]{1,128}$"
_PRINTABLE_256 = r"^[^\u0000-\u001f\u007f]{1,256}$"
_DATE_TIME = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})$"
)
# Sendstack ids are 24 hex characters (api doc §12); we accept a little more,
# but never a character that could change a URL path.
_ID = r"^[A-Za-z0-9_-]{1,64}$"
_ID_TEXT = "1 to 64 letters, digits, '_' or '-'"
# batchId / trackingId: 6 upper-case letters and digits in every sample.
_CODE = r"^[A-Za-z0-9]{1,32}$"
_CODE_TEXT = "1 to 32 letters or digits"
_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_LOCAL_DATE_TIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$"
_DECIMAL = r"^-?[0-9]{1,3}(\.[0-9]{1,15})?$"
_COUNTRY = r"^[A-Z]{2}$"
_EVENT_TYPE = r"^[A-Z][A-Z0-9_]{0,63}$"


def _clip(text: str, limit: int = _DETAIL_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _name(key: str) -> str:
    """A field name from the input, quoted and bounded for a detail text."""
    return repr(_clip(key, _NAME_LIMIT))


# --------------------------------------------------------------------------
# Specs: validate a value and render the equivalent JSON Schema


class _Spec(ABC):
    """A node of a payload spec."""

    __slots__ = ()

    @abstractmethod
    def check(self, value: object, path: str) -> str | None:
        """The first problem of ``value`` (at ``path``), or None."""

    @abstractmethod
    def schema(self) -> dict[str, Any]:
        """The equivalent JSON Schema (draft 2020-12) fragment."""


def _with_description(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, **schema} if description else schema


@dataclass(frozen=True, slots=True)
class _Str(_Spec):
    description: str = ""
    pattern: str | None = None
    pattern_text: str = ""
    max_length: int = 500
    enum: tuple[str, ...] | None = None
    calendar_date: bool = False  # also a real date (schema: format "date")

    def check(self, value: object, path: str) -> str | None:
        if not isinstance(value, str):
            return f"{path}: must be a string"
        if self.enum is not None:
            if value not in self.enum:
                return f"{path}: must be one of {', '.join(self.enum)}"
            return None
        if not value:
            return f"{path}: must not be empty"
        if len(value) > self.max_length:
            return f"{path}: must be at most {self.max_length} characters"
        if self.pattern is not None and re.fullmatch(self.pattern, value) is None:
            return f"{path}: must be {self.pattern_text}"
        if self.calendar_date:
            try:
                date.fromisoformat(value)
            except ValueError:
                return f"{path}: must be a real date"
        return None

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string"}
        if self.enum is not None:
            out["enum"] = list(self.enum)
        else:
            out["minLength"] = 1
            out["maxLength"] = self.max_length
            if self.pattern is not None:
                out["pattern"] = self.pattern
            if self.calendar_date:
                out["format"] = "date"
        return _with_description(out, self.description)


@dataclass(frozen=True, slots=True)
class _Num(_Spec):
    description: str = ""
    integer: bool = False
    minimum: float | None = None
    exclusive_minimum: float | None = None
    maximum: float | None = None

    def check(self, value: object, path: str) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{path}: must be {'an integer' if self.integer else 'a number'}"
        if self.integer and not isinstance(value, int):
            return f"{path}: must be an integer"
        if self.minimum is not None and value < self.minimum:
            return f"{path}: must be at least {self.minimum:g}"
        if self.exclusive_minimum is not None and value <= self.exclusive_minimum:
            return f"{path}: must be greater than {self.exclusive_minimum:g}"
        if self.maximum is not None and value > self.maximum:
            return f"{path}: must be at most {self.maximum:g}"
        return None

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "integer" if self.integer else "number"}
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.exclusive_minimum is not None:
            out["exclusiveMinimum"] = self.exclusive_minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return _with_description(out, self.description)


@dataclass(frozen=True, slots=True)
class _Coordinate(_Spec):
    """A number in range, or a decimal string (the legacy samples send strings)."""

    description: str
    limit: float

    def check(self, value: object, path: str) -> str | None:
        if isinstance(value, str):
            if re.fullmatch(_DECIMAL, value) is None:
                return f"{path}: must be a number or a decimal string"
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{path}: must be a number or a decimal string"
        if not -self.limit <= value <= self.limit:
            return f"{path}: must be within -{self.limit:g}..{self.limit:g}"
        return None

    def schema(self) -> dict[str, Any]:
        return _with_description(
            {
                "anyOf": [
                    {
                        "type": "number",
                        "minimum": -self.limit,
                        "maximum": self.limit,
                    },
                    {"type": "string", "pattern": _DECIMAL},
                ]
            },
            self.description,
        )


@dataclass(frozen=True, slots=True)
class _Bool(_Spec):
    description: str = ""

    def check(self, value: object, path: str) -> str | None:
        return None if isinstance(value, bool) else f"{path}: must be true or false"

    def schema(self) -> dict[str, Any]:
        return _with_description({"type": "boolean"}, self.description)


@dataclass(frozen=True, slots=True)
class _Arr(_Spec):
    items: _Spec
    description: str = ""
    min_items: int = 1
    max_items: int = 100

    def check(self, value: object, path: str) -> str | None:
        if not isinstance(value, list):
            return f"{path}: must be an array"
        if len(value) < self.min_items:
            return f"{path}: must have at least {self.min_items} item(s)"
        if len(value) > self.max_items:
            return f"{path}: must have at most {self.max_items} items"
        for index, item in enumerate(value):
            problem = self.items.check(item, f"{path}[{index}]")
            if problem is not None:
                return problem
        return None

    def schema(self) -> dict[str, Any]:
        return _with_description(
            {
                "type": "array",
                "minItems": self.min_items,
                "maxItems": self.max_items,
                "items": self.items.schema(),
            },
            self.description,
        )


@dataclass(frozen=True, slots=True)
class _Rule:
    """When ``field`` is one of ``values``, ``then`` applies as well."""

    field: str
    values: tuple[str, ...]
    then: _Obj

    def schema(self) -> dict[str, Any]:
        return {
            "if": {
                "properties": {self.field: {"enum": list(self.values)}},
                "required": [self.field],
            },
            "then": self.then.schema(),
        }


@dataclass(frozen=True, slots=True)
class _Obj(_Spec):
    properties: Mapping[str, _Spec]
    required: tuple[str, ...] = ()
    description: str = ""
    extra: bool = False  # True: unknown keys allowed (dashboard custom fields)
    any_of: tuple[tuple[str, ...], ...] = ()  # one of these groups complete
    one_of: tuple[tuple[str, ...], ...] = ()  # exactly one of these groups
    groups_text: str = ""
    rules: tuple[_Rule, ...] = ()

    def check(self, value: object, path: str) -> str | None:
        if not isinstance(value, dict):
            return f"{path}: must be an object"
        for name in self.required:
            if name not in value:
                return f"{path}.{name}: is required"
        if not self.extra:
            for key in value:
                if key not in self.properties:
                    return f"{path}: unknown field {_name(str(key))}"
        for key, spec in self.properties.items():
            if key in value:
                problem = spec.check(value[key], f"{path}.{key}")
                if problem is not None:
                    return problem
        if self.any_of and not any(
            all(name in value for name in group) for group in self.any_of
        ):
            return f"{path}: needs {self.groups_text}"
        if self.one_of:
            complete = sum(all(n in value for n in group) for group in self.one_of)
            if complete != 1:
                return f"{path}: needs exactly one of {self.groups_text}"
        for rule in self.rules:
            if value.get(rule.field) in rule.values:
                problem = rule.then.check(value, path)
                if problem is not None:
                    return problem
        return None

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "object"}
        if self.required:
            out["required"] = list(self.required)
        out["properties"] = {k: s.schema() for k, s in self.properties.items()}
        if not self.extra:
            out["additionalProperties"] = False
        if self.any_of:
            out["anyOf"] = [{"required": list(g)} for g in self.any_of]
        if self.one_of:
            out["oneOf"] = [{"required": list(g)} for g in self.one_of]
        if self.rules:
            out["allOf"] = [rule.schema() for rule in self.rules]
        return _with_description(out, self.description)


# --------------------------------------------------------------------------
# The payload of each command type


def _text(description: str, max_length: int = 500) -> _Str:
    return _Str(description, max_length=max_length)


def _sendstack_id(description: str) -> _Str:
    return _Str(description, pattern=_ID, pattern_text=_ID_TEXT, max_length=64)


def _code(description: str) -> _Str:
    return _Str(description, pattern=_CODE, pattern_text=_CODE_TEXT, max_length=32)


def _day(description: str) -> _Str:
    return _Str(
        description,
        pattern=_DATE,
        pattern_text="a date YYYY-MM-DD",
        max_length=10,
        calendar_date=True,
    )


def _drop_ids(description: str = "Drop ids (24 hex characters).") -> _Arr:
    return _Arr(_sendstack_id("A drop id."), description)


# api doc §11: an address plus one way of locating it.
_LOCATORS: Final = (("locationCode",), ("lat", "long"), ("country", "city"))
_LOCATORS_TEXT: Final = "a locationCode, lat and long, or country and city"


def _location_fields() -> dict[str, _Spec]:
    return {
        "address": _text("Street address."),
        "address2": _text("Second address line."),
        "locationCode": _Str(
            "Code from Get Mapped Locations (§14.2).",
            pattern=r"^[A-Za-z0-9_-]{1,32}$",
            pattern_text="1 to 32 letters, digits, '_' or '-'",
            max_length=32,
        ),
        "lat": _Coordinate("Latitude (a number, or a decimal string).", 90),
        "long": _Coordinate("Longitude (a number, or a decimal string).", 180),
        "city": _text("City (with country, for nationwide/international)."),
        "state": _text("State."),
        "country": _Str(
            "ISO 3166-1 alpha-2 country code, e.g. NG.",
            pattern=_COUNTRY,
            pattern_text="a 2-letter upper-case country code",
            max_length=2,
        ),
        "postalCode": _text("Postal code.", 32),
    }


_PICKUP = _Obj(
    {
        **_location_fields(),
        "pickupName": _text("Who hands the parcel over."),
        "pickupNumber": _text("Their phone number.", 32),
        "altPickupNumber": _text("Another phone number.", 32),
        "pickupEmail": _text("Their e-mail address.", 254),
        "pickupDate": _day("Pickup date, YYYY-MM-DD."),
        "note": _text("Note for the rider.", 2000),
    },
    required=("address", "pickupName", "pickupNumber"),
    description=(
        "Where to collect (§14.6). Unknown keys are passed on: they are the "
        "dashboard's custom fields, e.g. pickup_house_number."
    ),
    extra=True,
    any_of=_LOCATORS,
    groups_text=_LOCATORS_TEXT,
)

_DROP = _Obj(
    {
        **_location_fields(),
        "recipientName": _text("Who receives the parcel."),
        "recipientNumber": _text("Their phone number.", 32),
        "altRecipientNumber": _text("Another phone number.", 32),
        "note": _text("Note for the rider.", 2000),
        "assignedPartner": _sendstack_id("Partner id from a price estimate offer."),
        "podAmount": _Num("Pay on Delivery amount (§13).", minimum=0),
    },
    required=("address",),
    description=(
        "One drop-off (§14.6). Unknown keys are passed on: they are the "
        "dashboard's custom fields, e.g. dropoff_house_number."
    ),
    extra=True,
    any_of=_LOCATORS,
    groups_text=_LOCATORS_TEXT,
)

_ORDER_TYPE = _Str(
    "PROCESSING (current docs) or FULFILLMENT (legacy).",
    enum=("PROCESSING", "FULFILLMENT"),
)

_WINDOW = _Obj(
    {
        name: _Str(
            f"{name}, 'YYYY-MM-DD HH:mm:ss'.",
            pattern=_LOCAL_DATE_TIME,
            pattern_text="'YYYY-MM-DD HH:mm:ss'",
            max_length=19,
        )
        for name in ("date", "start", "end")
    },
    required=("date", "start", "end"),
    description="A window (§14.13).",
)

_MEDIUM = _Obj(
    {
        "channel": _Str("Notification channel.", enum=("email", "sms", "inApp")),
        "isEnabled": _Bool("Whether this channel is used."),
        "defaultEmail": _Arr(_text("An e-mail address.", 254), min_items=0),
        "defaultPhone": _Arr(_text("A phone number.", 32), min_items=0),
    },
    required=("channel", "isEnabled"),
)

_SPECS: Final[Mapping[str, _Obj]] = MappingProxyType(
    {
        "book_delivery": _Obj(
            {
                "externalOrderId": _Str(
                    "Your order id. Required by OUR contract (not by Sendstack): "
                    "it is sent to Sendstack and lets the bridge find a booking "
                    "whose reply was lost instead of booking twice.",
                    pattern=_PRINTABLE_128,
                    pattern_text="1 to 128 printable characters",
                    max_length=128,
                ),
                "orderType": _ORDER_TYPE,
                "pickup": _PICKUP,
                "drops": _Arr(_DROP, "The drop-offs, at least one."),
                "bookingName": _text("Customer name (§14.6)."),
                "bookingPhone": _text("Customer phone.", 32),
                "bookingEmail": _text("Customer e-mail.", 254),
                "customerId": _text("Legacy customer id.", 64),
                "paymentSource": _text(
                    "Legacy: 'self' (wallet) or a phone for a payment link.", 32
                ),
            },
            required=("externalOrderId", "orderType", "pickup", "drops"),
            description="New Booking: POST /deliveries (§14.6).",
        ),
        "price_estimate": _Obj(
            {
                "orderType": _ORDER_TYPE,
                "pickup": _Obj(
                    {**_location_fields(), "pickupDate": _day("YYYY-MM-DD.")},
                    required=("address",),
                    any_of=_LOCATORS,
                    groups_text=_LOCATORS_TEXT,
                ),
                "drop": _Obj(
                    {
                        **_location_fields(),
                        "category": _text("Parcel category.", 64),
                        "width": _Num("cm", exclusive_minimum=0),
                        "length": _Num("cm", exclusive_minimum=0),
                        "height": _Num("cm", exclusive_minimum=0),
                        "weight": _Num("kg", exclusive_minimum=0),
                    },
                    required=("address",),
                    any_of=_LOCATORS,
                    groups_text=_LOCATORS_TEXT,
                ),
            },
            required=("pickup", "drop"),
            description="Get Delivery Price Estimate: POST /deliveries/offers (§14.4).",
        ),
        "generate_pod_account": _Obj(
            {"dropId": _sendstack_id("The drop to collect payment for.")},
            required=("dropId",),
            description="Generate POD account number: POST /drops/payOnDelivery "
            "(§14.7).",
        ),
        "update_delivery": _Obj(
            {
                "dropId": _sendstack_id("The drop to update (goes in the path)."),
                "address": _text("New address."),
                "recipientName": _text("New recipient name."),
                "recipientNumber": _text("New recipient phone.", 32),
                "altRecipientNumber": _text("New alternative phone.", 32),
                "note": _text("New note.", 2000),
                "locationCode": _Str(
                    "New location code.",
                    pattern=r"^[A-Za-z0-9_-]{1,32}$",
                    pattern_text="1 to 32 letters, digits, '_' or '-'",
                    max_length=32,
                ),
            },
            required=("dropId",),
            description="Update Delivery Details: PUT /deliveries/drops/{dropId} "
            "(§14.9); at least one field besides dropId.",
            any_of=tuple(
                (name,)
                for name in (
                    "address",
                    "recipientName",
                    "recipientNumber",
                    "altRecipientNumber",
                    "note",
                    "locationCode",
                )
            ),
            groups_text="at least one field to update",
        ),
        "cancel_drops": _Obj(
            {
                "dropIds": _drop_ids("The drops to cancel."),
                "trackingId": _code("Tracking id (optional, passed on)."),
                "batchId": _code("Batch id (optional, passed on)."),
                "note": _text("Why.", 2000),
            },
            required=("dropIds",),
            description="Cancel Drops: POST /drops/cancel (§14.11).",
        ),
        "reschedule_delivery": _Obj(
            {
                "deliveryId": _sendstack_id("The booking (goes in the path)."),
                "pickupDate": _day("New pickup date, YYYY-MM-DD."),
            },
            required=("deliveryId", "pickupDate"),
            description="Reschedule Delivery: POST /deliveries/{deliveryId}/"
            "reschedule (§14.12).",
        ),
        "update_delivery_window": _Obj(
            {
                "estimatedPickupWindow": _WINDOW,
                "estimatedDropoffWindow": _WINDOW,
                "user": _sendstack_id("Your CTRL business id."),
                "dropIds": _drop_ids(),
                "pickupDate": _day("YYYY-MM-DD."),
            },
            required=("estimatedPickupWindow", "estimatedDropoffWindow", "dropIds"),
            description="Update Delivery Window: POST /drops/updateDeliveryWindow "
            "(§14.13).",
        ),
        "assign_drop": _Obj(
            {
                "partnerId": _sendstack_id("The partner to assign."),
                "dropIds": _drop_ids(),
            },
            required=("partnerId", "dropIds"),
            description="Assign Drop: POST (or GET) /drops/assign (§14.14).",
        ),
        "add_private_note": _Obj(
            {"dropIds": _drop_ids(), "note": _text("The note.", 2000)},
            required=("dropIds", "note"),
            description="Add Private Note: POST /drops/internalNotes (§14.17).",
        ),
        "create_tracker_event": _Obj(
            {
                "trackerId": _sendstack_id("The tracker."),
                "eventType": _Str(
                    "OVER_SPEEDING_WARNING, NO_MOVEMENT_ALERT or GEOFENCE_OUT "
                    "(documented); other upper-case names are passed on.",
                    pattern=_EVENT_TYPE,
                    pattern_text="an UPPER_SNAKE_CASE event type",
                    max_length=64,
                ),
                "eventConfig": _Obj(
                    {
                        "speedLimit": _Num("km/h (overspeed).", exclusive_minimum=0),
                        "minimumParkingDuration": _Num(
                            "Minutes (no movement).", exclusive_minimum=0
                        ),
                    },
                    extra=True,
                ),
                "geofenceIds": _Arr(_sendstack_id("A geofence id."), "Geofences."),
                "eventNotification": _Obj(
                    {
                        "acceptedMediums": _Arr(_MEDIUM, min_items=0, max_items=10),
                        "status": _Str(
                            "active or inactive.", enum=("active", "inactive")
                        ),
                    }
                ),
            },
            required=("trackerId", "eventType"),
            description="Create tracker event: POST /tracker/event (§15.3).",
            rules=(
                _Rule(
                    "eventType",
                    ("OVER_SPEEDING_WARNING",),
                    _Obj(
                        {"eventConfig": _Obj({}, required=("speedLimit",), extra=True)},
                        required=("eventConfig",),
                        extra=True,
                    ),
                ),
                _Rule(
                    "eventType",
                    ("NO_MOVEMENT_ALERT",),
                    _Obj(
                        {
                            "eventConfig": _Obj(
                                {}, required=("minimumParkingDuration",), extra=True
                            )
                        },
                        required=("eventConfig",),
                        extra=True,
                    ),
                ),
                _Rule(
                    "eventType",
                    ("GEOFENCE_OUT", "GEOFENCE_IN"),
                    _Obj({}, required=("geofenceIds",), extra=True),
                ),
            ),
        ),
        "track_delivery": _Obj(
            {
                "batchId": _code("The booking's batch id."),
                "trackingId": _code("One drop's tracking id."),
            },
            description="Track Delivery Status: GET /deliveries/track (§14.15); "
            "exactly one of batchId and trackingId.",
            one_of=(("batchId",), ("trackingId",)),
            groups_text="batchId or trackingId",
        ),
        "fetch_deliveries": _Obj(
            {
                "batchId": _code("Filter: batch id."),
                "trackingId": _code("Filter: tracking id."),
                "externalOrderId": _Str(
                    "Filter: your order id.",
                    pattern=_PRINTABLE_128,
                    pattern_text="1 to 128 printable characters",
                    max_length=128,
                ),
                "customer": _text("Filter: customer.", 128),
                "page": _Num("1-based page.", integer=True, minimum=1),
                "limit": _Num("Page size.", integer=True, minimum=1, maximum=1000),
            },
            description="Fetch Deliveries: GET /deliveries (§14.8); every filter "
            "is optional.",
        ),
        "wallet_balance": _Obj(
            {}, description="Get Wallet Balance: GET /wallet/balance (§14.1)."
        ),
    }
)


def payload_schema(command_type: str) -> dict[str, Any]:
    """The JSON Schema of one type's payload (``<type>.v1.json``).

    Args:
        command_type: One of :data:`COMMAND_TYPES`.

    Returns:
        A fresh dict, with ``$schema``, ``$id``, ``title`` and ``examples``.

    Raises:
        KeyError: For an unknown type.
    """
    spec = _SPECS[command_type]
    return {
        "$schema": _SCHEMA_DIALECT,
        "$id": _PAYLOAD_SCHEMA_ID.format(command_type),
        "title": f"Payload of a {command_type} command, v1",
        **spec.schema(),
        "examples": [EXAMPLES[command_type]],
    }


def _envelope_fields() -> dict[str, _Spec]:
    return {
        "commandId": _Str(
            "Unique id of the command: the result key, the dedupe key and the "
            "Idempotency-Key header.",
            pattern=_COMMAND_ID,
            pattern_text="1 to 128 letters, digits, '.', '_', ':' or '-'",
            max_length=128,
        ),
        "type": _Str("What to do.", enum=COMMAND_TYPES),
        "payload": _Obj({}, description="Validated by <type>.v1.json.", extra=True),
        "replyTopic": _Str(
            "Topic for this command's result instead of the default one.",
            pattern=_TOPIC,
            pattern_text="a Kafka topic name",
            max_length=249,
        ),
        "correlationId": _Str(
            "Copied into the result; defaults to commandId.",
            pattern=_PRINTABLE_256,
            pattern_text="1 to 256 printable characters",
            max_length=256,
        ),
        "createdAt": _Str(
            "When the command was made, RFC 3339 with an offset.",
            pattern=_DATE_TIME,
            pattern_text="an RFC 3339 date-time with an offset",
            max_length=40,
        ),
        "deadline": _Str(
            "Give up after this instant, RFC 3339 with an offset.",
            pattern=_DATE_TIME,
            pattern_text="an RFC 3339 date-time with an offset",
            max_length=40,
        ),
        "timeoutSeconds": _Num(
            "Give up this long after createdAt (or after arrival).",
            exclusive_minimum=0,
            maximum=_MAX_TIMEOUT_SECONDS,
        ),
        "version": _Num("Envelope version; 1 if absent.", integer=True, minimum=1),
    }


_ENVELOPE_FIELDS: Final[Mapping[str, _Spec]] = MappingProxyType(_envelope_fields())


def envelope_schema() -> dict[str, Any]:
    """The JSON Schema of a command message (``envelope.v1.json``)."""
    fields = {k: s.schema() for k, s in _ENVELOPE_FIELDS.items()}
    fields["version"] = {**fields["version"], "const": 1}
    branches = []
    for name in COMMAND_TYPES:
        then: dict[str, Any] = {
            "properties": {"payload": {"$ref": _PAYLOAD_SCHEMA_ID.format(name)}}
        }
        if _SPECS[name].check({}, "payload") is not None:
            then = {"required": ["payload"], **then}
        branches.append(
            {
                "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                "then": then,
            }
        )
    return {
        "$schema": _SCHEMA_DIALECT,
        "$id": ENVELOPE_SCHEMA_ID,
        "title": "Sendstack bridge command message, v1",
        "description": "The value of a record on the command topic. See "
        "docs/commands.md. deadline and timeoutSeconds may both be given; the "
        "earlier instant wins.",
        "type": "object",
        "required": ["commandId", "type"],
        "properties": fields,
        "additionalProperties": False,
        "allOf": branches,
        "examples": [_envelope_example("book_delivery")],
    }


# --------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """A valid command.

    Attributes:
        command_id: The envelope's ``commandId``.
        type: One of :data:`COMMAND_TYPES`.
        payload: The payload, valid for its type (``{}`` when absent).
        reply_topic: Where its result goes, if not the default results topic.
        deadline: Epoch seconds after which it must not be attempted, from
            ``deadline`` or ``timeoutSeconds`` (the earlier wins); None when
            neither is given (the worker applies its default).
        correlation_id: ``correlationId``, or the command id.
        ordering_key: Commands with the same key run in order (see
            :func:`ordering_key`).
        created_at: ``createdAt`` as given, if given.
    """

    command_id: str
    type: str
    payload: dict[str, Any]
    reply_topic: str | None
    deadline: float | None
    correlation_id: str
    ordering_key: str
    created_at: str | None


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a command message was not accepted.

    Attributes:
        reason: One of :data:`REJECTION_REASONS`.
        detail: What is wrong, at most 300 characters; names fields, never
            repeats their values.
        command_id: The message's ``commandId`` if it could be read (valid
            pattern), so that a result can still be keyed by it.
        command_type: The message's ``type`` if it is a known type.
        reply_topic: The message's ``replyTopic`` if it could be read.
        correlation_id: The message's ``correlationId`` if it could be read.
    """

    reason: str
    detail: str
    command_id: str | None = None
    command_type: str | None = None
    reply_topic: str | None = None
    correlation_id: str | None = None


def _instant(text: str) -> float | None:
    """Epoch seconds of an RFC 3339 date-time with offset, or None."""
    try:
        return datetime.fromisoformat(text).timestamp()
    except (ValueError, OverflowError):
        return None


def parse_command(raw: bytes, *, max_bytes: int, now: float) -> Command | Rejection:
    """Validate one command message.

    Args:
        raw: The record value exactly as consumed.
        max_bytes: Longer messages are rejected unparsed (``too_large``).
        now: Epoch seconds, for ``expired`` and for ``timeoutSeconds``
            without ``createdAt``.

    Returns:
        The command, or the first problem found. Never raises.
    """
    if len(raw) > max_bytes:
        return Rejection("too_large", f"message is {len(raw)} bytes, over {max_bytes}")
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return Rejection("malformed_json", "not valid UTF-8 JSON")
    if not isinstance(message, dict):
        return Rejection(
            "not_an_object", f"a JSON {_json_kind(message)}, not an object"
        )

    # What can be salvaged for the result record, even if the rest is bad.
    command_id = _valid_str(message, "commandId")
    command_type = message.get("type") if message.get("type") in COMMAND_TYPES else None
    salvage = {
        "command_id": command_id,
        "command_type": command_type,
        "reply_topic": _valid_str(message, "replyTopic"),
        "correlation_id": _valid_str(message, "correlationId"),
    }

    def reject(reason: str, detail: str) -> Rejection:
        return Rejection(reason, _clip(detail), **salvage)

    for name in ("commandId", "type"):
        if name not in message:
            return reject("missing_field", f"{name}: is required")
    for key in message:
        if key not in _ENVELOPE_FIELDS:
            return reject("invalid_envelope", f"unknown field {_name(str(key))}")
    if not isinstance(message["type"], str) or command_type is None:
        return reject(
            "unknown_type", f"type: must be one of {', '.join(COMMAND_TYPES)}"
        )
    for key, spec in _ENVELOPE_FIELDS.items():
        if key in message and key not in ("type", "payload"):
            problem = spec.check(message[key], key)
            if problem is not None:
                return reject("invalid_envelope", problem)
    if message.get("version", 1) != 1:
        return reject("invalid_envelope", "version: only 1 is supported")
    created_at: str | None = message.get("createdAt")
    deadlines: list[float] = []
    for key in ("createdAt", "deadline"):
        if key in message and _instant(message[key]) is None:
            return reject("invalid_envelope", f"{key}: not a valid instant")
    if "deadline" in message:
        deadlines.append(_instant(message["deadline"]) or 0.0)
    if "timeoutSeconds" in message:
        base = now if created_at is None else (_instant(created_at) or now)
        deadlines.append(base + float(message["timeoutSeconds"]))

    if "payload" not in message:
        if _SPECS[command_type].check({}, "payload") is not None:
            return reject("missing_field", f"payload: is required for {command_type}")
        payload: dict[str, Any] = {}
    else:
        payload = message["payload"]
        problem = _SPECS[command_type].check(payload, "payload")
        if problem is not None:
            return reject("invalid_payload", problem)

    deadline = min(deadlines) if deadlines else None
    if deadline is not None and deadline <= now:
        return reject("expired", f"the deadline passed {now - deadline:.3f} s ago")
    if command_id is None:  # pragma: no cover - the envelope checks rule it out
        return reject("invalid_envelope", "commandId: unreadable")
    return Command(
        command_id=command_id,
        type=command_type,
        payload=payload,
        reply_topic=salvage["reply_topic"],
        deadline=deadline,
        correlation_id=salvage["correlation_id"] or command_id,
        ordering_key=ordering_key(command_type, payload, command_id),
        created_at=created_at,
    )


def _valid_str(message: dict[str, Any], key: str) -> str | None:
    value = message.get(key)
    if value is None or _ENVELOPE_FIELDS[key].check(value, key) is not None:
        return None
    return str(value)


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def ordering_key(command_type: str, payload: Mapping[str, Any], command_id: str) -> str:
    """The key that orders commands touching the same thing.

    The key is the identifier the command names: ``externalOrderId`` for
    ``book_delivery``; ``deliveryId`` for ``reschedule_delivery``;
    ``dropId`` or the first of ``dropIds`` for the drop commands;
    ``batchId`` (else ``trackingId``) for ``track_delivery``; ``trackerId``
    for ``create_tracker_event``; the first filter given for
    ``fetch_deliveries``; otherwise the command id (no order needed). Two
    commands naming one delivery by different identifiers (a drop id and a
    batch id) get different keys: name a delivery the same way in commands
    that must run in order.

    Args:
        command_type: One of :data:`COMMAND_TYPES`.
        payload: A payload valid for the type.
        command_id: The fallback key.

    Returns:
        A non-empty string.
    """
    names: tuple[str, ...]
    if command_type == "book_delivery":
        names = ("externalOrderId",)
    elif command_type == "reschedule_delivery":
        names = ("deliveryId",)
    elif command_type in ("generate_pod_account", "update_delivery"):
        names = ("dropId",)
    elif command_type in (
        "cancel_drops",
        "update_delivery_window",
        "assign_drop",
        "add_private_note",
    ):
        names = ("dropIds",)
    elif command_type == "create_tracker_event":
        names = ("trackerId",)
    elif command_type in ("track_delivery", "fetch_deliveries"):
        names = ("batchId", "trackingId", "externalOrderId")
    else:
        names = ()
    for name in names:
        value = payload.get(name)
        if isinstance(value, list) and value and isinstance(value[0], str):
            return value[0]
        if isinstance(value, str) and value:
            return value
    return command_id


# --------------------------------------------------------------------------
# Requests


@dataclass(frozen=True, slots=True, kw_only=True)
class RestRequest:
    """One Sendstack REST call.

    Attributes:
        method: HTTP method.
        path: Relative to the base URL (which ends in ``/api/v1``), e.g.
            ``/deliveries``; path parameters are percent-encoded.
        query: Query parameters, in order.
        body: JSON body, or None.
        idempotency_key: Sent as ``Idempotency-Key``: the command id (with
            ``#reconcile`` appended for the reconcile read). Sendstack does not
            document the header; nothing relies on it.
        reconcile: A read whose reply tells whether an earlier attempt
            already took effect (see :func:`reconciled`), or None.
    """

    method: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    body: dict[str, Any] | None = None
    idempotency_key: str
    reconcile: RestRequest | None = None


def _seg(value: str) -> str:
    return quote(value, safe="")


def _without(payload: Mapping[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in names}


# Types whose call is a POST of the payload as it is (api doc §14, §15.3).
_POST_PAYLOAD: Final[Mapping[str, str]] = MappingProxyType(
    {
        "price_estimate": "/deliveries/offers",
        "cancel_drops": "/drops/cancel",
        "update_delivery_window": "/drops/updateDeliveryWindow",
        "add_private_note": "/drops/internalNotes",
        "create_tracker_event": "/tracker/event",
    }
)


def to_request(command: Command, *, assign_method: str = "POST") -> RestRequest:
    """The REST call that carries out a command.

    Args:
        command: A command from :func:`parse_command`.
        assign_method: ``POST`` or ``GET`` for Assign Drop (the docs show
            both, §17.4); with GET the JSON body is sent all the same.

    Returns:
        The request; deterministic in its arguments.

    Raises:
        ValueError: For an unknown type or assign method (a :class:`Command`
            from :func:`parse_command` always has a known type).
    """
    p = command.payload
    key = command.command_id
    kind = command.type
    if kind in _POST_PAYLOAD:
        return RestRequest(
            method="POST", path=_POST_PAYLOAD[kind], body=dict(p), idempotency_key=key
        )
    if kind == "book_delivery":
        reconcile = RestRequest(
            method="GET",
            path="/deliveries",
            query=(("externalOrderId", p["externalOrderId"]),),
            idempotency_key=key + _RECONCILE_SUFFIX,
        )
        return RestRequest(
            method="POST",
            path="/deliveries",
            body=dict(p),
            idempotency_key=key,
            reconcile=reconcile,
        )
    if kind == "generate_pod_account":
        return RestRequest(
            method="POST",
            path="/drops/payOnDelivery",
            body={"dropId": p["dropId"]},
            idempotency_key=key,
        )
    if kind == "update_delivery":
        return RestRequest(
            method="PUT",
            path=f"/deliveries/drops/{_seg(p['dropId'])}",
            body=_without(p, "dropId"),
            idempotency_key=key,
        )
    if kind == "reschedule_delivery":
        return RestRequest(
            method="POST",
            path=f"/deliveries/{_seg(p['deliveryId'])}/reschedule",
            body=_without(p, "deliveryId"),
            idempotency_key=key,
        )
    if kind == "assign_drop":
        if assign_method not in ("POST", "GET"):
            raise ValueError(
                f"assign_method must be POST or GET, not {assign_method!r}"
            )
        return RestRequest(
            method=assign_method,
            path="/drops/assign",
            body=dict(p),
            idempotency_key=key,
        )
    if kind == "track_delivery":
        name = "batchId" if "batchId" in p else "trackingId"
        return RestRequest(
            method="GET",
            path="/deliveries/track",
            query=((name, p[name]),),
            idempotency_key=key,
        )
    if kind == "fetch_deliveries":
        query = tuple(
            (name, str(p[name]))
            for name in (
                "batchId",
                "trackingId",
                "externalOrderId",
                "customer",
                "page",
                "limit",
            )
            if name in p
        )
        return RestRequest(
            method="GET", path="/deliveries", query=query, idempotency_key=key
        )
    if kind == "wallet_balance":
        return RestRequest(method="GET", path="/wallet/balance", idempotency_key=key)
    raise ValueError(f"unknown command type {kind!r}")


# --------------------------------------------------------------------------
# Replies

OutcomeKind = Literal["succeeded", "retry", "reauth", "rejected", "unavailable"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What one Sendstack reply means for the command.

    ``kind`` is one of:

    * ``succeeded``: 2xx with ``status: true`` (or an empty 2xx body, as the
      Generate POD page documents); ``data`` is the envelope's ``data``.
    * ``retry``: 429 (the failed-request lockout, §5) or 408; wait
      ``retry_after`` seconds if the server said so.
    * ``reauth``: 401, the credentials are wrong. Do not retry in a loop:
      every 401 counts toward the 20-failure lockout.
    * ``rejected``: any other 4xx (400 in either error shape, 404, 422 "Low
      wallet balance"...), a 2xx with ``status: false``, or an unexpected
      1xx/3xx. Retrying will not help.
    * ``unavailable``: 5xx, or a 2xx whose body is not a Sendstack envelope
      (a proxy page). Retryable, but the request may have taken effect.

    Attributes:
        kind: See above.
        status: The HTTP status.
        reason: A short stable code: ``ok``, ``http_<status>``,
            ``status_false``, ``unreadable_reply``.
        message: The envelope's ``message``, else the HTTP reason phrase.
        data: ``succeeded`` only: the envelope's ``data`` (None if absent).
        body: The decoded reply body (None if empty or not JSON), for the
            result record of a rejection.
        retry_after: ``Retry-After`` in seconds, if given as a number.
    """

    kind: OutcomeKind
    status: int | None
    reason: str
    message: str = ""
    data: object = None
    body: object = None
    retry_after: float | None = None

    @property
    def retryable(self) -> bool:
        """True for ``retry`` and ``unavailable``."""
        return self.kind in ("retry", "unavailable")


_NOT_JSON: Final = object()


def _decode(body: bytes) -> object:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _NOT_JSON


def _phrase(status: int) -> str:
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    raw = _header(headers, "retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw.strip())
    except ValueError:
        return None  # an HTTP-date; Sendstack documents no Retry-After at all
    return max(0.0, seconds) if math.isfinite(seconds) else None


def classify(status: int, body: bytes, headers: Mapping[str, str]) -> Outcome:
    """Judge one reply by its HTTP code *and* its envelope (api doc §3).

    Args:
        status: The HTTP status code.
        body: The reply body.
        headers: The reply headers (names matched case-insensitively).

    Returns:
        The outcome; see :class:`Outcome`.
    """
    empty = not body.strip()
    decoded = None if empty else _decode(body)
    envelope = decoded if isinstance(decoded, dict) else None
    message = _phrase(status)
    if envelope is not None and isinstance(envelope.get("message"), str):
        message = envelope["message"]
    shown = None if decoded is _NOT_JSON else decoded
    if 200 <= status < 300:
        if empty:
            return Outcome(
                kind="succeeded", status=status, reason="ok", message=message
            )
        if envelope is not None and envelope.get("status") is True:
            return Outcome(
                kind="succeeded",
                status=status,
                reason="ok",
                message=message,
                data=envelope.get("data"),
                body=envelope,
            )
        if envelope is not None and envelope.get("status") is False:
            return Outcome(
                kind="rejected",
                status=status,
                reason="status_false",
                message=message,
                body=envelope,
            )
        return Outcome(
            kind="unavailable",
            status=status,
            reason="unreadable_reply",
            message=f"{_phrase(status)} without a Sendstack envelope",
            body=shown,
        )
    reason = f"http_{status}"
    if status == 401:
        return Outcome(
            kind="reauth", status=status, reason=reason, message=message, body=shown
        )
    if status in (408, 429):
        return Outcome(
            kind="retry",
            status=status,
            reason=reason,
            message=message,
            body=shown,
            retry_after=_retry_after(headers),
        )
    if 500 <= status < 600:
        return Outcome(
            kind="unavailable",
            status=status,
            reason=reason,
            message=message,
            body=shown,
            retry_after=_retry_after(headers),
        )
    return Outcome(
        kind="rejected", status=status, reason=reason, message=message, body=shown
    )


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """What a reconcile read says about an earlier attempt.

    ``verdict``: ``found`` (the booking exists: ``booking`` holds it),
    ``absent`` (the filtered list is empty: evidence of absence only once
    the settle window has passed, see the executor), or ``unknown`` (the
    reply cannot tell, e.g. the server ignored the filter).
    """

    verdict: Literal["found", "absent", "unknown"]
    booking: dict[str, Any] | None = None
    matched_by: Literal["echo", "filter"] | None = None
    reason: str = ""


def reconciled(command: Command, status: int, body: bytes) -> Reconciliation:
    """Read the reconcile reply: did an earlier attempt already take effect?

    The read is ``GET /deliveries?externalOrderId=…``: the server filters by
    the id. Sendstack's documented reply (§14.8, ``data.drops[]``) does not
    echo ``externalOrderId``, so:

    * an item that echoes the wanted id is the booking (``echo``);
    * a non-empty list whose items carry no ``externalOrderId`` at all is
      the booking too: the query filtered (``filter``);
    * items that echo only *other* ids mean the filter was ignored: unknown;
    * an empty list is ``absent``; the caller must not treat one empty read
      right after a timeout as proof (Sendstack may still be completing it).

    Args:
        command: The command whose ``to_request(...).reconcile`` was sent.
        status: The read's HTTP status.
        body: The read's body.

    Returns:
        The verdict, with the booking as ``{"id", "batchId",
        "externalOrderId", "drops": [...]}`` (or the legacy delivery object)
        when found.
    """
    if command.type != "book_delivery" or not 200 <= status < 300:
        return Reconciliation("unknown", reason=f"http_{status}")
    envelope = _decode(body)
    if not isinstance(envelope, dict) or envelope.get("status") is not True:
        return Reconciliation("unknown", reason="unreadable_reply")
    data = envelope.get("data")
    wanted = command.payload.get("externalOrderId")
    legacy = isinstance(data, dict) and isinstance(data.get("results"), list)
    if legacy:
        assert isinstance(data, dict)  # noqa: S101 - narrowed above
        items = data["results"]
    else:
        items = data.get("drops") if isinstance(data, dict) else data
    if not isinstance(items, list):
        return Reconciliation("unknown", reason="unreadable_reply")
    objects = [item for item in items if isinstance(item, dict)]
    if not objects:
        return Reconciliation("absent")
    how: Literal["echo", "filter"]
    echoed = [o for o in objects if o.get("externalOrderId") == wanted]
    if echoed:
        matching, how = echoed, "echo"
    elif all("externalOrderId" not in o for o in objects):
        matching, how = objects, "filter"
    else:
        return Reconciliation("unknown", reason="filter_ignored")
    if legacy:
        return Reconciliation("found", dict(matching[0]), matched_by=how)
    first = matching[0]
    return Reconciliation(
        "found",
        {
            "id": first.get("deliveryId"),
            "batchId": first.get("batchId"),
            "externalOrderId": wanted,
            "drops": matching,
        },
        matched_by=how,
    )


# --------------------------------------------------------------------------
# Records


def outcome_error(outcome: Outcome) -> dict[str, Any]:
    """The ``error`` object of a result record for a failed reply."""
    return {
        "reason": outcome.reason,
        "message": outcome.message,
        "status": outcome.status,
        "body": outcome.body,
    }


def rejection_error(rejection: Rejection) -> dict[str, Any]:
    """The ``error`` object of a result record for a rejected message."""
    return {
        "reason": rejection.reason,
        "message": rejection.detail,
        "status": None,
        "body": None,
    }


def result_record(
    command: Command | Rejection | None,
    *,
    command_id: str,
    outcome: str,
    response: object | None,
    error: dict[str, Any] | None,
    attempts: int,
    first_attempt_at: str | None,
    finished_at: str,
    duration_ms: float,
    topic: str,
    source_topic: str,
    partition: int,
    offset: int,
    reconciled: bool = False,
    source: str = DEFAULT_SOURCE,
) -> OutboundRecord:
    """Build the result record of one command.

    The value is JSON (schema ``bridge/schemas/commands/result.v1.json``)::

        {"commandId", "type", "correlationId", "outcome", "reconciled",
         "response", "error", "attempts", "firstAttemptAt", "finishedAt",
         "durationMs", "source": {"topic", "partition", "offset"}}

    The key is the command id. Headers follow the CloudEvents Kafka binding
    (binary mode): ``ce_id`` is the command id (a re-published result has
    the same id), ``ce_subject`` the command type (absent when unknown),
    ``ce_correlationid`` the correlation id.

    Args:
        command: The command, or the rejection of its message (which may
            carry the type and correlation id), or None.
        command_id: The key; the command's id or, for messages without a
            readable one, something the worker derives (e.g. topic-partition-
            offset).
        outcome: ``succeeded``; ``failed`` (not carried out: deadline or
            attempts exhausted before it took effect, credentials refused);
            ``rejected`` (invalid: by our validation or by Sendstack's 4xx);
            ``ambiguous`` (an attempt may have taken effect and the bridge
            could not find out: it is never sent again).
        response: Sendstack's ``data`` (or the reconciled booking), or None.
        error: See :func:`outcome_error` and :func:`rejection_error`.
        attempts: REST calls made (0 if none).
        first_attempt_at: ISO-8601 UTC of the first call, if any.
        finished_at: ISO-8601 UTC, the ``ce_time``.
        duration_ms: From first receipt to the result.
        topic: Destination: the default results topic or ``replyTopic``.
        source_topic: Where the command was consumed.
        partition: Its partition.
        offset: Its offset.
        reconciled: True when the response was found by the reconcile read
            rather than returned by the call itself.
        source: The ``ce_source`` attribute.

    Returns:
        The record.

    Raises:
        ValueError: If ``outcome`` is not one of :data:`RESULT_OUTCOMES`.
    """
    if outcome not in RESULT_OUTCOMES:
        raise ValueError(f"outcome must be one of {RESULT_OUTCOMES}, not {outcome!r}")
    if isinstance(command, Command):
        command_type: str | None = command.type
        correlation_id: str | None = command.correlation_id
    elif isinstance(command, Rejection):
        command_type = command.command_type
        correlation_id = command.correlation_id or command.command_id
    else:
        command_type = correlation_id = None
    value = {
        "commandId": command_id,
        "type": command_type,
        "correlationId": correlation_id,
        "outcome": outcome,
        "reconciled": reconciled,
        "response": response,
        "error": error,
        "attempts": attempts,
        "firstAttemptAt": first_attempt_at,
        "finishedAt": finished_at,
        "durationMs": round(max(0.0, duration_ms), 3),
        "source": {"topic": source_topic, "partition": partition, "offset": offset},
    }
    key = command_id.encode()
    headers: list[tuple[str, bytes]] = [
        ("ce_specversion", b"1.0"),
        ("ce_id", key),
        ("ce_source", source.encode()),
        ("ce_type", RESULT_CE_TYPE.encode()),
        ("ce_time", finished_at.encode()),
    ]
    if command_type is not None:
        headers.append(("ce_subject", command_type.encode()))
    headers += [
        ("ce_dataschema", DATA_SCHEMA.encode()),
        ("content-type", b"application/json"),
        ("ce_partitionkey", key),
    ]
    if correlation_id is not None:
        headers.append(("ce_correlationid", correlation_id.encode()))
    return OutboundRecord(
        topic=topic,
        key=key,
        value=orjson.dumps(value),
        headers=tuple(headers),
        dedupe_id=command_id,
        event_time_ms=None,
    )


_UNPARSED: Final = frozenset({"too_large", "malformed_json"})


def command_dead_letter(
    raw: bytes,
    *,
    reason: str,
    detail: str,
    dead_letter_topic: str,
    source_topic: str,
    partition: int,
    offset: int,
    attempts: int,
    received_at: str,
    command_id: str | None = None,
    max_value_bytes: int = 900_000,
) -> OutboundRecord:
    """Build the dead-letter record of a command message.

    The value is the message verbatim (cut to ``max_value_bytes``, with the
    original size and SHA-256 in headers); the headers are those of every
    dead letter (``docs/record-contract.md``: ``bridge_dlq_reason``,
    ``_detail``, ``_origin`` = ``command``, ``_received_at``) plus
    ``bridge_dlq_source_topic``, ``_source_partition``, ``_source_offset``,
    ``bridge_dlq_attempts`` and, when known, ``bridge_dlq_command_id``.

    Args:
        raw: The message exactly as consumed.
        reason: A :data:`REJECTION_REASONS` code, or the worker's own
            (lower-case snake case) for commands that failed later.
        detail: Explanation; clipped to 300 characters.
        dead_letter_topic: Destination.
        source_topic: Where the message was consumed.
        partition: Its partition.
        offset: Its offset.
        attempts: REST calls made for it.
        received_at: ISO-8601 UTC with ms and ``Z``.
        command_id: The command id, if known.
        max_value_bytes: Largest value to write.

    Returns:
        The record (no key).
    """
    truncated = len(raw) > max_value_bytes
    unparsed = truncated or reason in _UNPARSED
    record = dead_letter_record(
        raw,
        codec.Rejection(reason, _clip(detail)),
        Topics(dead_letter=dead_letter_topic),
        received_at=received_at,
        origin="command",
        max_value_bytes=max_value_bytes,
        content_type="application/octet-stream" if unparsed else "application/json",
    )
    extra: list[tuple[str, bytes]] = [
        ("bridge_dlq_source_topic", source_topic.encode()),
        ("bridge_dlq_source_partition", str(partition).encode()),
        ("bridge_dlq_source_offset", str(offset).encode()),
        ("bridge_dlq_attempts", str(attempts).encode()),
    ]
    if command_id is not None:
        extra.append(("bridge_dlq_command_id", command_id.encode()))
    return dataclasses.replace(record, headers=record.headers + tuple(extra))


# --------------------------------------------------------------------------
# Examples (docs, schema files and tests use these)


def _envelope_example(command_type: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "commandId": f"cmd-{command_type.replace('_', '-')}-0001",
        "type": command_type,
    }
    if EXAMPLES[command_type]:
        out["payload"] = EXAMPLES[command_type]
    out["createdAt"] = "2025-06-16T09:30:00.000+01:00"
    out["timeoutSeconds"] = 120
    return out


_DROP_ID: Final = "6650aa10bc12de34f0a1b2c1"

#: One valid payload per type (invented values, documented field names).
EXAMPLES: Final[Mapping[str, dict[str, Any]]] = MappingProxyType(
    {
        "book_delivery": {
            "externalOrderId": "ORD-1001",
            "orderType": "PROCESSING",
            "bookingName": "Ops Desk",
            "bookingPhone": "08020000001",
            "pickup": {
                "address": "12, Bode Thomas Street, Surulere",
                "locationCode": "K9PZ",
                "pickupName": "Adaeze",
                "pickupNumber": "08031234567",
                "pickupDate": "2025-06-17",
                "pickup_house_number": 12,
            },
            "drops": [
                {
                    "recipientName": "Femi",
                    "recipientNumber": "09055550123",
                    "address": "3, Awolowo Road, Ikoyi",
                    "locationCode": "R4QN",
                    "podAmount": 15000,
                }
            ],
        },
        "price_estimate": {
            "orderType": "PROCESSING",
            "pickup": {
                "pickupDate": "2025-06-17",
                "locationCode": "K9PZ",
                "address": "12, Bode Thomas Street, Surulere",
            },
            "drop": {
                "locationCode": "R4QN",
                "address": "3, Awolowo Road, Ikoyi",
                "category": "Documents",
                "weight": 1,
            },
        },
        "generate_pod_account": {"dropId": _DROP_ID},
        "update_delivery": {
            "dropId": _DROP_ID,
            "recipientNumber": "09055550124",
            "note": "Call on arrival",
        },
        "cancel_drops": {
            "dropIds": [_DROP_ID],
            "batchId": "Q2WX7L",
            "note": "customer changed plans",
        },
        "reschedule_delivery": {
            "deliveryId": "6650aa10bc12de34f0a1b2c3",
            "pickupDate": "2025-06-18",
        },
        "update_delivery_window": {
            "estimatedPickupWindow": {
                "date": "2025-06-18 00:00:00",
                "start": "2025-06-18 08:00:00",
                "end": "2025-06-18 12:00:00",
            },
            "estimatedDropoffWindow": {
                "date": "2025-06-18 00:00:00",
                "start": "2025-06-18 12:00:00",
                "end": "2025-06-18 17:00:00",
            },
            "dropIds": [_DROP_ID],
            "pickupDate": "2025-06-18",
        },
        "assign_drop": {
            "partnerId": "6650a0aa77bc12de34f09911",
            "dropIds": [_DROP_ID],
        },
        "add_private_note": {"dropIds": [_DROP_ID], "note": "Fragile: glass"},
        "create_tracker_event": {
            "trackerId": "6651bb20cd34ef56a1b2c3d4",
            "eventType": "OVER_SPEEDING_WARNING",
            "eventConfig": {"speedLimit": 80},
            "eventNotification": {
                "acceptedMediums": [
                    {
                        "channel": "email",
                        "isEnabled": True,
                        "defaultEmail": ["fleet@example.invalid"],
                    },
                    {"channel": "inApp", "isEnabled": False},
                ],
                "status": "active",
            },
        },
        "track_delivery": {"batchId": "Q2WX7L"},
        "fetch_deliveries": {"externalOrderId": "ORD-1001", "page": 1, "limit": 15},
        "wallet_balance": {},
    }
)


def result_schema() -> dict[str, Any]:
    """The JSON Schema of a result record's value (``result.v1.json``)."""
    nullable_string = {"type": ["string", "null"]}
    return {
        "$schema": _SCHEMA_DIALECT,
        "$id": DATA_SCHEMA,
        "title": "Sendstack bridge command result, v1",
        "description": "The value of a record on the results topic (or the "
        "command's replyTopic), keyed by commandId. See docs/commands.md.",
        "type": "object",
        "required": [
            "commandId",
            "type",
            "correlationId",
            "outcome",
            "reconciled",
            "response",
            "error",
            "attempts",
            "firstAttemptAt",
            "finishedAt",
            "durationMs",
            "source",
        ],
        "properties": {
            "commandId": {"type": "string", "minLength": 1},
            "type": {
                "description": "The command type; null if the message had none "
                "we know.",
                "type": ["string", "null"],
            },
            "correlationId": {
                **nullable_string,
                "description": "correlationId, else commandId; null if unknown.",
            },
            "outcome": {
                "description": "succeeded; failed (not carried out); "
                "rejected (invalid, by our validation or Sendstack's 4xx); "
                "ambiguous (may have taken effect; never sent again: check it).",
                "enum": list(RESULT_OUTCOMES),
            },
            "reconciled": {
                "description": "True when response was found by the reconcile "
                "read (an earlier attempt had taken effect).",
                "type": "boolean",
            },
            "response": {
                "description": "Sendstack's data on success (any JSON), else null.",
            },
            "error": {
                "description": "Why it did not succeed; null on success.",
                "type": ["object", "null"],
                "required": ["reason", "message"],
                "properties": {
                    "reason": {
                        "description": "A rejection reason, http_<status>, "
                        "status_false, unreadable_reply, or a worker reason.",
                        "type": "string",
                        "pattern": "^[a-z][a-z0-9_]*$",
                    },
                    "message": {"type": "string"},
                    "status": {"type": ["integer", "null"]},
                    "body": {"description": "Sendstack's reply body, if any."},
                },
            },
            "attempts": {"type": "integer", "minimum": 0},
            "firstAttemptAt": {
                **nullable_string,
                "description": "First REST call, UTC, ms precision; null if none.",
            },
            "finishedAt": {
                "description": "When the result was decided, UTC, ms precision.",
                "type": "string",
                "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:"
                "[0-9]{2}\\.[0-9]{3}Z$",
            },
            "durationMs": {"type": "number", "minimum": 0},
            "source": {
                "type": "object",
                "required": ["topic", "partition", "offset"],
                "properties": {
                    "topic": {"type": "string"},
                    "partition": {"type": "integer", "minimum": 0},
                    "offset": {"type": "integer", "minimum": 0},
                },
            },
        },
    }
