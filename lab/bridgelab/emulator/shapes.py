r"""Wire shapes: how the fleet's items are laid out in the messages it sends.

The fleet always produces Traccar-like items (``docs/wire-format.md``); a
shape only re-lays them out. Every fact survives the conversion, so a correct
mapping of a shape gives back exactly the Traccar item the fleet made (same
ids, same instants to the millisecond, same speeds up to float rounding).

Three shapes (``EmulatorConfig.wire_shape``). The examples below are the
exact output (re-indented) for these three Traccar items::

    {"id": 88123, "deviceId": 41, "fixTime": "2025-06-14T09:12:03.000Z",
     "latitude": 6.4521, "longitude": 3.3902, "altitude": 0.0, "speed": 12.4,
     "course": 181.0, "accuracy": 5.0, "valid": true, "attributes": {"seq": 17}}
    {"id": 41, "name": "Van 41", "uniqueId": "864000000000041",
     "status": "online", "lastUpdate": "2025-06-14T09:12:04.001Z",
     "positionId": 88123, "attributes": {"seq": 18}}
    {"id": 5520, "type": "OVER_SPEEDING_WARNING",
     "eventTime": "2025-06-14T09:12:04.000Z", "deviceId": 41,
     "positionId": 88123, "geofenceId": 0,
     "attributes": {"speed": 48.6, "speedLimit": 21.6, "seq": 19}}

``traccar`` (the default)
    Today's wire, byte for byte: one JSON object per batch holding the
    non-empty arrays ``positions``, ``devices`` and ``events`` (see
    ``docs/wire-format.md``). The seq is ``attributes.seq`` of each item.

``typed-object``
    ONE JSON object per item: ``{"type": T, "payload": {...}}``. A batch of N
    items becomes N messages, sent back to back in seq order. ``T`` is
    ``"location"``, ``"status"`` or ``"alert"``.

    ``location`` (from a Traccar position)::

        {"type": "location",
         "payload": {"id": 88123,
                     "device": {"id": 41, "imei": "864000000000041"},
                     "recordedAt": 1749892323000,
                     "coords": {"lat": 6.4521, "lng": 3.3902, "alt": 0.0},
                     "speedMs": 6.3791111111111105,
                     "heading": 181.0,
                     "accuracyM": 5.0,
                     "valid": true,
                     "details": {},
                     "meta": {"seq": 17}}}

    * ``id`` (int): the position ``id``.
    * ``device.id`` (int): ``deviceId``; ``device.imei`` (string): that
      device's ``uniqueId`` (as in the ``devices`` items and REST).
    * ``recordedAt`` (int): ``fixTime`` as epoch milliseconds (UTC).
    * ``coords.lat`` / ``coords.lng`` (float, degrees): ``latitude`` /
      ``longitude``; ``coords.alt`` (float, metres): ``altitude``.
    * ``speedMs`` (float, metres per second): ``speed`` (knots) * 1852 / 3600,
      not rounded (so knots = speedMs * 3600 / 1852, up to float rounding).
    * ``heading`` (float, degrees): ``course``. ``accuracyM`` (float,
      metres): ``accuracy``. ``valid`` (bool): ``valid``.
    * ``details`` (object): the item's ``attributes`` other than ``seq``,
      renamed and converted by the rule below (``{}`` when there are none).
    * ``meta.seq`` (int): ``attributes.seq`` (``meta`` is ``{}`` on fault
      messages, which carry no seq).

    ``status`` (from a Traccar device update)::

        {"type": "status",
         "payload": {"device": {"id": 41, "imei": "864000000000041",
                                "name": "Van 41"},
                     "state": "online",
                     "changedAt": 1749892324001,
                     "lastLocationId": 88123,
                     "details": {},
                     "meta": {"seq": 18}}}

    * ``device.id`` (int): ``id``; ``device.imei`` (string): ``uniqueId``;
      ``device.name`` (string): ``name``.
    * ``state`` (string): ``status`` verbatim (``"online"`` / ``"offline"``).
    * ``changedAt`` (int or null): ``lastUpdate`` as epoch milliseconds.
    * ``lastLocationId`` (int): ``positionId`` (0 = the device never reported).
    * ``details``, ``meta.seq``: as for ``location``.

    ``alert`` (from a Traccar event)::

        {"type": "alert",
         "payload": {"alertId": 5520,
                     "code": "OVER_SPEEDING_WARNING",
                     "device": {"id": 41, "imei": "864000000000041"},
                     "at": 1749892324000,
                     "locationId": 88123,
                     "geofenceId": null,
                     "details": {"speedMs": 25.002,
                                 "speedLimitMs": 11.112000000000002},
                     "meta": {"seq": 19}}}

    * ``alertId`` (int): the event ``id``.
    * ``code`` (string): the event ``type`` verbatim. Which strings appear is
      ``EmulatorConfig.event_names``: ``"sendstack"`` gives Sendstack's
      tracker-event names (``OVER_SPEEDING_WARNING``, ``LOW_BATTERY_ALERT``,
      ``NO_MOVEMENT_ALERT``, ``NO_SIGNAL_ALERT``, ``GEOFENCE_IN``,
      ``GEOFENCE_OUT``), ``"traccar"`` (the default) Traccar's
      (``deviceOverspeed``, ``alarm`` + ``details.alarm == "lowBattery"``,
      ``deviceStopped``, ``deviceInactive``, ``geofenceEnter``,
      ``geofenceExit``).
    * ``device``: ``{"id": deviceId, "imei": that device's uniqueId}``.
    * ``at`` (int): ``eventTime`` as epoch milliseconds.
    * ``locationId`` (int): ``positionId``.
    * ``geofenceId`` (int or null): ``geofenceId``, null when it is 0.
    * ``details``: the event's ``attributes`` other than ``seq``, converted.
    * ``meta.seq`` (int): ``attributes.seq``.

    Attribute rule (``details``): ``speed`` -> ``speedMs`` and ``speedLimit``
    -> ``speedLimitMs`` (knots * 1852 / 3600, metres per second, not
    rounded); ``batteryLevel`` -> ``batteryPct`` (same number, percent);
    every other key (e.g. ``alarm``) is kept as is.

``mixed-batch``
    ONE JSON ARRAY per batch, its elements in seq order, each with a ``kind``
    of ``"pos"``, ``"dev"`` or ``"evt"``::

        [{"kind": "pos", "posId": 88123, "deviceId": "41",
          "ts": "2025-06-14T09:12:03.000", "lat": 6.4521, "lon": 3.3902,
          "altM": 0.0, "speedKmh": 22.9648, "bearing": 181.0, "accM": 5.0,
          "valid": true, "attrs": {}, "seq": 17},
         {"kind": "dev", "deviceId": "41", "imei": "864000000000041",
          "label": "Van 41", "online": true, "updatedAt": 1749892324.001,
          "lastPosId": 88123, "attrs": {}, "seq": 18},
         {"kind": "evt", "evtId": 5520, "deviceId": "41",
          "type": "OVER_SPEEDING_WARNING", "ts": "2025-06-14T09:12:04.000",
          "posId": 88123, "geofenceId": 0,
          "attrs": {"speedKmh": 90.00720000000001,
                    "speedLimitKmh": 40.00320000000001}, "seq": 19}]

    ``pos`` (from a Traccar position):

    * ``posId`` (int): ``id``. ``deviceId`` (STRING of digits): ``deviceId``.
    * ``ts`` (string): ``fixTime`` as ISO-8601 with milliseconds and NO zone
      designator (``YYYY-MM-DDTHH:MM:SS.mmm``); it is UTC.
    * ``lat`` / ``lon`` (float, degrees): ``latitude`` / ``longitude``;
      ``altM`` (float, metres): ``altitude``.
    * ``speedKmh`` (float, km/h): ``speed`` (knots) * 1.852, not rounded.
    * ``bearing`` (float, degrees): ``course``; ``accM`` (float, metres):
      ``accuracy``; ``valid`` (bool): ``valid``.

    ``dev`` (from a Traccar device update):

    * ``deviceId`` (string): ``id``; ``imei`` (string): ``uniqueId``;
      ``label`` (string): ``name``.
    * ``online`` (bool): ``status == "online"`` (false is ``"offline"``).
    * ``updatedAt`` (number or null): ``lastUpdate`` as epoch SECONDS with up
      to three decimals (milliseconds): epoch ms = round(updatedAt * 1000).
    * ``lastPosId`` (int): ``positionId``.

    ``evt`` (from a Traccar event):

    * ``evtId`` (int): ``id``; ``deviceId`` (string): ``deviceId``;
      ``type`` (string): ``type`` verbatim (see ``code`` above).
    * ``ts`` (string): ``eventTime``, ISO-8601 without zone as for ``pos``.
    * ``posId`` (int): ``positionId``; ``geofenceId`` (int): ``geofenceId``
      (0 = none).

    Every element also has ``attrs`` (object): the item's ``attributes``
    other than ``seq`` with ``speed`` -> ``speedKmh`` and ``speedLimit`` ->
    ``speedLimitKmh`` (knots * 1.852, not rounded), every other key as is
    (``{}`` when there are none); and ``seq`` (int): ``attributes.seq``
    (absent on fault elements).

On a Socket.IO transport (``transport="socketio"``) each message is an event
on the default namespace ``/``, with ONE argument:

* ``traccar``: one event per non-empty section, named by the section
  (``"positions"``, ``"devices"``, ``"events"``), in that order; the
  argument is the section's array of Traccar items.
* ``typed-object``: the event name is the ``type`` (``"location"``,
  ``"status"``, ``"alert"``); the argument is the ``payload`` object.
* ``mixed-batch``: event ``"batch"``; the argument is the array.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from bridgelab.emulator.fleet import Batch, Item, iso_ms

ItemKind = Literal["position", "device", "event"]

KMH_PER_KNOT: Final = 1.852

TYPED_TYPES: Final[dict[ItemKind, str]] = {
    "position": "location",
    "device": "status",
    "event": "alert",
}
MIXED_KINDS: Final[dict[ItemKind, str]] = {
    "position": "pos",
    "device": "dev",
    "event": "evt",
}
MIXED_EVENT: Final = "batch"  # the Socket.IO event name of a mixed-batch array

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)

ImeiOf = Callable[[int], str]


def epoch_ms(text: str | None) -> int | None:
    """ISO-8601 (``Z`` or an offset) to epoch milliseconds; None stays None."""
    if text is None:
        return None
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // _MS


def iso_no_zone(text: str) -> str:
    """ISO-8601 UTC with milliseconds and no zone designator."""
    ms = epoch_ms(text)
    assert ms is not None  # noqa: S101 - text is a str
    return iso_ms(ms)[:-1]


def seq_of(item: Item) -> int | None:
    """The emulator's ``attributes.seq`` of a Traccar item, if it has one."""
    seq = (item.get("attributes") or {}).get("seq")
    return int(seq) if seq is not None else None


