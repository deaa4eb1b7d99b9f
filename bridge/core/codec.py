"""Upstream wire format: one websocket frame in, understood items out.

Theory of operation
-------------------
Sendstack documents nothing about the messages on its tracking websocket
(``docs/wire-format.md``; ``sendstack-api.md`` §7), so everything the bridge
assumes about their shape lives here and nowhere else. A codec turns the bytes
of one frame into a :class:`Decoded` value:

* ``items``: every upstream item it understood, already normalised into an
  :class:`Item` (kind, Kafka key, dedupe id, event time and record value).
* ``rejection``: set when *any* part of the frame was not understood. The
  caller dead-letters the whole frame verbatim, and still publishes the
  understood items, so one odd item never hides its neighbours and nothing is
  silently dropped.
* ``keepalive``: the frame was ``{}``.

``decode`` never raises on any input: a problem with a message is a value, not
an exception, so one bad frame cannot stop the stream. Oversize frames are
refused before parsing, so a hostile peer cannot make us parse megabytes.

The only codec today is ``traccar-json`` v1 (:class:`TraccarJsonCodec`), the
Traccar-like shape described in ``docs/wire-format.md``: a JSON object holding
any of the arrays ``positions``, ``devices`` and ``events``. When a capture of
the real wire exists, a new codec is added to :data:`_CODECS` and selected by
name; the record contract (``bridge/core/records.py``) does not change.

This module is on the hot path (tens of thousands of items per second), which
explains its style: ``type(x) is int`` rather than ``isinstance`` (it also
excludes ``bool``), a fast path for UTC millisecond timestamps, no copies of
upstream sub-objects, items built by writing their slots (:func:`_item`), and
a private exception that unwinds only on the rare invalid item.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Final, Literal, Protocol

import orjson

__all__ = [
    "ALARM_TYPES",
    "CANONICAL_EVENT_TYPES",
    "CODEC_NAMES",
    "EVENT_TYPES",
    "REJECTION_REASONS",
    "UNPARSED_REASONS",
    "Decoded",
    "FrameCodec",
    "FrameRejection",
    "Item",
    "Kind",
    "TraccarJsonCodec",
    "codec_by_name",
]

Kind = Literal["position", "device_status", "event"]

#: Upstream event ``type`` -> canonical event type (``docs/wire-format.md``).
#: Traccar names first, then the tracker-event names Sendstack documents for
#: ``POST /tracker/event`` (``sendstack-api.md`` §15.3). ``alarm`` is not here:
#: its meaning is in ``attributes.alarm``, see :data:`ALARM_TYPES`.
EVENT_TYPES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "deviceOverspeed": "overspeed",
        "OVER_SPEEDING_WARNING": "overspeed",
        "LOW_BATTERY_ALERT": "low_battery",
        "deviceStopped": "no_movement",
        "NO_MOVEMENT_ALERT": "no_movement",
        "deviceInactive": "no_signal",
        "NO_SIGNAL_ALERT": "no_signal",
        "geofenceEnter": "geofence_in",
        "GEOFENCE_IN": "geofence_in",
        "geofenceExit": "geofence_out",
        "GEOFENCE_OUT": "geofence_out",
    }
)

#: Traccar reports many alarms as ``type: "alarm"`` with the alarm's name in
#: ``attributes.alarm``; only these alarm names are understood.
ALARM_TYPES: Final[Mapping[str, str]] = MappingProxyType({"lowBattery": "low_battery"})

#: The six canonical event types of the record contract.
CANONICAL_EVENT_TYPES: Final[frozenset[str]] = frozenset(
    {
        "overspeed",
        "low_battery",
        "no_movement",
        "no_signal",
        "geofence_in",
        "geofence_out",
    }
)

#: Every :attr:`FrameRejection.reason` this module produces.
REJECTION_REASONS: Final[tuple[str, ...]] = (
    "oversize",
    "empty",
    "malformed_json",
    "not_an_object",
    "unknown_field",
    "not_an_array",
    "invalid_item",
    "unknown_event_type",
)

#: Reasons given before the frame was parsed as JSON: a dead-letter record for
#: them cannot claim ``application/json``.
UNPARSED_REASONS: Final[frozenset[str]] = frozenset(
    {"oversize", "empty", "malformed_json"}
)

_DETAIL_MAX: Final = 300
_NAME_MAX: Final = 40
_ID_MAX: Final = 128
_TIME_MAX: Final = 64
# Naive on purpose: it is only ever subtracted from naive UTC datetimes.
_EPOCH_NAIVE: Final = datetime(1970, 1, 1)  # noqa: DTZ001
_ONE_MS: Final = timedelta(milliseconds=1)
_fromiso = datetime.fromisoformat

_NUMBER_OR_NULL: Final = frozenset({int, float, type(None)})
_POSITION_KEYS: Final = frozenset(
    {
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
    }
)
_DEVICE_KEYS: Final = frozenset(
    {"id", "name", "uniqueId", "status", "lastUpdate", "positionId", "attributes"}
)
_EVENT_KEYS: Final = frozenset(
    {"id", "type", "eventTime", "deviceId", "positionId", "geofenceId", "attributes"}
)

# Exact by definition; a knot is one nautical mile per hour.
_METRES_PER_NAUTICAL_MILE: Final = 1852


@dataclass(frozen=True, slots=True)
class Item:
    """One understood upstream item, normalised and ready to become a record.

    Attributes:
        kind: ``position``, ``device_status`` or ``event``.
        event_type: The canonical event type for events, else ``None``.
        device_id: The device the item is about; the Kafka key.
        event_id: A deterministic id for de-duplication: ``position:<id>``,
            ``event:<id>`` or ``device:<id>:<lastUpdate epoch ms>:<status>``.
            When a position or event carries no upstream id, it is the kind,
            a colon and the blake2b-128 hex digest of the canonical JSON of
            :attr:`data`.
        event_time: When it happened, ISO-8601 UTC with milliseconds and ``Z``.
        event_time_ms: :attr:`event_time` as epoch milliseconds.
        data: The record value (see ``docs/record-contract.md``). Treat it
            as read-only: it shares upstream sub-objects (``attributes``,
            ``extra``) without copying them.
    """

    kind: Kind
    event_type: str | None
    device_id: str
    event_id: str
    event_time: str
    event_time_ms: int
    data: dict[str, object]


@dataclass(frozen=True, slots=True)
class FrameRejection:
    """Why (part of) a frame was not understood.

    Attributes:
        reason: A short stable code, one of :data:`REJECTION_REASONS`.
        detail: Human-readable explanation, at most 300 characters. It names
            fields and positions but never repeats payload values.
    """

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Decoded:
    """The outcome of decoding one frame.

    Attributes:
        items: The understood items, in frame order.
        rejection: Set iff some part of the frame was not understood; the
            caller then dead-letters the whole frame and still publishes
            :attr:`items`.
        keepalive: The frame was the keep-alive ``{}``.
    """

    items: tuple[Item, ...]
    rejection: FrameRejection | None
    keepalive: bool


# A frozen dataclass's __init__ sets each field through object.__setattr__,
# about a third of an item's cost on the hot path: _item writes the slots
# directly. The field list is checked at import, so a new field cannot be
# forgotten here.
_ITEM_FIELDS: Final = (
    "kind",
    "event_type",
    "device_id",
    "event_id",
    "event_time",
    "event_time_ms",
    "data",
)
if tuple(f.name for f in fields(Item)) != _ITEM_FIELDS:
    raise TypeError(f"Item fields changed: update _item ({_ITEM_FIELDS})")
(
    _set_kind,
    _set_event_type,
    _set_device_id,
    _set_event_id,
    _set_event_time,
    _set_event_time_ms,
    _set_data,
) = (vars(Item)[name].__set__ for name in _ITEM_FIELDS)
_new_object = object.__new__


def _item(
    kind: Kind,
    event_type: str | None,
    device_id: str,
    event_id: str,
    event_time: str,
    event_time_ms: int,
    data: dict[str, object],
) -> Item:
    """``Item(...)`` with the same arguments, without the frozen ``__init__``."""
    item: Item = _new_object(Item)
    _set_kind(item, kind)
    _set_event_type(item, event_type)
    _set_device_id(item, device_id)
    _set_event_id(item, event_id)
    _set_event_time(item, event_time)
    _set_event_time_ms(item, event_time_ms)
    _set_data(item, data)
    return item


class FrameCodec(Protocol):
    """Turns the bytes of one upstream frame into a :class:`Decoded`."""

    name: str

    def decode(self, raw: bytes) -> Decoded:
        """Decode one frame; never raises."""


class _Invalid(Exception):
    """Unwinds out of an item parser; becomes a :class:`FrameRejection`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _name(text: str) -> str:
    """Quote an upstream name (key or type) for a detail: short, ASCII only.

    ``ascii()`` escapes control and non-ASCII characters, so a detail can be
    logged or put in a Kafka header as is.
    """
    quoted = ascii(text[:_NAME_MAX])
    if len(quoted) <= _NAME_MAX + 2:
        return quoted
    return quoted[:_NAME_MAX] + "..."


