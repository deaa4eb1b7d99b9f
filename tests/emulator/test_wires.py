"""Other wires: shapes, the Socket.IO transport, capture replay, session policies."""

from __future__ import annotations

import asyncio
import base64
import copy
import inspect
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import socketio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from bridge.core.capture import event_line, header_line
from bridge.errors import ConfigError
from bridgelab.emulator import Emulator, EmulatorConfig, shapes
from bridgelab.emulator.cli import build_parser, config_from_args
from bridgelab.emulator.fleet import Batch, iso_ms
from tests.emulator.conftest import EmulatorFactory
from tests.emulator.helpers import (
    eventually,
    new_session,
    next_wall_second,
    open_stream,
)

Item = dict[str, Any]
UNIQUE_ID_BASE = 864_000_000_000_000  # the packaged fixtures' imei base

# -- helpers --------------------------------------------------------------------


def spy_on_batches(emu: Emulator) -> dict[int, tuple[str, Item]]:
    """Every item the fleet hands to the wire, by seq (the ground truth)."""
    truth: dict[int, tuple[str, Item]] = {}
    original = emu.wire.batch

    def batch(b: Batch) -> list[Any]:
        for kind, item in shapes.items_in_seq_order(b):
            truth[int(item["attributes"]["seq"])] = (kind, copy.deepcopy(item))
        return original(b)

    emu.wire.batch = batch  # type: ignore[method-assign]
    return truth


def ms_of_naive_utc(text: str) -> int:
    """ISO-8601 without a zone, read as UTC, to epoch ms."""
    when = datetime.fromisoformat(text)
    assert when.tzinfo is None
    return round(when.replace(tzinfo=UTC).timestamp() * 1000)


def assert_same_facts(got: Item, truth: Item) -> None:
    """Same keys and values; speeds (converted units) equal up to float rounding."""
    assert set(got) == set(truth)
    for key, value in truth.items():
        if key == "attributes":
            assert_same_facts(got[key], value)
        elif key in ("speed", "speedLimit"):
            assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12)
        else:
            assert got[key] == value, key


def _back(attrs: Item, units: dict[str, tuple[str, Callable[[float], float]]]) -> Item:
    out: Item = {}
    for key, value in attrs.items():
        name, convert = units.get(key, (key, lambda v: v))
        out[name] = convert(value)
    return out


def _ms_to_knots(v: float) -> float:
    return v * 3600 / 1852


def _kmh_to_knots(v: float) -> float:
    return v / 1.852


TYPED_UNITS = {
    "speedMs": ("speed", _ms_to_knots),
    "speedLimitMs": ("speedLimit", _ms_to_knots),
    "batteryPct": ("batteryLevel", lambda v: v),
}
MIXED_UNITS = {
    "speedKmh": ("speed", _kmh_to_knots),
    "speedLimitKmh": ("speedLimit", _kmh_to_knots),
}


def traccar_from_typed(message: Item) -> tuple[str, Item]:
    """A typed-object message mapped back to a Traccar item, per shapes.py's docs."""
    kind, p = message["type"], message["payload"]
    attributes = {**_back(p["details"], TYPED_UNITS), "seq": p["meta"]["seq"]}
    if kind == "location":
        assert p["device"]["imei"] == str(UNIQUE_ID_BASE + p["device"]["id"])
        return "position", {
            "id": p["id"],
            "deviceId": p["device"]["id"],
            "fixTime": iso_ms(p["recordedAt"]),
            "latitude": p["coords"]["lat"],
            "longitude": p["coords"]["lng"],
            "altitude": p["coords"]["alt"],
            "speed": _ms_to_knots(p["speedMs"]),
            "course": p["heading"],
            "accuracy": p["accuracyM"],
            "valid": p["valid"],
            "attributes": attributes,
        }
    if kind == "status":
        changed = p["changedAt"]
        return "device", {
            "id": p["device"]["id"],
            "name": p["device"]["name"],
            "uniqueId": p["device"]["imei"],
            "status": p["state"],
            "lastUpdate": None if changed is None else iso_ms(changed),
            "positionId": p["lastLocationId"],
            "attributes": attributes,
        }
    assert kind == "alert"
    assert p["device"]["imei"] == str(UNIQUE_ID_BASE + p["device"]["id"])
    return "event", {
        "id": p["alertId"],
        "type": p["code"],
        "eventTime": iso_ms(p["at"]),
        "deviceId": p["device"]["id"],
        "positionId": p["locationId"],
        "geofenceId": p["geofenceId"] or 0,
        "attributes": attributes,
    }