def items_in_seq_order(batch: Batch) -> list[tuple[ItemKind, Item]]:
    """Every item of a batch with its kind, oldest seq first."""
    tagged: list[tuple[ItemKind, Item]] = [
        *(("position", i) for i in batch.positions),
        *(("device", i) for i in batch.devices),
        *(("event", i) for i in batch.events),
    ]
    tagged.sort(key=lambda pair: seq_of(pair[1]) or 0)
    return tagged


def knots_to_ms(value: Any) -> Any:
    """Knots to metres per second, ``value * 1852 / 3600`` (non-numbers as is)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value * 1852 / 3600
    return value


def knots_to_kmh(value: Any) -> Any:
    """Knots to km/h, ``value * 1.852`` (non-numbers as is)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value * KMH_PER_KNOT
    return value


def _converted(
    attributes: Item | None,
    speed: Callable[[Any], Any],
    suffix: str,
    renames: dict[str, str],
) -> Item:
    out: Item = {}
    for key, value in (attributes or {}).items():
        if key == "seq":
            continue
        if key in ("speed", "speedLimit"):
            out[key + suffix] = speed(value)
        else:
            out[renames.get(key, key)] = value
    return out


def _meta(item: Item) -> Item:
    seq = seq_of(item)
    return {} if seq is None else {"seq": seq}


