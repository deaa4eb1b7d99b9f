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

What each command type is (payload spec, call, ordering key, repeatable and
query flags, reconcile read, example) is one entry of the catalogue,
``bridge.core.command_types.CATALOGUE`` (the entry's shape is in
``bridge.core.command_catalogue``, the spec nodes in
``bridge.core.command_specs``). Everything here that depends on the type
reads the entry; :data:`COMMAND_TYPES`, :data:`QUERY_TYPES`,
:data:`REPEATABLE_TYPES` and :data:`EXAMPLES` are derived from it. The same
spec tree validates a payload and renders the JSON Schema shipped in
``bridge/schemas/commands/``, so the published schemas and the validator
cannot drift apart; a test checks that the files are current and that an
independent schema validator agrees with this one on every example.

What Sendstack does not document is our contract, stated as such:

* ``book_delivery`` must carry ``externalOrderId`` (see
  ``bridge/core/command_types.py``), so that a booking whose reply was lost
  can be found again instead of booked twice.
* ``Idempotency-Key`` (the command id) is sent on every call. Sendstack does
  not document one, so nothing here relies on it being honoured.
* Detail texts name fields and positions but never repeat payload values.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from types import MappingProxyType
from typing import Any, Final, Literal

import orjson

from bridge.core import codec
from bridge.core.command_catalogue import (
    PAYLOAD_SCHEMA_ID,
    Catalogue,
    CommandType,
    RestRequest,
)
from bridge.core.command_specs import (
    SCHEMA_DIALECT,
    Num,
    Obj,
    Spec,
    Str,
    clip,
    field_name,
)
from bridge.core.command_types import CATALOGUE
from bridge.core.records import OutboundRecord, Topics, dead_letter_record

__all__ = [
    "CATALOGUE",
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
    "Catalogue",
    "Command",
    "CommandType",
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
COMMAND_TYPES: Final[tuple[str, ...]] = CATALOGUE.types

#: Read-only types (entries flagged ``query``): repeating one changes nothing
#: at Sendstack.
QUERY_TYPES: Final[frozenset[str]] = CATALOGUE.query_types

#: Types whose repetition ends in the same state as one execution (entries
#: flagged ``repeatable``): the queries, and updates that set absolute
#: values. A retry after an ambiguous failure is safe for these (though its
#: reply may differ, e.g. a 400 once a drop moved on). Not in here: bookings,
#: notes, tracker events and POD accounts create something each time;
#: cancelling twice may answer 400.
REPEATABLE_TYPES: Final[frozenset[str]] = CATALOGUE.repeatable_types

#: One valid payload per type (invented values, documented field names).
EXAMPLES: Final[Mapping[str, dict[str, Any]]] = CATALOGUE.examples

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

_MAX_TIMEOUT_SECONDS: Final = 7 * 24 * 3600.0

# Envelope patterns; ECMA-262 compatible, like those of command_specs.
_COMMAND_ID = r"^[A-Za-z0-9._:-]{1,128}$"
_TOPIC = r"^(?!\.{1,2}$)[A-Za-z0-9._-]{1,249}$"  # "." and ".." are not topics
_PRINTABLE_256 = r"^[^\u0000-\u001f\u007f]{1,256}$"
_DATE_TIME = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})$"
)


# --------------------------------------------------------------------------
# Schemas


def payload_schema(
    command_type: str, *, catalogue: Catalogue = CATALOGUE
) -> dict[str, Any]:
    """The JSON Schema of one type's payload (``<type>.v1.json``).

    Args:
        command_type: One of the catalogue's types (:data:`COMMAND_TYPES`).
        catalogue: The catalogue to read.

    Returns:
        A fresh dict, with ``$schema``, ``$id``, ``title`` and ``examples``.

    Raises:
        KeyError: For an unknown type.
    """
    return catalogue[command_type].payload_schema()


def _envelope_fields(types: tuple[str, ...]) -> dict[str, Spec]:
    return {
        "commandId": Str(
            "Unique id of the command: the result key, the dedupe key and the "
            "Idempotency-Key header.",
            pattern=_COMMAND_ID,
            pattern_text="1 to 128 letters, digits, '.', '_', ':' or '-'",
            max_length=128,
        ),
        "type": Str("What to do.", enum=types),
        "payload": Obj({}, description="Validated by <type>.v1.json.", extra=True),
        "replyTopic": Str(
            "Topic for this command's result instead of the default one.",
            pattern=_TOPIC,
            pattern_text="a Kafka topic name",
            max_length=249,
        ),
        "correlationId": Str(
            "Copied into the result; defaults to commandId.",
            pattern=_PRINTABLE_256,
            pattern_text="1 to 256 printable characters",
            max_length=256,
        ),
        "createdAt": Str(
            "When the command was made, RFC 3339 with an offset.",
            pattern=_DATE_TIME,
            pattern_text="an RFC 3339 date-time with an offset",
            max_length=40,
        ),
        "deadline": Str(
            "Give up after this instant, RFC 3339 with an offset.",
            pattern=_DATE_TIME,
            pattern_text="an RFC 3339 date-time with an offset",
            max_length=40,
        ),
        "timeoutSeconds": Num(
            "Give up this long after createdAt (or after arrival).",
            exclusive_minimum=0,
            maximum=_MAX_TIMEOUT_SECONDS,
        ),
        "version": Num("Envelope version; 1 if absent.", integer=True, minimum=1),
    }


