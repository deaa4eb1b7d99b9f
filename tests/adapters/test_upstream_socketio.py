"""The Socket.IO connector against a real python-socketio server (on aiohttp).

Nothing of ours is faked: the server is python-socketio's ``AsyncServer`` on
an aiohttp app on loopback, and where a dead or slow network is needed a
plain TCP relay sits between the two.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import pytest
import socketio
from aiohttp import web

from bridge.adapters.upstream_connectors import stream_connector
from bridge.adapters.upstream_socketio import (
    HEARTBEAT_TIMEOUT,
    SERVER_DISCONNECT,
    SessionPlacement,
    SocketIoConnection,
    SocketIoConnector,
    engineio_url,
)
from bridge.adapters.upstream_ws import SocketOptions, WebsocketConnector
from bridge.config import Settings
from bridge.core.close_codes import classify_close
from bridge.errors import (
    ConfigError,
    SessionRejected,
    UpstreamClosed,
    UpstreamError,
    UpstreamUnavailable,
)
from bridge.secrets import Secret

TOKEN = Secret("tok-S3CRET-session-value-4711")
WRONG = Secret("tok-WRONG-session-value-0815")

# A connect handler's verdict: None accepts, a string refuses with it.
Gate = Callable[[Mapping[str, Any], Any], str | None]


def compact(value: object) -> bytes:
    """What python-socketio puts on the wire for ``value``."""
    return json.dumps(value, separators=(",", ":")).encode()


@dataclass
class Upstream:
    """A running python-socketio server and what it saw."""

    sio: socketio.AsyncServer
    port: int
    namespace: str
    connected: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    disconnected: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    queries: list[dict[str, list[str]]] = field(default_factory=list)
    auths: list[Any] = field(default_factory=list)

    def url(self, path: str = "/socket.io/") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    async def raw(self, sid: str, text: str) -> None:
        """Send ``4<text>`` (one Engine.IO MESSAGE, exactly these characters)."""
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, self.namespace)
        await self.sio.eio.send(eio_sid, text)


@asynccontextmanager
async def upstream(
    *,
    namespace: str = "/",
    gate: Gate | None = None,
    ping_interval: float | tuple[float, float] = 25,
    ping_timeout: float = 20,
) -> AsyncIterator[Upstream]:
    """A python-socketio server whose ``namespace`` connect handler runs ``gate``."""
    sio = socketio.AsyncServer(
        async_mode="aiohttp", ping_interval=ping_interval, ping_timeout=ping_timeout
    )
    app = web.Application()
    sio.attach(app)

    async def locked(request: web.Request) -> web.Response:
        return web.Response(status=401)

    app.router.add_get("/locked/", locked)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    up = Upstream(sio=sio, port=runner.addresses[0][1], namespace=namespace)

    async def on_connect(sid: str, environ: Mapping[str, Any], auth: Any) -> None:
        up.queries.append(parse_qs(environ.get("QUERY_STRING", "")))
        up.auths.append(auth)
        refusal = gate(environ, auth) if gate is not None else None
        if refusal is not None:
            raise socketio.exceptions.ConnectionRefusedError(refusal)
        up.connected.put_nowait(sid)

    async def on_disconnect(sid: str, reason: object = None) -> None:
        up.disconnected.put_nowait(sid)

    sio.on("connect", on_connect, namespace=namespace)
    sio.on("disconnect", on_disconnect, namespace=namespace)
    try:
        yield up
    finally:
        await runner.cleanup()


def options(**overrides: Any) -> SocketOptions:
    values: dict[str, Any] = {"open_timeout": 5.0, "close_timeout": 1.0}
    values.update(overrides)
    return SocketOptions(**values)


def connector(
    url: str,
    *,
    namespace: str = "/",
    session_in: SessionPlacement = "query",
    **socket_options: Any,
) -> SocketIoConnector:
    return SocketIoConnector(
        url=url,
        namespace=namespace,
        session_in=session_in,
        query_key="session",
        auth_key="token",
        options=options(**socket_options),
    )


@asynccontextmanager
async def opened(
    conn_factory: SocketIoConnector, up: Upstream, token: Secret = TOKEN
) -> AsyncIterator[tuple[SocketIoConnection, str]]:
    """An open connection and the server's sid for it; closed afterwards."""
    conn = await conn_factory.open(token)
    try:
        sid = await asyncio.wait_for(up.connected.get(), 5)
        yield conn, sid
    finally:
        conn.abort()


