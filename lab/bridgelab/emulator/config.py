"""Everything the emulator can be told; every undocumented Sendstack detail is here.

Paths, the query key and the frame names are assumptions (see
``docs/wire-format.md``), so each one is a field rather than a constant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, get_args

from bridge.errors import ConfigError

EventNames = Literal["traccar", "sendstack"]
# How items are laid out on the wire (see shapes.py and docs/emulator-wires.md).
WireShape = Literal["traccar", "typed-object", "mixed-batch"]
# What carries them: a plain RFC 6455 websocket, or Socket.IO (Engine.IO v4).
Transport = Literal["websocket", "socketio"]
# Where a Socket.IO client puts its session: the query string or CONNECT's auth.
SessionIn = Literal["query", "auth"]
# What a second session or socket does to the first (see broadcast.py).
SessionPolicy = Literal["multi", "replace-4409", "refuse-409", "revoke-4001"]

WIRE_SHAPES: Final[tuple[str, ...]] = get_args(WireShape)
TRANSPORTS: Final[tuple[str, ...]] = get_args(Transport)
SESSION_IN: Final[tuple[str, ...]] = get_args(SessionIn)
SESSION_POLICIES: Final[tuple[str, ...]] = get_args(SessionPolicy)

# A fixed, obviously fake pair so the demo works with no setup.
DEMO_APP_ID = "demo-app"
DEMO_APP_SECRET = "DEMO0SECRET0NOT0FOR0PRODUCTION00"  # noqa: S105 - demo only


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """How the emulated Sendstack behaves; ports of 0 mean "pick a free one"."""

    host: str = "127.0.0.1"
    http_port: int = 0
    ws_port: int = 0
    admin_port: int = 0  # the admin API always binds 127.0.0.1

    app_id: str = DEMO_APP_ID
    app_secret: str = DEMO_APP_SECRET
    # Key that signs session JWTs; None draws a random one per emulator.
    jwt_signing_key: str | None = None
    session_ttl_seconds: float = 21_600.0  # [DOC] 6 hours
    # Legacy spelling of session_policy="revoke-4001" (kept for callers).
    single_session: bool = False  # True: a new session ends older ones' sockets
    # multi: any number of sessions and sockets. replace-4409: a newer socket
    # closes the older ones with 4409. refuse-409: an upgrade is refused with
    # HTTP 409 while a socket is open. revoke-4001: a new session revokes the
    # older tokens and closes their sockets with 4001 (= single_session).
    session_policy: SessionPolicy = "multi"
    strict_source_header: bool = False  # require x-sendstack-source

    # REST (paths after rest_prefix are ASSUMED, only /auth/session is [DOC]).
    rest_prefix: str = "/api/v1"
    session_path: str = "/auth/session"
    devices_path: str = "/tracker/devices"
    positions_path: str = "/tracker/positions"
    history_path: str = "/tracker/positions/history"
    history_per_device: int = 1_000
    max_body_bytes: int = 1_048_576

    # Failed-request lockout ([DOC]: 20 failures in 15 minutes, then 429).
    lockout_threshold: int = 20
    lockout_window_seconds: float = 900.0

    # Delivery Management (§14) and tracker events (§15.3): see deliveries.py.
    wallet_balance: float = 1_000_000.0  # NGN; a booking costing more gets 422
    drop_price: float = 2_750.0  # NGN per drop
    # Sendstack documents no Idempotency-Key, so by default it is not honoured.
    honour_idempotency_key: bool = False
    # The docs show no reply that echoes externalOrderId; True echoes it in
    # bookings and Fetch Deliveries (the other plausible real behaviour).
    echo_external_order_id: bool = False
    # The docs list externalOrderId among Fetch Deliveries' filters; True
    # ignores it (a server that does not know it), the unsafe answer the
    # bridge must survive without booking twice or claiming a booking.
    ignore_external_order_id_filter: bool = False
    delivery_latency_ms: float = 0.0  # added to every delivery endpoint
    request_log_limit: int = 100_000  # requests kept for inspection

    # Websocket (path and query key are ASSUMED).
    ws_path: str = "/api/v1/tracking/stream"
    session_query_key: str = "session"
    ws_compression: bool = False  # off: one encoded frame fits every socket
    ws_close_timeout: float = 2.0
    send_queue_frames: int = 256  # per-connection backlog before 1013
    slow_consumer_grace_seconds: float = 5.0  # how long a full backlog may wait

    # Other wires (docs/emulator-wires.md). The defaults are the wire above.
    wire_shape: WireShape = "traccar"
    transport: Transport = "websocket"
    socketio_path: str = "/socket.io/"  # Socket.IO serves here, on ws_port
    socketio_session_in: SessionIn = "query"  # ?<session_query_key>= or auth.token
    # Engine.IO heartbeat (python-engineio's defaults): the server pings every
    # interval (whole seconds: the OPEN packet truncates it) and drops a client
    # whose pong is later than the timeout.
    socketio_ping_interval: float = 25.0
    socketio_ping_timeout: float = 20.0
    # Replay a `sendstack-bridge capture` file to every socket instead of the
    # fleet's frames (websocket transport only).
    replay_file: str | None = None
    replay_speed: float = 1.0  # 2.0 = twice as fast; 0 = as fast as possible
    replay_loop: bool = False  # start again after the last frame

    # Fleet simulation.
    devices: int = 10
    # [DOC] at most 2 messages/s; None or 0 = load mode (as fast as possible).
    max_frames_per_second: float | None = 2.0
    report_interval_seconds: float = 1.0  # how often a moving device reports
    events_ratio: float = 0.05  # chance that an item is followed by an event
    status_ratio: float = 0.02  # chance that an item is a device status change
    frame_items: int = 10  # items per frame in load mode
    event_names: EventNames = "traccar"  # which column of the wire-format table
    seed: int = 1
    fixtures_path: str | None = None  # None = the packaged frame templates
    start_paused: bool = False

    def __post_init__(self) -> None:
        problems: list[str] = []
        for name in ("http_port", "ws_port", "admin_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65_535:
                problems.append(f"{name} must be 0..65535, got {port}")
        if not self.app_id or not self.app_secret:
            problems.append("app_id and app_secret must not be empty")
        if self.session_ttl_seconds <= 0:
            problems.append("session_ttl_seconds must be > 0")
        paths = (
            "rest_prefix",
            "ws_path",
            "session_path",
            "devices_path",
            "positions_path",
            "history_path",
            "socketio_path",
        )
        problems.extend(
            f"{name} must start with '/'"
            for name in paths
            if not getattr(self, name).startswith("/")
        )
        if not self.session_query_key:
            problems.append("session_query_key must not be empty")
        if self.devices < 1:
            problems.append("devices must be >= 1")
        if self.max_frames_per_second is not None and self.max_frames_per_second < 0:
            problems.append("max_frames_per_second must be >= 0 (0 = unthrottled)")
        if self.frame_items < 1:
            problems.append("frame_items must be >= 1")
        problems.extend(
            f"{name} must be within 0..1"
            for name in ("events_ratio", "status_ratio")
            if not 0.0 <= getattr(self, name) <= 1.0
        )
        if self.report_interval_seconds <= 0:
            problems.append("report_interval_seconds must be > 0")
        if self.lockout_threshold < 1 or self.lockout_window_seconds <= 0:
            problems.append("lockout_threshold >= 1 and lockout_window_seconds > 0")
        if self.send_queue_frames < 1 or self.slow_consumer_grace_seconds < 0:
            problems.append("send_queue_frames >= 1, slow_consumer_grace_seconds >= 0")
        if self.history_per_device < 1:
            problems.append("history_per_device must be >= 1")
        if self.event_names not in ("traccar", "sendstack"):
            problems.append("event_names must be 'traccar' or 'sendstack'")
        if not self.delivery_latency_ms >= 0 or not self.drop_price >= 0:
            problems.append("delivery_latency_ms and drop_price must be >= 0")
        if self.request_log_limit < 1:
            problems.append("request_log_limit must be >= 1")
        problems.extend(self._wire_problems())
        if problems:
            raise ConfigError(problems)

    def _wire_problems(self) -> list[str]:
        problems: list[str] = []
        choices = (
            ("wire_shape", WIRE_SHAPES),
            ("transport", TRANSPORTS),
            ("socketio_session_in", SESSION_IN),
            ("session_policy", SESSION_POLICIES),
        )
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                problems.append(f"{name} must be one of {', '.join(allowed)}")
        if self.single_session and self.session_policy not in ("multi", "revoke-4001"):
            problems.append(
                "single_session is session_policy='revoke-4001'; it cannot be"
                f" combined with session_policy={self.session_policy!r}"
            )
        # python-engineio announces int(interval) seconds: below 1 it says 0.
        if not (self.socketio_ping_interval >= 1 and self.socketio_ping_timeout > 0):
            problems.append(
                "socketio_ping_interval must be >= 1 and socketio_ping_timeout > 0"
            )
        if not self.replay_speed >= 0:
            problems.append("replay_speed must be >= 0 (0 = as fast as possible)")
        if self.replay_file is not None:
            if self.transport != "websocket":
                problems.append("replay_file needs transport='websocket'")
            if self.wire_shape != "traccar":
                problems.append(
                    "replay_file sends the capture verbatim: leave wire_shape"
                    " at 'traccar'"
                )
        return problems

    @property
    def effective_session_policy(self) -> SessionPolicy:
        """``session_policy``, with the legacy ``single_session`` folded in."""
        if self.single_session:
            return "revoke-4001"
        return self.session_policy

    @property
    def throttled(self) -> bool:
        """False in load mode (no frame-rate limit)."""
        return bool(self.max_frames_per_second)