# -- typed-object ---------------------------------------------------------------


def typed_details(attributes: Item | None) -> Item:
    """``attributes`` minus ``seq``: speeds to m/s, ``batteryLevel`` renamed."""
    return _converted(attributes, knots_to_ms, "Ms", {"batteryLevel": "batteryPct"})


def typed_location(item: Item, imei_of: ImeiOf) -> Item:
    """A Traccar position as a ``location`` payload."""
    device_id = item.get("deviceId")
    return {
        "id": item.get("id"),
        "device": {"id": device_id, "imei": imei_of(int(device_id or 0))},
        "recordedAt": epoch_ms(item.get("fixTime")),
        "coords": {
            "lat": item.get("latitude"),
            "lng": item.get("longitude"),
            "alt": item.get("altitude"),
        },
        "speedMs": knots_to_ms(item.get("speed")),
        "heading": item.get("course"),
        "accuracyM": item.get("accuracy"),
        "valid": item.get("valid"),
        "details": typed_details(item.get("attributes")),
        "meta": _meta(item),
    }


def typed_status(item: Item) -> Item:
    """A Traccar device update as a ``status`` payload."""
    return {
        "device": {
            "id": item.get("id"),
            "imei": item.get("uniqueId"),
            "name": item.get("name"),
        },
        "state": item.get("status"),
        "changedAt": epoch_ms(item.get("lastUpdate")),
        "lastLocationId": item.get("positionId"),
        "details": typed_details(item.get("attributes")),
        "meta": _meta(item),
    }


