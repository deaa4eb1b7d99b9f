"""``sendstack-bridge probe`` as a user runs it, against real servers.

The emulator answers the session call and speaks the assumed wire; a real
python-socketio server (on aiohttp) stands in for a Socket.IO upstream.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import pytest
import socketio
from aiohttp import web

from bridgelab.emulator import Emulator, EmulatorConfig

pytestmark = pytest.mark.e2e


def probe_env(emu: Emulator, **overrides: str) -> dict[str, str]:
    env = {
        "BRIDGE_SENDSTACK_BASE_URL": emu.base_url,
        "BRIDGE_SENDSTACK_APP_ID": emu.config.app_id,
        "BRIDGE_SENDSTACK_APP_SECRET": emu.config.app_secret,
        "BRIDGE_STREAM_URL": emu.ws_url,
    }
    env.update(overrides)
    return env


async def run_probe(env: Mapping[str, str], *args: str) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "probe",
        "--seconds",
        "3",
        *args,
        env={**clean, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_the_assumed_wire_is_reported_usable_without_showing_the_token() -> None:
    """Against the emulator: each step succeeds, frames decode, exit 0, no secret."""
    async with Emulator(EmulatorConfig(devices=5, max_frames_per_second=5.0)) as emu:
        code, out = await run_probe(probe_env(emu))
    assert code == 0, out
    assert "1. session call: HTTP 200" in out or "1. session call: HTTP 201" in out
    assert "2. websocket upgrade: HTTP 101" in out
    assert "item(s) decoded" in out
    assert "usable stream: yes" in out
    assert "session=***" in out
    assert emu.config.app_secret not in out
    assert "eyJ" not in out


async def test_a_wrong_path_is_named_and_exits_non_zero() -> None:
    """A 404 at the upgrade says the path is wrong and exits 1."""
    async with Emulator(EmulatorConfig(devices=2)) as emu:
        wrong = emu.ws_url.rsplit("/", 1)[0] + "/nope"
        code, out = await run_probe(probe_env(emu, BRIDGE_STREAM_URL=wrong))
    assert code == 1, out
    assert "2. websocket upgrade: HTTP 404" in out
    assert "the path is wrong" in out
    assert "usable stream: NO" in out


async def test_refused_credentials_stop_at_the_session_call() -> None:
    """A wrong secret: the session call's 401 and message, the settings, exit 1."""
    async with Emulator(EmulatorConfig(devices=2)) as emu:
        code, out = await run_probe(
            probe_env(emu, BRIDGE_SENDSTACK_APP_SECRET="WRONG-SECRET-123")
        )
    assert code == 1, out
    assert "1. session call: HTTP 401" in out
    assert "BRIDGE_SENDSTACK_APP_SECRET" in out
    assert "WRONG-SECRET-123" not in out
    assert "2. websocket upgrade" not in out


@asynccontextmanager
async def socket_io_server() -> AsyncIterator[int]:
    """A real Socket.IO server (python-socketio on aiohttp) that emits positions."""
    sio = socketio.AsyncServer(async_mode="aiohttp")
    app = web.Application()
    sio.attach(app)

    @sio.event
    async def connect(sid: str, environ: object, auth: object) -> None:
        await sio.emit("position", {"deviceId": 7, "lat": 6.45, "lng": 3.39}, to=sid)

    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield port
    finally:
        await runner.cleanup()


async def test_a_socket_io_upstream_is_recognised_and_named() -> None:
    """Engine.IO/Socket.IO packets on the wire: named, not usable as-is, exit 1."""
    async with Emulator(EmulatorConfig(devices=2)) as emu, socket_io_server() as port:
        url = f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
        code, out = await run_probe(probe_env(emu, BRIDGE_STREAM_URL=url))
    assert code == 1, out
    assert "2. websocket upgrade: HTTP 101" in out
    assert "engine.io packet" in out
    assert "Socket.IO" in out
    assert "usable stream: NO" in out