def _json_type(value: object) -> str:
    """Name the JSON type of a parsed value, for details."""
    if value is None:
        return "null"
    if type(value) is bool:
        return "a boolean"
    if type(value) is str:
        return "a string"
    if type(value) is list:
        return "an array"
    if type(value) is dict:
        return "an object"
    return "a number"


def _id(value: object, field: str) -> str:
    """Normalise a required upstream id (integer or string) to a string."""
    if type(value) is int:
        return str(value)
    if type(value) is str and 0 < len(value) <= _ID_MAX:
        return value
    if value is None:
        raise _Invalid("invalid_item", f"{field}: missing")
    raise _Invalid("invalid_item", f"{field}: must be an integer or a non-empty string")


def _ref_id(value: object, field: str) -> str | None:
    """Normalise an optional reference id; Traccar writes ``0`` for "none"."""
    if value is None or (type(value) is int and value == 0):
        return None
    return _id(value, field)


def _not_a_number(obj: dict[str, object], fields: tuple[str, ...]) -> _Invalid:
    """Name the first of ``fields`` that is neither a JSON number nor null."""
    *firsts, last = fields
    for field in firsts:
        if type(obj.get(field)) not in _NUMBER_OR_NULL:
            return _Invalid("invalid_item", f"{field}: must be a number")
    return _Invalid("invalid_item", f"{last}: must be a number")


