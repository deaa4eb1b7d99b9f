"""The Sendstack REST gateway against real HTTP servers on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import orjson
import pytest

from bridge.adapters.http_server import HttpRequest, HttpResponse, HttpServer
from bridge.adapters.sendstack_rest import SendstackRest
from bridge.core.commands import (
    Command,
    RestRequest,
    classify,
    parse_command,
    reconciled,
    to_request,
)
from bridge.errors import RestUnavailable
from bridge.secrets import Secret
from bridgelab.emulator import Emulator, EmulatorConfig

SECRET = "ZK4P0QW7TRV2M9XBC81LJ6DHS5NA3EYU"


class Recorder:
    """A handler that records each request and answers via ``reply``."""

    def __init__(self) -> None:
        self.requests: list[HttpRequest] = []
        self.reply: Callable[[HttpRequest], Awaitable[HttpResponse]] = self._ok

    async def _ok(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse.json(200, {"status": True, "message": "ok", "data": {}})

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        self.requests.append(request)
        return await self.reply(request)


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, HttpServer]]:
    """A recording server on a free loopback port."""
    handler = Recorder()
    async with HttpServer(handler, "127.0.0.1", 0, request_timeout=5) as server:
        yield handler, server


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """The httpx client the gateway uses (10 s default timeout)."""
    async with httpx.AsyncClient(timeout=10) as c:
        yield c


def gateway(
    client: httpx.AsyncClient, base_url: str, *, send_source: bool = True
) -> SendstackRest:
    """A gateway with the docs' invented credentials."""
    return SendstackRest(
        client,
        base_url=base_url,
        app_id="7302915",
        app_secret=Secret(SECRET),
        send_source=send_source,
    )


POST = RestRequest(
    method="POST",
    path="/drops/cancel",
    query=(("a", "1"), ("a", "2")),
    body={"dropIds": ["6650aa10bc12de34f0a1b2c1"], "note": "é"},
    idempotency_key="cmd-1",
)


async def test_sends_documented_headers_body_and_query(
    recorder: tuple[Recorder, HttpServer], client: httpx.AsyncClient
) -> None:
    """The §2 headers, the Idempotency-Key and the JSON body reach Sendstack."""
    handler, server = recorder
    status, body, headers = await gateway(client, server.url + "/api/v1/").execute(POST)
    assert status == 200
    assert orjson.loads(body)["status"] is True
    assert headers["Content-Type"] == "application/json"  # case-insensitive
    (seen,) = handler.requests
    assert (seen.method, seen.path) == ("POST", "/api/v1/drops/cancel")
    assert seen.query == {"a": ["1", "2"]}
    assert orjson.loads(seen.body) == POST.body
    assert seen.headers["app_id"] == "7302915"
    assert seen.headers["app_secret"] == SECRET
    assert seen.headers["x-sendstack-source"] == "control.sendstack"
    assert seen.headers["idempotency-key"] == "cmd-1"
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["accept"] == "application/json"
    assert "appid" not in seen.headers


async def test_source_header_is_optional_and_gets_have_no_body(
    recorder: tuple[Recorder, HttpServer], client: httpx.AsyncClient
) -> None:
    """send_source=False drops x-sendstack-source; a bodiless GET has no type."""
    handler, server = recorder
    rest = gateway(client, server.url, send_source=False)
    await rest.execute(
        RestRequest(method="GET", path="/wallet/balance", idempotency_key="k")
    )
    (seen,) = handler.requests
    assert "x-sendstack-source" not in seen.headers
    assert "content-type" not in seen.headers
    assert seen.body == b""


@pytest.mark.parametrize("status", [400, 401, 404, 422, 429, 500, 503])
async def test_error_replies_are_returned_not_raised(
    recorder: tuple[Recorder, HttpServer], client: httpx.AsyncClient, status: int
) -> None:
    """Any HTTP reply is data for classify(); only transport failures raise."""
    handler, server = recorder

    async def fail(request: HttpRequest) -> HttpResponse:
        return HttpResponse.json(
            status, {"status": False, "message": "no"}, (("retry-after", "4"),)
        )

    handler.reply = fail
    got = await gateway(client, server.url).execute(POST)
    assert got[0] == status
    assert classify(*got).status == status
    assert got[2]["retry-after"] == "4"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_refused_connection_is_not_ambiguous(client: httpx.AsyncClient) -> None:
    """Nothing listening: the request certainly did not reach Sendstack."""
    rest = gateway(client, f"http://127.0.0.1:{_free_port()}/api/v1")
    with pytest.raises(RestUnavailable) as caught:
        await rest.execute(POST)
    assert caught.value.ambiguous is False
    assert caught.value.retryable is True
    assert str(caught.value) == "POST /drops/cancel not sent: ConnectError"
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


