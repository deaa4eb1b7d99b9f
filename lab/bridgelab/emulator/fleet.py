"""The simulated fleet: devices driving loops around Lagos, producing wire items.

Pure and synchronous: the pump (``pump.py``) decides when to call it. Every
item gets ``attributes.seq`` from one global counter, so a batch always covers
one contiguous seq range, and the ledger can store ranges instead of seqs.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from bridgelab.emulator.config import EventNames

Item = dict[str, Any]
Clock = Callable[[], float]

EVENT_KINDS = (
    "overspeed",
    "low_battery",
    "no_movement",
    "no_signal",
    "geofence_in",
    "geofence_out",
)
_KNOTS_PER_KMH = 1 / 1.852
_M_PER_DEG_LAT = 111_320.0


@dataclass(frozen=True, slots=True)
class Fixtures:
    """The frame templates and simulation data from the fixture JSON."""

    frame_keys: dict[str, str]
    templates: dict[str, Item]
    event_types: dict[str, dict[str, Item]]
    speed_limit_kmh: float
    device_names: list[str]
    unique_id_base: int
    routes: list[list[tuple[float, float]]]
    geofences: list[Item]
    faults: dict[str, Any]


def load_fixtures(path: str | None = None) -> Fixtures:
    """Read the packaged templates, or a replacement file (e.g. real captures)."""
    if path is None:
        raw = (
            resources.files("bridgelab.emulator")
            .joinpath("fixtures/traccar_frames.json")
            .read_bytes()
        )
    else:
        raw = Path(path).read_bytes()
    data = orjson.loads(raw)
    return Fixtures(
        frame_keys=dict(data["frame_keys"]),
        templates={k: dict(v) for k, v in data["templates"].items()},
        event_types=data["event_types"],
        speed_limit_kmh=float(data["speed_limit_kmh"]),
        device_names=list(data["device_names"]),
        unique_id_base=int(data["unique_id_base"]),
        routes=[[(float(a), float(b)) for a, b in r] for r in data["routes"]],
        geofences=list(data["geofences"]),
        faults=dict(data["faults"]),
    )


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC with milliseconds and ``Z``."""
    secs, milli = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{milli:03d}Z"


@dataclass(slots=True)
class _Device:
    id: int
    name: str
    unique_id: str
    route: list[tuple[float, float]]
    leg: int
    progress: float  # 0..1 along the current leg
    speed_kmh: float
    lat: float
    lon: float
    course: float = 0.0
    status: str = "online"
    last_update_ms: int = 0
    position_id: int = 0
    battery: float = 100.0
    inside_geofence: int = 0
    history: deque[tuple[int, Item]] = field(default_factory=deque)
    latest: Item | None = None


@dataclass(slots=True)
class Batch:
    """Items produced together; they hold the seqs ``first_seq..last_seq``."""

    positions: list[Item] = field(default_factory=list)
    devices: list[Item] = field(default_factory=list)
    events: list[Item] = field(default_factory=list)
    first_seq: int = 0
    last_seq: int = -1

    def __len__(self) -> int:
        return self.last_seq - self.first_seq + 1 if self.last_seq >= 0 else 0

    def encode(self, frame_keys: dict[str, str]) -> bytes:
        """One frame: a JSON object with only the non-empty arrays."""
        frame: dict[str, list[Item]] = {}
        if self.positions:
            frame[frame_keys["positions"]] = self.positions
        if self.devices:
            frame[frame_keys["devices"]] = self.devices
        if self.events:
            frame[frame_keys["events"]] = self.events
        return orjson.dumps(frame)


