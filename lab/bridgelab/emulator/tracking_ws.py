"""The tracking websocket: session check at the upgrade, expiry closes, fan-out.

Assumed behaviour (docs/wire-format.md): a missing, invalid or expired
session is refused with HTTP 401 before the upgrade; an open socket is closed
with 4001 when its session expires or (single-session mode) is replaced. The
server sends no pings of its own but answers the client's (websockets does
that for any socket we keep reading from).

With ``session_policy="refuse-409"`` an upgrade is refused with HTTP 409
while another socket is open.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import weakref
from collections import Counter
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from bridgelab.emulator.broadcast import Hub, WsChannel
from bridgelab.emulator.config import EmulatorConfig
from bridgelab.emulator.sessions import Session, SessionStore

_log = logging.getLogger(__name__)
_ws_log = logging.getLogger(__name__ + ".websockets")


_JWT = re.compile(r"eyJ[\w-]*\.[\w-]+\.[\w-]*")


class RedactingLogger(logging.LoggerAdapter[logging.Logger]):
    """websockets logs request lines at DEBUG; they hold ``?session=<JWT>``.

    Anything JWT-shaped is masked too (Socket.IO logs CONNECT's auth payload).
    """

    def __init__(self, logger: logging.Logger, query_key: str) -> None:
        super().__init__(logger, {})
        self._pattern = re.compile(rf"({re.escape(query_key)}=)[^&\s]+")

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            text = str(msg) % args if args else str(msg)
            text = self._pattern.sub(r"\1<redacted>", text)
            text = _JWT.sub("<redacted>", text)
            super().log(level, "%s", text, **kwargs)


_MAX_CLIENT_MESSAGE = 65_536  # clients are not expected to send anything


def _reject(status: int, message: str) -> Response:
    """A refused upgrade with the long-form error envelope as body."""
    body = orjson.dumps(
        {
            "status": False,
            "message": message,
            "data": {"statusCode": status, "message": message, "isOperational": True},
        }
    )
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", "application/json"),
        ]
    )
    return Response(status, HTTPStatus(status).phrase, headers, body)


class TrackingServer:
    """A websockets server on ``ws_port`` serving ``ws_path``."""

    def __init__(
        self, config: EmulatorConfig, sessions: SessionStore, hub: Hub
    ) -> None:
        self._cfg = config
        self._sessions = sessions
        self._hub = hub
        self._server: Server | None = None
        # Session found by process_request, picked up by the handler.
        self._pending: weakref.WeakKeyDictionary[ServerConnection, Session] = (
            weakref.WeakKeyDictionary()
        )
        self.refused: Counter[str] = Counter()

    @property
    def port(self) -> int:
        """The bound port."""
        if self._server is None:
            raise RuntimeError("tracking server is not started")
        return int(next(iter(self._server.sockets)).getsockname()[1])

    async def start(self) -> None:
        """Bind and start accepting sockets."""
        self._server = await serve(
            self._handler,
            self._cfg.host,
            self._cfg.ws_port,
            process_request=self._process_request,
            compression="deflate" if self._cfg.ws_compression else None,
            ping_interval=None,  # silence is normal; clients ping if they want
            close_timeout=self._cfg.ws_close_timeout,
            max_size=_MAX_CLIENT_MESSAGE,
            server_header="sendstack-emulator",
            logger=RedactingLogger(_ws_log, self._cfg.session_query_key),
        )

    async def stop(self) -> None:
        """Close every socket and stop listening."""
        server, self._server = self._server, None
        if server is None:
            return
        # Stop accepting first (the close task runs its synchronous part on
        # the next loop turn), then let the hub close sockets its own way.
        server.close(close_connections=False)
        await asyncio.sleep(0)
        await self._hub.shutdown()
        await server.wait_closed()

    def end_sessions(self, sessions: Iterable[Session], reason: str) -> int:
        """Close (4001) the live sockets of these sessions; returns how many."""
        return self._hub.end_sessions(sessions, reason)

    def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        url = urlsplit(request.path)
        if url.path != self._cfg.ws_path:
            self.refused["not_found"] += 1
            return _reject(404, "Route not found")
        tokens = parse_qs(url.query).get(self._cfg.session_query_key)
        if not tokens:
            self.refused["missing_session"] += 1
            return _reject(401, "Session is required")
        session, reason = self._sessions.lookup(tokens[-1])
        if session is None:
            self.refused["invalid_session"] += 1
            # `reason` never contains the token.
            _log.info("refused stream upgrade: %s", reason)
            return _reject(401, "Invalid or expired session")
        if self._cfg.effective_session_policy == "refuse-409" and (
            self._hub.occupied() or len(self._pending)
        ):
            self.refused["conflict"] += 1
            _log.info("refused stream upgrade: another socket is open")
            return _reject(409, "Another connection is already open")
        self._pending[connection] = session
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        session = self._pending.pop(ws, None)
        if session is None:  # pragma: no cover - process_request always sets it
            await ws.close(1011, "internal error")
            return
        conn = self._hub.register(WsChannel(ws), session)
        try:
            # Nothing is expected from clients; reading (and discarding) keeps
            # the protocol answering pings and seeing close frames.
            async for _ in ws:
                pass
        except ConnectionClosed:
            pass
        finally:
            await self._hub.finished(conn)
