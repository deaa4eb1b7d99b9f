"""The I/O of ``sendstack-bridge probe``: one session call, one upgrade, a few frames.

Each step is recorded as a plain value (``bridge.core.probe``) for the core
to judge. Errors are named by kind (DNS, TLS, refused, timeout), never by
message: a message could carry the URL, and the URL carries the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

from bridge.adapters.auth_api import credential_headers
from bridge.adapters.upstream_ws import session_url
from bridge.config import HeaderStyle
from bridge.core.probe import Closed, FrameSeen, SessionStep, UpgradeStep
from bridge.errors import SessionRejected, UpstreamClosed, UpstreamUnavailable
from bridge.ports import UpstreamConnection, UpstreamConnector
from bridge.secrets import Secret

_HIDDEN_HEADERS = frozenset({"set-cookie", "cookie", "authorization"})


def error_kind(exc: BaseException) -> str:
    """dns | tls | refused | timeout | other, from the exception and its causes."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, socket.gaierror):
            return "dns"
        if isinstance(seen, ssl.SSLError):
            return "tls"
        if isinstance(seen, ConnectionRefusedError):
            return "refused"
        if isinstance(seen, TimeoutError | httpx.TimeoutException):
            return "timeout"
        seen = seen.__cause__ or seen.__context__
    return "other"


async def call_session(
    client: httpx.AsyncClient,
    *,
    base_url: str,
    app_id: str,
    app_secret: Secret,
    header_style: HeaderStyle,
    send_source: bool,
) -> tuple[SessionStep, Secret | None]:
    """``POST {base}/auth/session``: what it answered, and the token if any."""
    headers = credential_headers(
        app_id, app_secret, style=header_style, send_source=send_source
    )
    try:
        response = await client.post(
            base_url.rstrip("/") + "/auth/session", headers=headers
        )
    except httpx.HTTPError as exc:
        return SessionStep(None, error=error_kind(exc)), None
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    message = ""
    token: Secret | None = None
    if isinstance(body, dict):
        if isinstance(body.get("message"), str):
            message = body["message"][:200]
        data = body.get("data")
        if (
            body.get("status") is True
            and isinstance(data, dict)
            and isinstance(data.get("session"), str)
        ):
            token = Secret(data["session"])
    step = SessionStep(
        response.status_code, message=message, got_session=token is not None
    )
    return step, token


async def open_and_listen(
    url: str,
    query_key: str,
    token: Secret,
    *,
    seconds: float,
    max_frames: int,
    open_timeout: float,
) -> tuple[UpgradeStep, tuple[FrameSeen, ...], Closed | None, float]:
    """Upgrade, then record frames until ``seconds`` or ``max_frames``."""
    try:
        ws = await connect(
            session_url(url, query_key, token),
            open_timeout=open_timeout,
            compression=None,
            proxy=None,
            max_size=16 * 1024 * 1024,
        )
    except InvalidStatus as exc:
        refused = exc.response
        return (
            UpgradeStep(
                refused.status_code,
                refused.reason_phrase,
                _visible(refused.headers.raw_items()),
            ),
            (),
            None,
            0.0,
        )
    except InvalidURI:
        return UpgradeStep(None, error="invalid_url"), (), None, 0.0
    except (OSError, TimeoutError, Exception) as exc:  # noqa: BLE001 - named by kind
        return UpgradeStep(None, error=error_kind(exc)), (), None, 0.0
    started = time.monotonic()
    response = ws.response
    upgrade = (
        UpgradeStep(101, "Switching Protocols")
        if response is None
        else UpgradeStep(
            response.status_code,
            response.reason_phrase,
            _visible(response.headers.raw_items()),
        )
    )

    async def receive() -> tuple[bytes, bool]:
        message = await ws.recv()
        if isinstance(message, str):
            return message.encode(), True
        return bytes(message), False

    closed: Closed | None = None
    frames: list[FrameSeen] = []
    try:
        await _listen(receive, frames, started, seconds=seconds, max_frames=max_frames)
    except ConnectionClosed as exc:
        if exc.rcvd is not None:
            closed = Closed(exc.rcvd.code, exc.rcvd.reason[:120])
        else:
            closed = Closed(1006, "connection lost")
    finally:
        await ws.close()
    return upgrade, tuple(frames), closed, time.monotonic() - started


async def _listen(
    receive: Callable[[], Awaitable[tuple[bytes, bool]]],
    frames: list[FrameSeen],
    started: float,
    *,
    seconds: float,
    max_frames: int,
) -> None:
    """Append frames until ``seconds`` after ``started``, or ``max_frames``."""
    while len(frames) < max_frames:
        left = seconds - (time.monotonic() - started)
        if left <= 0:
            return
        try:
            async with asyncio.timeout(left):
                data, text = await receive()
        except TimeoutError:
            return
        frames.append(FrameSeen(time.monotonic() - started, data, text=text))


