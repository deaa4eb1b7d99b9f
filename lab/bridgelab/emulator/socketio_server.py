"""The tracking stream over Socket.IO (Engine.IO v4), served by python-socketio.

``transport="socketio"`` replaces the plain websocket on ``ws_port`` by
python-socketio's own ``AsyncServer`` (on aiohttp) at ``socketio_path``
(default ``/socket.io/``), so a client is tested against the reference
implementation, not against our framing. Both Engine.IO transports are
served (long-polling, then the upgrade to websocket, or websocket at once).

* Session: checked when the client CONNECTs to the default namespace ``/``,
  from the query string (``?session=<JWT>``, the key is
  ``session_query_key``) or, with ``socketio_session_in="auth"``, from the
  CONNECT packet's auth payload ``{"token": "<JWT>"}`` (and only there). A
  missing, invalid or expired session is refused with a CONNECT_ERROR packet
  ``{"message": "...", "data": {"status": 401}}``; ``refuse-409`` refuses a
  second client the same way with ``"status": 409``.
* Events: each frame is one ``emit(event, argument)`` to that client (see
  ``shapes.py`` for the event names); clients never need to send anything.
* Ending a client (session expired or revoked: 4001, replaced: 4409, slow:
  1013, emulator stopping: 1001): a Socket.IO DISCONNECT packet for ``/``
  then an Engine.IO CLOSE packet. Socket.IO has no close codes: the code is
  only recorded in the emulator's connection info.
* Faults: drop ends the websocket's TCP connection after what is buffered
  (no Engine.IO CLOSE); half-open stops every write (Engine.IO pings too)
  and every read, so the client's ping timeout fires. A client still on
  long-polling gets an Engine.IO CLOSE for both (there is no socket to cut).

The seq ledger stays exact: a frame's seqs count once Engine.IO's writer
handed the packet to the websocket (``send`` returned), or once the
long-polling response carrying it was written, never when ``emit``
returned (that only queues it). The emulator sends one frame per client at a
time and waits for that, so a slow client still fills the hub's queue and is
closed with 1013 as on the plain websocket. This hooks two entries of
Engine.IO's aiohttp driver table (``websocket`` and ``make_response``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs

import socketio  # type: ignore[import-untyped]
from aiohttp import web
from engineio.async_drivers import (  # type: ignore[import-untyped]
    aiohttp as eio_aiohttp,
)

from bridgelab.emulator.broadcast import Frame, Hub, StreamConnection
from bridgelab.emulator.config import EmulatorConfig
from bridgelab.emulator.sessions import Session, SessionStore
from bridgelab.emulator.tracking_ws import RedactingLogger

_log = logging.getLogger(__name__)
_sio_log = logging.getLogger(__name__ + ".socketio")
_eio_log = logging.getLogger(__name__ + ".engineio")

NAMESPACE: Final = "/"
_EVENT_PREFIX: Final = "42"  # Engine.IO MESSAGE + Socket.IO EVENT on "/"
_RECORD_SEPARATOR: Final = b"\x1e"  # between packets of a polling payload


@dataclass(eq=False, slots=True)
class _Pending:
    """One frame handed to Engine.IO, waiting to reach the transport."""

    frame: Frame
    written: Callable[[Frame], None]
    waiter: asyncio.Future[bool]
    settled: bool = False

    def settle(self, ok: bool) -> None:
        """Written (ok) or lost: ledger it, and wake the sender."""
        if self.settled:
            return
        self.settled = True
        if ok:
            self.written(self.frame)
        if not self.waiter.done():
            self.waiter.set_result(ok)


class _Link:
    """One Engine.IO session: our packets on their way, and its websocket."""

    def __init__(self, eio_sid: str) -> None:
        self.eio_sid = eio_sid
        self.pending: deque[_Pending] = deque()  # in Engine.IO's queue, in order
        self.inflight: set[_Pending] = set()  # in a polling response being written
        self.transport: asyncio.Transport | None = None  # the websocket's TCP
        self.had_websocket = False
        self.websocket_done = asyncio.Event()
        self.gate = asyncio.Event()  # cleared while half-open
        self.gate.set()
        self.aborted = False
        self.conn: StreamConnection | None = None
        self.finished = False
        self.progress = asyncio.Event()  # set whenever a packet is settled

    def settle(self, entry: _Pending, ok: bool) -> None:
        """``entry`` reached the transport (ok) or was lost."""
        self.inflight.discard(entry)
        entry.settle(ok)
        self.progress.set()

    def take(self, count: int) -> list[_Pending]:
        """The next ``count`` packets, now travelling in a polling response."""
        taken = [self.pending.popleft() for _ in range(min(count, len(self.pending)))]
        self.inflight.update(taken)
        return taken

    def abandon_all(self) -> None:
        """The session is over: whatever did not reach the transport is lost."""
        for entry in [*self.pending, *self.inflight]:
            entry.settle(False)
        self.pending.clear()
        self.inflight.clear()
        self.progress.set()


class _LedgeredResponse(web.Response):
    """A long-polling response that ledgers its packets once it was written."""

    entries: list[_Pending]
    link: _Link | None

    async def write_eof(self, data: bytes = b"") -> None:
        entries = getattr(self, "entries", [])
        link = getattr(self, "link", None)
        ok = False
        try:
            await super().write_eof(data)
            ok = True
        finally:
            for entry in entries:
                if link is not None:
                    link.settle(entry, ok)
                else:  # pragma: no cover - entries always come with their link
                    entry.settle(ok)


class SioChannel:
    """One connected Socket.IO client as a hub ``Channel``."""

    def __init__(
        self, server: SocketIoServer, sid: str, link: _Link, remote: str
    ) -> None:
        self._server = server
        self._sio = server.sio
        self.sid = sid
        self._link = link
        self._remote = remote
        self._stopped = False
        self._waiter: asyncio.Future[bool] | None = None
        self.disconnect_reason: str | None = None

    @property
    def remote(self) -> str:
        """``host:port`` of the peer."""
        return self._remote

    async def send(self, frame: Frame, written: Callable[[Frame], None]) -> bool:
        """Emit (or send the raw packet), then wait until it was written."""
        manager = self._sio.manager
        # The connect handler registers us just before python-socketio sends
        # the CONNECT reply and joins the namespace; emit only after that.
        for _ in range(200):
            if self._stopped or self._link.finished:
                return False
            if manager.is_connected(self.sid, NAMESPACE):
                break
            await asyncio.sleep(0.01)
        else:
            return False
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._link.pending.append(_Pending(frame, written, waiter))
        if frame.event is not None:
            await self._sio.emit(frame.event, frame.data, to=self.sid)
        else:  # a raw Socket.IO packet (the malformed fault)
            await self._sio.eio.send(self._link.eio_sid, frame.payload.decode())
        if waiter.done():  # settled already, or interrupted while emitting
            return waiter.result()
        try:
            return await waiter
        finally:
            self._waiter = None

    def interrupt(self) -> None:
        """Stop waiting; a frame already queued is still ledgered if written."""
        self._stopped = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(False)

    async def close(self, code: int, reason: str, within: float) -> None:
        """DISCONNECT for ``/``, then Engine.IO CLOSE; abort if that hangs."""
        try:
            async with asyncio.timeout(within):
                await self._sio.disconnect(self.sid, namespace=NAMESPACE)
                await self._sio.eio.disconnect(self._link.eio_sid)
                if self._link.had_websocket:
                    await self._link.websocket_done.wait()
        except TimeoutError:
            self.abort()

    def cut(self) -> None:
        """End the websocket's TCP after its buffer (no Engine.IO CLOSE)."""
        if self._link.transport is not None:
            self._link.transport.close()
        else:
            self._server.end_polling(self._link.eio_sid)

    def abort(self) -> None:
        """End TCP now; writes waiting behind a half-open gate fail."""
        self._link.aborted = True
        self._link.gate.set()
        if self._link.transport is not None:
            self._link.transport.abort()
        else:
            self._server.end_polling(self._link.eio_sid)

    def stall(self) -> None:
        """Write nothing (not even Engine.IO pings) and read nothing."""
        self._link.gate.clear()
        if self._link.transport is not None:
            self._link.transport.pause_reading()

    def close_info(self) -> tuple[int | None, str | None]:
        """Socket.IO has no close codes: only the disconnect reason."""
        return None, self.disconnect_reason


