"""The h11-based HTTP server, exercised with real httpx clients over loopback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from bridge.adapters.http_server import HttpRequest, HttpResponse, HttpServer
from bridge.adapters.webhook_http import WebhookHttpServer
from bridge.core.webhooks import WebhookOutcome, WebhookReply, WebhookRequest


async def _echo(request: HttpRequest) -> HttpResponse:
    return HttpResponse.json(
        200,
        {
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "headers": request.headers,
            "body_len": len(request.body),
            "body": request.body.decode(errors="replace")[:64],
            "client_host": request.client_host,
        },
    )


@pytest.fixture
async def echo_server() -> AsyncIterator[HttpServer]:
    async with HttpServer(_echo, "127.0.0.1", 0, max_body_bytes=1024) as server:
        yield server


async def test_parses_method_path_query_headers_and_body(
    echo_server: HttpServer,
) -> None:
    """Method, path, query, lower-cased headers and body reach the handler."""
    async with httpx.AsyncClient(base_url=echo_server.url) as client:
        resp = await client.post(
            "/a/b%20c?x=1&x=2&empty=",
            headers={"App_Id": "42", "X-Thing": "v"},
            content=b"hello",
        )
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    got = resp.json()
    assert got["method"] == "POST"
    assert got["path"] == "/a/b c"
    assert got["query"] == {"x": ["1", "2"], "empty": [""]}
    assert got["headers"]["app_id"] == "42"
    assert got["headers"]["x-thing"] == "v"
    assert got["body"] == "hello"
    assert got["client_host"] == "127.0.0.1"


async def test_port_zero_binds_an_ephemeral_port(echo_server: HttpServer) -> None:
    """Port 0 yields a real bound port, reflected in ``url``."""
    assert echo_server.port > 0
    assert echo_server.url == f"http://127.0.0.1:{echo_server.port}"


async def test_keep_alive_reuses_one_connection(echo_server: HttpServer) -> None:
    """Several requests from one client travel over one TCP connection."""
    local_ports = set()
    async with httpx.AsyncClient(base_url=echo_server.url) as client:
        for _ in range(3):
            resp = await client.get("/ping")
            assert resp.status_code == 200
            stream = resp.extensions["network_stream"]
            local_ports.add(stream.get_extra_info("client_addr")[1])
    assert len(local_ports) == 1


async def test_chunked_request_body_is_assembled(echo_server: HttpServer) -> None:
    """A chunked (streamed) request body arrives whole."""

    async def parts() -> AsyncIterator[bytes]:
        for piece in (b"abc", b"def", b"ghi"):
            yield piece

    async with httpx.AsyncClient(base_url=echo_server.url) as client:
        resp = await client.post("/chunks", content=parts())
    assert resp.status_code == 200
    assert resp.json()["body"] == "abcdefghi"
    assert resp.json()["headers"]["transfer-encoding"] == "chunked"


async def test_oversized_content_length_gets_413(echo_server: HttpServer) -> None:
    """A declared body above the limit is refused with 413 without being read."""
    async with httpx.AsyncClient(base_url=echo_server.url) as client:
        resp = await client.post("/big", content=b"x" * 2_000_000)
    assert resp.status_code == 413


async def test_oversized_chunked_body_gets_413(echo_server: HttpServer) -> None:
    """A chunked body that grows past the limit is refused with 413."""

    async def parts() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * 512

    async with httpx.AsyncClient(base_url=echo_server.url) as client:
        resp = await client.post("/big", content=parts())
    assert resp.status_code == 413


async def test_malformed_http_gets_400(echo_server: HttpServer) -> None:
    """Bytes that are not HTTP get a 400 and the connection is closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_server.port)
    try:
        writer.write(b"THIS IS NOT HTTP\r\n\r\n")
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
        await writer.wait_closed()
    assert reply.startswith(b"HTTP/1.1 400 ")