def _visible(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    items = list(headers)
    return tuple(
        (str(name).lower(), str(value)[:120])
        for name, value in items
        if str(name).lower() not in _HIDDEN_HEADERS
    )


class CaptureSocket:
    """One socket for ``capture``: frames with their kind, and how it closed."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._closed: tuple[int, str] | None = None

    @classmethod
    async def open(cls, url: str, *, open_timeout: float) -> CaptureSocket:
        ws = await connect(
            url,
            open_timeout=open_timeout,
            compression=None,
            proxy=None,
            max_size=16 * 1024 * 1024,
        )
        return cls(ws)

    async def next_frame(
        self, within: float, stop: asyncio.Future[Any]
    ) -> tuple[bytes, bool] | None:
        """The next frame and whether it is text; None on close, timeout or ``stop``."""
        receiving: asyncio.Future[Any] = asyncio.ensure_future(self._ws.recv())
        done, _ = await asyncio.wait(
            {receiving, stop}, timeout=within, return_when=asyncio.FIRST_COMPLETED
        )
        if receiving not in done:
            receiving.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await receiving
            return None
        try:
            message = receiving.result()
        except ConnectionClosed as exc:
            received = exc.rcvd
            self._closed = (
                (received.code, received.reason[:120])
                if received is not None
                else (1006, "connection lost")
            )
            return None
        if isinstance(message, str):
            return message.encode(), True
        return bytes(message), False

    async def close(self) -> tuple[int, str] | None:
        """Close (if still open); the server's close code and reason, if it closed."""
        await self._ws.close()
        return self._closed


class ConnectionCapture:
    """``CaptureSocket``'s interface over a stream connection (Socket.IO).

    A Socket.IO capture records what the stream's codec would read: the
    event arrays the transport hands over, not the Engine.IO packets around
    them (pings, the namespace handshake), so ``mapping try`` on the capture
    sees exactly what the stream will.
    """

    def __init__(self, connection: UpstreamConnection) -> None:
        self._connection = connection
        self._closed: tuple[int, str] | None = None

    async def next_frame(
        self, within: float, stop: asyncio.Future[Any]
    ) -> tuple[bytes, bool] | None:
        """The next message (always text); None on close, timeout or ``stop``."""
        receiving: asyncio.Future[bytes] = asyncio.ensure_future(
            self._connection.recv()
        )
        done, _ = await asyncio.wait(
            {receiving, stop}, timeout=within, return_when=asyncio.FIRST_COMPLETED
        )
        if receiving not in done:
            receiving.cancel()
            with contextlib.suppress(asyncio.CancelledError, UpstreamClosed):
                await receiving
            return None
        try:
            return receiving.result(), True
        except UpstreamClosed as exc:
            self._closed = (1006 if exc.code is None else exc.code, exc.reason)
            return None

    async def close(self) -> tuple[int, str] | None:
        """Close (if still open); the server's close code and reason, if it closed."""
        if self._closed is None:
            await self._connection.close()
        return self._closed


async def listen_via(
    connector: UpstreamConnector,
    token: Secret,
    *,
    seconds: float,
    max_frames: int,
) -> tuple[UpgradeStep, tuple[FrameSeen, ...], Closed | None, float]:
    """``open_and_listen`` through a stream connector (the Socket.IO transport).

    The frames are what the transport hands the codec (event arrays), so the
    probe judges exactly what the stream would decode. The connector's errors
    carry no headers; their HTTP status, when there was one, is kept.
    """
    try:
        connection = await connector.open(token)
    except (SessionRejected, UpstreamUnavailable) as exc:
        if exc.status is not None:
            return UpgradeStep(exc.status, str(exc)), (), None, 0.0
        if isinstance(exc, SessionRejected):
            return UpgradeStep(401, str(exc)), (), None, 0.0
        return UpgradeStep(None, error=error_kind(exc)), (), None, 0.0
    started = time.monotonic()
    upgrade = UpgradeStep(101, "Switching Protocols (Socket.IO namespace joined)")

    async def receive() -> tuple[bytes, bool]:
        return await connection.recv(), True  # Socket.IO events are text

    frames: list[FrameSeen] = []
    closed: Closed | None = None
    try:
        await _listen(receive, frames, started, seconds=seconds, max_frames=max_frames)
    except UpstreamClosed as exc:
        closed = Closed(1006 if exc.code is None else exc.code, exc.reason)
    finally:
        if closed is None:
            with contextlib.suppress(Exception):
                await connection.close()
    return upgrade, tuple(frames), closed, time.monotonic() - started