async def test_read_timeout_is_ambiguous(
    recorder: tuple[Recorder, HttpServer], client: httpx.AsyncClient
) -> None:
    """A reply that never comes in time leaves the outcome unknown."""
    handler, server = recorder

    async def slow(request: HttpRequest) -> HttpResponse:
        await asyncio.sleep(1.0)
        return HttpResponse(200)

    handler.reply = slow
    with pytest.raises(RestUnavailable) as caught:
        await gateway(client, server.url).execute(POST, timeout_seconds=0.2)
    assert caught.value.ambiguous is True
    assert "ReadTimeout" in str(caught.value)
    assert len(handler.requests) == 1  # it did reach the server


async def test_dropped_connection_is_ambiguous(
    recorder: tuple[Recorder, HttpServer], client: httpx.AsyncClient
) -> None:
    """The server acting and then hanging up without a reply is ambiguous."""
    handler, server = recorder

    async def drop(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, abort_connection=True)

    handler.reply = drop
    with pytest.raises(RestUnavailable) as caught:
        await gateway(client, server.url).execute(POST)
    assert caught.value.ambiguous is True
    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)


async def test_secret_never_appears_in_errors(
    recorder: tuple[Recorder, HttpServer], client: httpx.AsyncClient
) -> None:
    """Neither our error nor its cause mentions the app secret."""
    handler, server = recorder

    async def drop(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, abort_connection=True)

    handler.reply = drop
    for base in (server.url, f"http://127.0.0.1:{_free_port()}"):
        with pytest.raises(RestUnavailable) as caught:
            await gateway(client, base).execute(POST)
        for text in (
            str(caught.value),
            repr(caught.value),
            str(caught.value.__cause__),
        ):
            assert SECRET not in text


def _command(command_type: str, payload: dict[str, object], command_id: str) -> Command:
    raw = orjson.dumps(
        {"commandId": command_id, "type": command_type, "payload": payload}
    )
    parsed = parse_command(raw, max_bytes=65_536, now=0)
    assert isinstance(parsed, Command), parsed
    return parsed


BOOKING: dict[str, object] = {
    "externalOrderId": "ORD-77",
    "orderType": "PROCESSING",
    "pickup": {
        "address": "12, Bode Thomas Street",
        "locationCode": "K9PZ",
        "pickupName": "Adaeze",
        "pickupNumber": "08031234567",
    },
    "drops": [{"address": "3, Awolowo Road", "locationCode": "R4QN"}],
}


async def test_commands_run_against_the_emulator(client: httpx.AsyncClient) -> None:
    """Contract, gateway and emulator agree: book, track, cancel, wallet."""
    async with Emulator(EmulatorConfig(start_paused=True)) as emu:
        rest = SendstackRest(
            client,
            base_url=emu.base_url,
            app_id=emu.config.app_id,
            app_secret=Secret(emu.config.app_secret),
        )
        booked = classify(
            *await rest.execute(to_request(_command("book_delivery", BOOKING, "c1")))
        )
        assert (booked.kind, booked.status) == ("succeeded", 201)
        assert isinstance(booked.data, dict)
        batch, drop_id = booked.data["batchId"], booked.data["drops"][0]["id"]
        for command_type, payload in (
            ("track_delivery", {"batchId": batch}),
            ("add_private_note", {"dropIds": [drop_id], "note": "Fragile"}),
            ("cancel_drops", {"dropIds": [drop_id]}),
            ("fetch_deliveries", {"externalOrderId": "ORD-77"}),
            ("wallet_balance", {}),
        ):
            reply = await rest.execute(
                to_request(_command(command_type, payload, "c2"))
            )
            assert classify(*reply).kind == "succeeded", (command_type, reply)
        pod = await rest.execute(
            to_request(_command("generate_pod_account", {"dropId": drop_id}, "c3"))
        )
        assert classify(*pod).kind == "succeeded"  # an empty 200, as documented
        unknown = await rest.execute(
            to_request(_command("cancel_drops", {"dropIds": ["f" * 24]}, "c4"))
        )
        assert (classify(*unknown).kind, classify(*unknown).message) == (
            "rejected",
            "Invalid dropId",
        )
        assert emu.executions("c1") == 1


async def test_lost_booking_reply_is_reconciled_not_repeated(
    client: httpx.AsyncClient,
) -> None:
    """A booking whose reply was dropped is found by its externalOrderId."""
    async with Emulator(EmulatorConfig(start_paused=True)) as emu:
        rest = SendstackRest(
            client,
            base_url=emu.base_url,
            app_id=emu.config.app_id,
            app_secret=Secret(emu.config.app_secret),
        )
        command = _command("book_delivery", BOOKING, "c9")
        request = to_request(command)
        emu.deliveries.execute_then_drop(1)
        with pytest.raises(RestUnavailable) as caught:
            await rest.execute(request)
        assert caught.value.ambiguous is True
        assert request.reconcile is not None
        status, body, headers = await rest.execute(request.reconcile)
        assert classify(status, body, headers).kind == "succeeded"
        existing = reconciled(command, status, body)
        assert existing.verdict == "found"
        assert existing.booking is not None
        assert existing.booking["externalOrderId"] == "ORD-77"
        assert emu.executions("c9") == 1
        assert emu.executions("c9#reconcile") == 1
