"""Opens Sendstack tracking streams spoken as Socket.IO (v5 over Engine.IO v4).

Selected with ``BRIDGE_STREAM_TRANSPORT=socketio``; the same ports as
``upstream_ws`` (``UpstreamConnector`` / ``UpstreamConnection``), so the
stream pump, the codec and the dead-letter path are unchanged.

Why the framing is written here on ``websockets`` and not taken from
python-socketio / python-engineio (5.18.1 / 4.15.1, read in site-packages):
the library was not rejected for speed; its client cannot keep the contract
of an ``UpstreamConnection`` at all:

1. **No backpressure.** ``engineio/async_client.py`` ``_receive_packet``
   (lines 442-443) hands every MESSAGE to ``_trigger_event('message', ...,
   run_async=True)``, which starts one new asyncio task per message
   (``start_background_task``, lines 499-504), and ``_read_loop_websocket``
   (lines 596-636) goes straight back to ``ws.receive()`` without waiting for
   it. A consumer that stops (Kafka slow, buffer full) therefore stops
   nothing: measured with a python-socketio server emitting 20,000 events of
   1 kB to an ``AsyncClient`` whose handler awaits a bounded
   ``asyncio.Queue(64)``: 19,936 handler tasks pending and +97 MiB after 3 s,
   still reading.
2. **No verbatim bytes, and unparseable packets are lost.**
   ``socketio/packet.py`` ``decode`` does ``self.data = self.json.loads(ep)``
   (line 114) and ``socketio/async_client.py`` ``_handle_event`` (lines
   418-421) hands handlers Python objects, so the server's bytes (``1.50``,
   spacing, escapes) cannot reach the dead-letter topic or a capture. A
   packet whose JSON does not parse raises inside that per-message task:
   measured, it ends as "Task exception was never retrieved" and the event is
   dropped, where the bridge must dead-letter it.
3. **No HTTP status on a refused upgrade.** ``_connect_websocket`` (lines
   359-370) turns aiohttp's ``WSServerHandshakeError`` into
   ``ConnectionError('Connection error')``, so a 401/403 (re-authenticate:
   ``SessionRejected``) cannot be told from a 404/5xx
   (``UpstreamUnavailable``).
4. Also in the way, each avoidable by options: a SIGINT handler that cancels
   every task and stops the loop (``handle_sigint=True`` by default,
   ``base_client.py`` 46-49 and ``async_client.py`` 112-119), its own
   reconnect loop (the pump owns reconnects), and the full URL, session
   included, in an INFO log line (``async_client.py`` 323-324) on a logger
   that gets its own stderr handler (``base_client.py`` 82-88).
5. **Speed, measured too** (client only, loopback, a separate aiohttp server
   process sending 200,000 Traccar-shaped ``42["positions",{...}]`` frames):
   python-socketio's ``AsyncClient`` delivered 31,500 events/s to its
   handler, this module 140,000 frames/s through ``recv()``, and
   ``upstream_ws`` 180,000-215,000 plain frames/s from the same server.
   (``bench/stream_throughput.py`` drives the emulator's plain websocket, so
   it does not cover this transport; its last run published 47,900
   records/s.)

The framing needed is small (text packets only, websocket transport only,
one namespace), and on ``websockets`` it keeps what ``upstream_ws`` already
has: the read-ahead is bounded (``SocketOptions.max_queue`` events here plus
``max_queue`` frames in websockets, which then stops reading the socket, so
TCP pushes back on the server) and the errors are ours.

The protocol, as spoken here:

* Engine.IO v4, websocket transport only: ``<url>?EIO=4&transport=websocket``
  (any ``EIO``/``transport`` already in the URL replaced; an empty path
  becomes ``/socket.io/`` like the reference client). The first packet must
  be OPEN ``0{"sid", "pingInterval", "pingTimeout", "maxPayload"}``.
* Socket.IO CONNECT to the configured namespace: ``40`` or ``40/ns,``,
  followed by ``{"<auth_key>": "<session>"}`` when the session goes in the
  auth payload (else it is in the URL query, ``?<query_key>=<session>``).
  The reply is CONNECT ``40...`` or CONNECT_ERROR ``44...``.
* CONNECT_ERROR is ``SessionRejected``: the session (query or auth payload)
  is all we send, so a refusal after a successful handshake is a refusal of
  the session. One exception: the reference server's ``Invalid namespace``
  means the namespace setting is wrong, and a new session cannot fix that,
  so it is ``UpstreamUnavailable``. (python-socketio's ambiguous "Unable to
  connect" stays a session refusal.) The server's message is quoted with the
  session masked.
* Heartbeat: the server pings (``2``), we answer pong (``3``, same data). No
  ping for ``pingInterval + pingTimeout`` (as the OPEN packet says) closes
  the connection as lost (one timer per connection, not a timeout per
  frame). Time spent waiting for room in the bounded queue (the pump not
  reading) is not counted: the ping may be sitting unread behind the events.
  (A stall longer than the server's pingTimeout still makes the server drop
  us, as its keepalive does on the plain transport; the pump reconnects.)
  websockets' own keepalive pings stay on as well.
* ``recv()`` returns, for each EVENT packet (``42[...]``, ``42/ns,[...]``,
  ``42<ackid>[...]``), the packet's JSON array exactly as received (prefix,
  namespace and ack id stripped; its brackets are checked, the JSON is not
  parsed: the codec parses it once). An EVENT with an ack id is acknowledged
  with an empty ACK (``43<ackid>[]``) once it is in the bounded read-ahead.
  Anything else that is not control (BINARY_EVENT ``45...`` and its binary
  attachment frames, ACKs, unknown or malformed packets) comes back as the
  whole packet's bytes, so it is dead-lettered verbatim, never dropped.
  Control packets (ping, pong, noop, connect ack) are not returned.

How it ends (``UpstreamClosed(code, reason)``, classified by
``bridge.core.close_codes``):

* Socket.IO DISCONNECT from the server (``41``): 1000 "socket.io disconnect
  by server", a normal close: the pump reconnects (a session refusal then
  shows at the next CONNECT).
* Engine.IO CLOSE from the server (``1``): 1000 "engine.io close by server".
* No ping in time: 1011 "keepalive timeout: no engine.io ping" (counted as
  ``keepalive_timeout``, like websockets' own "keepalive ping timeout").
* The websocket closed: its close code and reason (received, else sent,
  else 1006 "connection lost"), as ``upstream_ws`` reports them.
* ``close(code, reason)`` by the bridge: that code and reason (after a
  Socket.IO DISCONNECT ``41`` to the server).

The session never leaves this module in text: errors carry status codes,
class names and masked server messages only, foreign exceptions are not
chained, and websockets logs through ``bridge.websocket`` without its DEBUG
frame dumps, which would show the CONNECT auth payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import (
    ConnectionClosed,
)

from bridge.adapters.upstream_ws import SocketOptions, open_socket, session_url
from bridge.core.close_codes import REAUTH_CLOSE_CODES
from bridge.errors import SessionRejected, UpstreamClosed, UpstreamUnavailable
from bridge.secrets import Secret, redact_text, scrub

__all__ = [
    "ENGINE_CLOSE",
    "HEARTBEAT_TIMEOUT",
    "SERVER_DISCONNECT",
    "SessionPlacement",
    "SocketIoConnection",
    "SocketIoConnector",
    "engineio_url",
]

SessionPlacement = Literal["query", "auth"]

#: (code, reason) when the server disconnects our namespace (``41``).
SERVER_DISCONNECT: Final = (1000, "socket.io disconnect by server")
#: (code, reason) when the server sends an Engine.IO CLOSE packet (``1``).
ENGINE_CLOSE: Final = (1000, "engine.io close by server")
#: (code, reason) when no ping came within pingInterval + pingTimeout.
HEARTBEAT_TIMEOUT: Final = (1011, "keepalive timeout: no engine.io ping")

_REASON_MAX = 120
_DIGITS = frozenset("0123456789")
# The reference server's CONNECT_ERROR for an unknown namespace.
_INVALID_NAMESPACE = "Invalid namespace"

_ids = itertools.count(1)


class _NoFrameDebug(logging.LoggerAdapter[logging.Logger]):
    """``bridge.websocket`` minus DEBUG: websockets dumps every frame there,
    the CONNECT auth payload (the session) included."""

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)


_ws_logger = _NoFrameDebug(logging.getLogger("bridge.websocket"), {})


def engineio_url(base: str) -> str:
    """``base`` with ``EIO=4&transport=websocket`` (other query keys kept)."""
    parts = urlsplit(base)
    kept = [
        (key, value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
        if key not in ("EIO", "transport")
    ]
    query = urlencode([*kept, ("EIO", "4"), ("transport", "websocket")])
    path = parts.path if parts.path not in ("", "/") else "/socket.io/"
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


# -- packets -------------------------------------------------------------------

_Kind = Literal[
    "open",
    "close",
    "ping",
    "control",
    "connect",
    "connect_error",
    "disconnect",
    "event",
    "raw",
]


@dataclass(frozen=True, slots=True)
class _Packet:
    """One Engine.IO text packet, classified; ``body`` is what follows the prefix."""

    kind: _Kind
    namespace: str = "/"
    ack_id: str = ""
    body: str = ""


_RAW = _Packet("raw")
_CONTROL = _Packet("control")
_ENGINE_KINDS: Final[dict[str, _Kind]] = {
    "0": "open",
    "1": "close",
    "2": "ping",
    "3": "control",  # pong: we never ping, ignore
    "5": "control",  # upgrade: not with the websocket transport
    "6": "control",  # noop
}
_SOCKETIO_KINDS: Final[dict[str, _Kind]] = {
    "0": "connect",
    "1": "disconnect",
    "4": "connect_error",
}


def _classify(text: str) -> _Packet:
    """Classify an Engine.IO text packet without parsing its JSON."""
    if not text:
        return _RAW
    engine = _ENGINE_KINDS.get(text[0])
    if engine is not None:
        return _Packet(engine, body=text[1:])
    if text[0] != "4" or len(text) < 2:
        return _RAW
    sio = text[1]
    if sio not in "0124":  # ACK, BINARY_EVENT, BINARY_ACK, unknown: verbatim
        return _RAW
    end = len(text)
    i = 2
    namespace = "/"
    if i < end and text[i] == "/":
        comma = text.find(",", i)
        stop = end if comma < 0 else comma
        namespace = text[i:stop].partition("?")[0]
        i = end if comma < 0 else comma + 1
    start = i
    while i < end and text[i] in _DIGITS:
        i += 1
    ack_id, body = text[start:i], text[i:]
    if sio == "2":
        if not (body.startswith("[") and body.endswith("]")):
            return _RAW
        return _Packet("event", namespace, ack_id, body)
    return _Packet(_SOCKETIO_KINDS[sio], namespace, body=body)


# A packet the handshake read before the CONNECT ack: its bytes for recv(),
# and the ACK it asked for, if any (sent once it is queued).
_Early = tuple[bytes, str | None]


def _namespace_part(namespace: str) -> str:
    """How a packet names ``namespace``: nothing for ``/``, else ``/ns,``."""
    return "" if namespace == "/" else namespace + ","


def _refusal_message(body: str, token: Secret) -> str:
    """The server's CONNECT_ERROR message, the session masked, cut short."""
    message = body
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        message = data["message"]
    elif isinstance(data, str):
        message = data
    return scrub(redact_text(message, [token]))[:_REASON_MAX]