async def recv(conn: SocketIoConnection, within: float = 5.0) -> bytes:
    return await asyncio.wait_for(conn.recv(), within)


def query_gate(environ: Mapping[str, Any], auth: Any) -> str | None:
    """Accept only our session, in the query; echo what came (to be masked)."""
    got = parse_qs(environ.get("QUERY_STRING", "")).get("session", [""])[0]
    return None if got == TOKEN.reveal() else f"bad session {got}"


def auth_gate(environ: Mapping[str, Any], auth: Any) -> str | None:
    """Accept only our session, in the auth payload, and none in the query."""
    if "session" in parse_qs(environ.get("QUERY_STRING", "")):
        return "session in the query"
    got = auth.get("token") if isinstance(auth, dict) else None
    return None if got == TOKEN.reveal() else f"bad token {got}"


# -- events --------------------------------------------------------------------


async def test_events_arrive_in_order_as_their_verbatim_json_arrays() -> None:
    """Each EVENT comes back as its JSON array, byte for byte, in order."""
    async with upstream() as up, opened(connector(up.url()), up) as (conn, sid):
        sent: list[bytes] = []
        for seq in range(50):
            payload = {"deviceId": 7, "seq": seq, "lat": 6.45, "lng": 3.39}
            await up.sio.emit("position", payload, to=sid)
            sent.append(compact(["position", payload]))
        # Spacing, a trailing zero and non-ASCII text: kept as the server sent them.
        odd = '["positions", {"speed": 1.50, "name": "Ọ̀yọ́",\n "ok": true}]'
        await up.raw(sid, "2" + odd)
        sent.append(odd.encode())
        got = [await recv(conn) for _ in sent]
    assert got == sent


async def test_an_event_asking_for_an_ack_comes_back_bare_and_is_acked() -> None:
    """``42<id>[...]`` gives the array without the id; the server's callback runs."""
    async with upstream() as up, opened(connector(up.url()), up) as (conn, sid):
        acked = asyncio.Event()
        await up.sio.emit(
            "position", {"seq": 1}, to=sid, callback=lambda *args: acked.set()
        )
        assert await recv(conn) == compact(["position", {"seq": 1}])
        await asyncio.wait_for(acked.wait(), 5)


async def test_binary_and_unparseable_packets_come_back_whole_and_in_order() -> None:
    """BINARY_EVENT, its attachment, ACKs and garbage are returned as received."""
    async with upstream() as up, opened(connector(up.url()), up) as (conn, sid):
        await up.sio.emit("blob", b"\x00\x01\xff", to=sid)
        await up.raw(sid, "2not json at all")
        await up.raw(sid, "2[unclosed")
        await up.raw(sid, "31[]")
        await up.raw(sid, "9whatever")
        await up.sio.emit("position", {"seq": 2}, to=sid)
        got = [await recv(conn) for _ in range(7)]
    assert got == [
        b'451-["blob",{"_placeholder":true,"num":0}]',
        b"\x00\x01\xff",
        b"42not json at all",
        b"42[unclosed",
        b"431[]",
        b"49whatever",
        compact(["position", {"seq": 2}]),
    ]


async def test_a_non_default_namespace_is_connected_and_stripped() -> None:
    """With namespace ``/tracking`` the CONNECT names it and events lose its prefix."""
    async with upstream(namespace="/tracking") as up:
        conn_factory = connector(up.url(), namespace="/tracking")
        async with opened(conn_factory, up) as (conn, sid):
            await up.sio.emit("position", {"seq": 3}, to=sid, namespace="/tracking")
            await up.raw(sid, '2/tracking,17["position",{"seq":4}]')
            assert await recv(conn) == compact(["position", {"seq": 3}])
            assert await recv(conn) == b'["position",{"seq":4}]'


# -- the session ---------------------------------------------------------------


async def test_the_session_in_the_query_is_what_the_server_checks() -> None:
    """Query placement: the server finds the session (and EIO=4) in the URL."""
    async with upstream(gate=query_gate) as up:
        async with opened(connector(up.url()), up) as (conn, sid):
            await up.sio.emit("position", {"seq": 5}, to=sid)
            assert await recv(conn) == compact(["position", {"seq": 5}])
        assert up.queries[0]["EIO"] == ["4"]
        assert up.queries[0]["transport"] == ["websocket"]
        with pytest.raises(SessionRejected) as refused:
            await connector(up.url()).open(WRONG)
    assert "bad session" in str(refused.value)
    assert WRONG.reveal() not in str(refused.value)