def _opt_str(value: object, field: str) -> str | None:
    """Accept a JSON string or null."""
    if value is None or type(value) is str:
        return value
    raise _Invalid("invalid_item", f"{field}: must be a string")


def _attributes(value: object) -> dict[str, object]:
    """Accept the ``attributes`` object (kept whole, not copied) or null."""
    if type(value) is dict:
        return value
    if value is None:
        return {}
    raise _Invalid("invalid_item", "attributes: must be an object")


def _extra(obj: dict[str, object], known: frozenset[str]) -> dict[str, object]:
    """Collect the keys we do not model, so that nothing upstream sent is lost."""
    return {key: value for key, value in obj.items() if key not in known}


def _time(value: object, field: str) -> tuple[str, int]:
    """Normalise a timestamp to ``YYYY-MM-DDTHH:MM:SS.sssZ`` and epoch ms.

    The two UTC spellings with milliseconds, ``...sssZ`` (the stand-in server) and
    ``...sss+00:00`` (Traccar's own JSON), take a fast path: one C-level parse
    and no formatting. Everything else goes to :func:`_time_slow`.
    """
    if type(value) is not str:
        raise _Invalid("invalid_item", f"{field}: must be an ISO-8601 string")
    size = len(value)
    # value[4:20:3] picks the six separators of "YYYY-MM-DDTHH:MM:SS.sss".
    if (
        (size == 24 and value[23] == "Z") or (size == 29 and value[23:] == "+00:00")
    ) and value[4:20:3] == "--T::.":
        try:
            parsed = _fromiso(value[:23])
        except ValueError:
            parsed = None
        # With the separators pinned, a naive result proves the other 17
        # characters are the digits of a valid date and time: the first 23
        # characters are already canonical. Anything odder goes the slow way.
        if parsed is not None and parsed.tzinfo is None:
            canonical = value if size == 24 else value[:23] + "Z"
            return canonical, (parsed - _EPOCH_NAIVE) // _ONE_MS
    return _time_slow(value, field)


def _time_slow(value: str, field: str) -> tuple[str, int]:
    """Parse any ISO-8601 form ``datetime.fromisoformat`` accepts, with offset.

    Sub-millisecond digits are truncated. A timestamp without an offset is
    refused rather than guessed: reading a device's local time as UTC would
    silently shift every record.
    """
    if len(value) > _TIME_MAX:
        raise _Invalid("invalid_item", f"{field}: not an ISO-8601 timestamp")
    try:
        parsed = _fromiso(value)
    except ValueError:
        raise _Invalid("invalid_item", f"{field}: not an ISO-8601 timestamp") from None
    offset = parsed.utcoffset()
    if offset is None:
        raise _Invalid("invalid_item", f"{field}: timestamp has no UTC offset")
    try:
        utc = parsed.replace(tzinfo=None) - offset
    except OverflowError:
        raise _Invalid("invalid_item", f"{field}: timestamp out of range") from None
    return _from_utc(utc)


