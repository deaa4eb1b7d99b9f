"""The composed emulator: REST + tracking websocket + admin API + fleet.

    async with Emulator(EmulatorConfig(session_ttl_seconds=3)) as emu:
        emu.base_url   # http://127.0.0.1:PORT/api/v1
        emu.ws_url     # ws://127.0.0.1:PORT/api/v1/tracking/stream (no query)
        await emu.drop()
        emu.written_seqs()

Other wires (docs/emulator-wires.md): ``wire_shape`` re-lays items out
(``shapes.py``), ``transport="socketio"`` serves python-socketio on ws_port
(``emu.socketio_url``), ``replay_file`` replays a capture to every socket,
``session_policy`` decides what a second session or socket does.

Every admin endpoint is a thin wrapper over a method here, so in-process
tests and out-of-process demos have the same controls.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import Counter
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from bridge.adapters.http_server import HttpServer
from bridgelab.emulator.admin_api import ADMIN_HOST, AdminApi
from bridgelab.emulator.broadcast import HALF_OPEN, OPEN, Hub, StreamConnection
from bridgelab.emulator.config import EmulatorConfig
from bridgelab.emulator.deliveries import DeliveryApi
from bridgelab.emulator.faults import SessionFaultMode, SessionFaults
from bridgelab.emulator.fleet import Fleet, load_fixtures
from bridgelab.emulator.ledger import ranges_to_set
from bridgelab.emulator.pump import FramePump
from bridgelab.emulator.replay import CapturedFrame, load_capture, replay
from bridgelab.emulator.rest_api import RestApi
from bridgelab.emulator.sessions import FailureLimiter, Session, SessionStore
from bridgelab.emulator.socketio_server import SocketIoServer
from bridgelab.emulator.tracking_ws import TrackingServer
from bridgelab.emulator.webhooks import (
    RetryPolicy,
    SignScheme,
    WebhookDelivery,
    WebhookOutbox,
)
from bridgelab.emulator.wire import Wire

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
_WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # noqa: S104 - only used to build URLs


class _StreamServer(Protocol):
    """What the emulator needs of its stream server, whatever the transport."""

    refused: Counter[str]

    @property
    def port(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def end_sessions(self, sessions: Iterable[Session], reason: str) -> int: ...


def _url_host(host: str) -> str:
    # A wildcard bind is reachable on loopback; that is what URLs should say.
    if host in _WILDCARD_HOSTS:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


class Emulator:
    """A local Sendstack; use as ``async with Emulator(config) as emu``."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        cfg = self.config
        key = (cfg.jwt_signing_key or secrets.token_hex(32)).encode()
        self.sessions = SessionStore(
            key,
            cfg.session_ttl_seconds,
            single_session=cfg.effective_session_policy == "revoke-4001",
        )
        self.limiter = FailureLimiter(cfg.lockout_threshold, cfg.lockout_window_seconds)
        self.fleet = Fleet(
            load_fixtures(cfg.fixtures_path),
            devices=cfg.devices,
            seed=cfg.seed,
            events_ratio=cfg.events_ratio,
            status_ratio=cfg.status_ratio,
            event_names=cfg.event_names,
            history_per_device=cfg.history_per_device,
        )
        self.wire = Wire(self.fleet, cfg.wire_shape, cfg.transport)
        # The capture to replay (read now: a bad file fails at construction).
        self.replay_frames: list[CapturedFrame] | None = (
            load_capture(cfg.replay_file) if cfg.replay_file is not None else None
        )
        self._replays: set[asyncio.Task[None]] = set()
        self.session_faults = SessionFaults()
        # Outgoing signed webhooks (see webhooks.py).
        self.webhooks = WebhookOutbox(cfg.app_secret, seed=cfg.seed)
        # Delivery endpoints: store, request log and faults (see deliveries.py).
        self.deliveries = DeliveryApi(cfg, self.limiter)
        self._hub: Hub | None = None
        self._pump: FramePump | None = None
        self._tracking: _StreamServer | None = None
        self._rest: RestApi | None = None
        self._http: HttpServer | None = None
        self._admin: HttpServer | None = None
        self._stream_faults = {"drop": 0, "half_open": 0}

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        """Start every server and the fleet."""
        if self._hub is not None:
            raise RuntimeError("emulator already started")
        cfg = self.config
        hub = self._hub = Hub(
            queue_frames=cfg.send_queue_frames,
            grace_seconds=cfg.slow_consumer_grace_seconds,
            close_timeout=cfg.ws_close_timeout,
            session_policy=cfg.effective_session_policy,
        )
        if cfg.transport == "socketio":
            self._tracking = SocketIoServer(cfg, self.sessions, hub)
        else:
            self._tracking = TrackingServer(cfg, self.sessions, hub)
        if self.replay_frames is not None:
            hub.on_open = self._start_replay
        self._rest = RestApi(
            cfg,
            self.sessions,
            self.limiter,
            self.fleet,
            self.session_faults,
            self._on_sessions_replaced,
            deliveries=self.deliveries,
        )
        self._http = HttpServer(
            self._rest, cfg.host, cfg.http_port, max_body_bytes=cfg.max_body_bytes
        )
        # Fault injection must never be reachable from the network.
        self._admin = HttpServer(AdminApi(self), ADMIN_HOST, cfg.admin_port)
        self._pump = FramePump(
            self.fleet,
            hub,
            max_frames_per_second=cfg.max_frames_per_second,
            frame_items=cfg.frame_items,
            report_interval_seconds=cfg.report_interval_seconds,
            paused=cfg.start_paused,
            wire=self.wire,
        )
        try:
            await self._tracking.start()
            await self._http.start()
            await self._admin.start()
        except BaseException:
            await self.stop()
            raise
        if self.replay_frames is None:  # a replay sends the capture, not the fleet
            self._pump.start()
        _log.info(
            "emulator ready",
            extra={"base_url": self.base_url, "ws_url": self.ws_url},
        )

    async def stop(self) -> None:
        """Stop generating, close every socket, stop every server."""
        await self.webhooks.close()
        if self._pump is not None:
            await self._pump.stop()
        for task in list(self._replays):
            task.cancel()
        if self._replays:
            await asyncio.gather(*self._replays, return_exceptions=True)
        if self._tracking is not None:
            await self._tracking.stop()
        for server in (self._http, self._admin):
            if server is not None:
                await server.stop()

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

    # -- addresses ----------------------------------------------------------------

    @property
    def http_port(self) -> int:
        """Bound REST port."""
        return self._need(self._http).port

    @property
    def ws_port(self) -> int:
        """Bound websocket port (the Socket.IO server's with transport=socketio)."""
        return self._need(self._tracking).port

    @property
    def admin_port(self) -> int:
        """Bound admin port (always on 127.0.0.1)."""
        return self._need(self._admin).port

    @property
    def base_url(self) -> str:
        """REST base URL including the prefix, e.g. ``http://127.0.0.1:P/api/v1``."""
        host = _url_host(self.config.host)
        return f"http://{host}:{self.http_port}{self.config.rest_prefix.rstrip('/')}"

    @property
    def ws_url(self) -> str:
        """Websocket URL without the session query.

        With ``transport="socketio"`` it is Engine.IO's websocket endpoint,
        ``ws://HOST:PORT/socket.io/?EIO=4&transport=websocket``.
        """
        host = _url_host(self.config.host)
        if self.config.transport == "socketio":
            path = "/" + self.config.socketio_path.strip("/") + "/"
            return f"ws://{host}:{self.ws_port}{path}?EIO=4&transport=websocket"
        return f"ws://{host}:{self.ws_port}{self.config.ws_path}"

    @property
    def socketio_url(self) -> str:
        """The Socket.IO server, e.g. ``http://127.0.0.1:P`` (transport=socketio).

        Give it to a client with ``socketio_path=config.socketio_path``; add
        ``?session=<JWT>`` when the session goes in the query.
        """
        if self.config.transport != "socketio":
            raise RuntimeError("the emulator serves a plain websocket")
        return f"http://{_url_host(self.config.host)}:{self.ws_port}"

    @property
    def admin_url(self) -> str:
        """Admin API root, e.g. ``http://127.0.0.1:P/admin``."""
        return f"http://{ADMIN_HOST}:{self.admin_port}/admin"

    @property
    def admin_sockets(self) -> list[tuple[str, int]]:
        """The admin server's bound addresses (to prove it is loopback-only)."""
        return self._need(self._admin).sockets_names

    # -- stream faults ------------------------------------------------------------

    async def drop(self, conn_id: int | None = None) -> int:
        """Cut sockets with no close frame after flushing (client sees 1006)."""
        conns = self.hub.select(conn_id)
        await asyncio.gather(*(self.hub.drop(c) for c in conns))
        self._stream_faults["drop"] += len(conns)
        return len(conns)

    async def half_open(
        self, conn_id: int | None = None, hold_seconds: float | None = None
    ) -> int:
        """Stop sending to and reading from sockets; pings go unanswered."""
        conns = [c for c in self.hub.select(conn_id) if c.state == OPEN]
        await asyncio.gather(*(self.hub.half_open(c, hold_seconds) for c in conns))
        self._stream_faults["half_open"] += len(conns)
        return len(conns)

    def send_malformed(self, conn_id: int | None = None) -> int:
        """Queue a frame that is not JSON; returns how many sockets get it."""
        self.hub.faults_requested["malformed"] += 1
        return self.hub.enqueue(self.wire.malformed(), conn_id)

    def send_unknown(self, conn_id: int | None = None) -> int:
        """Queue an unknown-shape frame and an unknown event type frame."""
        self.hub.faults_requested["unknown"] += 1
        targets = 0
        for frame in self.wire.unknown():
            targets = self.hub.enqueue(frame, conn_id)
        return targets

    def send_oversize(self, nbytes: int = 2_097_152, conn_id: int | None = None) -> int:
        """Queue a valid frame larger than ``nbytes``."""
        if nbytes < 1:
            raise ValueError("nbytes must be >= 1")
        self.hub.faults_requested["oversize"] += 1
        return self.hub.enqueue(self.wire.oversize(nbytes), conn_id)

    # -- session controls ---------------------------------------------------------

    def set_session_fault(
        self, mode: SessionFaultMode, count: int = 1, status: int | None = None
    ) -> None:
        """Fail the next ``count`` session requests ("5xx", "429", "drop", "off")."""
        self.session_faults.set(mode, count, status)

    def expire_sessions(self) -> int:
        """End every session now: tokens stop working, sockets close with 4001."""
        ended = self.sessions.expire_all()
        return self._need(self._tracking).end_sessions(ended, "session expired")

    def executions(self, idempotency_key: str) -> int:
        """How many delivery requests with this Idempotency-Key took effect."""
        return self.deliveries.executions(idempotency_key)

    # -- webhooks -------------------------------------------------------------------

    async def send_webhooks(
        self,
        url: str,
        kind: str = "new_delivery",
        count: int = 1,
        *,
        scheme: SignScheme = "webhook_id",
        tamper: bool = False,
        duplicate: bool = False,
        retry: RetryPolicy | None = None,
    ) -> list[WebhookDelivery]:
        """POST signed webhooks to ``url`` with retries (see ``webhooks.py``)."""
        return await self.webhooks.send(
            url,
            kind,
            count,
            scheme=scheme,
            tamper=tamper,
            duplicate=duplicate,
            retry=retry,
        )

    def _on_sessions_replaced(self, replaced: list[Session]) -> None:
        self._need(self._tracking).end_sessions(replaced, "session replaced")

    # -- replay ---------------------------------------------------------------------

    def _start_replay(self, conn: StreamConnection) -> None:
        frames = self.replay_frames
        if frames is None:  # pragma: no cover - only installed with a capture
            return
        task = asyncio.create_task(
            replay(
                self.hub,
                conn,
                frames,
                speed=self.config.replay_speed,
                loop=self.config.replay_loop,
            ),
            name=f"emulator-replay-{conn.id}",
        )
        self._replays.add(task)
        task.add_done_callback(self._replays.discard)

    def replayed_frames(self, conn_id: int | None = None) -> int:
        """Capture frames written (handed to ``ws.send``) to one socket or all."""
        conns = self.hub.all()
        return sum(c.replayed_frames for c in conns if conn_id in (None, c.id))

    # -- fleet controls -------------------------------------------------------------

    def pause(self) -> None:
        """Pause item generation."""
        self._need(self._pump).pause()

    def resume(self) -> None:
        """Resume item generation."""
        self._need(self._pump).resume()

    def set_rate(
        self, max_frames_per_second: float | None, frame_items: int | None = None
    ) -> None:
        """Frames per second (0/None = load mode) and items per load-mode frame."""
        if max_frames_per_second is not None and max_frames_per_second < 0:
            raise ValueError("max_frames_per_second must be >= 0")
        if frame_items is not None and frame_items < 1:
            raise ValueError("frame_items must be >= 1")
        self._need(self._pump).set_rate(max_frames_per_second, frame_items)

    @property
    def max_frames_per_second(self) -> float | None:
        """The current frame-rate cap (None = load mode)."""
        return self._need(self._pump).max_frames_per_second

    # -- observations -----------------------------------------------------------------

    @property
    def hub(self) -> Hub:
        """The stream connections (started emulators only)."""
        return self._need(self._hub)

    @property
    def refused_upgrades(self) -> int:
        """Upgrades (Socket.IO: CONNECTs) refused so far, for any reason."""
        return sum(self._need(self._tracking).refused.values())

    @property
    def refused_upgrade_reasons(self) -> dict[str, int]:
        """Refused upgrades by reason: missing_session, invalid_session,
        not_found, conflict (409: session_policy="refuse-409")."""
        return dict(self._need(self._tracking).refused)

    @property
    def generated_count(self) -> int:
        """Items generated so far."""
        return self.fleet.generated_count

    def written_ranges(self, conn_id: int | None = None) -> list[tuple[int, int]]:
        """Written seqs as ``(first, last)`` runs, for one socket or all."""
        return self.hub.written_ranges(conn_id)

    def written_seqs(self, conn_id: int | None = None) -> set[int]:
        """Every seq handed to ``ws.send`` successfully (union over sockets)."""
        return ranges_to_set(self.written_ranges(conn_id))

    def connections(self) -> list[dict[str, Any]]:
        """Every stream connection ever accepted, as JSON-ready dicts."""
        return [c.info() for c in self.hub.all()]

    async def wait_for_connections(self, count: int) -> list[dict[str, Any]]:
        """Wait until at least ``count`` sockets are open (wrap in a timeout)."""
        hub = self.hub
        while len(hub.open_connections()) < count:
            hub.opened.clear()
            await hub.opened.wait()
        return [c.info() for c in hub.open_connections()]

    async def wait_closed(self, conn_id: int) -> dict[str, Any]:
        """Wait until a stream connection is fully closed; returns its info."""
        conn = self.hub.get(conn_id)
        if conn is None:
            raise KeyError(conn_id)
        await conn.done.wait()
        return conn.info()

    def stats(self) -> dict[str, Any]:
        """Counters for tests and the admin API."""
        hub, pump = self.hub, self._need(self._pump)
        conns = hub.all()
        faults_written: dict[str, int] = {}
        for conn in conns:
            for kind, n in conn.faults_written.items():
                faults_written[kind] = faults_written.get(kind, 0) + n
        tracking = self._need(self._tracking)
        rest = self._need(self._rest)
        union = hub.written_ranges()
        return {
            "generated": self.fleet.generated_count,
            "written": {
                "total": sum(c.ledger.count for c in conns),
                "unique": sum(b - a + 1 for a, b in union),
            },
            "frames": {
                "generated": pump.frames_generated,
                "written": sum(c.frames_written for c in conns),
            },
            "connections": [c.info() for c in conns],
            "open_connections": sum(1 for c in conns if c.state == OPEN),
            "half_open_connections": sum(1 for c in conns if c.state == HALF_OPEN),
            "overflows": hub.overflows,
            "sessions": {
                "issued": self.sessions.issued_count,
                "live": self.sessions.live_count(),
                "ws_refused": dict(tracking.refused),
                "policy": self.config.effective_session_policy,
            },
            "wire": {
                "shape": self.config.wire_shape,
                "transport": self.config.transport,
            },
            "replay": {
                "file": self.config.replay_file,
                "frames": len(self.replay_frames or ()),
                "written": sum(c.replayed_frames for c in conns),
            },
            "auth": {
                "failures": self.limiter.failures_total,
                "lockouts": self.limiter.lockouts_total,
                "rejected_429": self.limiter.rejections_total,
            },
            "faults": {
                "requested": dict(hub.faults_requested),
                "frames_written": faults_written,
                "session": dict(rest.faults_served),
                "session_armed": {
                    "mode": self.session_faults.mode,
                    "remaining": self.session_faults.remaining,
                },
                **self._stream_faults,
            },
            "deliveries": self.deliveries.stats(),
            "webhooks": self.webhooks.stats(),
            "fleet": {
                "paused": pump.paused,
                "max_frames_per_second": pump.max_frames_per_second,
                "frame_items": pump.frame_items,
                "devices": self.config.devices,
            },
        }

    @staticmethod
    def _need(part: _T | None) -> _T:
        if part is None:
            raise RuntimeError("emulator is not started")
        return part
