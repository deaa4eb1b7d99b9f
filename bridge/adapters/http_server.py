"""A small asyncio HTTP/1.1 server on h11 (sans-I/O) and ``asyncio.start_server``.

Enough HTTP for JSON APIs on loopback (the emulator, admin and health
endpoints): keep-alive, Content-Length and chunked request bodies, a body
limit enforced before the body is read, and an escape hatch
(``abort_connection``) that drops the TCP connection without any response so
fault injection can imitate "the server did it, the reply never came".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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


class HttpServer:
    """Serve ``handler`` on ``host:port`` (port 0 picks a free port)."""

    def __init__(
        self,
        handler: Handler,
        host: str,
        port: int,
        *,
        max_body_bytes: int = 1_048_576,
        request_timeout: float = 30.0,
    ) -> None:
        self._handler = handler
        self._host = host
        self._requested_port = port
        self._max_body_bytes = max_body_bytes
        self._request_timeout = request_timeout
        self._server: asyncio.Server | None = None
        # Connection task -> its writer; `_busy` holds those inside a handler.
        self._tasks: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._busy: set[asyncio.Task[None]] = set()
        self._stopping = False

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

    async def start(self) -> None:
        """Bind and start accepting connections."""
        if self._server is not None:
            raise RuntimeError("HttpServer already started")
        self._stopping = False
        self._server = await asyncio.start_server(
            self._on_connection, self._host, self._requested_port
        )

    async def stop(self, grace: float = 2.0) -> None:
        """Stop listening; idle connections close now, busy ones get ``grace`` s."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping = True
        server.close()
        for task, writer in list(self._tasks.items()):
            if task not in self._busy:
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
        self._tasks[task] = writer
        peer = writer.get_extra_info("peername")
        client_host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEADER_BYTES)
        try:
            while await self._serve_one(conn, reader, writer, client_host):
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except (ConnectionError, h11.LocalProtocolError):
            pass  # the peer went away mid-reply; nothing left to tell it
        except asyncio.CancelledError:
            # Only stop() cancels us. Ending normally keeps Python 3.11's
            # stream callback from logging the cancellation as an error.
            pass
        finally:
            self._tasks.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

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
            # An idle keep-alive connection simply ends; a half-sent request
            # gets a 408 so the client knows it was us.
            if conn.their_state is not h11.IDLE:
                await self._reply_and_linger(
                    conn, reader, writer, HttpResponse.text(408, "request timeout\n")
                )
            return False
        except h11.RemoteProtocolError:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await self._reply_and_linger(
                    conn, reader, writer, HttpResponse.text(400, "bad request\n")
                )
            return False
        except _EarlyReply as early:
            await self._reply_and_linger(conn, reader, writer, early.response)
            return False
        if request is None:
            return False

        task = asyncio.current_task()
        if task is not None:
            self._busy.add(task)
        try:
            response = await self._handler(request)
        except Exception:  # noqa: BLE001 - any handler bug becomes a 500
            # Log the cause here; the client only learns that it failed.
            _log.exception("http handler failed", extra={"method": request.method})
            response = HttpResponse.text(500, "internal server error\n")
        finally:
            if task is not None:
                self._busy.discard(task)
        if response.abort_connection:
            writer.transport.abort()
            return False
        await self._send(conn, writer, response, head=request.method == "HEAD")
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
            raise _EarlyReply(HttpResponse.text(413, "request body too large\n"))
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
                    raise _EarlyReply(
                        HttpResponse.text(413, "request body too large\n")
                    )
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
        try:
            await self._send(conn, writer, response, close=True)
            if writer.can_write_eof():
                writer.write_eof()
            discarded = 0
            async with asyncio.timeout(_LINGER_SECONDS):
                while discarded < _LINGER_MAX_BYTES:
                    chunk = await reader.read(_READ_CHUNK)
                    if not chunk:
                        break
                    discarded += len(chunk)
        except (TimeoutError, ConnectionError, h11.LocalProtocolError):
            pass