def _from_utc(utc: datetime) -> tuple[str, int]:
    """A naive UTC instant as ``YYYY-MM-DDTHH:MM:SS.sssZ`` and epoch ms (truncated)."""
    millis = utc.microsecond // 1000
    iso = (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T"
        f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}.{millis:03d}Z"
    )
    return iso, (utc - _EPOCH_NAIVE) // _ONE_MS


def _digest_id(kind: str, data: dict[str, object]) -> str:
    """Derive a stable id from the normalised value when upstream sent none.

    Hashing the *normalised* value (not the raw item) means the same item
    re-sent with a differently written timestamp still gets the same id.
    """
    canonical = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    return f"{kind}:{hashlib.blake2b(canonical, digest_size=16).hexdigest()}"


def _position(obj: dict[str, object]) -> Item:
    """Validate and normalise one ``positions[]`` item."""
    get = obj.get
    device_id = _id(get("deviceId"), "deviceId")
    raw_id = get("id")
    position_id = None if raw_id is None else _id(raw_id, "id")

    raw_device_time = get("deviceTime")
    raw_server_time = get("serverTime")
    device_time = (
        None if raw_device_time is None else _time(raw_device_time, "deviceTime")
    )
    server_time = (
        None if raw_server_time is None else _time(raw_server_time, "serverTime")
    )
    raw_fix_time = get("fixTime")
    # Traccar always sends fixTime; the fallbacks keep a position whose fix
    # time is missing rather than dead-lettering it (docs/record-contract.md).
    if raw_fix_time is not None:
        event_time, event_time_ms = _time(raw_fix_time, "fixTime")
    elif device_time is not None:
        event_time, event_time_ms = device_time
    elif server_time is not None:
        event_time, event_time_ms = server_time
    else:
        raise _Invalid("invalid_item", "fixTime: missing (no deviceTime/serverTime)")

    latitude = get("latitude")
    if not (
        (type(latitude) is float or type(latitude) is int) and -90 <= latitude <= 90
    ):
        raise _Invalid("invalid_item", "latitude: must be a number in [-90, 90]")
    longitude = get("longitude")
    if not (
        (type(longitude) is float or type(longitude) is int)
        and -180 <= longitude <= 180
    ):
        raise _Invalid("invalid_item", "longitude: must be a number in [-180, 180]")
    altitude = get("altitude")
    speed = get("speed")
    course = get("course")
    accuracy = get("accuracy")
    # One combined test on the hot path; the slow helper names the culprit.
    if not (
        type(altitude) in _NUMBER_OR_NULL
        and type(speed) in _NUMBER_OR_NULL
        and type(course) in _NUMBER_OR_NULL
        and type(accuracy) in _NUMBER_OR_NULL
    ):
        raise _not_a_number(obj, ("altitude", "speed", "course", "accuracy"))
    valid = get("valid")
    if valid is not None and type(valid) is not bool:
        raise _Invalid("invalid_item", "valid: must be a boolean")
    attributes = get("attributes")
    if type(attributes) is not dict:
        attributes = _attributes(attributes)

    # km/h to 3 decimals via an integer round: round(x, 3) is ~4x slower. The
    # type() tests above do not narrow for mypy; speed is an int or float here
    # (an ignore rather than typing.cast, which is a call per item).
    speed_kph = None
    if speed is not None:
        speed_kph = round(speed * _METRES_PER_NAUTICAL_MILE) / 1000  # type: ignore[operator]

    data: dict[str, object] = {
        "deviceId": device_id,
        "positionId": position_id,
        "fixTime": event_time,
        "latitude": latitude,
        "longitude": longitude,
        "altitude": altitude,
        "speedKnots": speed,
        "speedKph": speed_kph,
        "course": course,
        "accuracy": accuracy,
        "valid": valid,
        "attributes": attributes,
    }
    if device_time is not None:
        data["deviceTime"] = device_time[0]
    if server_time is not None:
        data["serverTime"] = server_time[0]
    if not obj.keys() <= _POSITION_KEYS:
        data["extra"] = _extra(obj, _POSITION_KEYS)
    event_id = (
        _digest_id("position", data)
        if position_id is None
        else "position:" + position_id
    )
    return _item("position", None, device_id, event_id, event_time, event_time_ms, data)


