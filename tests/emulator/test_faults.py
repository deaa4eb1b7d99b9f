"""Stream faults and the seq ledger, seen from real websocket clients."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from bridgelab.emulator import Emulator
from tests.emulator.conftest import EmulatorFactory
from tests.emulator.helpers import eventually, new_session, open_stream, seqs_of


async def _drain_until_closed(
    ws: ClientConnection, into: list[int]
) -> ConnectionClosed:
    """Read every frame until the socket closes; returns the closing exception."""
    try:
        while True:
            into.extend(seqs_of(orjson.loads(await ws.recv())))
    except ConnectionClosed as closed:
        return closed


async def test_drop_gives_the_client_1006(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """A drop ends TCP without a close frame: the client sees 1006 and rcvd None."""
    token = await new_session(emu, http)
    async with open_stream(emu, token) as ws:
        await asyncio.wait_for(ws.recv(), timeout=5)
        assert await emu.drop() == 1
        closed = await asyncio.wait_for(_drain_until_closed(ws, []), timeout=5)
        assert isinstance(closed, ConnectionClosedError)
        assert closed.rcvd is None
        assert ws.close_code == 1006
    conn = await emu.wait_closed(1)
    assert (conn["close_code"], conn["close_reason"]) == (1006, "dropped")
    assert emu.stats()["faults"]["drop"] == 1


async def test_ledger_matches_what_the_client_read(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """Every seq the ledger says was written reached the client, and nothing else."""
    async with make_emulator(max_frames_per_second=0, frame_items=8) as emu:
        token = await new_session(emu, http)
        got: list[int] = []
        async with open_stream(emu, token) as ws:
            reader = asyncio.create_task(_drain_until_closed(ws, got))
            await asyncio.sleep(1.0)
            await emu.drop()
            await asyncio.wait_for(reader, timeout=10)
        await emu.wait_closed(1)
        written = emu.written_seqs(1)
        assert len(got) == len(set(got))  # no duplicates on one socket
        assert set(got) == written
        assert len(written) > 5_000
        assert emu.written_seqs() == written
        assert emu.generated_count >= len(written)
        assert emu.stats()["written"]["unique"] == len(written)


async def test_half_open_stops_pongs_and_frames(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """A half-open socket gets no frames and no pongs; other sockets keep flowing."""
    async with make_emulator(
        max_frames_per_second=20, report_interval_seconds=0.05
    ) as emu:
        token = await new_session(emu, http)
        async with (
            open_stream(
                emu, token, ping_interval=0.2, ping_timeout=0.3, close_timeout=0.3
            ) as victim,
            open_stream(emu, token) as bystander,
        ):
            async with asyncio.timeout(5):
                await emu.wait_for_connections(2)
            await asyncio.wait_for(victim.recv(), timeout=5)
            victim_id = min(c["id"] for c in emu.connections())
            assert await emu.half_open(victim_id) == 1
            written_then = next(
                c["written_frames"] for c in emu.connections() if c["id"] == victim_id
            )
            closed = await asyncio.wait_for(_drain_until_closed(victim, []), timeout=5)
            assert isinstance(closed, ConnectionClosedError)
            assert closed.sent is not None
            assert closed.sent.code == 1011  # websockets: keepalive ping timeout
            assert closed.rcvd is None
            # The bystander still receives frames while the victim hangs.
            assert await asyncio.wait_for(bystander.recv(), timeout=2)
            info = next(c for c in emu.connections() if c["id"] == victim_id)
            assert info["state"] == "half_open"
            assert info["written_frames"] == written_then
        assert emu.stats()["faults"]["half_open"] == 1


async def test_half_open_hold_aborts_later(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """With hold_seconds the half-open socket is aborted after that time."""
    token = await new_session(emu, http)
    async with open_stream(emu, token, ping_interval=None) as ws:
        async with asyncio.timeout(5):
            await emu.wait_for_connections(1)
        await emu.half_open(hold_seconds=0.2)
        closed = await asyncio.wait_for(_drain_until_closed(ws, []), timeout=5)
        assert closed.rcvd is None
    conn = await emu.wait_closed(1)
    assert conn["close_code"] == 1006


async def test_odd_frames_are_delivered_and_kept_out_of_the_ledger(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """Malformed, unknown-shape, unknown-event and oversize frames arrive, seq-less."""
    async with make_emulator(start_paused=True) as emu:
        token = await new_session(emu, http)
        async with open_stream(emu, token, max_size=None) as ws:
            async with asyncio.timeout(5):
                await emu.wait_for_connections(1)
            assert emu.send_malformed() == 1
            assert emu.send_unknown() == 1
            assert emu.send_oversize(2_097_152) == 1
            raw = [await asyncio.wait_for(ws.recv(), timeout=5) for _ in range(4)]
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(raw[0])
        unknown_shape = orjson.loads(raw[1])
        assert set(unknown_shape) == {"geofences"}
        unknown_event = orjson.loads(raw[2])["events"][0]
        assert unknown_event["type"] == "deviceFuelDrop"
        assert "seq" not in unknown_event["attributes"]
        assert len(raw[3]) > 2_097_152
        oversize = orjson.loads(raw[3])
        assert "seq" not in oversize["positions"][0]["attributes"]
        await eventually(
            lambda: emu.stats()["faults"]["frames_written"].get("oversize") == 1
        )
        stats = emu.stats()
        assert stats["faults"]["frames_written"] == {
            "malformed": 1,
            "unknown": 2,
            "oversize": 1,
        }
        assert stats["faults"]["requested"] == {
            "malformed": 1,
            "unknown": 1,
            "oversize": 1,
        }
        assert emu.written_seqs() == set()
        assert stats["frames"]["written"] == 4


async def test_slow_consumer_is_closed_with_1013(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """A client that stops reading is closed with 1013 once its queue overflows."""
    async with make_emulator(
        max_frames_per_second=0,
        frame_items=200,
        send_queue_frames=4,
        slow_consumer_grace_seconds=0.3,
        ws_close_timeout=0.5,
    ) as emu:
        token = await new_session(emu, http)
        async with open_stream(emu, token, max_queue=1, close_timeout=0.5) as ws:
            await asyncio.wait_for(ws.recv(), timeout=5)
            # Stop reading; buffers fill, the emulator's queue overflows.
            conn = await asyncio.wait_for(emu.wait_closed(1), timeout=15)
            stats = emu.stats()
        assert conn["close_code"] == 1013
        assert conn["close_reason"] == "slow consumer"
        assert conn["overflowed"] is True
        assert stats["overflows"] == 1
        # Only what was handed to ws.send counts; the discarded backlog does not.
        assert conn["written_items"] <= stats["generated"]
