"""The tracking websocket: upgrade checks, session lifetime, wire format, pacing."""

from __future__ import annotations

import asyncio
import re
import time
from collections import defaultdict

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from bridgelab.emulator import Emulator
from tests.emulator.conftest import EmulatorFactory
from tests.emulator.helpers import (
    eventually,
    items_of,
    new_session,
    next_wall_second,
    open_stream,
    read_for,
    seqs_of,
)

ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


async def _refused_status(url: str) -> int:
    with pytest.raises(InvalidStatus) as info:
        async with connect(url):
            pass
    return info.value.response.status_code


async def test_upgrade_refused_without_session(emu: Emulator) -> None:
    """No ``session`` query parameter: the upgrade is refused with 401."""
    assert await _refused_status(emu.ws_url) == 401
    assert await _refused_status(f"{emu.ws_url}?other=1") == 401


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.AAAA",
    ],
    ids=["garbage", "bad-signature"],
)
async def test_upgrade_refused_with_invalid_session(emu: Emulator, token: str) -> None:
    """A token that is not ours (garbage or wrongly signed) is refused with 401."""
    assert await _refused_status(f"{emu.ws_url}?session={token}") == 401
    assert emu.stats()["sessions"]["ws_refused"] == {"invalid_session": 1}


async def test_upgrade_refused_with_tampered_real_token(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """Changing one signature character of a real token makes it invalid."""
    token = await new_session(emu, http)
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert await _refused_status(f"{emu.ws_url}?session={tampered}") == 401


async def test_upgrade_refused_with_expired_session(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """A session past its expiry is refused with 401."""
    async with make_emulator(session_ttl_seconds=0.3) as emu:
        token = await new_session(emu, http)
        await asyncio.sleep(0.4)
        assert await _refused_status(f"{emu.ws_url}?session={token}") == 401


async def test_wrong_path_is_404(emu: Emulator, http: httpx.AsyncClient) -> None:
    """Only the configured path upgrades; anything else is 404."""
    token = await new_session(emu, http)
    url = emu.ws_url.replace("/tracking/stream", "/elsewhere")
    assert await _refused_status(f"{url}?session={token}") == 404


async def test_socket_closed_with_4001_at_expiry(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """An open socket is closed with 4001 "session expired" when its session ends."""
    async with make_emulator(session_ttl_seconds=1.0) as emu:
        token = await new_session(emu, http)
        issued = time.monotonic()
        async with open_stream(emu, token) as ws:
            with pytest.raises(ConnectionClosedError) as info:
                async for _ in ws:
                    pass
        elapsed = time.monotonic() - issued
        assert info.value.rcvd is not None
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (
            4001,
            "session expired",
        )
        assert 0.8 <= elapsed <= 2.0
        conn = await emu.wait_closed(1)
        assert (conn["close_code"], conn["state"]) == (4001, "closed")


async def test_admin_expire_closes_sockets_and_voids_tokens(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """Expiring sessions now closes sockets with 4001 and the token stops working."""
    token = await new_session(emu, http)
    async with open_stream(emu, token) as ws:
        async with asyncio.timeout(5):
            await emu.wait_for_connections(1)
        assert emu.expire_sessions() == 1
        with pytest.raises(ConnectionClosedError) as info:
            async for _ in ws:
                pass
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 4001
    assert await _refused_status(f"{emu.ws_url}?session={token}") == 401
    fresh = await new_session(emu, http)
    async with open_stream(emu, fresh):
        pass


async def test_single_session_mode_closes_the_older_socket(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """With single_session a new session closes older sockets ("session replaced")."""
    async with make_emulator(single_session=True) as emu:
        old = await new_session(emu, http)
        async with open_stream(emu, old) as old_ws:
            async with asyncio.timeout(5):
                await emu.wait_for_connections(1)
            await next_wall_second()  # same-second issues share one token
            new = await new_session(emu, http)
            assert new != old
            with pytest.raises(ConnectionClosedError) as info:
                async for _ in old_ws:
                    pass
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (
                4001,
                "session replaced",
            )
        assert await _refused_status(f"{emu.ws_url}?session={old}") == 401
        async with open_stream(emu, new) as new_ws:
            assert await asyncio.wait_for(new_ws.recv(), timeout=5)


async def test_frames_follow_the_wire_format(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """Frames are traccar-json objects; seqs, ids and lastUpdate strictly increase."""
    async with make_emulator(
        max_frames_per_second=0, frame_items=5, events_ratio=0.4, status_ratio=0.1
    ) as emu:
        token = await new_session(emu, http)
        async with open_stream(emu, token) as ws:
            frames = []
            while sum(len(items_of(f)) for f in frames) < 3_000:
                frames.append(orjson.loads(await ws.recv()))
    last_seq = last_pos = last_event = 0
    last_update: dict[int, str] = defaultdict(str)
    types: set[str] = set()
    for frame in frames:
        assert frame
        assert set(frame) <= {"positions", "devices", "events"}
        seqs = sorted(seqs_of(frame))
        assert seqs == list(range(seqs[0], seqs[-1] + 1))
        assert seqs[0] > last_seq
        last_seq = seqs[-1]
        for pos in frame.get("positions", []):
            assert {
                "id",
                "deviceId",
                "fixTime",
                "latitude",
                "longitude",
                "speed",
                "course",
            } <= set(pos)
            assert ISO_MS.match(pos["fixTime"])
            assert 6.3 < pos["latitude"] < 6.8
            assert 3.2 < pos["longitude"] < 3.7
            assert pos["id"] > last_pos
            last_pos = pos["id"]
        for dev in frame.get("devices", []):
            assert {"id", "name", "uniqueId", "status", "lastUpdate"} <= set(dev)
            assert dev["status"] in ("online", "offline")
            assert ISO_MS.match(dev["lastUpdate"])
            assert dev["lastUpdate"] > last_update[dev["id"]]
            last_update[dev["id"]] = dev["lastUpdate"]
        for event in frame.get("events", []):
            assert ISO_MS.match(event["eventTime"])
            assert event["id"] > last_event
            last_event = event["id"]
            types.add(event["type"])
            if event["type"] == "alarm":
                assert event["attributes"]["alarm"] == "lowBattery"
            if event["type"] == "deviceOverspeed":
                speed = event["attributes"]["speed"]
                assert speed > event["attributes"]["speedLimit"]
            if event["type"].startswith("geofence"):
                assert event["geofenceId"] > 0
    assert types == {
        "deviceOverspeed",
        "alarm",
        "deviceStopped",
        "deviceInactive",
        "geofenceEnter",
        "geofenceExit",
    }


async def test_sendstack_event_names_option(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """event_names="sendstack" uses the documented tracker-event strings instead."""
    async with make_emulator(
        max_frames_per_second=0, events_ratio=1.0, event_names="sendstack"
    ) as emu:
        token = await new_session(emu, http)
        types: set[str] = set()
        async with open_stream(emu, token) as ws:
            while len(types) < 6:
                frame = orjson.loads(await asyncio.wait_for(ws.recv(), timeout=5))
                types |= {e["type"] for e in frame.get("events", [])}
    assert types == {
        "OVER_SPEEDING_WARNING",
        "LOW_BATTERY_ALERT",
        "NO_MOVEMENT_ALERT",
        "NO_SIGNAL_ALERT",
        "GEOFENCE_IN",
        "GEOFENCE_OUT",
    }


async def test_paced_mode_sends_at_most_two_frames_per_second(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """At the documented 2 frames/s, ~2 s of listening yields at most 5 frames."""
    async with make_emulator(devices=30) as emu:
        token = await new_session(emu, http)
        async with open_stream(emu, token) as ws:
            await asyncio.wait_for(ws.recv(), timeout=5)  # align on a frame
            frames = await read_for(ws, 2.0)
    assert 2 <= len(frames) <= 5


async def test_frames_are_broadcast_identically_to_two_sessions(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """Two sockets on two concurrent sessions receive the very same items."""
    async with make_emulator(
        max_frames_per_second=20, devices=5, report_interval_seconds=0.05
    ) as emu:
        first_token = await new_session(emu, http)
        await next_wall_second()
        second_token = await new_session(emu, http)
        assert first_token != second_token
        async with (
            open_stream(emu, first_token) as a,
            open_stream(emu, second_token) as b,
        ):
            async with asyncio.timeout(5):
                await emu.wait_for_connections(2)
            got_a, got_b = await asyncio.gather(read_for(a, 1.0), read_for(b, 1.0))
    by_seq_a = {
        s: i for f in got_a for s, i in zip(seqs_of(f), items_of(f), strict=True)
    }
    by_seq_b = {
        s: i for f in got_b for s, i in zip(seqs_of(f), items_of(f), strict=True)
    }
    common = by_seq_a.keys() & by_seq_b.keys()
    assert len(common) >= 10
    assert all(by_seq_a[s] == by_seq_b[s] for s in common)


async def test_client_messages_are_ignored_and_pings_answered(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """Client messages are ignored, and client pings get pongs (no server pings)."""
    token = await new_session(emu, http)
    async with open_stream(emu, token) as ws:
        await ws.send('{"subscribe": true}')
        pong = await ws.ping()
        latency = await asyncio.wait_for(pong, timeout=2)
        assert latency >= 0
        assert await asyncio.wait_for(ws.recv(), timeout=5)


async def test_tokens_never_reach_the_logs(
    make_emulator: EmulatorFactory,
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Even at DEBUG, neither valid nor refused tokens appear in any log record."""
    with caplog.at_level("DEBUG"):
        async with make_emulator(session_ttl_seconds=1.0) as emu:
            token = await new_session(emu, http)
            async with open_stream(emu, token) as ws:
                await asyncio.wait_for(ws.recv(), timeout=5)
            await _refused_status(f"{emu.ws_url}?session={token}x")
            await eventually(lambda: emu.stats()["open_connections"] == 0)
    # Only the emulator's records: the test's own client logs its request line.
    ours = [r for r in caplog.records if r.name.startswith("bridgelab.")]
    assert any(
        "GET /api/v1/tracking/stream?session=<redacted>" in r.getMessage() for r in ours
    )
    text = "\n".join(r.getMessage() for r in ours)
    assert token not in text
    assert token.split(".")[1] not in text  # not even the payload part