def _tracked_websocket(server: SocketIoServer) -> type:
    """Engine.IO's aiohttp websocket, reporting which packets were written."""

    class TrackedWebSocket(eio_aiohttp.WebSocket):  # type: ignore[misc]
        _link: _Link | None = None

        async def __call__(self, environ: dict[str, Any]) -> Any:
            socket = self.handler.__self__  # Engine.IO's AsyncSocket
            link = self._link = server.link(socket.sid)
            link.had_websocket = True
            link.transport = environ["aiohttp.request"].transport
            try:
                return await super().__call__(environ)
            finally:
                if socket.upgraded or socket.closed:
                    # Engine.IO's writer is done: nothing more reaches the client.
                    link.abandon_all()
                    link.websocket_done.set()
                    server.forget_if_done(link)
                else:  # a failed upgrade: the session goes on over long-polling
                    link.had_websocket = False
                    link.transport = None

        async def send(self, message: str | bytes) -> None:
            link = self._link
            entry = None
            if link is not None:
                if not link.gate.is_set():
                    await link.gate.wait()
                if link.aborted:
                    raise ConnectionResetError("aborted by the emulator")
                if (
                    isinstance(message, str)
                    and message.startswith(_EVENT_PREFIX)
                    and link.pending
                ):
                    entry = link.pending.popleft()
            try:
                await super().send(message)
            except BaseException:
                if link is not None and entry is not None:
                    link.settle(entry, False)
                raise
            if link is not None and entry is not None:
                link.settle(entry, True)

    return TrackedWebSocket