async def test_the_session_in_the_auth_payload_is_what_the_server_checks() -> None:
    """Auth placement: the CONNECT payload carries it, the URL does not."""
    async with upstream(gate=auth_gate) as up:
        conn_factory = connector(up.url(), session_in="auth")
        async with opened(conn_factory, up) as (conn, sid):
            await up.sio.emit("position", {"seq": 6}, to=sid)
            assert await recv(conn) == compact(["position", {"seq": 6}])
        assert up.auths[0] == {"token": TOKEN.reveal()}
        with pytest.raises(SessionRejected) as refused:
            await conn_factory.open(WRONG)
        # The query placement is refused by this server too.
        with pytest.raises(SessionRejected):
            await connector(up.url()).open(TOKEN)
    assert "bad token" in str(refused.value)
    assert WRONG.reveal() not in str(refused.value)


async def test_an_invalid_namespace_is_unavailable_not_a_session_refusal() -> None:
    """The reference server's "Invalid namespace" cannot be fixed by a new session."""

    def no_namespace(environ: Mapping[str, Any], auth: Any) -> str:
        return "Invalid namespace"

    async with upstream(namespace="/gone", gate=no_namespace) as up:
        with pytest.raises(UpstreamUnavailable, match="SOCKETIO_NAMESPACE"):
            await connector(up.url(), namespace="/gone").open(TOKEN)


# -- how it ends ---------------------------------------------------------------


async def test_a_server_side_disconnect_ends_recv_as_a_normal_close() -> None:
    """The server's DISCONNECT (``41``) is UpstreamClosed 1000, after queued events."""
    async with upstream() as up, opened(connector(up.url()), up) as (conn, sid):
        await up.sio.emit("position", {"seq": 7}, to=sid)
        await up.sio.disconnect(sid)
        assert await recv(conn) == compact(["position", {"seq": 7}])
        with pytest.raises(UpstreamClosed) as closed:
            await recv(conn)
        with pytest.raises(UpstreamClosed):  # and stays closed
            await recv(conn)
    assert (closed.value.code, closed.value.reason) == SERVER_DISCONNECT
    verdict = classify_close(SERVER_DISCONNECT[0], SERVER_DISCONNECT[1])
    assert verdict.reason == "normal"
    assert not verdict.reauth


async def test_a_close_by_the_bridge_tells_the_server_and_keeps_its_code() -> None:
    """``close(4000, "stale")`` disconnects the namespace and recv reports 4000."""
    async with upstream() as up, opened(connector(up.url()), up) as (conn, sid):
        waiting = asyncio.create_task(conn.recv())
        await asyncio.sleep(0.1)
        await conn.close(4000, "stale")
        assert await asyncio.wait_for(up.disconnected.get(), 5) == sid
        with pytest.raises(UpstreamClosed) as closed:
            await asyncio.wait_for(waiting, 5)
    assert (closed.value.code, closed.value.reason) == (4000, "stale")


async def test_pings_are_answered_so_the_connection_outlives_many_intervals() -> None:
    """Against 0.2 s server pings and a 0.2 s pong deadline, 1.5 s pass connected."""
    # (0.2, 0.8): pings every 0.2 s; the OPEN packet says 1000 ms (python-engineio
    # rounds the interval to whole seconds), so the client's window is 1.2 s.
    async with (
        upstream(ping_interval=(0.2, 0.8), ping_timeout=0.2) as up,
        opened(connector(up.url(), ping_interval=60.0), up) as (conn, sid),
    ):
        await asyncio.sleep(1.5)
        assert up.sio.manager.is_connected(sid, "/")
        await up.sio.emit("position", {"seq": 8}, to=sid)
        assert await recv(conn) == compact(["position", {"seq": 8}])