class Fleet:
    """N devices; ``tick`` (paced) and ``burst`` (load mode) produce batches."""

    def __init__(
        self,
        fixtures: Fixtures,
        *,
        devices: int,
        seed: int,
        events_ratio: float,
        status_ratio: float,
        event_names: EventNames = "traccar",
        history_per_device: int = 1_000,
        clock: Clock = time.time,
    ) -> None:
        self.fixtures = fixtures
        self._rng = random.Random(seed)
        self._events_ratio = events_ratio
        self._status_ratio = status_ratio
        self._clock = clock
        self._event_shapes = {
            kind: fixtures.event_types[kind][event_names] for kind in EVENT_KINDS
        }
        self._tmpl_position = fixtures.templates["position"]
        self._tmpl_device = fixtures.templates["device"]
        self._tmpl_event = fixtures.templates["event"]
        self._seq = 0
        self._position_id = 0
        self._event_id = 0
        self._rr = 0  # round-robin cursor for load mode
        self._devices: list[_Device] = []
        for n in range(1, devices + 1):
            route = fixtures.routes[(n - 1) % len(fixtures.routes)]
            leg = self._rng.randrange(len(route) - 1)
            dev = _Device(
                id=n,
                name=f"{fixtures.device_names[(n - 1) % len(fixtures.device_names)]}"
                f" {n}",
                unique_id=str(fixtures.unique_id_base + n),
                route=route,
                leg=leg,
                progress=self._rng.random(),
                speed_kmh=self._rng.uniform(15.0, 60.0),
                lat=route[leg][0],
                lon=route[leg][1],
                battery=self._rng.uniform(30.0, 100.0),
                history=deque(maxlen=history_per_device),
            )
            self._devices.append(dev)
        self._by_id = {d.id: d for d in self._devices}
        start_ms = self._now_ms()
        for dev in self._devices:
            dev.last_update_ms = start_ms

    # -- counters ---------------------------------------------------------------

    @property
    def generated_count(self) -> int:
        """Items generated so far (every one of them holds a seq)."""
        return self._seq

    def next_event_id(self) -> int:
        """Reserve an event id (fault frames use one so ids stay increasing)."""
        self._event_id += 1
        return self._event_id

    # -- production -------------------------------------------------------------

    def tick(self, elapsed: float, report_interval: float) -> Batch:
        """What the fleet did in ``elapsed`` seconds (each device may report)."""
        batch = self._new_batch()
        chance = min(1.0, elapsed / report_interval)
        now_ms = self._now_ms()
        for dev in self._devices:
            if self._rng.random() < chance:
                self._step(dev, now_ms, max(elapsed, report_interval), batch)
        return batch

    def burst(self, items: int, sim_seconds_per_step: float = 1.0) -> Batch:
        """At least ``items`` items as fast as possible (load mode)."""
        batch = self._new_batch()
        now_ms = self._now_ms()
        devices = self._devices
        while len(batch) < items:
            dev = devices[self._rr]
            self._rr = (self._rr + 1) % len(devices)
            self._step(dev, now_ms, sim_seconds_per_step, batch)
        return batch

    def _new_batch(self) -> Batch:
        return Batch(first_seq=self._seq + 1, last_seq=self._seq)

    def _take_seq(self, batch: Batch) -> int:
        self._seq += 1
        batch.last_seq = self._seq
        return self._seq

    def _step(self, dev: _Device, now_ms: int, dt: float, batch: Batch) -> None:
        rng = self._rng
        roll = rng.random()
        if dev.status != "online":
            # Offline devices are silent until they come back.
            if roll < 0.3:
                self._status(dev, "online", now_ms, batch)
            return
        if roll < self._status_ratio:
            self._status(dev, "offline", now_ms, batch)
            return
        self._move(dev, dt)
        position = self._position(dev, now_ms, batch)
        if rng.random() < self._events_ratio:
            self._event(dev, rng.choice(EVENT_KINDS), now_ms, position, batch)

    def _move(self, dev: _Device, dt: float) -> None:
        # Advance along the polyline; speed wanders so overspeed happens.
        dev.speed_kmh = min(90.0, max(5.0, dev.speed_kmh + self._rng.uniform(-6, 6)))
        remaining = dev.speed_kmh / 3.6 * dt  # metres
        while remaining > 0:
            (lat0, lon0), (lat1, lon1) = dev.route[dev.leg], dev.route[dev.leg + 1]
            dlat_m = (lat1 - lat0) * _M_PER_DEG_LAT
            dlon_m = (lon1 - lon0) * _M_PER_DEG_LAT * math.cos(math.radians(lat0))
            leg_m = math.hypot(dlat_m, dlon_m) or 1.0
            left_m = (1.0 - dev.progress) * leg_m
            if remaining < left_m:
                dev.progress += remaining / leg_m
                remaining = 0.0
            else:
                remaining -= left_m
                dev.progress = 0.0
                dev.leg = (dev.leg + 1) % (len(dev.route) - 1)
            dev.course = math.degrees(math.atan2(dlon_m, dlat_m)) % 360.0
        (lat0, lon0), (lat1, lon1) = dev.route[dev.leg], dev.route[dev.leg + 1]
        dev.lat = lat0 + (lat1 - lat0) * dev.progress
        dev.lon = lon0 + (lon1 - lon0) * dev.progress
        dev.battery = max(0.0, dev.battery - 0.01)

    def _position(self, dev: _Device, now_ms: int, batch: Batch) -> Item:
        self._position_id += 1
        item = dict(self._tmpl_position)
        item["id"] = self._position_id
        item["deviceId"] = dev.id
        item["fixTime"] = iso_ms(now_ms)
        item["latitude"] = round(dev.lat, 6)
        item["longitude"] = round(dev.lon, 6)
        item["speed"] = round(dev.speed_kmh * _KNOTS_PER_KMH, 2)  # Traccar: knots
        item["course"] = round(dev.course, 1)
        item["attributes"] = {
            **self._tmpl_position.get("attributes", {}),
            "seq": self._take_seq(batch),
        }
        dev.position_id = self._position_id
        dev.last_update_ms = max(dev.last_update_ms, now_ms)  # as Traccar does
        dev.latest = item
        dev.history.append((now_ms, item))
        batch.positions.append(item)
        return item

    def _status(self, dev: _Device, status: str, now_ms: int, batch: Batch) -> None:
        dev.status = status
        # lastUpdate strictly increases per device even within one millisecond.
        dev.last_update_ms = max(now_ms, dev.last_update_ms + 1)
        item = self._device_item(dev)
        item["attributes"] = {
            **self._tmpl_device.get("attributes", {}),
            "seq": self._take_seq(batch),
        }
        batch.devices.append(item)

    def _event(
        self, dev: _Device, kind: str, now_ms: int, position: Item, batch: Batch
    ) -> None:
        geofence_id = 0
        if kind in ("geofence_in", "geofence_out"):
            # Keep enter/exit paired per device so the story stays coherent.
            if dev.inside_geofence:
                kind, geofence_id = "geofence_out", dev.inside_geofence
                dev.inside_geofence = 0
            else:
                fence = self._rng.choice(self.fixtures.geofences)
                kind, geofence_id = "geofence_in", int(fence["id"])
                dev.inside_geofence = geofence_id
        shape = self._event_shapes[kind]
        attributes: Item = {
            **self._tmpl_event.get("attributes", {}),
            **shape.get("attributes", {}),
        }
        if kind == "overspeed":
            limit = round(self.fixtures.speed_limit_kmh * _KNOTS_PER_KMH, 2)
            # The alarm always reports a speed above the limit, as Traccar does.
            attributes["speed"] = max(position["speed"], round(limit * 1.2, 2))
            attributes["speedLimit"] = limit
        elif kind == "low_battery":
            attributes["batteryLevel"] = round(min(dev.battery, 15.0), 1)
        attributes["seq"] = self._take_seq(batch)
        item = dict(self._tmpl_event)
        item["id"] = self.next_event_id()
        item["type"] = shape["type"]
        item["eventTime"] = iso_ms(now_ms)
        item["deviceId"] = dev.id
        item["positionId"] = position["id"]
        item["geofenceId"] = geofence_id
        item["attributes"] = attributes
        batch.events.append(item)

    def _device_item(self, dev: _Device) -> Item:
        item = copy.deepcopy(self._tmpl_device)
        item["id"] = dev.id
        item["name"] = dev.name
        item["uniqueId"] = dev.unique_id
        item["status"] = dev.status
        item["lastUpdate"] = iso_ms(dev.last_update_ms) if dev.last_update_ms else None
        item["positionId"] = dev.position_id
        return item

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- REST views -------------------------------------------------------------

    def device_list(self) -> list[Item]:
        """The devices as the REST API shows them (no seq: not stream items)."""
        return [self._device_item(dev) for dev in self._devices]

    def latest_positions(self) -> list[Item]:
        """The newest position of each device that has reported."""
        return [dev.latest for dev in self._devices if dev.latest is not None]

    def has_device(self, device_id: int) -> bool:
        """Whether ``device_id`` names a simulated device."""
        return device_id in self._by_id

    def unique_id_of(self, device_id: int) -> str:
        """The device's ``uniqueId`` (its IMEI), or "" for an unknown id."""
        dev = self._by_id.get(device_id)
        return dev.unique_id if dev is not None else ""

    def history(
        self, device_id: int, from_ms: int | None, to_ms: int | None
    ) -> list[Item]:
        """Positions of one device with ``from_ms <= fixTime <= to_ms`` (bounded)."""
        dev = self._by_id[device_id]
        return [
            item
            for ms, item in dev.history
            if (from_ms is None or ms >= from_ms) and (to_ms is None or ms <= to_ms)
        ]