class SocketIoServer:
    """python-socketio's ``AsyncServer`` on aiohttp, feeding from the hub."""

    def __init__(
        self, config: EmulatorConfig, sessions: SessionStore, hub: Hub
    ) -> None:
        self._cfg = config
        self._sessions = sessions
        self._hub = hub
        self.refused: Counter[str] = Counter()
        self._links: dict[str, _Link] = {}
        self._by_sid: dict[str, StreamConnection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        key = config.session_query_key
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp",
            logger=RedactingLogger(_sio_log, key),
            engineio_logger=RedactingLogger(_eio_log, key),
            cors_allowed_origins="*",  # a server-to-server API: any origin
            http_compression=False,  # the ledger reads polling payloads
            ping_interval=config.socketio_ping_interval,
            ping_timeout=config.socketio_ping_timeout,
        )
        driver = dict(self.sio.eio._async)
        if "websocket" not in driver or "make_response" not in driver:
            raise RuntimeError("unexpected python-engineio aiohttp driver")
        driver["websocket"] = _tracked_websocket(self)
        driver["make_response"] = self._make_response
        self.sio.eio._async = driver
        self.sio.on("connect", self._on_connect, namespace=NAMESPACE)
        self.sio.on("disconnect", self._on_disconnect, namespace=NAMESPACE)

    # -- lifecycle ------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port."""
        if self._runner is None:
            raise RuntimeError("socket.io server is not started")
        return int(self._runner.addresses[0][1])

    async def start(self) -> None:
        """Bind and start accepting clients."""
        app = web.Application()
        self.sio.attach(app, socketio_path=self._cfg.socketio_path.strip("/"))
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=self._cfg.ws_close_timeout
        )
        await runner.setup()
        site = web.TCPSite(runner, self._cfg.host, self._cfg.ws_port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def stop(self) -> None:
        """Disconnect every client, then stop listening."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await self._hub.shutdown()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2 * self._cfg.ws_close_timeout + 0.5):
                for conn in self._hub.all():
                    await conn.done.wait()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.sio.shutdown()
        await runner.cleanup()

    def end_sessions(self, sessions: Iterable[Session], reason: str) -> int:
        """Disconnect (recorded as 4001) the clients of these sessions."""
        return self._hub.end_sessions(sessions, reason)

    # -- Engine.IO sessions -----------------------------------------------------

    def link(self, eio_sid: str) -> _Link:
        """The state of one Engine.IO session (created on first sight)."""
        link = self._links.get(eio_sid)
        if link is None:
            link = self._links[eio_sid] = _Link(eio_sid)
        return link

    def forget_if_done(self, link: _Link) -> None:
        """Drop a session's state once its transport and its client are over."""
        transport_over = link.websocket_done.is_set() or not link.had_websocket
        if transport_over and (link.conn is None or link.finished):
            self._links.pop(link.eio_sid, None)

    def end_polling(self, eio_sid: str) -> None:
        """Close a long-polling Engine.IO session (there is no socket to cut)."""
        self._spawn(self.sio.eio.disconnect(eio_sid))

    def _make_response(
        self, status: str, headers: list[tuple[str, str]], payload: Any, environ: Any
    ) -> web.Response:
        response = _LedgeredResponse(
            body=payload, status=int(status.split()[0]), headers=headers
        )
        response.entries, response.link = [], None
        if environ.get("REQUEST_METHOD") == "GET" and isinstance(payload, bytes):
            sids = parse_qs(environ.get("QUERY_STRING", "")).get("sid")
            link = self._links.get(sids[-1]) if sids else None
            if link is not None and link.pending:
                count = sum(
                    1
                    for packet in payload.split(_RECORD_SEPARATOR)
                    if packet.startswith(_EVENT_PREFIX.encode())
                )
                response.entries, response.link = link.take(count), link
        return response

    # -- Socket.IO events -------------------------------------------------------

    def _token(self, environ: dict[str, Any], auth: Any) -> str | None:
        if self._cfg.socketio_session_in == "auth":
            token = auth.get("token") if isinstance(auth, dict) else None
            return token if isinstance(token, str) and token else None
        query = parse_qs(environ.get("QUERY_STRING", ""))
        tokens = query.get(self._cfg.session_query_key)
        return tokens[-1] if tokens else None

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any) -> bool:
        refused = socketio.exceptions.ConnectionRefusedError
        token = self._token(environ, auth)
        if token is None:
            self.refused["missing_session"] += 1
            raise refused("Session is required", {"status": 401})
        session, reason = self._sessions.lookup(token)
        if session is None:
            self.refused["invalid_session"] += 1
            _log.info("refused socket.io connect: %s", reason)
            raise refused("Invalid or expired session", {"status": 401})
        if self._cfg.effective_session_policy == "refuse-409" and self._hub.occupied():
            self.refused["conflict"] += 1
            _log.info("refused socket.io connect: another client is connected")
            raise refused("Another connection is already open", {"status": 409})
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, NAMESPACE)
        link = self.link(eio_sid)
        request = environ.get("aiohttp.request")
        peer = request.transport.get_extra_info("peername") if request else None
        remote = f"{peer[0]}:{peer[1]}" if peer else ""
        channel = SioChannel(self, sid, link, remote)
        conn = self._hub.register(channel, session)
        link.conn = conn
        self._by_sid[sid] = conn
        return True

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        conn = self._by_sid.pop(sid, None)
        if conn is None:
            return
        if isinstance(conn.channel, SioChannel):
            conn.channel.disconnect_reason = str(reason) if reason else None
        # Not awaited here: this runs inside Engine.IO's own reader.
        self._hub.spawn(self._finish(conn))

    async def _finish(self, conn: StreamConnection) -> None:
        channel = conn.channel
        assert isinstance(channel, SioChannel)  # noqa: S101 - only ours here
        link = channel._link
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._cfg.ws_close_timeout):
                if link.had_websocket:
                    await link.websocket_done.wait()
                while link.pending or link.inflight:  # long-polling: last polls
                    link.progress.clear()
                    await link.progress.wait()
        link.abandon_all()
        await self._hub.finished(conn)
        link.finished = True
        self.forget_if_done(link)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
