"""What a mapping may fill: the fields of our record contract, per kind.

A mapping says where each field of a record comes from upstream; it cannot
invent fields, drop required ones or change their types, because the record
contract (``docs/record-contract.md``, the schemas in ``bridge/schemas/``)
does not change when the wire does. This table is that contract as the
mapping compiler sees it: for each kind, its targets in output order, each
target's value type, whether the contract requires it, and whether it is
written only when present (``deviceTime`` and ``serverTime`` of a position).

``speed`` is the one *input* target that fills two outputs (``speedKnots``
and ``speedKph``), converted from the unit the mapping names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

from bridge.core.codec import Kind

__all__ = [
    "CONTRACT",
    "ID_PREFIXES",
    "SPEED_UNITS",
    "TIME_FORMATS",
    "Target",
    "ValueType",
]

#: ``id``: an integer or non-empty string, written as a string. ``ref``: the
#: same, but ``0`` means "none" (Traccar's convention). ``time``: a timestamp
#: in the mapping's format, written as ISO-8601 UTC ms ``Z``. ``text``: a
#: string. ``label``: a non-empty string (at most 128 characters).
#: ``latitude``/``longitude``: a number in range. ``number``/``boolean``: that
#: JSON type. ``object``: a JSON object, kept whole; null becomes ``{}``.
#: ``speed``: a number in the mapping's unit. ``event_type``: an upstream
#: string looked up in the mapping's enum table.
ValueType = Literal[
    "id",
    "ref",
    "time",
    "text",
    "label",
    "latitude",
    "longitude",
    "number",
    "boolean",
    "object",
    "speed",
    "event_type",
]

#: Time formats a ``time`` target may name.
TIME_FORMATS: Final[tuple[str, ...]] = (
    "iso8601",
    "iso8601_utc_if_no_zone",
    "epoch_s",
    "epoch_ms",
    "epoch_us",
)

#: Speed units, each with the factor to metres per hour (knots: exactly 1852).
SPEED_UNITS: Final[Mapping[str, float]] = MappingProxyType(
    {"knots": 1852.0, "kph": 1000.0, "mph": 1609.344, "m/s": 3600.0}
)

#: The ``ce_id`` prefix of each kind (``docs/record-contract.md``).
ID_PREFIXES: Final[Mapping[Kind, str]] = MappingProxyType(
    {"position": "position", "device_status": "device", "event": "event"}
)


@dataclass(frozen=True, slots=True)
class Target:
    """One field of a record, as a mapping fills it.

    Attributes:
        name: The field's name in the record (and in the mapping).
        type: How an upstream value is checked and normalised.
        required: The contract needs a value (a mapping may add a default).
        only_if_present: Written only when upstream has it (else omitted).
    """

    name: str
    type: ValueType
    required: bool = False
    only_if_present: bool = False


def _targets(*targets: Target) -> tuple[Target, ...]:
    return targets


#: Per kind: the targets in the order they appear in the record value, the
#: identity (``ce_id``) fields by default, and the event-time target.
CONTRACT: Final[Mapping[Kind, tuple[Target, ...]]] = MappingProxyType(
    {
        "position": _targets(
            Target("deviceId", "id", required=True),
            Target("positionId", "id"),
            Target("fixTime", "time", required=True),
            Target("latitude", "latitude", required=True),
            Target("longitude", "longitude", required=True),
            Target("altitude", "number"),
            Target("speed", "speed"),
            Target("course", "number"),
            Target("accuracy", "number"),
            Target("valid", "boolean"),
            Target("attributes", "object"),
            Target("deviceTime", "time", only_if_present=True),
            Target("serverTime", "time", only_if_present=True),
        ),
        "device_status": _targets(
            Target("deviceId", "id", required=True),
            Target("name", "text"),
            Target("uniqueId", "text"),
            Target("status", "label", required=True),
            Target("lastUpdate", "time", required=True),
            Target("positionId", "ref"),
            Target("attributes", "object"),
        ),
        "event": _targets(
            Target("eventId", "id"),
            Target("eventType", "event_type", required=True),
            Target("eventTime", "time", required=True),
            Target("deviceId", "id", required=True),
            Target("positionId", "ref"),
            Target("geofenceId", "ref"),
            Target("attributes", "object"),
        ),
    }
)

#: The event-time target of each kind (``ce_time``, the record's time).
EVENT_TIME: Final[Mapping[Kind, str]] = MappingProxyType(
    {"position": "fixTime", "device_status": "lastUpdate", "event": "eventTime"}
)
