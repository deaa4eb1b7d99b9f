"""End to end over Socket.IO: a python-socketio upstream → the bridge → Tansu.

What a user sees right after switching ``BRIDGE_STREAM_TRANSPORT`` to
``socketio``, before writing a mapping: the default codec does not know
Socket.IO events, so each one lands on the dead-letter topic as the
server's JSON array, byte for byte, and none is lost.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import pytest
import socketio
from aiohttp import web

from bridgelab.emulator import Emulator, EmulatorConfig
from tests.e2e.harness import bridge_env, fresh_topics, running_bridge
from tests.e2e.verifier import read_all, wait_for
from tests.kafka_broker import Broker

pytestmark = pytest.mark.e2e


@dataclass
class Upstream:
    sio: socketio.AsyncServer
    port: int
    connected: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    sessions: list[str] = field(default_factory=list)


@asynccontextmanager
async def socket_io_upstream() -> AsyncIterator[Upstream]:
    """A python-socketio server that accepts any connection carrying a session."""
    sio = socketio.AsyncServer(async_mode="aiohttp")
    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    up = Upstream(sio=sio, port=runner.addresses[0][1])

    @sio.event
    async def connect(sid: str, environ: Mapping[str, Any], auth: object) -> None:
        session = parse_qs(environ.get("QUERY_STRING", "")).get("session", [""])[0]
        if not session:
            raise socketio.exceptions.ConnectionRefusedError("no session")
        up.sessions.append(session)
        up.connected.put_nowait(sid)

    try:
        yield up
    finally:
        await runner.cleanup()


async def test_every_socket_io_event_is_dead_lettered_verbatim(broker: Broker) -> None:
    """With the default codec each emitted event reaches the DLQ as its exact array."""
    topics = await fresh_topics(broker.bootstrap)
    events = [
        ("position", {"deviceId": n % 5, "seq": n, "lat": 6.45, "lng": 3.39})
        for n in range(40)
    ] + [("deviceStatus", {"deviceId": 3, "status": "online", "seq": 40})]
    expected = Counter(
        json.dumps([name, data], separators=(",", ":")).encode()
        for name, data in events
    )
    async with (
        Emulator(EmulatorConfig(devices=2)) as emu,
        socket_io_upstream() as up,
    ):
        env = bridge_env(
            emu,
            broker.bootstrap,
            topics,
            BRIDGE_STREAM_TRANSPORT="socketio",
            BRIDGE_STREAM_URL=f"ws://127.0.0.1:{up.port}/socket.io/",
        )
        async with running_bridge(env) as bridge:
            sid = await asyncio.wait_for(up.connected.get(), 15)
            for name, data in events:
                await up.sio.emit(name, data, to=sid)
            await wait_for(
                lambda: (
                    bridge.sample(
                        "bridge_records_dead_lettered_total",
                        {"origin": "stream", "reason": "not_an_object"},
                    )
                    >= len(events)
                ),
                15,
            )
            await wait_for(
                lambda: bridge.app.sink.statistics().in_flight_records == 0, 10
            )
            reconnects = bridge.sample("bridge_ws_reconnects_total")
    consumed = await read_all(broker.bootstrap, topics.all)
    dead = consumed.records.get(topics.dead_letter, [])
    assert Counter(record.value for record in dead) == expected
    assert all(
        dict(record.headers)["bridge_dlq_reason"] == b"not_an_object" for record in dead
    )
    assert sum(consumed.count(topic) for topic in topics.data) == 0
    assert reconnects == 0
    assert up.sessions, "the bridge connected with a session in the query"