def typed_alert(item: Item, imei_of: ImeiOf) -> Item:
    """A Traccar event as an ``alert`` payload."""
    device_id = item.get("deviceId")
    return {
        "alertId": item.get("id"),
        "code": item.get("type"),
        "device": {"id": device_id, "imei": imei_of(int(device_id or 0))},
        "at": epoch_ms(item.get("eventTime")),
        "locationId": item.get("positionId"),
        "geofenceId": item.get("geofenceId") or None,
        "details": typed_details(item.get("attributes")),
        "meta": _meta(item),
    }


def typed_payload(kind: ItemKind, item: Item, imei_of: ImeiOf) -> Item:
    """The ``payload`` of the typed-object message for one Traccar item."""
    if kind == "position":
        return typed_location(item, imei_of)
    if kind == "device":
        return typed_status(item)
    return typed_alert(item, imei_of)


def typed_message(kind: ItemKind, item: Item, imei_of: ImeiOf) -> Item:
    """``{"type": ..., "payload": ...}`` for one Traccar item."""
    return {"type": TYPED_TYPES[kind], "payload": typed_payload(kind, item, imei_of)}


# -- mixed-batch ----------------------------------------------------------------


def mixed_attrs(attributes: Item | None) -> Item:
    """``attributes`` minus ``seq``, speeds converted to km/h."""
    return _converted(attributes, knots_to_kmh, "Kmh", {})


def _with_seq(element: Item, item: Item) -> Item:
    seq = seq_of(item)
    if seq is not None:
        element["seq"] = seq
    return element


def mixed_pos(item: Item) -> Item:
    """A Traccar position as a ``pos`` element."""
    return _with_seq(
        {
            "kind": "pos",
            "posId": item.get("id"),
            "deviceId": str(item.get("deviceId")),
            "ts": iso_no_zone(str(item.get("fixTime"))),
            "lat": item.get("latitude"),
            "lon": item.get("longitude"),
            "altM": item.get("altitude"),
            "speedKmh": knots_to_kmh(item.get("speed")),
            "bearing": item.get("course"),
            "accM": item.get("accuracy"),
            "valid": item.get("valid"),
            "attrs": mixed_attrs(item.get("attributes")),
        },
        item,
    )


def mixed_dev(item: Item) -> Item:
    """A Traccar device update as a ``dev`` element."""
    ms = epoch_ms(item.get("lastUpdate"))
    return _with_seq(
        {
            "kind": "dev",
            "deviceId": str(item.get("id")),
            "imei": item.get("uniqueId"),
            "label": item.get("name"),
            "online": item.get("status") == "online",
            "updatedAt": None if ms is None else ms / 1000,
            "lastPosId": item.get("positionId"),
            "attrs": mixed_attrs(item.get("attributes")),
        },
        item,
    )


def mixed_evt(item: Item) -> Item:
    """A Traccar event as an ``evt`` element."""
    return _with_seq(
        {
            "kind": "evt",
            "evtId": item.get("id"),
            "deviceId": str(item.get("deviceId")),
            "type": item.get("type"),
            "ts": iso_no_zone(str(item.get("eventTime"))),
            "posId": item.get("positionId"),
            "geofenceId": item.get("geofenceId"),
            "attrs": mixed_attrs(item.get("attributes")),
        },
        item,
    )


def mixed_element(kind: ItemKind, item: Item) -> Item:
    """The mixed-batch element for one Traccar item."""
    if kind == "position":
        return mixed_pos(item)
    if kind == "device":
        return mixed_dev(item)
    return mixed_evt(item)


def mixed_array(batch: Batch) -> list[Item]:
    """The mixed-batch array for a batch (seq order)."""
    return [mixed_element(kind, item) for kind, item in items_in_seq_order(batch)]