def traccar_from_mixed(element: Item) -> tuple[str, Item]:
    """A mixed-batch element mapped back to a Traccar item, per shapes.py's docs."""
    attributes = {**_back(element["attrs"], MIXED_UNITS), "seq": element["seq"]}
    kind = element["kind"]
    if kind == "pos":
        return "position", {
            "id": element["posId"],
            "deviceId": int(element["deviceId"]),
            "fixTime": iso_ms(ms_of_naive_utc(element["ts"])),
            "latitude": element["lat"],
            "longitude": element["lon"],
            "altitude": element["altM"],
            "speed": _kmh_to_knots(element["speedKmh"]),
            "course": element["bearing"],
            "accuracy": element["accM"],
            "valid": element["valid"],
            "attributes": attributes,
        }
    if kind == "dev":
        updated = element["updatedAt"]
        return "device", {
            "id": int(element["deviceId"]),
            "name": element["label"],
            "uniqueId": element["imei"],
            "status": "online" if element["online"] else "offline",
            "lastUpdate": None if updated is None else iso_ms(round(updated * 1000)),
            "positionId": element["lastPosId"],
            "attributes": attributes,
        }
    assert kind == "evt"
    return "event", {
        "id": element["evtId"],
        "type": element["type"],
        "eventTime": iso_ms(ms_of_naive_utc(element["ts"])),
        "deviceId": int(element["deviceId"]),
        "positionId": element["posId"],
        "geofenceId": element["geofenceId"],
        "attributes": attributes,
    }


async def read_raw(ws: ClientConnection, count: int) -> list[str | bytes]:
    """The next ``count`` messages as received."""
    return [await asyncio.wait_for(ws.recv(), timeout=5) for _ in range(count)]


async def refused_status(url: str) -> int:
    """The HTTP status of a refused websocket upgrade."""
    with pytest.raises(InvalidStatus) as info:
        async with connect(url):
            pass
    return info.value.response.status_code


async def drain_until_closed(ws: ClientConnection) -> ConnectionClosed:
    """Read until the socket closes; returns the closing exception."""
    try:
        while True:
            await ws.recv()
    except ConnectionClosed as closed:
        return closed


