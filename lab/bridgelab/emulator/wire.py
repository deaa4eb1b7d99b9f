"""Frames for one wire shape on one transport: fleet batches and fault messages.

``traccar`` on a websocket is today's wire and goes through the very same code
as before (``Batch.encode`` and the fault frames of ``faults.py``), so its
bytes are unchanged. Every other combination is built from ``shapes.py``.

Fault messages keep their meaning in every shape:

* malformed: a valid message of the shape cut in half (not JSON). On
  Socket.IO it is a raw EVENT packet whose JSON is cut short (``42[...``).
* unknown: a message of an unknown kind (the fixture's geofence) and an event
  of an unknown type (the fixture's ``unknown_event_type``).
* oversize: a valid position message larger than the requested size (the
  padding is an attribute: ``attributes.padding``, ``details.padding`` or
  ``attrs.padding``). On Socket.IO the event's argument alone is that large.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from bridgelab.emulator import faults
from bridgelab.emulator.broadcast import Frame, runs_of
from bridgelab.emulator.config import Transport, WireShape
from bridgelab.emulator.fleet import Batch, Fleet, Item
from bridgelab.emulator.shapes import (
    MIXED_EVENT,
    ItemKind,
    items_in_seq_order,
    mixed_array,
    mixed_element,
    seq_of,
    typed_message,
)

_SECTIONS: Final[dict[ItemKind, str]] = {
    "position": "positions",
    "device": "devices",
    "event": "events",
}


class Wire:
    """Turns batches and faults into frames; pure apart from the fleet's ids."""

    def __init__(
        self,
        fleet: Fleet,
        shape: WireShape = "traccar",
        transport: Transport = "websocket",
    ) -> None:
        self._fleet = fleet
        self.shape = shape
        self.transport = transport
        self._socketio = transport == "socketio"
        self._native = shape == "traccar" and not self._socketio
        self._keys = fleet.fixtures.frame_keys

    # -- batches ----------------------------------------------------------------

    def batch(self, batch: Batch) -> list[Frame]:
        """The frames carrying one fleet batch, in sending order."""
        if not len(batch):
            return []
        if self._native:
            return [Frame(batch.encode(self._keys), batch.first_seq, batch.last_seq)]
        if self.shape == "traccar":
            sections = (
                ("positions", batch.positions),
                ("devices", batch.devices),
                ("events", batch.events),
            )
            return [
                Frame(
                    b"",
                    runs=runs_of(s for i in items if (s := seq_of(i)) is not None),
                    event=self._keys[name],
                    data=items,
                )
                for name, items in sections
                if items
            ]
        if self.shape == "typed-object":
            frames = []
            for kind, item in items_in_seq_order(batch):
                seq = seq_of(item)
                runs = ((seq, seq),) if seq is not None else ()
                frames.append(self._frame(*self._message(kind, item), runs=runs))
            return frames
        array = mixed_array(batch)
        runs = ((batch.first_seq, batch.last_seq),)
        return [self._frame(MIXED_EVENT, array, array, runs=runs)]

    # -- faults -----------------------------------------------------------------

    def malformed(self) -> Frame:
        """A message that is not JSON (a valid one cut in half)."""
        if self._native:
            return faults.malformed_frame(self._fleet)
        item = faults.padding_position_item(self._fleet)
        item["attributes"] = {}
        event, data, value = self._message("position", item)
        if self._socketio:
            packet = b"2" + orjson.dumps([event, data])
            return Frame(packet[: len(packet) // 2], fault="malformed")
        text = orjson.dumps(value)
        return Frame(text[: len(text) // 2], fault="malformed")

    def unknown(self) -> list[Frame]:
        """A message of an unknown kind, then an event of an unknown type."""
        if self._native:
            return faults.unknown_frames(self._fleet)
        unknown_frame: dict[str, Any] = self._fleet.fixtures.faults["unknown_frame"]
        event_item = faults.unknown_event_item(self._fleet)
        frames: list[Frame] = []
        for key, value in unknown_frame.items():
            first = value[0] if isinstance(value, list) and value else value
            kind = key[:-1] if key.endswith("s") else key  # "geofences" -> geofence
            if self.shape == "traccar":
                frames.append(self._frame(key, value, {key: value}, fault="unknown"))
            elif self.shape == "typed-object":
                message = {"type": kind, "payload": first}
                frames.append(self._frame(kind, first, message, fault="unknown"))
            else:
                array = [{"kind": kind, **first}]
                frames.append(self._frame(MIXED_EVENT, array, array, fault="unknown"))
        frames.append(self._frame(*self._message("event", event_item), fault="unknown"))
        return frames

    def oversize(self, min_bytes: int) -> Frame:
        """A valid position message strictly larger than ``min_bytes``."""
        if self._native:
            return faults.oversize_frame(self._fleet, min_bytes)
        item = faults.padding_position_item(self._fleet)
        _event, data, value = self._message("position", item)
        base = len(orjson.dumps(data if self._socketio else value))
        item["attributes"] = {"padding": "x" * max(0, min_bytes - base + 1)}
        return self._frame(*self._message("position", item), fault="oversize")

    # -- building blocks ----------------------------------------------------------

    def _message(self, kind: ItemKind, item: Item) -> tuple[str, Any, Any]:
        """(Socket.IO event, its argument, the websocket JSON value) for an item."""
        if self.shape == "traccar":
            key = self._keys[_SECTIONS[kind]]
            return key, [item], {key: [item]}
        if self.shape == "typed-object":
            message = typed_message(kind, item, self._fleet.unique_id_of)
            return message["type"], message["payload"], message
        array = [mixed_element(kind, item)]
        return MIXED_EVENT, array, array

    def _frame(
        self,
        event: str,
        data: Any,
        value: Any,
        *,
        runs: tuple[tuple[int, int], ...] = (),
        fault: str | None = None,
    ) -> Frame:
        if self._socketio:
            return Frame(b"", fault=fault, runs=runs, event=event, data=data)
        return Frame(orjson.dumps(value), fault=fault, runs=runs)