async def test_handler_exception_gives_500_without_details(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failing handler yields a bare 500; the cause is logged, not sent."""

    async def broken(request: HttpRequest) -> HttpResponse:
        raise RuntimeError("secret-internal-detail")

    with caplog.at_level(logging.ERROR, logger="bridge.adapters.http_server"):
        async with (
            HttpServer(broken, "127.0.0.1", 0) as server,
            httpx.AsyncClient(base_url=server.url) as client,
        ):
            resp = await client.get("/boom")
    assert resp.status_code == 500
    assert b"secret-internal-detail" not in resp.content
    assert any(r.exc_info for r in caplog.records)


async def test_abort_connection_sends_nothing() -> None:
    """``abort_connection`` runs the handler but closes TCP with no reply at all."""
    calls: list[str] = []

    async def execute_then_drop(request: HttpRequest) -> HttpResponse:
        calls.append(request.path)
        return HttpResponse(200, b"never sent", abort_connection=True)

    async with (
        HttpServer(execute_then_drop, "127.0.0.1", 0) as server,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/do")
    assert calls == ["/do"]


async def test_request_timeout_closes_a_stalled_request() -> None:
    """A request that never completes is answered 408 and closed after the timeout."""
    async with HttpServer(_echo, "127.0.0.1", 0, request_timeout=0.3) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
            await writer.drain()
            reply = await asyncio.wait_for(reader.read(), timeout=5)
        finally:
            writer.close()
            await writer.wait_closed()
    assert reply.startswith(b"HTTP/1.1 408 ")


async def test_stop_closes_idle_keep_alive_connections() -> None:
    """Stopping the server ends open keep-alive connections and frees the port."""
    server = HttpServer(_echo, "127.0.0.1", 0)
    await server.start()
    port = server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        assert head.startswith(b"HTTP/1.1 200 ")
        await server.stop()
        rest = await asyncio.wait_for(reader.read(), timeout=5)
        body = orjson.loads(rest)
        assert body["path"] == "/x"
    finally:
        writer.close()
        await writer.wait_closed()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def _raw_exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection; everything read until the close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_webhook_server_counts_the_answers_it_gives_on_its_own() -> None:
    """413 counts too_large, 400 and 431 count malformed; 408 is not counted."""
    counted: list[WebhookOutcome] = []
    handled: list[str] = []

    async def handle(request: WebhookRequest) -> WebhookReply:
        handled.append(request.path)
        return WebhookReply(200, "accepted", "w-1")

    async with WebhookHttpServer(
        handle, counted.append, "127.0.0.1", 0, max_body_bytes=16, request_timeout=0.3
    ) as server:
        replies = [
            await _raw_exchange(server.port, request)
            for request in (
                b"POST /w HTTP/1.1\r\nHost: x\r\nContent-Length: 99\r\n\r\n",
                b"NOT HTTP\r\n\r\n",
                b"GET /w HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
                b"POST /w HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nab",
            )
        ]
        async with httpx.AsyncClient(base_url=server.url) as client:
            ok = await client.post("/w", content=b"{}")
    assert [r[:12] for r in replies] == [
        b"HTTP/1.1 413",
        b"HTTP/1.1 400",
        b"HTTP/1.1 431",
        b"HTTP/1.1 408",
    ]
    assert ok.json() == {"ok": True, "outcome": "accepted", "webhookId": "w-1"}
    assert counted == ["too_large", "malformed", "malformed"]
    assert handled == ["/w"]


async def test_a_failing_early_reply_hook_does_not_stop_the_reply(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The client still gets its 400 when the hook raises; the failure is logged."""

    def broken_hook(response: HttpResponse) -> None:
        raise RuntimeError("hook bug")

    with caplog.at_level(logging.ERROR, logger="bridge.adapters.http_server"):
        async with HttpServer(
            _echo, "127.0.0.1", 0, on_early_reply=broken_hook
        ) as server:
            reply = await _raw_exchange(server.port, b"NOT HTTP\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert any("on_early_reply" in r.getMessage() for r in caplog.records)