class SioRecorder:
    """A real python-socketio client that records every event it receives."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self.errors: list[Any] = []
        self.disconnects: list[Any] = []
        self.client.on("*", self._any)
        self.client.on("connect_error", self._error)
        self.client.on("disconnect", self._disconnect)

    async def _any(self, event: str, data: Any) -> None:
        self.events.append((event, data))

    async def _error(self, data: Any) -> None:
        self.errors.append(data)

    async def _disconnect(self, reason: Any = None) -> None:
        self.disconnects.append(reason)


@asynccontextmanager
async def sio_client(
    url: str, *, auth: Any = None, transports: list[str] | None = None
) -> AsyncIterator[SioRecorder]:
    """A connected recorder, disconnected at the end."""
    recorder = SioRecorder()
    await recorder.client.connect(url, auth=auth, transports=transports)
    try:
        yield recorder
    finally:
        await recorder.client.disconnect()


def traccar_seqs(events: list[tuple[str, Any]]) -> list[int]:
    """Seqs of traccar-shaped Socket.IO events (one array per section)."""
    return [int(i["attributes"]["seq"]) for _, items in events for i in items]


# -- shapes -----------------------------------------------------------------------


async def test_traccar_over_websocket_is_batch_encode_byte_for_byte(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """The default wire sends exactly ``Batch.encode`` of each batch, in order."""
    async with make_emulator(max_frames_per_second=0, frame_items=5) as emu:
        keys = emu.fleet.fixtures.frame_keys
        sent: list[bytes] = []
        original = emu.wire.batch

        def batch(b: Batch) -> list[Any]:
            sent.append(b.encode(keys))
            return original(b)

        emu.wire.batch = batch  # type: ignore[method-assign]
        token = await new_session(emu, http)
        async with open_stream(emu, token) as ws:
            got = [await asyncio.wait_for(ws.recv(decode=False), 5) for _ in range(50)]
    start = sent.index(got[0])
    assert sent[start : start + len(got)] == got


async def test_typed_object_round_trips_every_fact(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """typed-object: one message per item, in seq order, mapping back exactly."""
    async with make_emulator(
        wire_shape="typed-object",
        event_names="sendstack",
        max_frames_per_second=0,
        frame_items=5,
        events_ratio=0.5,
        status_ratio=0.1,
    ) as emu:
        truth = spy_on_batches(emu)
        token = await new_session(emu, http)
        async with open_stream(emu, token) as ws:
            messages = [orjson.loads(m) for m in await read_raw(ws, 1_500)]
    seqs = [m["payload"]["meta"]["seq"] for m in messages]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # one item each
    codes: set[str] = set()
    for message in messages:
        assert set(message) == {"type", "payload"}
        kind, item = traccar_from_typed(message)
        want_kind, want = truth[message["payload"]["meta"]["seq"]]
        assert kind == want_kind
        assert_same_facts(item, want)
        if kind == "event":
            codes.add(message["payload"]["code"])
    assert {m["type"] for m in messages} == {"location", "status", "alert"}
    assert "OVER_SPEEDING_WARNING" in codes


async def test_mixed_batch_round_trips_every_fact(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """mixed-batch: one array per batch, in seq order, mapping back exactly."""
    async with make_emulator(
        wire_shape="mixed-batch",
        max_frames_per_second=0,
        frame_items=7,
        events_ratio=0.5,
        status_ratio=0.1,
    ) as emu:
        truth = spy_on_batches(emu)
        token = await new_session(emu, http)
        async with open_stream(emu, token) as ws:
            arrays = [orjson.loads(m) for m in await read_raw(ws, 300)]
    last = 0
    kinds: set[str] = set()
    for array in arrays:
        assert isinstance(array, list)
        assert array
        seqs = [e["seq"] for e in array]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert seqs[0] > last
        last = seqs[-1]
        for element in array:
            kind, item = traccar_from_mixed(element)
            want_kind, want = truth[element["seq"]]
            assert kind == want_kind
            assert_same_facts(item, want)
            kinds.add(element["kind"])
    assert kinds == {"pos", "dev", "evt"}


def _docstring_json_blocks(doc: str) -> list[Any]:
    """Every JSON value in the ``::`` literal blocks of a docstring."""
    values: list[Any] = []
    lines = doc.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].rstrip().endswith("::"):
            block: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].strip():
                i += 1
            indent = len(lines[i]) - len(lines[i].lstrip())
            while i < len(lines) and (
                not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) >= indent
            ):
                block.append(lines[i])
                i += 1
            text = "\n".join(block).strip()
            decoder, pos = json.JSONDecoder(), 0
            while pos < len(text):
                value, end = decoder.raw_decode(text, pos)
                values.append(value)
                pos = end
                while pos < len(text) and text[pos].isspace():
                    pos += 1
        else:
            i += 1
    return values


def test_shapes_docstring_examples_are_the_exact_output() -> None:
    """The JSON examples documented in shapes.py are what the code produces."""
    assert shapes.__doc__ is not None
    blocks = _docstring_json_blocks(shapes.__doc__)
    position, device, event, location, status, alert, mixed = blocks
    items = (("position", position), ("device", device), ("event", event))

    def imei(device_id: int) -> str:
        return str(UNIQUE_ID_BASE + device_id)

    typed = [shapes.typed_message(kind, item, imei) for kind, item in items]
    assert typed == [location, status, alert]
    assert [shapes.mixed_element(kind, item) for kind, item in items] == mixed


@pytest.mark.parametrize("shape", ["typed-object", "mixed-batch"])
async def test_shape_faults_keep_their_meaning(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient, shape: str
) -> None:
    """Malformed, unknown-kind, unknown-event and oversize messages, seq-less."""
    async with make_emulator(wire_shape=shape, start_paused=True) as emu:
        token = await new_session(emu, http)
        async with open_stream(emu, token, max_size=None) as ws:
            async with asyncio.timeout(5):
                await emu.wait_for_connections(1)
            emu.send_malformed()
            emu.send_unknown()
            emu.send_oversize(100_000)
            raw = await read_raw(ws, 4)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raw[0])
    unknown_kind, unknown_event, oversize = (orjson.loads(r) for r in raw[1:])
    assert len(raw[3]) > 100_000
    if shape == "typed-object":
        assert unknown_kind["type"] == "geofence"
        assert unknown_event["payload"]["code"] == "deviceFuelDrop"
        assert unknown_event["payload"]["meta"] == {}
        assert oversize["payload"]["meta"] == {}
    else:
        assert unknown_kind[0]["kind"] == "geofence"
        assert unknown_event[0]["type"] == "deviceFuelDrop"
        assert "seq" not in unknown_event[0]
        assert "seq" not in oversize[0]
    assert emu.written_seqs() == set()


# -- Socket.IO --------------------------------------------------------------------


async def test_socketio_query_session_section_events_and_exact_ledger(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """Session in the query, polling then upgrade: per-section events, ledger exact."""
    async with make_emulator(
        transport="socketio", max_frames_per_second=0, frame_items=8, status_ratio=0.1
    ) as emu:
        token = await new_session(emu, http)
        async with sio_client(f"{emu.socketio_url}?session={token}") as sio:
            await eventually(lambda: len(sio.events) > 300, within=10)
            await emu.drop()
            await eventually(lambda: not sio.client.connected)
        conn = await emu.wait_closed(1)
        assert conn["close_code"] == 1006
        assert {e for e, _ in sio.events} == {"positions", "devices", "events"}
        got = traccar_seqs(sio.events)
        assert len(got) == len(set(got))  # no duplicates
        assert set(got) == emu.written_seqs(1)  # no loss
        assert emu.stats()["written"]["unique"] == len(got)


async def test_socketio_auth_session_over_websocket_typed_object(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """Session in CONNECT's auth, websocket only: events named by type, ledger exact."""
    async with make_emulator(
        transport="socketio",
        socketio_session_in="auth",
        wire_shape="typed-object",
        max_frames_per_second=0,
        frame_items=4,
        events_ratio=0.3,
        status_ratio=0.1,
    ) as emu:
        token = await new_session(emu, http)
        async with sio_client(
            emu.socketio_url, auth={"token": token}, transports=["websocket"]
        ) as sio:
            await eventually(lambda: len(sio.events) > 500, within=10)
            emu.pause()
            await eventually(
                lambda: len(sio.events) == emu.stats()["written"]["total"], within=10
            )
            got = [data["meta"]["seq"] for _, data in sio.events]
            assert {e for e, _ in sio.events} == {"location", "status", "alert"}
            assert all("type" not in data for _, data in sio.events)  # the payload
            assert len(got) == len(set(got))
            assert set(got) == emu.written_seqs(1)