def _device(obj: dict[str, object]) -> Item:
    """Validate and normalise one ``devices[]`` item (a status change)."""
    get = obj.get
    device_id = _id(get("id"), "id")
    status = get("status")
    if not (type(status) is str and 0 < len(status) <= _ID_MAX):
        raise _Invalid("invalid_item", "status: must be a non-empty string")
    raw_last_update = get("lastUpdate")
    if raw_last_update is None:
        raise _Invalid("invalid_item", "lastUpdate: missing")
    last_update, last_update_ms = _time(raw_last_update, "lastUpdate")

    data: dict[str, object] = {
        "deviceId": device_id,
        "name": _opt_str(get("name"), "name"),
        "uniqueId": _opt_str(get("uniqueId"), "uniqueId"),
        "status": status,
        "lastUpdate": last_update,
        "positionId": _ref_id(get("positionId"), "positionId"),
        "attributes": _attributes(get("attributes")),
    }
    if not obj.keys() <= _DEVICE_KEYS:
        data["extra"] = _extra(obj, _DEVICE_KEYS)
    # A device update has no id of its own (docs/wire-format.md): the same
    # device, update instant and status is the same update.
    event_id = f"device:{device_id}:{last_update_ms}:{status}"
    return _item(
        "device_status", None, device_id, event_id, last_update, last_update_ms, data
    )


def _event(obj: dict[str, object]) -> Item:
    """Validate and normalise one ``events[]`` item."""
    get = obj.get
    upstream_type = get("type")
    if not (type(upstream_type) is str and upstream_type):
        raise _Invalid("invalid_item", "type: must be a non-empty string")
    attributes = _attributes(get("attributes"))
    event_type = EVENT_TYPES.get(upstream_type)
    if event_type is None:
        if upstream_type != "alarm":
            raise _Invalid(
                "unknown_event_type", f"type: {_name(upstream_type)} is not mapped"
            )
        alarm = attributes.get("alarm")
        if type(alarm) is not str:
            raise _Invalid("unknown_event_type", "attributes.alarm: missing for alarm")
        event_type = ALARM_TYPES.get(alarm)
        if event_type is None:
            raise _Invalid(
                "unknown_event_type", f"attributes.alarm: {_name(alarm)} is not mapped"
            )
    device_id = _id(get("deviceId"), "deviceId")
    raw_id = get("id")
    upstream_id = None if raw_id is None else _id(raw_id, "id")
    raw_event_time = get("eventTime")
    if raw_event_time is None:
        raise _Invalid("invalid_item", "eventTime: missing")
    event_time, event_time_ms = _time(raw_event_time, "eventTime")

    data: dict[str, object] = {
        "eventId": upstream_id,
        "eventType": event_type,
        "upstreamType": upstream_type,
        "eventTime": event_time,
        "deviceId": device_id,
        "positionId": _ref_id(get("positionId"), "positionId"),
        "geofenceId": _ref_id(get("geofenceId"), "geofenceId"),
        "attributes": attributes,
    }
    if not obj.keys() <= _EVENT_KEYS:
        data["extra"] = _extra(obj, _EVENT_KEYS)
    event_id = (
        _digest_id("event", data) if upstream_id is None else "event:" + upstream_id
    )
    return _item(
        "event", event_type, device_id, event_id, event_time, event_time_ms, data
    )


_SECTIONS: Final[Mapping[str, Callable[[dict[str, object]], Item]]] = MappingProxyType(
    {"positions": _position, "devices": _device, "events": _event}
)

_KEEPALIVE: Final = Decoded(items=(), rejection=None, keepalive=True)
_EMPTY: Final = Decoded(
    items=(),
    rejection=FrameRejection("empty", "frame is empty or whitespace"),
    keepalive=False,
)