async def test_a_silent_server_is_detected_within_ping_interval_plus_timeout() -> None:
    """A frozen peer (no ping) ends recv with 1011 keepalive within 1 s + 0.5 s."""
    async with (
        upstream(ping_interval=(0.2, 0.8), ping_timeout=0.5) as up,
        Relay(up.port) as relay,
    ):
        conn_factory = connector(
            f"ws://127.0.0.1:{relay.port}/socket.io/",
            ping_interval=60.0,  # only Engine.IO's heartbeat can notice
            close_timeout=0.2,
        )
        async with opened(conn_factory, up) as (conn, _sid):
            await asyncio.sleep(0.5)  # a few pings answered
            relay.freeze()
            frozen_at = time.monotonic()
            with pytest.raises(UpstreamClosed) as closed:
                await recv(conn, within=10)
            elapsed = time.monotonic() - frozen_at
    assert (closed.value.code, closed.value.reason) == HEARTBEAT_TIMEOUT
    assert classify_close(*HEARTBEAT_TIMEOUT).reason == "keepalive_timeout"
    # The last ping came at most 0.2 s before the freeze; the window is 1.5 s.
    assert 1.0 <= elapsed <= 1.5 + 0.5, elapsed


async def test_a_reader_that_stops_stops_the_socket_being_read() -> None:
    """Not calling recv() holds the stream back (bounded), and nothing is lost."""
    count, size = 2_000, 16_384
    async with upstream() as up, Relay(up.port) as relay:
        conn_factory = connector(
            f"ws://127.0.0.1:{relay.port}/socket.io/", max_queue=16
        )
        async with opened(conn_factory, up) as (conn, sid):
            for seq in range(count):
                await up.sio.emit("position", {"seq": seq, "pad": "x" * size}, to=sid)
            total = count * (size + 40)
            await asyncio.sleep(1.5)
            held_back = relay.to_client
            seqs = [json.loads(await recv(conn))[1]["seq"] for _ in range(count)]
    assert held_back < total / 2, (held_back, total)
    assert seqs == list(range(count))


