"""Everything the emulator can be told; every undocumented Sendstack detail is here.

Paths, the query key and the frame names are assumptions (see
``docs/wire-format.md``), so each one is a field rather than a constant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bridge.errors import ConfigError

EventNames = Literal["traccar", "sendstack"]

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
    single_session: bool = False  # True: a new session ends older ones' sockets
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
        if problems:
            raise ConfigError(problems)

    @property
    def throttled(self) -> bool:
        """False in load mode (no frame-rate limit)."""
        return bool(self.max_frames_per_second)