def _refusal_status(body: str) -> int | None:
    """An HTTP-like status in a CONNECT_ERROR's ``data`` (``{"status": 409}``)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    extra = data.get("data") if isinstance(data, dict) else None
    status = extra.get("status") if isinstance(extra, dict) else None
    return status if type(status) is int and 100 <= status <= 599 else None


def _ws_closed(exc: ConnectionClosed) -> UpstreamClosed:
    """The websocket's close code and reason (received, else sent, else 1006)."""
    frame = exc.rcvd if exc.rcvd is not None else exc.sent
    if frame is None:
        return UpstreamClosed(1006, "connection lost")
    return UpstreamClosed(frame.code, frame.reason[:_REASON_MAX])


# -- the connection ------------------------------------------------------------


class _Abandoned(Exception):
    """The bridge closed the connection and its queue is full: stop reading."""


class SocketIoConnection:
    """``UpstreamConnection`` over one Engine.IO websocket and one namespace.

    A reader task (started here) answers pings and queues what ``recv``
    returns; the queue holds at most ``max_queue`` items, and while it is
    full the reader stops reading the websocket (whose own buffer then stops
    reading the socket). ``early`` are packets the handshake already read.
    """

    def __init__(
        self,
        ws: ClientConnection,
        *,
        namespace: str,
        liveness: float,
        max_queue: int,
        close_timeout: float,
        early: Sequence[_Early] = (),
    ) -> None:
        self._ws = ws
        self._id = next(_ids)
        self._namespace = namespace
        self._ns = _namespace_part(namespace)
        self._liveness = liveness
        self._close_timeout = close_timeout
        # Unbounded itself, bounded by the slots, so that the end marker
        # (None) always fits behind whatever is queued.
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._slots = asyncio.Semaphore(max_queue)
        self._waiting_for_room = False
        self._abandoned = False  # close() or abort() was called
        self._closed: UpstreamClosed | None = None
        self._deadline = 0.0  # no ping after this: the connection is lost
        self._heartbeat_lost = False
        self._timer: asyncio.TimerHandle | None = None
        self._reader = asyncio.create_task(
            self._read(list(early)), name=f"socketio-reader-{self._id}"
        )

    @property
    def connection_id(self) -> int:
        return self._id

    async def recv(self) -> bytes:
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # every later call ends the same way
            closed = self._closed or UpstreamClosed(1006, "connection lost")
            raise UpstreamClosed(closed.code, closed.reason)
        self._slots.release()
        return item

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self._abandoned = True
        if self._closed is None:
            self._closed = UpstreamClosed(code, reason[:_REASON_MAX])
            # The Socket.IO goodbye; a peer that takes no data gets no wait.
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                async with asyncio.timeout(self._close_timeout):
                    await self._ws.send("41" + self._ns)
        await self._ws.close(code, reason)
        self._stop_reader_if_stuck()

    def abort(self) -> None:
        """Drop the TCP connection at once (used when shutdown time is up)."""
        self._abandoned = True
        self._ws.transport.abort()
        self._stop_reader_if_stuck()

    async def wait_closed(self) -> UpstreamClosed:
        """The Socket.IO connection ends when its reader does (a disconnect
        packet, a lost heartbeat, or the websocket closing)."""
        await asyncio.wait({self._reader})
        if self._closed is not None:
            return self._closed
        code = self._ws.close_code
        return UpstreamClosed(1006 if code is None else code, "connection lost")

    def _stop_reader_if_stuck(self) -> None:
        # Waiting for room in a queue nobody will read again would last
        # forever (`_enqueue` checks too); otherwise the closed websocket
        # ends the reader once websockets' buffer is drained.
        if self._waiting_for_room:
            self._reader.cancel()

    # The heartbeat is one timer, not a timeout around each recv (which cost
    # a timer per frame): the reader moves `_deadline`, and the timer, when it
    # fires, re-arms for the new deadline or cancels the reader.

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(self._deadline, self._heartbeat_due)

    def _heartbeat_due(self) -> None:
        if self._reader.done():
            return
        loop = asyncio.get_running_loop()
        if self._waiting_for_room:
            # Not reading is the bridge's doing: the ping may be queued
            # unread. `_enqueue` moves the deadline by the time it waited;
            # look again later.
            self._timer = loop.call_later(self._liveness, self._heartbeat_due)
            return
        if loop.time() < self._deadline:
            self._arm()
            return
        self._heartbeat_lost = True
        self._reader.cancel()

    async def _read(self, early: list[_Early]) -> None:
        self._deadline = asyncio.get_running_loop().time() + self._liveness
        self._arm()
        ending: UpstreamClosed | None = None
        goodbye = False  # whether we close the websocket ourselves
        try:
            for data, ack in early:
                await self._enqueue(data)
                if ack is not None:
                    await self._ws.send(ack)
            ending = await self._read_packets()
            goodbye = True
        except _Abandoned:
            pass
        except asyncio.CancelledError:
            if not self._heartbeat_lost:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            ending, goodbye = UpstreamClosed(*HEARTBEAT_TIMEOUT), True
        except ConnectionClosed as exc:
            ending = _ws_closed(exc)
        except Exception as exc:  # noqa: BLE001 - any failure ends the stream, named
            name = type(exc).__name__
            ending, goodbye = UpstreamClosed(1011, f"socket.io reader: {name}"), True
        finally:
            if self._timer is not None:
                self._timer.cancel()
            if self._closed is None:
                self._closed = ending or UpstreamClosed(1006, "connection lost")
            self._queue.put_nowait(None)
        if goodbye:
            code = self._closed.code if self._closed.code is not None else 1000
            await self._ws.close(code, self._closed.reason)

    async def _read_packets(self) -> UpstreamClosed:
        """Queue packets until the server ends the session; how it ended."""
        ws, loop, ns = self._ws, asyncio.get_running_loop(), self._ns
        # The common case first: an EVENT of our namespace, without ack id.
        plain = "42" + ns
        start = len(plain)
        while True:
            message = await ws.recv()
            if isinstance(message, bytes):  # a binary attachment
                await self._enqueue(message)
                continue
            if (
                message.startswith(plain)
                and message.startswith("[", start)
                and message.endswith("]")
            ):
                await self._enqueue(message[start:].encode())
                continue
            packet = _classify(message)
            kind = packet.kind
            if kind == "event":
                await self._enqueue(packet.body.encode())
                if packet.ack_id:
                    await ws.send(f"43{ns}{packet.ack_id}[]")
            elif kind == "ping":
                self._deadline = loop.time() + self._liveness
                await ws.send("3" + packet.body)
            elif kind == "disconnect" and packet.namespace == self._namespace:
                return UpstreamClosed(*SERVER_DISCONNECT)
            elif kind == "close":
                return UpstreamClosed(*ENGINE_CLOSE)
            elif kind not in ("control", "open", "connect"):
                # raw, or a connect_error/disconnect we cannot place
                await self._enqueue(message.encode())

    async def _enqueue(self, data: bytes) -> None:
        """Queue ``data`` once there is room (the bounded read-ahead)."""
        if self._slots.locked():
            if self._abandoned:
                raise _Abandoned
            loop = asyncio.get_running_loop()
            waited_from = loop.time()
            self._waiting_for_room = True
            try:
                await self._slots.acquire()
            finally:
                self._waiting_for_room = False
            # The next ping may be queued behind what we could not take.
            self._deadline += loop.time() - waited_from
        else:
            await self._slots.acquire()  # returns at once
        self._queue.put_nowait(data)