class TraccarJsonCodec:
    """The ``traccar-json`` v1 codec (``docs/wire-format.md``).

    Args:
        max_frame_bytes: Frames longer than this are rejected as ``oversize``
            without being parsed.

    Raises:
        ValueError: If ``max_frame_bytes`` is not positive.
    """

    __slots__ = ("max_frame_bytes",)

    name: str = "traccar-json"

    def __init__(self, *, max_frame_bytes: int = 1_048_576) -> None:
        if max_frame_bytes <= 0:
            raise ValueError(f"max_frame_bytes must be positive, got {max_frame_bytes}")
        self.max_frame_bytes = max_frame_bytes

    def decode(self, raw: bytes) -> Decoded:
        """Decode one frame.

        Args:
            raw: The frame exactly as received.

        Returns:
            The understood items, and a :class:`FrameRejection` if any part of the
            frame was not understood. Never raises.
        """
        document = parse_frame(raw, self.max_frame_bytes)
        if type(document) is Decoded:
            return document
        if type(document) is not dict:
            detail = f"top level is {_json_type(document)}, expected an object"
            return Decoded(
                items=(),
                rejection=FrameRejection("not_an_object", detail),
                keepalive=False,
            )
        if not document:
            return _KEEPALIVE
        return _decode_sections(document)


def parse_frame(raw: bytes, max_frame_bytes: int) -> object:
    """A frame's JSON document, or the ``Decoded`` rejecting it unparsed.

    Every codec starts so (this one and the mapping codec): oversize frames
    are refused before parsing, empty and malformed ones are named.
    """
    size = len(raw)
    if size > max_frame_bytes:
        return Decoded(
            items=(),
            rejection=FrameRejection(
                "oversize", f"frame is {size} bytes; limit {max_frame_bytes}"
            ),
            keepalive=False,
        )
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if not raw.strip():
            return _EMPTY
        # orjson's message names the problem, never the offending text; the
        # cut is a guarantee, it does not bite on orjson's short messages.
        detail = f"not JSON: {exc.msg} (byte {exc.pos})"[:_DETAIL_MAX]
        return Decoded(
            items=(),
            rejection=FrameRejection("malformed_json", detail),
            keepalive=False,
        )


def _decode_sections(document: dict[str, object]) -> Decoded:
    """Parse every section of a frame object, collecting items and problems."""
    items: list[Item] = []
    first: FrameRejection | None = None
    problems = 0
    for key, section in document.items():
        parse = _SECTIONS.get(key)
        if parse is None:
            problems += 1
            if first is None:
                first = FrameRejection(
                    "unknown_field", f"unknown top-level key {_name(key)}"
                )
            continue
        if type(section) is not list:
            problems += 1
            if first is None:
                first = FrameRejection(
                    "not_an_array",
                    f"{key}: {_json_type(section)}, expected an array",
                )
            continue
        for index, obj in enumerate(section):
            if type(obj) is dict:
                try:
                    items.append(parse(obj))
                except _Invalid as exc:
                    problems += 1
                    if first is None:
                        first = FrameRejection(
                            exc.reason, f"{key}[{index}].{exc.detail}"
                        )
            else:
                problems += 1
                if first is None:
                    first = FrameRejection(
                        "invalid_item",
                        f"{key}[{index}]: {_json_type(obj)}, expected an object",
                    )
    if first is not None and problems > 1:
        first = FrameRejection(
            first.reason, f"{first.detail}; and {problems - 1} more problem(s)"
        )
    return Decoded(items=tuple(items), rejection=first, keepalive=False)


_CODECS: Final[Mapping[str, Callable[..., FrameCodec]]] = MappingProxyType(
    {TraccarJsonCodec.name: TraccarJsonCodec}
)

#: Names :func:`codec_by_name` accepts.
CODEC_NAMES: Final[tuple[str, ...]] = tuple(sorted(_CODECS))


def codec_by_name(name: str, *, max_frame_bytes: int) -> FrameCodec:
    """Build the codec registered under ``name``.

    Args:
        name: A codec name, for example ``"traccar-json"``.
        max_frame_bytes: Passed to the codec.

    Returns:
        A new codec instance.

    Raises:
        ValueError: If no codec has that name (the message lists the known
            names), or if ``max_frame_bytes`` is not positive.
    """
    factory = _CODECS.get(name)
    if factory is None:
        raise ValueError(
            f"unknown codec {name!r}; known codecs: {', '.join(CODEC_NAMES)}"
        )
    return factory(max_frame_bytes=max_frame_bytes)


# The primitives a compiled mapping (``bridge.core.mapping``) shares with this
# codec, so both normalise ids, times and values exactly alike.
Invalid = _Invalid
parse_id = _id
parse_ref_id = _ref_id
parse_time = _time
iso_of_utc = _from_utc
parse_opt_str = _opt_str
digest_id = _digest_id
make_item = _item
name_of = _name
json_type = _json_type