# For parsing; "type" is checked against the catalogue there.
_ENVELOPE_FIELDS: Final[Mapping[str, Spec]] = MappingProxyType(
    _envelope_fields(COMMAND_TYPES)
)


def envelope_schema(*, catalogue: Catalogue = CATALOGUE) -> dict[str, Any]:
    """The JSON Schema of a command message (``envelope.v1.json``).

    ``type`` is one of the catalogue's types, and each type's branch refers
    to its payload schema (required unless ``{}`` is a valid payload). The
    example is the first type's.
    """
    fields = {k: s.schema() for k, s in _envelope_fields(catalogue.types).items()}
    fields["version"] = {**fields["version"], "const": 1}
    branches = []
    for name, entry in catalogue.items():
        then: dict[str, Any] = {
            "properties": {"payload": {"$ref": PAYLOAD_SCHEMA_ID.format(name)}}
        }
        if entry.needs_payload:
            then = {"required": ["payload"], **then}
        branches.append(
            {
                "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                "then": then,
            }
        )
    return {
        "$schema": SCHEMA_DIALECT,
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
        "examples": [_envelope_example(next(iter(catalogue.values())))],
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
        entry: The type's catalogue entry (not compared). Left out, the
            default catalogue's entry for ``type`` (None if it has none).

    :attr:`query` and :attr:`repeatable` are the entry's flags (False for a
    type the catalogue does not know).
    """

    command_id: str
    type: str
    payload: dict[str, Any]
    reply_topic: str | None
    deadline: float | None
    correlation_id: str
    ordering_key: str
    created_at: str | None
    entry: CommandType | None = dataclasses.field(
        default=None, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.entry is None:
            object.__setattr__(self, "entry", CATALOGUE.get(self.type))
        elif self.entry.name != self.type:
            raise ValueError(f"entry {self.entry.name!r} is not type {self.type!r}")

    @property
    def query(self) -> bool:
        """True for a read-only type: repeating it changes nothing at Sendstack."""
        return self.entry is not None and self.entry.query

    @property
    def repeatable(self) -> bool:
        """True when a repetition ends in the same state as one execution."""
        return self.entry is not None and self.entry.repeatable


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


def parse_command(
    raw: bytes, *, max_bytes: int, now: float, catalogue: Catalogue = CATALOGUE
) -> Command | Rejection:
    """Validate one command message.

    Args:
        raw: The record value exactly as consumed.
        max_bytes: Longer messages are rejected unparsed (``too_large``).
        now: Epoch seconds, for ``expired`` and for ``timeoutSeconds``
            without ``createdAt``.
        catalogue: The command types to accept.

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
    raw_type = message.get("type")
    entry = catalogue.get(raw_type) if isinstance(raw_type, str) else None
    command_type = None if entry is None else entry.name
    salvage = {
        "command_id": command_id,
        "command_type": command_type,
        "reply_topic": _valid_str(message, "replyTopic"),
        "correlation_id": _valid_str(message, "correlationId"),
    }

    def reject(reason: str, detail: str) -> Rejection:
        return Rejection(reason, clip(detail), **salvage)

    for name in ("commandId", "type"):
        if name not in message:
            return reject("missing_field", f"{name}: is required")
    for key in message:
        if key not in _ENVELOPE_FIELDS:
            return reject("invalid_envelope", f"unknown field {field_name(str(key))}")
    if entry is None or command_type is None:
        return reject(
            "unknown_type", f"type: must be one of {', '.join(catalogue.types)}"
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
        if entry.needs_payload:
            return reject("missing_field", f"payload: is required for {command_type}")
        payload: dict[str, Any] = {}
    else:
        payload = message["payload"]
        problem = entry.check(payload)
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
        ordering_key=entry.ordering_key(payload, command_id),
        created_at=created_at,
        entry=entry,
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


def ordering_key(
    command_type: str,
    payload: Mapping[str, Any],
    command_id: str,
    *,
    catalogue: Catalogue = CATALOGUE,
) -> str:
    """The key that orders commands touching the same thing.

    The key is the identifier the command names: the first of the entry's
    ``ordering`` fields that the payload gives (the first item of an array),
    e.g. ``externalOrderId`` for ``book_delivery`` or the first of
    ``dropIds`` for the drop commands; otherwise (or for a type the
    catalogue does not know) the command id (no order needed). The table in
    ``docs/commands.md`` lists each type's fields. Two commands naming one
    delivery by different identifiers (a drop id and a batch id) get
    different keys: name a delivery the same way in commands that must run
    in order.

    Args:
        command_type: One of the catalogue's types (:data:`COMMAND_TYPES`).
        payload: A payload valid for the type.
        command_id: The fallback key.
        catalogue: The catalogue to read.

    Returns:
        A non-empty string.
    """
    entry = catalogue.get(command_type)
    return command_id if entry is None else entry.ordering_key(payload, command_id)


# --------------------------------------------------------------------------
# Requests


def to_request(command: Command, *, assign_method: str = "POST") -> RestRequest:
    """The REST call that carries out a command (its catalogue entry's call).

    Args:
        command: A command from :func:`parse_command`.
        assign_method: ``POST`` or ``GET`` for Assign Drop (the docs show
            both, §17.4); with GET the JSON body is sent all the same. Types
            without this method option ignore it.

    Returns:
        The request; deterministic in its arguments.

    Raises:
        ValueError: For an unknown type or assign method (a :class:`Command`
            from :func:`parse_command` always has a known type).
    """
    if command.entry is None:
        raise ValueError(f"unknown command type {command.type!r}")
    return command.entry.request(
        command.payload, command.command_id, {"assign_method": assign_method}
    )


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

    The read is the entry's :class:`~bridge.core.command_catalogue.Reconcile`
    read, a Fetch Deliveries read filtered by one payload field: for
    ``book_delivery`` (the only type with one), ``GET
    /deliveries?externalOrderId=…``. Sendstack's documented reply (§14.8,
    ``data.drops[]``) does not echo ``externalOrderId``, so:

    * an item that echoes the wanted id is the booking (``echo``);
    * a non-empty list whose items carry no ``externalOrderId`` at all is
      the booking too (``filter``), but only if it looks like *one* booking:
      no more drops than the command booked, all of one delivery. A server
      that ignored the filter lists other bookings as well: unknown;
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
        when found; ``unknown`` for a type without a reconcile read.
    """
    check = None if command.entry is None else command.entry.reconcile
    if check is None or not 200 <= status < 300:
        return Reconciliation("unknown", reason=f"http_{status}")
    envelope = _decode(body)
    if not isinstance(envelope, dict) or envelope.get("status") is not True:
        return Reconciliation("unknown", reason="unreadable_reply")
    data = envelope.get("data")
    by = check.by  # externalOrderId for book_delivery
    wanted = command.payload.get(by)
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
    echoed = [o for o in objects if o.get(by) == wanted]
    if echoed:
        matching, how = echoed, "echo"
    elif all(by not in o for o in objects):
        if not _one_booking(objects, command, legacy=legacy):
            return Reconciliation("unknown", reason="filter_unproven")
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
            by: wanted,
            "drops": matching,
        },
        matched_by=how,
    )


def _one_booking(
    items: list[dict[str, Any]], command: Command, *, legacy: bool
) -> bool:
    """Could ``items`` be exactly what this command booked (and nothing else)?"""
    if legacy:
        return len(items) == 1  # legacy items are deliveries
    drops = command.payload.get("drops")
    booked = len(drops) if isinstance(drops, list) else 1
    deliveries = {
        str(item.get("deliveryId") or item.get("batchId"))
        for item in items
        if item.get("deliveryId") or item.get("batchId")
    }
    return len(items) <= booked and len(deliveries) <= 1


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
        codec.FrameRejection(reason, clip(detail)),
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
# Result schema, and the envelope's example


def _envelope_example(entry: CommandType) -> dict[str, Any]:
    out: dict[str, Any] = {
        "commandId": f"cmd-{entry.name.replace('_', '-')}-0001",
        "type": entry.name,
    }
    if entry.example:
        out["payload"] = entry.example
    out["createdAt"] = "2025-06-16T09:30:00.000+01:00"
    out["timeoutSeconds"] = 120
    return out


def result_schema() -> dict[str, Any]:
    """The JSON Schema of a result record's value (``result.v1.json``)."""
    nullable_string = {"type": ["string", "null"]}
    return {
        "$schema": SCHEMA_DIALECT,
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
