"""Client-side helpers for the emulator tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

from bridgelab.emulator import Emulator


def creds(emu: Emulator, *, camel: bool = False) -> dict[str, str]:
    """The emulator's app credentials as request headers."""
    if camel:
        return {"appId": emu.config.app_id, "appSecret": emu.config.app_secret}
    return {"app_id": emu.config.app_id, "app_secret": emu.config.app_secret}


async def new_session(emu: Emulator, client: httpx.AsyncClient) -> str:
    """A fresh session token from the real endpoint."""
    resp = await client.post(f"{emu.base_url}/auth/session", headers=creds(emu))
    assert resp.status_code == 200, resp.text
    token: str = resp.json()["data"]["session"]
    return token


async def next_wall_second() -> None:
    """Sleep into the next wall-clock second (JWT iat has 1 s resolution)."""
    await asyncio.sleep(1.0 - time.time() % 1.0 + 0.02)


def open_stream(emu: Emulator, token: str, **kwargs: Any) -> connect:
    """Connect to the emulator's stream with ``?session=<token>``."""
    kwargs.setdefault("close_timeout", 1)
    return connect(f"{emu.ws_url}?session={token}", **kwargs)


def items_of(frame: dict[str, Any]) -> list[dict[str, Any]]:
    """Every item of a frame, whatever its array."""
    return [
        item
        for key in ("positions", "devices", "events")
        for item in frame.get(key, [])
    ]


def seqs_of(frame: dict[str, Any]) -> list[int]:
    """The seqs of a frame's items."""
    return [int(item["attributes"]["seq"]) for item in items_of(frame)]


async def read_for(ws: ClientConnection, seconds: float) -> list[dict[str, Any]]:
    """Decoded frames received during ``seconds``."""
    frames: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            raw = await asyncio.wait_for(ws.recv(), timeout=left)
        except TimeoutError:
            break
        frames.append(orjson.loads(raw))
    return frames


async def eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``check`` until it is true (tests only)."""
    async with asyncio.timeout(within):
        while True:
            if check():
                return
            await asyncio.sleep(0.02)
