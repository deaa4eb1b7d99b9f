"""Opens Sendstack tracking sockets with websockets' asyncio client.

One ``open`` is one connection attempt with the given session token in the
query string (the key is configurable: the wire format is an assumption, see
docs/wire-format.md). Reconnecting and rotating belong to the stream pump, so
this adapter never retries. The URL with the token is built here and never
leaves: errors carry status codes and class names only, foreign exceptions
whose text could hold the URL are not chained, and websockets' own logger is
one the log redaction covers.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidStatus,
    InvalidURI,
    WebSocketException,
)

from bridge.errors import SessionRejected, UpstreamClosed, UpstreamUnavailable
from bridge.secrets import Secret

_ids = itertools.count(1)
_ws_logger = logging.getLogger("bridge.websocket")


@dataclass(frozen=True, slots=True, kw_only=True)
class SocketOptions:
    """websockets client options that matter to the bridge."""

    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    open_timeout: float = 10.0
    close_timeout: float = 5.0
    max_message_bytes: int = 8 * 1024 * 1024
    # Frames waiting in websockets' buffer before it stops reading the socket:
    # with the bounded record buffer this is what pushes back on Sendstack.
    max_queue: int = 64


def session_url(base: str, query_key: str, token: Secret) -> str:
    """``base`` with ``?<query_key>=<token>`` added (other query keys kept)."""
    parts = urlsplit(base)
    query = urlencode({query_key: token.reveal()})
    joined = f"{parts.query}&{query}" if parts.query else query
    return urlunsplit((parts.scheme, parts.netloc, parts.path, joined, ""))


class WebsocketConnection:
    """``UpstreamConnection`` over a websockets ``ClientConnection``."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._id = next(_ids)

    @property
    def connection_id(self) -> int:
        return self._id

    async def recv(self) -> bytes:
        try:
            return await self._ws.recv(decode=False)
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._ws.close(code, reason)

    def abort(self) -> None:
        """Drop the TCP connection at once (used when shutdown time is up)."""
        self._ws.transport.abort()

    async def wait_closed(self) -> UpstreamClosed:
        await self._ws.wait_closed()
        code = self._ws.close_code
        reason = self._ws.close_reason or ""
        return UpstreamClosed(1006 if code is None else code, reason[:120])


def _closed(exc: ConnectionClosed) -> UpstreamClosed:
    rcvd = exc.rcvd
    sent = exc.sent
    if rcvd is not None:
        code, reason = rcvd.code, rcvd.reason
    elif sent is not None:
        # We closed it, e.g. 1011 "keepalive ping timeout" or 1009 too big.
        code, reason = sent.code, sent.reason
    else:
        code, reason = 1006, "connection lost"
    return UpstreamClosed(code, reason[:120])


class WebsocketConnector:
    """``UpstreamConnector`` that opens one socket per call."""

    def __init__(self, *, url: str, query_key: str, options: SocketOptions) -> None:
        self._url = url
        self._query_key = query_key
        self._options = options

    async def open(self, token: Secret) -> WebsocketConnection:
        url = session_url(self._url, self._query_key, token)
        ws = await open_socket(url, self._options, what="tracking socket")
        return WebsocketConnection(ws)


async def open_socket(
    url: str,
    opts: SocketOptions,
    *,
    what: str,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = _ws_logger,
) -> ClientConnection:
    """Open a websocket with the bridge's options (both transports use it).

    Errors name ``what`` failed and the HTTP status, never the URL (it holds
    the token): foreign exceptions are not chained.
    """
    try:
        return await connect(
            url,
            compression=None,  # CPU matters more than bandwidth here
            ping_interval=opts.ping_interval,
            ping_timeout=opts.ping_timeout,
            open_timeout=opts.open_timeout,
            close_timeout=opts.close_timeout,
            max_size=opts.max_message_bytes,
            max_queue=opts.max_queue,
            proxy=None,
            logger=logger,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status in (401, 403):
            raise SessionRejected(
                f"{what} refused the session (HTTP {status})", status=status
            ) from None
        raise UpstreamUnavailable(
            f"{what} upgrade failed (HTTP {status})", status=status
        ) from None
    except InvalidURI:
        # Its message would contain the URL, and with it the token.
        raise UpstreamUnavailable(f"{what} URL is invalid") from None
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise UpstreamUnavailable(
            f"{what} connect failed: {type(exc).__name__}"
        ) from None
