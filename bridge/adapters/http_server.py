"""A small asyncio HTTP/1.1 server on h11 (sans-I/O) and ``asyncio.start_server``.

Enough HTTP for JSON APIs (the webhook receiver on a public port, the
stand-in servers of the dev kit, ops endpoints): keep-alive, pipelining, Content-Length
and chunked request bodies, ``Expect: 100-continue``, and an escape hatch
(``abort_connection``) that drops the TCP connection without any response so
fault injection can imitate "the server did it, the reply never came".

Limits, since the webhook port faces the internet:

* headers over 16 KiB get 431; bodies over ``max_body_bytes`` get 413 before
  they are read (declared) or as soon as they grow past it (chunked);
* ``request_timeout`` bounds each request from its first awaited byte to its
  last (so idle keep-alive connections and slowloris heads and bodies alike),
  and separately the sending of each response to a client that does not read;
* at most ``max_connections`` connections are served at once; a connection
  beyond that is answered 503 (``Connection: close``) at once, without
  reading it, and closed, so it frees its socket immediately;
* a client that hangs up mid-request is not an error: it is logged at debug
  and gets no reply (there is nobody to read one).

``on_early_reply`` hears every answer the server gives on its own (400, 408,
413, 431, 503), so an adapter can count what its handler never sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Self
from urllib.parse import parse_qs, unquote

import h11
import orjson

__all__ = ["Handler", "HttpRequest", "HttpResponse", "HttpServer"]

_log = logging.getLogger(__name__)

_READ_CHUNK = 65_536
_MAX_HEADER_BYTES = 16_384
# After an early error reply (413/400) we keep reading and discarding for a
# moment: closing with unread bytes makes the kernel send RST, and the client
# would then see "connection reset" instead of our reply.
_LINGER_SECONDS = 1.0
_LINGER_MAX_BYTES = 64 * 1_048_576
_SERVER_HEADER = "sendstack-bridge"
# While the connection cap keeps refusing, say so at most this often.
_CAP_WARNING_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One parsed request; header names are lower-cased (the last one wins)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    client_host: str

    def query_one(self, name: str) -> str | None:
        """The last value of a query parameter, or None when absent."""
        values = self.query.get(name)
        return values[-1] if values else None


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A reply; ``abort_connection`` drops the TCP connection and sends nothing."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    abort_connection: bool = False

    @classmethod
    def json(
        cls, status: int, obj: object, headers: tuple[tuple[str, str], ...] = ()
    ) -> HttpResponse:
        """A JSON reply encoded with orjson."""
        return cls(
            status,
            orjson.dumps(obj),
            (("content-type", "application/json"), *headers),
        )

    @classmethod
    def text(
        cls, status: int, text: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> HttpResponse:
        """A plain-text reply."""
        return cls(
            status,
            text.encode(),
            (("content-type", "text/plain; charset=utf-8"), *headers),
        )


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


def _out(data: bytes | None) -> bytes:
    # h11 returns None only for ConnectionClosed, which we never send.
    return data or b""


class _EarlyReply(Exception):
    """Stop reading the request and answer this, then close the connection."""

    def __init__(self, response: HttpResponse) -> None:
        super().__init__(response.status)
        self.response = response


_ERROR_TEXT = {
    400: "bad request\n",
    408: "request timeout\n",
    413: "request body too large\n",
    431: "request header fields too large\n",
    503: "server busy\n",
}


def _error(status: int) -> HttpResponse:
    return HttpResponse.text(status, _ERROR_TEXT.get(status, "bad request\n"))


def _head_size(request: h11.Request) -> int:
    # Close to the raw size (h11 has stripped the separators and whitespace).
    return len(request.target) + sum(len(n) + len(v) + 4 for n, v in request.headers)


class HttpServer:
    """Serve ``handler`` on ``host:port`` (port 0 picks a free port).

    Args:
        handler: Answers each request.
        host: Address to bind.
        port: Port to bind (0: any free port).
        max_body_bytes: Larger request bodies get 413.
        request_timeout: Seconds for a whole request to arrive (idle
            keep-alive included), and for a response to be taken by the client.
        max_connections: Connections served at once; more get 503 and close.
        on_early_reply: Called with each answer the server gives on its own
            (400 malformed, 408, 413, 431, 503 over the cap or while stopping)
            before it is sent; it must not block.
    """

    def __init__(
        self,
        handler: Handler,
        host: str,
        port: int,
        *,
        max_body_bytes: int = 1_048_576,
        request_timeout: float = 30.0,
        max_connections: int = 256,
        on_early_reply: Callable[[HttpResponse], None] | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._handler = handler
        self._host = host
        self._requested_port = port
        self._max_body_bytes = max_body_bytes
        self._request_timeout = request_timeout
        self._max_connections = max_connections
        self._on_early_reply = on_early_reply
        # Lingering longer than we would wait for a request buys nothing.
        self._linger = min(_LINGER_SECONDS, request_timeout)
        self._server: asyncio.Server | None = None
        # Connection task -> its writer and protocol state.
        self._tasks: dict[
            asyncio.Task[None], tuple[asyncio.StreamWriter, h11.Connection]
        ] = {}
        self._stopping = False
        self._refused = 0
        self._cap_warned_at = -math.inf

    @property
    def host(self) -> str:
        """The host the server was asked to bind."""
        return self._host

    @property
    def port(self) -> int:
        """The port actually bound (useful when 0 was requested)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("HttpServer is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def sockets_names(self) -> list[tuple[str, int]]:
        """Every bound (address, port), for callers that check the interface."""
        if self._server is None:
            return []
        return [
            (str(sock.getsockname()[0]), int(sock.getsockname()[1]))
            for sock in self._server.sockets
        ]

    @property
    def url(self) -> str:
        """``http://host:port`` with the bound port."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def open_connections(self) -> int:
        """Connections being served now (refused ones are not counted)."""
        return len(self._tasks)

    async def start(self) -> None:
        """Bind and start accepting connections."""
        if self._server is not None:
            raise RuntimeError("HttpServer already started")
        self._stopping = False
        self._server = await asyncio.start_server(
            self._on_connection, self._host, self._requested_port
        )

    async def stop(self, grace: float = 2.0) -> None:
        """Stop listening; idle connections close now, the others get ``grace`` s.

        A request already begun (being received or handled) is still answered,
        with ``Connection: close``, and its connection then ends.
        """
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping = True
        server.close()
        for writer, conn in list(self._tasks.values()):
            if conn.their_state is h11.IDLE and not conn.trailing_data[0]:
                writer.transport.close()  # the read loop sees EOF and ends
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        await server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- one connection -------------------------------------------------------

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - the stream always runs in a task
            raise RuntimeError("connection callback outside a task")
        if self._stopping or len(self._tasks) >= self._max_connections:
            await self._refuse(writer)
            return
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEADER_BYTES)
        self._tasks[task] = (writer, conn)
        peer = writer.get_extra_info("peername")
        client_host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        try:
            while await self._serve_one(conn, reader, writer, client_host):
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except (OSError, h11.LocalProtocolError) as exc:
            # The peer went away (reset, broken pipe): nothing left to tell it.
            _log.debug("http connection lost: %r", exc)
        except asyncio.CancelledError:
            # Only stop() cancels us. Ending normally keeps Python 3.11's
            # stream callback from logging the cancellation as an error.
            pass
        finally:
            self._tasks.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _refuse(self, writer: asyncio.StreamWriter) -> None:
        """Answer 503 before reading anything, and close at once.

        Not reading keeps a refusal cheap; a client that had already sent its
        request may see a reset instead of the 503, which refuses it as well.
        """
        if not self._stopping:
            self._refused += 1
            now = time.monotonic()
            if now - self._cap_warned_at >= _CAP_WARNING_SECONDS:
                self._cap_warned_at = now
                _log.warning(
                    "http connection cap reached, refusing new connections",
                    extra={
                        "max_connections": self._max_connections,
                        "refused_total": self._refused,
                    },
                )
        response = HttpResponse.text(503, _ERROR_TEXT[503], (("retry-after", "1"),))
        self._notify(response)
        try:
            async with asyncio.timeout(self._linger):
                # h11 lets a server answer before any request (as for a 400).
                await self._send(
                    h11.Connection(h11.SERVER), writer, response, close=True
                )
        except (TimeoutError, OSError, h11.LocalProtocolError):
            pass
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()

    def _notify(self, response: HttpResponse) -> None:
        if self._on_early_reply is None:
            return
        try:
            self._on_early_reply(response)
        except Exception:  # noqa: BLE001 - a metrics hook must not break serving
            _log.exception("http on_early_reply hook failed")

    async def _serve_one(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client_host: str,
    ) -> bool:
        """Answer one request; False means close the connection."""
        try:
            async with asyncio.timeout(self._request_timeout):
                request = await self._read_request(conn, reader, writer, client_host)
        except TimeoutError:
            # An idle keep-alive connection simply ends; a partly sent request
            # (head or body) gets a 408 so the client knows it was us.
            if conn.their_state is not h11.IDLE or conn.trailing_data[0]:
                await self._reply_and_linger(conn, reader, writer, _error(408))
            return False
        except h11.RemoteProtocolError as exc:
            if reader.at_eof():
                # The client hung up mid-request: not malformed, just gone.
                _log.debug("http client closed mid-request: %s", exc)
            elif conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                # h11's hint is 431 for a head over the limit, else 400.
                response = _error(exc.error_status_hint)
                await self._reply_and_linger(conn, reader, writer, response)
            return False
        except _EarlyReply as early:
            await self._reply_and_linger(conn, reader, writer, early.response)
            return False
        if request is None:
            return False

        try:
            response = await self._handler(request)
        except Exception:  # noqa: BLE001 - any handler bug becomes a 500
            # Log the cause here; the client only learns that it failed.
            _log.exception("http handler failed", extra={"method": request.method})
            response = HttpResponse.text(500, "internal server error\n")
        if response.abort_connection:
            writer.transport.abort()
            return False
        try:
            # A client that does not read its response must not hold the slot.
            async with asyncio.timeout(self._request_timeout):
                await self._send(
                    conn,
                    writer,
                    response,
                    head=request.method == "HEAD",
                    close=self._stopping,
                )
        except TimeoutError:
            _log.debug("http client did not take its response in time")
            writer.transport.abort()
            return False
        return not self._stopping  # no further keep-alive requests once stopping

    async def _read_request(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client_host: str,
    ) -> HttpRequest | None:
        event = await self._next_event(conn, reader)
        if isinstance(event, h11.ConnectionClosed):
            return None
        if not isinstance(event, h11.Request):  # pragma: no cover - h11 contract
            raise h11.RemoteProtocolError("expected a request")
        # h11 caps only a head that is still incomplete; one that arrived
        # whole in a single read is measured here.
        if _head_size(event) > _MAX_HEADER_BYTES:
            raise _EarlyReply(_error(431))
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in event.headers
        }
        length = headers.get("content-length")
        if (
            length is not None
            and length.isdigit()
            and int(length) > self._max_body_bytes
        ):
            raise _EarlyReply(_error(413))
        if conn.they_are_waiting_for_100_continue:
            writer.write(
                _out(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            )
            await writer.drain()
        body = bytearray()
        while True:
            part = await self._next_event(conn, reader)
            if isinstance(part, h11.Data):
                body += part.data
                if len(body) > self._max_body_bytes:  # chunked bodies
                    raise _EarlyReply(_error(413))
            elif isinstance(part, h11.EndOfMessage):
                break
            else:
                return None  # the client hung up mid-body
        target = event.target.decode("latin-1")
        raw_path, _, raw_query = target.partition("?")
        return HttpRequest(
            method=event.method.decode("ascii").upper(),
            path=unquote(raw_path),
            query=parse_qs(raw_query, keep_blank_values=True),
            headers=headers,
            body=bytes(body),
            client_host=client_host,
        )

    @staticmethod
    async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> object:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            conn.receive_data(await reader.read(_READ_CHUNK))

    @staticmethod
    async def _send(
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        response: HttpResponse,
        *,
        head: bool = False,
        close: bool = False,
    ) -> None:
        has_body = response.status >= 200 and response.status not in (204, 304)
        headers = [
            (name, value)
            for name, value in response.headers
            if name.lower() not in ("content-length", "connection", "server")
        ]
        headers.append(("server", _SERVER_HEADER))
        if has_body:
            headers.append(("content-length", str(len(response.body))))
        if close:
            headers.append(("connection", "close"))
        out = bytearray()
        try:
            reason = HTTPStatus(response.status).phrase.encode()
        except ValueError:
            reason = b""
        head_event = h11.Response(
            status_code=response.status, headers=headers, reason=reason
        )
        out += _out(conn.send(head_event))
        if has_body and not head and response.body:
            out += _out(conn.send(h11.Data(data=response.body)))
        out += _out(conn.send(h11.EndOfMessage()))
        writer.write(bytes(out))
        await writer.drain()

    async def _reply_and_linger(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        response: HttpResponse,
    ) -> None:
        """Send an early reply, then drain (not keep) what the client still sends."""
        self._notify(response)
        try:
            async with asyncio.timeout(self._linger):
                await self._send(conn, writer, response, close=True)
                if writer.can_write_eof():
                    writer.write_eof()
                discarded = 0
                while discarded < _LINGER_MAX_BYTES:
                    chunk = await reader.read(_READ_CHUNK)
                    if not chunk:
                        break
                    discarded += len(chunk)
        except TimeoutError:
            pass
        except (OSError, h11.LocalProtocolError) as exc:
            # Typically the client already left (ENOTCONN on write_eof).
            _log.debug("http early reply cut short: %r", exc)
