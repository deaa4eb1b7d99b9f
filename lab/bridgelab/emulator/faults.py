"""Fault injection: odd frames for the stream, scripted failures for /auth/session."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import orjson

from bridgelab.emulator.broadcast import Frame
from bridgelab.emulator.fleet import Fleet, Item, iso_ms

SessionFaultMode = Literal["off", "5xx", "429", "drop"]
SESSION_FAULT_MODES: tuple[str, ...] = ("off", "5xx", "429", "drop")


def malformed_frame(fleet: Fleet) -> Frame:
    """Bytes that are not JSON (a frame cut short)."""
    return Frame(str(fleet.fixtures.faults["malformed"]).encode(), fault="malformed")


def unknown_event_item(fleet: Fleet) -> Item:
    """A Traccar event item of a type nobody knows, with no seq."""
    event = dict(fleet.fixtures.templates["event"])
    event.update(
        id=fleet.next_event_id(),
        type=str(fleet.fixtures.faults["unknown_event_type"]),
        eventTime=iso_ms(int(time.time() * 1000)),
        deviceId=1,
        positionId=0,
        geofenceId=0,
        attributes={},  # no seq: fault items stay out of the ledger
    )
    return event


def padding_position_item(fleet: Fleet) -> Item:
    """A seq-less Traccar position whose ``attributes.padding`` is empty."""
    position = dict(fleet.fixtures.templates["position"])
    position.update(
        id=0,
        deviceId=1,
        fixTime=iso_ms(int(time.time() * 1000)),
        attributes={"padding": ""},
    )
    return position


def unknown_frames(fleet: Fleet) -> list[Frame]:
    """A valid frame with an unknown top-level key, and an unknown event type."""
    faults = fleet.fixtures.faults
    shape_frame = Frame(orjson.dumps(faults["unknown_frame"]), fault="unknown")
    event = unknown_event_item(fleet)
    key = fleet.fixtures.frame_keys["events"]
    event_frame = Frame(orjson.dumps({key: [event]}), fault="unknown")
    return [shape_frame, event_frame]


def oversize_frame(fleet: Fleet, min_bytes: int) -> Frame:
    """A valid positions frame strictly larger than ``min_bytes``."""
    position = padding_position_item(fleet)
    key = fleet.fixtures.frame_keys["positions"]
    base = len(orjson.dumps({key: [position]}))
    position["attributes"] = {"padding": "x" * max(0, min_bytes - base + 1)}
    return Frame(orjson.dumps({key: [position]}), fault="oversize")


@dataclass(slots=True)
class SessionFaults:
    """The next ``remaining`` session requests fail in ``mode``."""

    mode: SessionFaultMode = "off"
    remaining: int = 0
    status: int = 503  # for "5xx"

    def set(self, mode: SessionFaultMode, count: int, status: int | None) -> None:
        """Arm (or with "off" disarm) the fault."""
        if mode not in SESSION_FAULT_MODES:
            raise ValueError(f"mode must be one of {SESSION_FAULT_MODES}")
        if count < 0:
            raise ValueError("count must be >= 0")
        if status is not None and not 500 <= status <= 599:
            raise ValueError("status must be a 5xx code")
        self.mode = mode
        self.remaining = 0 if mode == "off" else count
        self.status = status or 503

    def take(self) -> SessionFaultMode:
        """The fault for this request ("off" when none is armed)."""
        if self.mode == "off" or self.remaining <= 0:
            return "off"
        self.remaining -= 1
        mode = self.mode
        if self.remaining == 0:
            self.mode = "off"
        return mode