# -- the connector -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Opened:
    """What the handshake learnt: the liveness window and early packets."""

    liveness: float
    early: list[_Early]


class SocketIoConnector:
    """``UpstreamConnector`` that opens one Socket.IO connection per call.

    Args:
        url: the Engine.IO endpoint (``ws(s)://host/socket.io/``), without
            the session.
        namespace: the Socket.IO namespace to connect (``/`` by default).
        session_in: ``query`` (``?<query_key>=<session>``) or ``auth`` (the
            CONNECT payload ``{<auth_key>: <session>}``).
        options: websockets options; ``open_timeout`` bounds the websocket
            upgrade and the Engine.IO/Socket.IO handshake together, and
            ``max_queue`` also bounds the events read ahead.
    """

    def __init__(
        self,
        *,
        url: str,
        namespace: str = "/",
        session_in: SessionPlacement = "query",
        query_key: str = "session",
        auth_key: str = "token",
        options: SocketOptions,
    ) -> None:
        self._url = engineio_url(url)
        self._namespace = namespace
        self._session_in = session_in
        self._query_key = query_key
        self._auth_key = auth_key
        self._options = options

    async def open(self, token: Secret) -> SocketIoConnection:
        opts = self._options
        loop = asyncio.get_running_loop()
        deadline = loop.time() + opts.open_timeout
        url = (
            session_url(self._url, self._query_key, token)
            if self._session_in == "query"
            else self._url
        )
        ws = await open_socket(url, opts, what="socket.io", logger=_ws_logger)
        try:
            async with asyncio.timeout_at(deadline):
                opened = await self._handshake(ws, token)
        except BaseException as exc:
            if isinstance(exc, Exception):  # not on cancellation: no waiting then
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(opts.close_timeout):
                        await ws.close()
            ws.transport.abort()
            if isinstance(exc, TimeoutError):
                raise UpstreamUnavailable("socket.io handshake timed out") from None
            if isinstance(exc, ConnectionClosed):
                closed = _ws_closed(exc)
                if closed.code in REAUTH_CLOSE_CODES:
                    raise SessionRejected(
                        f"socket.io closed during the handshake ({closed.code})"
                    ) from None
                raise UpstreamUnavailable(
                    f"socket.io closed during the handshake ({closed.code})"
                ) from None
            raise
        return SocketIoConnection(
            ws,
            namespace=self._namespace,
            liveness=opened.liveness,
            max_queue=opts.max_queue,
            close_timeout=opts.close_timeout,
            early=opened.early,
        )

    async def _handshake(self, ws: ClientConnection, token: Secret) -> _Opened:
        """OPEN, then CONNECT to the namespace; pings answered meanwhile."""
        first = await ws.recv()
        liveness = _liveness_of(first)
        ns = _namespace_part(self._namespace)
        payload = (
            orjson.dumps({self._auth_key: token.reveal()}).decode()
            if self._session_in == "auth"
            else ""
        )
        await ws.send(f"40{ns}{payload}")
        early: list[_Early] = []
        while True:
            message = await ws.recv()
            if isinstance(message, bytes):
                early.append((message, None))
                continue
            packet = _classify(message)
            kind = packet.kind
            if kind == "ping":
                await ws.send("3" + packet.body)
            elif kind == "connect" and packet.namespace == self._namespace:
                return _Opened(liveness, early)
            elif kind == "connect_error":
                shown = _refusal_message(packet.body, token)
                status = _refusal_status(packet.body)
                if status is not None and status not in (401, 403):
                    raise UpstreamUnavailable(
                        f"socket.io connect_error: {shown!r} (HTTP {status})",
                        status=status,
                    )
                if shown == _INVALID_NAMESPACE:
                    raise UpstreamUnavailable(
                        f"socket.io namespace {self._namespace!r} does not exist "
                        f"({shown!r}; check BRIDGE_STREAM_SOCKETIO_NAMESPACE)"
                    )
                raise SessionRejected(
                    f"socket.io connect_error refused the session: {shown!r}",
                    status=status,
                )
            elif kind in ("close", "disconnect"):
                raise UpstreamUnavailable(
                    f"socket.io {kind} during the handshake, before CONNECT"
                )
            elif kind == "event":
                ack = f"43{ns}{packet.ack_id}[]" if packet.ack_id else None
                early.append((packet.body.encode(), ack))
            elif kind == "raw":
                early.append((message.encode(), None))


def _liveness_of(first: str | bytes) -> float:
    """pingInterval + pingTimeout, in seconds, from an Engine.IO v4 OPEN packet."""
    if isinstance(first, str) and first.startswith("0"):
        try:
            data = orjson.loads(first[1:])
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            interval, timeout = data.get("pingInterval"), data.get("pingTimeout")
            if (
                isinstance(interval, int | float)
                and isinstance(timeout, int | float)
                and not isinstance(interval, bool)
                and not isinstance(timeout, bool)
                and interval >= 0
                and timeout >= 0
            ):
                return (interval + timeout) / 1000
    raise UpstreamUnavailable(
        "socket.io server did not start with an Engine.IO v4 OPEN packet "
        "(is BRIDGE_STREAM_URL the Engine.IO endpoint, e.g. /socket.io/?)"
    )