async def test_a_stall_of_the_bridge_is_not_taken_for_a_dead_server() -> None:
    """Not reading for longer than the ping window, with the queue full, is no loss."""

    # python-engineio cannot announce a window shorter than the time it waits
    # for our pong, so this server speaks Engine.IO by hand: a 0.4 s window,
    # 50 events at once, then a ping every 0.1 s whether answered or not.
    async def engine_io(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(
            '0{"sid":"s","upgrades":[],"pingInterval":200,"pingTimeout":200,'
            '"maxPayload":1000000}'
        )
        await ws.receive()  # the CONNECT
        await ws.send_str('40{"sid":"n"}')
        for seq in range(50):
            await ws.send_str(f'42["position",{{"seq":{seq}}}]')
        while not ws.closed:
            await ws.send_str("2")
            await asyncio.sleep(0.1)
        return ws

    app = web.Application()
    app.router.add_get("/socket.io/", engine_io)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"ws://127.0.0.1:{runner.addresses[0][1]}/socket.io/"
        conn = await connector(url, max_queue=4, ping_interval=60.0).open(TOKEN)
        try:
            await asyncio.sleep(1.5)  # the bridge does not read
            got = [await recv(conn) for _ in range(50)]
        finally:
            conn.abort()
    finally:
        await runner.cleanup()
    assert got == [compact(["position", {"seq": seq}]) for seq in range(50)]


async def test_abort_ends_recv_as_connection_lost() -> None:
    """``abort()`` drops the socket at once; recv reports 1006."""
    async with upstream() as up, opened(connector(up.url()), up) as (conn, _sid):
        conn.abort()
        with pytest.raises(UpstreamClosed) as closed:
            await recv(conn)
    assert closed.value.code == 1006


# -- failures to connect -------------------------------------------------------


async def test_http_errors_at_the_upgrade_are_told_apart() -> None:
    """404 at the upgrade is UpstreamUnavailable; 401 is SessionRejected."""
    async with upstream() as up:
        with pytest.raises(UpstreamUnavailable, match="HTTP 404"):
            await connector(up.url("/nope/")).open(TOKEN)
        with pytest.raises(SessionRejected, match="HTTP 401"):
            await connector(up.url("/locked/")).open(TOKEN)


async def test_a_server_that_is_not_engine_io_is_unavailable() -> None:
    """A websocket that does not start with an Engine.IO OPEN packet is refused."""

    async def plain(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str('{"positions": []}')
        await ws.receive()
        return ws

    app = web.Application()
    app.router.add_get("/plain/", plain)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        with pytest.raises(UpstreamUnavailable, match=r"Engine\.IO v4 OPEN"):
            await connector(f"ws://127.0.0.1:{port}/plain/").open(TOKEN)
    finally:
        await runner.cleanup()


async def test_the_token_is_in_no_error_and_no_log_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every failure, in both placements, is told without the session."""
    errors: list[BaseException] = []
    caplog.set_level(logging.DEBUG)

    def echo_gate(environ: Mapping[str, Any], auth: Any) -> str:
        return f"refused {environ.get('QUERY_STRING')} {auth}"

    async with upstream(gate=echo_gate) as up:
        for session_in in ("query", "auth"):
            for url in (up.url(), up.url("/nope/"), up.url("/locked/")):
                try:
                    await connector(url, session_in=session_in).open(TOKEN)
                except UpstreamError as exc:
                    errors.append(exc)
        closed_port = up.port
    try:
        await connector(f"ws://127.0.0.1:{closed_port}/socket.io/").open(TOKEN)
    except UpstreamError as exc:
        errors.append(exc)
    assert len(errors) == 7
    assert any("refused" in str(error) for error in errors)
    secret = TOKEN.reveal()
    for error in errors:
        told = "".join(traceback.format_exception(error)) + repr(error.args)
        assert secret not in told
    server_side = ("aiohttp", "engineio", "socketio")
    for record in caplog.records:
        if record.name.startswith(server_side):
            continue
        text = record.getMessage() + (
            "".join(traceback.format_exception(*record.exc_info))
            if record.exc_info and record.exc_info[1]
            else ""
        )
        assert secret not in text, record.name


# -- configuration -------------------------------------------------------------

MINIMAL = {
    "BRIDGE_SENDSTACK_APP_ID": "app",
    "BRIDGE_SENDSTACK_APP_SECRET": "secret",
    "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": "localhost:9092",
}


def test_the_transport_setting_picks_the_connector() -> None:
    """``websocket`` (the default) gives the plain connector, ``socketio`` this one."""
    plain = Settings.from_env(MINIMAL).stream
    assert isinstance(stream_connector(plain), WebsocketConnector)
    socket_io = Settings.from_env(
        MINIMAL
        | {
            "BRIDGE_STREAM_TRANSPORT": "socketio",
            "BRIDGE_STREAM_URL": "wss://example.test",
            "BRIDGE_STREAM_SESSION_IN": "auth",
            "BRIDGE_STREAM_SOCKETIO_NAMESPACE": "/tracking",
        }
    ).stream
    assert isinstance(stream_connector(socket_io), SocketIoConnector)
    assert engineio_url(socket_io.url) == (
        "wss://example.test/socket.io/?EIO=4&transport=websocket"
    )
    assert engineio_url("ws://h/x/?a=1&EIO=3&transport=polling") == (
        "ws://h/x/?a=1&EIO=4&transport=websocket"
    )


def test_socket_io_only_settings_are_refused_with_the_plain_websocket() -> None:
    """The auth placement and a namespace need ``BRIDGE_STREAM_TRANSPORT=socketio``."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            MINIMAL
            | {
                "BRIDGE_STREAM_SESSION_IN": "auth",
                "BRIDGE_STREAM_SOCKETIO_NAMESPACE": "/tracking",
            }
        )
    assert caught.value.problems == [
        "BRIDGE_STREAM_SESSION_IN: auth needs BRIDGE_STREAM_TRANSPORT=socketio "
        "(a plain websocket has no connect payload), not websocket",
        "BRIDGE_STREAM_SOCKETIO_NAMESPACE: only used when BRIDGE_STREAM_TRANSPORT "
        "is socketio, not websocket",
    ]


# -- a relay that can go silent ------------------------------------------------


class Relay:
    """A TCP relay to a local port; ``freeze`` leaves both sides open but silent.

    ``to_client`` counts the bytes it handed to the client, which stops
    growing when the client stops reading (TCP pushes back through it).
    """

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._writers: list[asyncio.StreamWriter] = []
        self.to_client = 0
        self.port = 0

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    def freeze(self) -> None:
        self._flowing.clear()

    async def _accept(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self._target)
        self._writers += [client_w, server_w]
        self._tasks += [
            asyncio.create_task(self._pipe(client_r, server_w, to_client=False)),
            asyncio.create_task(self._pipe(server_r, client_w, to_client=True)),
        ]

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        to_client: bool,
    ) -> None:
        try:
            while data := await reader.read(65_536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
                if to_client:
                    self.to_client += len(data)
        except ConnectionError:
            pass
        finally:
            writer.close()