async def test_socketio_mixed_batch_arrives_as_batch_events(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """mixed-batch over Socket.IO: one "batch" event per array, ledger exact."""
    async with make_emulator(
        transport="socketio", wire_shape="mixed-batch", max_frames_per_second=0
    ) as emu:
        token = await new_session(emu, http)
        async with sio_client(
            f"{emu.socketio_url}?session={token}", transports=["websocket"]
        ) as sio:
            await eventually(lambda: len(sio.events) > 50, within=10)
            emu.pause()
            await eventually(
                lambda: len(sio.events) == emu.stats()["frames"]["written"], within=10
            )
            got = [e["seq"] for _, array in sio.events for e in array]
            assert {e for e, _ in sio.events} == {"batch"}
            assert sorted(got) == got
            assert set(got) == emu.written_seqs(1)


async def test_socketio_refuses_missing_and_bad_sessions(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """No, a garbage or a misplaced session: CONNECT_ERROR with status 401, counted."""
    async with make_emulator(transport="socketio", socketio_session_in="auth") as emu:
        token = await new_session(emu, http)
        attempts: list[tuple[str, Any]] = [
            (emu.socketio_url, None),
            (emu.socketio_url, {"token": "garbage"}),
            (f"{emu.socketio_url}?session={token}", None),  # auth mode: not here
        ]
        for url, auth in attempts:
            recorder = SioRecorder()
            with pytest.raises(socketio.exceptions.ConnectionError):
                await recorder.client.connect(url, auth=auth, transports=["websocket"])
            await recorder.client.disconnect()
            assert recorder.errors[-1]["data"] == {"status": 401}
        assert emu.refused_upgrade_reasons == {
            "missing_session": 2,
            "invalid_session": 1,
        }
        assert emu.refused_upgrades == 3
        assert emu.connections() == []
        async with sio_client(emu.socketio_url, auth={"token": token}) as sio:
            await eventually(lambda: bool(sio.events), within=5)


async def test_socketio_session_expiry_disconnects_the_client(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """At expiry the server disconnects the client (recorded as 4001)."""
    async with make_emulator(transport="socketio", session_ttl_seconds=1.0) as emu:
        token = await new_session(emu, http)
        started = time.monotonic()
        async with sio_client(f"{emu.socketio_url}?session={token}") as sio:
            await eventually(lambda: bool(sio.disconnects), within=5)
            elapsed = time.monotonic() - started
            assert sio.disconnects == [sio.client.reason.SERVER_DISCONNECT]
        assert 0.8 <= elapsed <= 2.0
        conn = await emu.wait_closed(1)
        assert (conn["close_code"], conn["close_reason"]) == (4001, "session expired")


async def test_socketio_faults_on_the_raw_engineio_wire(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """A raw Engine.IO websocket sees a cut EVENT packet, unknown events, oversize."""
    async with make_emulator(transport="socketio", start_paused=True) as emu:
        token = await new_session(emu, http)
        async with connect(f"{emu.ws_url}&session={token}", max_size=None) as ws:
            opened = await asyncio.wait_for(ws.recv(), 5)
            assert isinstance(opened, str)
            assert opened.startswith("0{")
            await ws.send("40")  # CONNECT to "/"
            connected = await asyncio.wait_for(ws.recv(), 5)
            assert isinstance(connected, str)
            assert connected.startswith("40{")
            async with asyncio.timeout(5):
                await emu.wait_for_connections(1)
            emu.send_malformed()
            emu.send_unknown()
            emu.send_oversize(100_000)
            raw = [str(r) for r in await read_raw(ws, 4)]
    assert all(r.startswith("42[") for r in raw)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raw[0][2:])
    events = [orjson.loads(r[2:]) for r in raw[1:]]
    assert [e[0] for e in events] == ["geofences", "events", "positions"]
    assert events[1][1][0]["type"] == "deviceFuelDrop"
    assert len(orjson.dumps(events[2][1])) > 100_000
    assert emu.stats()["faults"]["frames_written"] == {
        "malformed": 1,
        "unknown": 2,
        "oversize": 1,
    }
    assert emu.written_seqs() == set()


async def test_socketio_refuse_409_refuses_a_second_client(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """refuse-409 over Socket.IO: a second CONNECT gets CONNECT_ERROR status 409."""
    async with make_emulator(transport="socketio", session_policy="refuse-409") as emu:
        token = await new_session(emu, http)
        url = f"{emu.socketio_url}?session={token}"
        async with sio_client(url):
            second = SioRecorder()
            with pytest.raises(socketio.exceptions.ConnectionError):
                await second.client.connect(url, transports=["websocket"])
            await second.client.disconnect()
            assert second.errors[-1]["data"] == {"status": 409}
        assert emu.refused_upgrade_reasons == {"conflict": 1}


# -- replay -------------------------------------------------------------------------

BINARY = b"\x00\x01\xfe\xffnot text"


def write_capture(path: Path) -> list[str | bytes]:
    """A small capture (as `sendstack-bridge capture` writes it); its frames."""
    now = time.time()
    text1 = '{"positions":[{"id":1,"deviceId":1}]}'
    text2 = '{"events":[]} é'
    lines = [
        header_line(started_at=now, url="ws://x/stream?session=***", codec="t"),
        event_line("open", t=0.0, at=now, url="ws://x", generation=1),
        event_line("frame", t=0.2, at=now, text=text1),
        event_line("frame", t=0.4, at=now, base64=base64.b64encode(BINARY).decode()),
        event_line("rotation", t=0.5, at=now, generation=2),
        event_line("close", t=0.5, at=now, code=1000, reason=""),
        event_line("open", t=0.6, at=now, url="ws://x", generation=2),
        event_line("frame", t=0.8, at=now, text=text2),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return [text1, BINARY, text2]


async def test_replay_sends_the_capture_verbatim_in_order_on_time(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Each socket gets the capture's frames verbatim (binary too), timed, counted."""
    capture = tmp_path / "wire.jsonl"
    frames = write_capture(capture)
    async with make_emulator(replay_file=str(capture), replay_speed=2.0) as emu:
        token = await new_session(emu, http)
        async with open_stream(emu, token) as a, open_stream(emu, token) as b:
            started = time.monotonic()
            got_a, got_b = await asyncio.gather(read_raw(a, 3), read_raw(b, 3))
            elapsed = time.monotonic() - started
            with pytest.raises(TimeoutError):  # nothing else: no fleet frames
                await asyncio.wait_for(a.recv(), timeout=0.3)
        assert got_a == got_b == frames
        assert 0.3 <= elapsed <= 1.5  # 0.8 s of capture at speed 2
        await eventually(lambda: emu.replayed_frames() == 6)
        assert [c["replayed_frames"] for c in emu.connections()] == [3, 3]
        assert emu.written_seqs() == set()
        assert emu.stats()["replay"]["frames"] == 3


async def test_replay_loops_as_fast_as_possible(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    """replay_speed=0 with replay_loop sends the capture again and again at once."""
    capture = tmp_path / "wire.jsonl"
    frames = write_capture(capture)
    async with make_emulator(
        replay_file=str(capture), replay_speed=0, replay_loop=True
    ) as emu:
        token = await new_session(emu, http)
        async with open_stream(emu, token) as ws:
            got = await asyncio.wait_for(read_raw(ws, 30), timeout=2)
        assert got == frames * 10
        await emu.wait_closed(1)
        assert emu.replayed_frames(1) >= 30


def test_replay_file_must_be_a_capture(tmp_path: Path) -> None:
    """A missing file or one without the capture header fails at construction."""
    with pytest.raises(ConfigError):
        Emulator(EmulatorConfig(replay_file=str(tmp_path / "absent.jsonl")))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"t": 0, "kind": "frame", "text": "x"}\n')
    with pytest.raises(ConfigError, match="header"):
        Emulator(EmulatorConfig(replay_file=str(bad)))


# -- session policies --------------------------------------------------------------


async def test_replace_4409_closes_the_older_socket(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """replace-4409: a newer socket makes the server close the older with 4409."""
    async with make_emulator(session_policy="replace-4409") as emu:
        token = await new_session(emu, http)
        async with open_stream(emu, token) as old:
            async with asyncio.timeout(5):
                await emu.wait_for_connections(1)
            async with open_stream(emu, token) as new:
                closed = await asyncio.wait_for(drain_until_closed(old), 5)
                assert isinstance(closed, ConnectionClosed)
                assert closed.rcvd is not None
                assert closed.rcvd.code == 4409
                assert await asyncio.wait_for(new.recv(), timeout=5)
        assert emu.connections()[0]["close_code"] == 4409
        assert emu.refused_upgrades == 0


async def test_refuse_409_refuses_a_second_upgrade_while_one_is_open(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """refuse-409: a second upgrade gets HTTP 409 until the first socket closes."""
    async with make_emulator(session_policy="refuse-409") as emu:
        token = await new_session(emu, http)
        async with open_stream(emu, token) as first:
            async with asyncio.timeout(5):
                await emu.wait_for_connections(1)
            assert await refused_status(f"{emu.ws_url}?session={token}") == 409
            assert await asyncio.wait_for(first.recv(), timeout=5)
        await emu.wait_closed(1)
        assert emu.refused_upgrades == 1
        assert emu.refused_upgrade_reasons == {"conflict": 1}
        async with open_stream(emu, token) as second:
            assert await asyncio.wait_for(second.recv(), timeout=5)
        assert emu.refused_upgrades == 1


async def test_revoke_4001_revokes_older_tokens(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """revoke-4001: a new session closes the old socket (4001) and voids its token."""
    async with make_emulator(session_policy="revoke-4001") as emu:
        old = await new_session(emu, http)
        async with open_stream(emu, old) as old_ws:
            async with asyncio.timeout(5):
                await emu.wait_for_connections(1)
            await next_wall_second()  # same-second issues share one token
            new = await new_session(emu, http)
            closed = await asyncio.wait_for(drain_until_closed(old_ws), 5)
            assert isinstance(closed, ConnectionClosedError)
            assert closed.rcvd is not None
            assert (closed.rcvd.code, closed.rcvd.reason) == (4001, "session replaced")
        assert await refused_status(f"{emu.ws_url}?session={old}") == 401
        async with open_stream(emu, new) as new_ws:
            assert await asyncio.wait_for(new_ws.recv(), timeout=5)


async def test_multi_policy_keeps_every_socket(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """multi (the default): two sockets on one token both stay open and fed."""
    async with make_emulator(max_frames_per_second=10) as emu:
        token = await new_session(emu, http)
        async with open_stream(emu, token) as a, open_stream(emu, token) as b:
            async with asyncio.timeout(5):
                await emu.wait_for_connections(2)
            assert await asyncio.wait_for(a.recv(), timeout=5)
            assert await asyncio.wait_for(b.recv(), timeout=5)
            assert emu.stats()["open_connections"] == 2


# -- configuration ------------------------------------------------------------------


def test_wire_options_are_validated_and_single_session_is_revoke_4001() -> None:
    """Bad wire options are all reported; single_session means revoke-4001."""
    with pytest.raises(ConfigError) as info:
        EmulatorConfig(
            wire_shape="xml",  # type: ignore[arg-type]
            transport="sse",  # type: ignore[arg-type]
            session_policy="lifo",  # type: ignore[arg-type]
            replay_speed=-1,
        )
    assert len(info.value.problems) == 4
    with pytest.raises(ConfigError) as info:
        EmulatorConfig(
            replay_file="x.jsonl",
            transport="socketio",
            wire_shape="mixed-batch",
            single_session=True,
            session_policy="refuse-409",
        )
    assert len(info.value.problems) == 3
    assert EmulatorConfig(single_session=True).effective_session_policy == (
        "revoke-4001"
    )
    assert EmulatorConfig().effective_session_policy == "multi"


def test_cli_wire_flags() -> None:
    """The CLI flags reach the configuration."""
    args = build_parser().parse_args(
        [
            "--wire-shape",
            "typed-object",
            "--transport",
            "socketio",
            "--socketio-session-in",
            "auth",
            "--session-policy",
            "replace-4409",
            "--socketio-ping-interval",
            "2",
            "--socketio-ping-timeout",
            "1.5",
        ]
    )
    config = config_from_args(args, {})
    assert (config.socketio_ping_interval, config.socketio_ping_timeout) == (2, 1.5)
    assert (config.wire_shape, config.transport) == ("typed-object", "socketio")
    assert config.socketio_session_in == "auth"
    assert config.session_policy == "replace-4409"
    replay = config_from_args(
        build_parser().parse_args(
            ["--replay", "c.jsonl", "--replay-speed", "0", "--replay-loop"]
        ),
        {},
    )
    assert (replay.replay_file, replay.replay_speed, replay.replay_loop) == (
        "c.jsonl",
        0.0,
        True,
    )


def test_shapes_module_documents_every_shape() -> None:
    """shapes.py's docstring names every shape and Socket.IO event name."""
    doc = inspect.getdoc(shapes) or ""
    for word in ("typed-object", "mixed-batch", '"location"', '"batch"', "seq"):
        assert word in doc


async def test_socketio_half_open_starves_the_client_of_pings(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """Half-open over Socket.IO stops events and Engine.IO pings: the client quits."""
    async with make_emulator(
        transport="socketio",
        max_frames_per_second=20,
        report_interval_seconds=0.05,
        socketio_ping_interval=1,
        socketio_ping_timeout=0.5,
    ) as emu:
        token = await new_session(emu, http)
        url = f"{emu.socketio_url}?session={token}"
        async with sio_client(url, transports=["websocket"]) as sio:
            await eventually(lambda: bool(sio.events), within=5)
            assert await emu.half_open() == 1
            count = len(sio.events)
            await eventually(lambda: bool(sio.disconnects), within=5)
            assert len(sio.events) == count
            info = emu.connections()[0]
            assert info["state"] == "half_open"
            assert info["written_items"] == len(traccar_seqs(sio.events))
