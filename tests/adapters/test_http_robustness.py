"""The h11 server against hostile or clumsy clients, over raw loopback sockets.

The server faces the internet (the webhook port), so each test plays a client
that misbehaves in one way and checks that the server answers, closes, or
ignores it as documented, without ERROR logs and without holding resources.
Timeouts are short (constructor arguments) so the suite takes a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest

from bridge.adapters.http_server import HttpRequest, HttpResponse, HttpServer

_TIMEOUT = 0.5  # the servers' request timeout in this suite
_SLACK = 2.0  # scheduling allowance on a busy CI machine

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _echo(request: HttpRequest) -> HttpResponse:
    return HttpResponse.json(
        200, {"path": request.path, "body": request.body.decode(errors="replace")}
    )


@contextlib.asynccontextmanager
async def _serving(
    handler: Callable[[HttpRequest], Awaitable[HttpResponse]] = _echo,
    *,
    max_body_bytes: int = 1024,
    max_connections: int = 16,
    request_timeout: float = _TIMEOUT,
) -> AsyncIterator[tuple[HttpServer, list[int]]]:
    early: list[int] = []
    server = HttpServer(
        handler,
        "127.0.0.1",
        0,
        max_body_bytes=max_body_bytes,
        max_connections=max_connections,
        request_timeout=request_timeout,
        on_early_reply=lambda response: early.append(response.status),
    )
    async with server:
        yield server, early


async def _connect(server: HttpServer) -> Stream:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Read one response: status, lower-cased headers, body (by Content-Length)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _SLACK)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in filter(None, lines):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), _SLACK)
    return int(status_line.split()[1]), headers, body


async def _until_closed(reader: asyncio.StreamReader, within: float) -> bytes:
    """Everything the server sends until it closes (a reset counts as closed)."""
    received = bytearray()
    async with asyncio.timeout(within):
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65_536):
                received += chunk
    return bytes(received)


async def _drained(server: HttpServer) -> None:
    """Wait until the server has finished with every connection."""
    for _ in range(200):
        if not server.open_connections:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{server.open_connections} connections still open")


async def _trickle(writer: asyncio.StreamWriter, data: bytes, every: float) -> None:
    """Send ``data`` one byte at a time until done or the server hangs up."""
    with contextlib.suppress(ConnectionError):
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(every)


@pytest.mark.parametrize("how", ["reset", "close"])
async def test_client_vanishing_mid_body_is_neither_an_error_nor_malformed(
    how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that resets or closes mid-body leaves no warning and no 400."""
    caplog.set_level(logging.DEBUG)
    async with _serving() as (server, early):
        reader, writer = await _connect(server)
        writer.write(b"POST /w HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n")
        writer.write(b"0123456789")
        await writer.drain()
        await asyncio.sleep(0.05)  # let the server start on the body
        if how == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        await _drained(server)
        # Still serving afterwards.
        reader, writer = await _connect(server)
        writer.write(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, _ = await _response(reader)
        await _close(writer)
    assert status == 200
    assert early == []
    assert [
        r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
    ] == []


async def test_malformed_request_is_answered_400_and_reported_to_the_hook() -> None:
    """Bytes that are not HTTP get 400 with Connection: close, and the hook hears it."""
    async with _serving() as (server, early):
        reader, writer = await _connect(server)
        writer.write(b"THIS IS NOT HTTP\r\n\r\n")
        status, headers, _ = await _response(reader)
        assert await _until_closed(reader, _SLACK) == b""
        await _close(writer)
    assert (status, headers["connection"]) == (400, "close")
    assert early == [400]


@pytest.mark.parametrize("pieces", [1, 16])
async def test_oversize_headers_get_431(pieces: int) -> None:
    """A 60 kB header gets 431, whether it arrives in one write or in pieces."""
    request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 60_000 + b"\r\n\r\n"
    async with _serving() as (server, early):
        reader, writer = await _connect(server)
        step = -(-len(request) // pieces)
        for start in range(0, len(request), step):
            with contextlib.suppress(ConnectionError):
                writer.write(request[start : start + step])
                await writer.drain()
            await asyncio.sleep(0.01)
        status, headers, _ = await _response(reader)
        await _close(writer)
    assert (status, headers["connection"]) == (431, "close")
    assert early == [431]


async def test_headers_under_the_limit_are_served() -> None:
    """A 12 kB header is within the 16 KiB limit and the request is served."""
    async with _serving() as (server, early):
        reader, writer = await _connect(server)
        writer.write(b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 12_000)
        writer.write(b"\r\n\r\n")
        status, _, _ = await _response(reader)
        await _close(writer)
    assert status == 200
    assert early == []


async def test_slowloris_headers_are_cut_off_at_the_request_timeout() -> None:
    """Header bytes trickled slower than the timeout get 408 and a close in time."""
    async with _serving() as (server, early):
        reader, writer = await _connect(server)
        started = time.monotonic()
        trickle = asyncio.create_task(
            _trickle(writer, b"GET / HTTP/1.1\r\n" + b"X-Slow: 1\r\n" * 100, 0.02)
        )
        reply = await _until_closed(reader, _TIMEOUT + _SLACK)
        elapsed = time.monotonic() - started
        trickle.cancel()
        await _close(writer)
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert elapsed < 2 * _TIMEOUT + 0.5  # the timeout, then at most the linger
    assert early == [408]


async def test_slowloris_body_is_cut_off_at_the_request_timeout() -> None:
    """A body trickled slower than the timeout gets 408 and a close in time."""
    async with _serving() as (server, early):
        reader, writer = await _connect(server)
        started = time.monotonic()
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n")
        trickle = asyncio.create_task(_trickle(writer, b"b" * 500, 0.02))
        reply = await _until_closed(reader, _TIMEOUT + _SLACK)
        elapsed = time.monotonic() - started
        trickle.cancel()
        await _close(writer)
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert elapsed < 2 * _TIMEOUT + 0.5
    assert early == [408]


async def test_idle_keep_alive_connection_is_closed_after_the_timeout() -> None:
    """A keep-alive connection left idle is closed, silently, after the timeout."""
    async with _serving() as (server, early):
        reader, writer = await _connect(server)
        writer.write(b"GET /once HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = await _response(reader)
        started = time.monotonic()
        rest = await _until_closed(reader, _TIMEOUT + _SLACK)
        elapsed = time.monotonic() - started
        await _close(writer)
    assert status == 200
    assert "connection" not in headers
    assert rest == b""
    assert _TIMEOUT - 0.1 < elapsed < _TIMEOUT + 1.0
    assert early == []


async def test_connections_over_the_cap_get_503_and_are_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Beyond the cap new connections get 503 at once; service resumes after."""
    cap, extra = 3, 2
    async with _serving(max_connections=cap, request_timeout=1.0) as (server, early):
        idle = [await _connect(server) for _ in range(cap)]
        await asyncio.sleep(0.05)  # the server has registered them
        refused = [await _connect(server) for _ in range(extra)]
        # Answered well before the idle timeout: a refusal, not an idle close.
        replies = [await _until_closed(r, 0.5) for r, _ in refused]
        assert server.open_connections == cap
        # The idle ones are closed by the request timeout, without a reply...
        assert [await _until_closed(r, _SLACK) for r, _ in idle] == [b""] * cap
        await _drained(server)
        # ...and then a new client is served.
        reader, writer = await _connect(server)
        writer.write(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, _ = await _response(reader)
        for _, w in [*idle, *refused, (reader, writer)]:
            await _close(w)
    for reply in replies:
        assert reply.startswith(b"HTTP/1.1 503 ")
        assert b"\r\nconnection: close\r\n" in reply.lower()
    assert status == 200
    assert early == [503] * extra
    warned = [r for r in caplog.records if "connection cap" in r.getMessage()]
    assert [r.levelno for r in warned] == [logging.WARNING]  # once, not per refusal


async def test_pipelined_requests_are_answered_in_order() -> None:
    """Two requests in one write get two responses, in request order."""
    async with _serving() as (server, _):
        reader, writer = await _connect(server)
        writer.write(
            b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        first = await _response(reader)
        second = await _response(reader)
        await _close(writer)
    assert (first[0], orjson.loads(first[2])) == (
        200,
        {"path": "/first", "body": "abc"},
    )
    assert (second[0], orjson.loads(second[2])) == (
        200,
        {"path": "/second", "body": ""},
    )


async def test_expect_100_continue_gets_continue_then_the_final_response() -> None:
    """With ``Expect: 100-continue`` the client hears 100, sends, and gets 200."""
    async with _serving() as (server, _):
        reader, writer = await _connect(server)
        writer.write(
            b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _SLACK)
        writer.write(b"hello")
        status, _, body = await _response(reader)
        await _close(writer)
    assert interim.startswith(b"HTTP/1.1 100 ")
    assert (status, orjson.loads(body)) == (200, {"path": "/e", "body": "hello"})


async def test_chunked_body_over_the_cap_gets_413() -> None:
    """A chunked body that grows past the body cap is refused with 413."""
    async with _serving(max_body_bytes=1024) as (server, early):
        reader, writer = await _connect(server)
        writer.write(
            b"POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError):
            for _ in range(4):
                writer.write(b"200\r\n" + b"c" * 512 + b"\r\n")
                await writer.drain()
        status, headers, _ = await _response(reader)
        await _close(writer)
    assert (status, headers["connection"]) == (413, "close")
    assert early == [413]


async def test_stop_closes_keep_alive_clients_and_marks_the_last_response() -> None:
    """During stop() an in-flight response carries Connection: close, then EOF."""
    entered, release = asyncio.Event(), asyncio.Event()

    async def handler(request: HttpRequest) -> HttpResponse:
        if request.path == "/slow":
            entered.set()
            await release.wait()
        return HttpResponse.text(200, request.path)

    server = HttpServer(handler, "127.0.0.1", 0, request_timeout=5.0)
    await server.start()
    port = server.port
    busy_r, busy_w = await _connect(server)
    idle_r, idle_w = await _connect(server)
    try:
        for writer in (busy_w, idle_w):
            writer.write(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
        before = [await _response(r) for r in (busy_r, idle_r)]
        busy_w.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(entered.wait(), _SLACK)
        started = time.monotonic()
        stopping = asyncio.create_task(server.stop(grace=2.0))
        # The idle keep-alive client is let go at once.
        assert await _until_closed(idle_r, _SLACK) == b""
        release.set()
        status, headers, body = await _response(busy_r)
        assert await _until_closed(busy_r, _SLACK) == b""
        await asyncio.wait_for(stopping, _SLACK)
        elapsed = time.monotonic() - started
    finally:
        release.set()
        await server.stop()
        await _close(busy_w)
        await _close(idle_w)
    assert [(s, h.get("connection")) for s, h, _ in before] == [(200, None)] * 2
    assert (status, headers["connection"], body) == (200, "close", b"/slow")
    assert elapsed < 2.0
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_stop_still_answers_a_request_whose_body_is_arriving() -> None:
    """A request begun before stop() is served to the end, with Connection: close."""
    server = HttpServer(_echo, "127.0.0.1", 0, request_timeout=5.0)
    await server.start()
    reader, writer = await _connect(server)
    try:
        writer.write(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(0.05)  # the server is reading the body
        stopping = asyncio.create_task(server.stop(grace=2.0))
        await asyncio.sleep(0.05)
        writer.write(b"def")
        status, headers, body = await _response(reader)
        rest = await _until_closed(reader, _SLACK)
        await asyncio.wait_for(stopping, _SLACK)
    finally:
        await server.stop()
        await _close(writer)
    assert (status, headers["connection"]) == (200, "close")
    assert orjson.loads(body) == {"path": "/up", "body": "abcdef"}
    assert rest == b""


async def test_stop_returns_within_its_grace_despite_a_stuck_handler() -> None:
    """A handler that never returns does not hold stop() past its grace."""
    entered = asyncio.Event()

    async def stuck(request: HttpRequest) -> HttpResponse:
        entered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    server = HttpServer(stuck, "127.0.0.1", 0)
    await server.start()
    reader, writer = await _connect(server)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(entered.wait(), _SLACK)
        started = time.monotonic()
        await server.stop(grace=0.3)
        elapsed = time.monotonic() - started
        reply = await _until_closed(reader, _SLACK)
    finally:
        await _close(writer)
    assert 0.25 < elapsed < 0.3 + 1.0
    assert reply == b""
