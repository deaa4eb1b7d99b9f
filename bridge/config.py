"""Settings: every knob of the bridge, read from ``BRIDGE_*`` variables.

Theory of operation:

* One table, `VARIABLES`, describes every variable: its name, the settings
  field it fills, the values it accepts, its default and what it means. The
  parser, `describe`, `render_check_config`, `KNOWN_VARIABLES` and the
  reference in ``config/README.md`` (`render_reference_table`) are all
  derived from it, and ``tests/test_config.py`` checks that the README still
  matches, so the docs cannot drift from the code.
* `Settings.from_env` is a pure function of a mapping. It reads every
  variable, keeps going after a bad one, and raises a single
  `bridge.errors.ConfigError` whose ``problems`` list every problem found:
  bad values, missing required values, inconsistent combinations, and
  unknown ``BRIDGE_*`` names (with a "did you mean" suggestion).
* `load_settings` is the only function here that touches the filesystem. It
  merges ``BRIDGE_CONFIG_FILE`` *under* the environment and resolves the
  ``<NAME>_FILE`` variants (Kubernetes secrets mounted as files) into plain
  values, then hands the result to `Settings.from_env`. Problems from both
  steps are reported together.
* Settings are grouped by concern into frozen, slotted, keyword-only
  dataclasses under the root `Settings`. Groups with required variables
  (``sendstack`` and ``kafka``) are loaded only when the running subcommand
  needs them (`REQUIREMENTS`) or when one of their required variables is set;
  `Settings.require` hands a loaded group to the code that needs it.
* Secrets are wrapped in `bridge.secrets.Secret` and never appear in a
  problem message, in `describe` or in `render_check_config`. Values that are
  echoed in messages go through `bridge.secrets.scrub` and have their query
  string dropped, so a session token pasted into the wrong variable is not
  printed either.

Conventions: an empty (or blank) value means "unset", so Helm charts can
template optional variables freely. Names carry their unit
(``_SECONDS``, ``_MS``, ``_BYTES``). Nothing here reads ``os.environ``; the
CLI passes it in.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Generic, Literal, TypeVar, cast, get_args
from urllib.parse import parse_qsl, urlsplit

from bridge.errors import ConfigError
from bridge.secrets import MASK, Secret, redact_url, scrub

__all__ = [
    "CONFIG_FILE_VARIABLE",
    "GROUP_NAMES",
    "KNOWN_VARIABLES",
    "REFERENCE_BEGIN",
    "REFERENCE_END",
    "REQUIREMENTS",
    "VARIABLES",
    "BufferSettings",
    "Compression",
    "HeaderStyle",
    "KafkaAcks",
    "KafkaSettings",
    "LogFormat",
    "LogLevel",
    "LogSettings",
    "OpsSettings",
    "SaslMechanism",
    "SecurityProtocol",
    "SendstackSettings",
    "SessionSettings",
    "Settings",
    "StreamSettings",
    "ValueKind",
    "Variable",
    "describe",
    "load_settings",
    "render_check_config",
    "render_reference_table",
    "replace_reference_section",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
G = TypeVar("G")

HeaderStyle = Literal["both", "snake", "camel"]
KafkaAcks = Literal["all", 1, 0]
Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "json", "console"]

CONFIG_FILE_VARIABLE: Final = "BRIDGE_CONFIG_FILE"
"""Names a ``KEY=VALUE`` file that `load_settings` merges under the env."""

_PREFIX = "BRIDGE_"
_FILE_SUFFIX = "_FILE"
# Reserved for the test suite (e.g. BRIDGE_TEST_KAFKA_BOOTSTRAP), which runs
# the bridge in an environment that also points the tests at real peers.
_TEST_PREFIX = "BRIDGE_TEST_"

# Sendstack answers 429 to every request for the rest of a 15-minute window
# once an app has made 20 failed requests in it (sendstack-api.md §5).
_LOCKOUT_FAILURES = 20
_LOCKOUT_WINDOW_SECONDS = 15 * 60
# A session lives 6 hours (sendstack-api.md §6); refreshing earlier than
# that would mean refreshing as soon as a session is obtained.
_SESSION_LIFETIME_SECONDS = 6 * 60 * 60

_ECHO_LIMIT = 60


SignatureScheme = Literal["webhook_id", "payload", "any"]
_SIGNATURE_SCHEMES: tuple[SignatureScheme, ...] = ("webhook_id", "payload", "any")
AssignMethod = Literal["POST", "GET"]
_ASSIGN_METHODS: tuple[AssignMethod, ...] = ("POST", "GET")


# --------------------------------------------------------------------------
# Settings groups


@dataclass(frozen=True, slots=True, kw_only=True)
class SendstackSettings:
    """How to reach the Sendstack API and authenticate to it."""

    base_url: str
    app_id: str
    app_secret: Secret
    send_source_header: bool
    session_header_style: HeaderStyle
    http_timeout_seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionSettings:
    """When to refresh the streaming session and how to back off on failure."""

    refresh_before_seconds: float
    refresh_jitter_seconds: float
    auth_backoff_initial_seconds: float
    auth_backoff_max_seconds: float
    auth_max_failures: int
    auth_failure_window_seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamSettings:
    """The tracking websocket: where it is, limits, keep-alive, reconnects."""

    url: str
    session_query_key: str
    codec: str
    max_frame_bytes: int
    max_message_bytes: int
    ping_interval_seconds: float
    ping_timeout_seconds: float
    stale_after_seconds: float
    reconnect_initial_seconds: float
    reconnect_max_seconds: float
    open_timeout_seconds: float
    rotation_overlap_max_seconds: float
    dedupe_capacity: int
    single_session: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class KafkaSettings:
    """The Kafka producer: brokers, delivery guarantees, security, topics."""

    bootstrap_servers: tuple[str, ...]
    client_id: str
    acks: KafkaAcks
    enable_idempotence: bool
    compression: Compression
    linger_ms: int
    max_batch_bytes: int
    request_timeout_ms: int
    retry_backoff_ms: int
    security_protocol: SecurityProtocol
    sasl_mechanism: SaslMechanism | None
    sasl_username: str | None
    sasl_password: Secret | None
    ssl_cafile: str | None
    topic_positions: str
    topic_device_status: str
    topic_events: str
    topic_dead_letter: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BufferSettings:
    """The bounded buffer between the stream and Kafka, and publish retries."""

    max_records: int
    max_bytes: int
    publish_retry_initial_seconds: float
    publish_retry_max_seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class OpsSettings:
    """The operations HTTP endpoint (/metrics, /livez, /readyz) and shutdown."""

    host: str
    port: int
    shutdown_grace_seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookSettings:
    """The webhook receiver: where it listens, what it accepts and publishes."""

    host: str
    port: int
    path: str
    signature_scheme: SignatureScheme
    max_body_bytes: int
    dedupe_capacity: int
    publish_timeout_seconds: float
    topic_deliveries: str
    topic_tracking: str
    topic_dead_letter: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandSettings:
    """The command worker: topics, concurrency, politeness towards Sendstack."""

    topic: str
    results_topic: str
    dead_letter_topic: str
    state_topic: str
    group_id: str
    concurrency: int
    rate_per_second: float
    rate_burst: int
    default_deadline_seconds: float
    request_timeout_seconds: float
    retry_initial_seconds: float
    retry_max_seconds: float
    breaker_failures: int
    breaker_reset_seconds: float
    max_message_bytes: int
    session_timeout_ms: int
    assign_method: AssignMethod
    lease_seconds: float
    settle_seconds: float
    revoke_grace_seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class LogSettings:
    """Log verbosity and rendering (see `bridge.logs.configure_logging`)."""

    level: LogLevel
    format: LogFormat


# --------------------------------------------------------------------------
# Value kinds: what a variable accepts, as text for the docs and as a parser


class _Invalid(ValueError):
    """A value was rejected; the message says why, without the name."""


@dataclass(frozen=True, slots=True)
class ValueKind(Generic[T_co]):
    """The values a variable accepts.

    Attributes:
        text: how the reference documentation describes them.
        parse: turns the raw text into the value, or raises ``ValueError``
            with a message that never contains a secret.
    """

    text: str
    parse: Callable[[str], T_co]


def _echo(raw: str) -> str:
    """Quote a rejected value for a message, safely and briefly."""
    shown = scrub(redact_url(raw))
    if len(shown) > _ECHO_LIMIT:
        shown = shown[: _ECHO_LIMIT - 3] + "..."
    return repr(shown)


def _echo_url(raw: str) -> str:
    """Quote a rejected URL without its query string, which may hold a token."""
    head, sep, _ = raw.partition("?")
    return _echo(head + ("?..." if sep else ""))


def _fmt_number(value: float) -> str:
    """Render 10.0 as ``10`` and 0.5 as ``0.5``."""
    return str(int(value)) if float(value).is_integer() else repr(value)


def _number(*, gt: float | None = None, ge: float | None = None) -> ValueKind[float]:
    """A finite number, optionally bounded below."""
    if gt is not None:
        text = f"number > {_fmt_number(gt)}"
    elif ge is not None:
        text = f"number >= {_fmt_number(ge)}"
    else:
        text = "number"

    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise _Invalid(f"expected a number, got {_echo(raw)}") from None
        if not math.isfinite(value):
            raise _Invalid(f"expected a finite number, got {_echo(raw)}")
        if gt is not None and not value > gt:
            raise _Invalid(f"must be greater than {_fmt_number(gt)}, got {raw}")
        if ge is not None and not value >= ge:
            raise _Invalid(f"must be at least {_fmt_number(ge)}, got {raw}")
        return value

    return ValueKind(text, parse)


def _integer(
    *, ge: int | None = None, le: int | None = None, why: str = ""
) -> ValueKind[int]:
    """A whole number, optionally bounded; *why* explains the bounds."""
    if ge is not None and le is not None:
        text = f"integer {ge}..{le}"
    elif ge is not None:
        text = f"integer >= {ge}"
    else:
        text = "integer"
    reason = f" ({why})" if why else ""

    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise _Invalid(f"expected a whole number, got {_echo(raw)}") from None
        if ge is not None and le is not None and not ge <= value <= le:
            raise _Invalid(f"must be between {ge} and {le}{reason}, got {value}")
        if ge is not None and value < ge:
            raise _Invalid(f"must be at least {ge}{reason}, got {value}")
        return value

    return ValueKind(text, parse)


_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def _parse_bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise _Invalid(f"expected true/false (or 1/0, yes/no), got {_echo(raw)}")


_BOOL = ValueKind("boolean", _parse_bool)


def _choice(options: tuple[T, ...]) -> ValueKind[T]:
    """One of *options*, matched case-insensitively."""
    by_text = {str(option).lower(): option for option in options}
    listed = ", ".join(str(option) for option in options)

    def parse(raw: str) -> T:
        try:
            return by_text[raw.lower()]
        except KeyError:
            raise _Invalid(f"expected one of {listed}; got {_echo(raw)}") from None

    return ValueKind("one of " + ", ".join(f"`{o}`" for o in options), parse)


def _text(pattern: str | None = None, *, what: str = "") -> ValueKind[str]:
    """Any non-empty text, or text matching *pattern* (described by *what*)."""
    if pattern is None:
        return ValueKind("string", lambda raw: raw)
    compiled = re.compile(pattern)

    def parse(raw: str) -> str:
        if compiled.fullmatch(raw) is None:
            raise _Invalid(f"expected {what}, got {_echo(raw)}")
        return raw

    return ValueKind(f"string ({what})", parse)


def _url(schemes: tuple[str, ...]) -> ValueKind[str]:
    """An absolute URL with one of *schemes* and a host."""
    listed = " or ".join(f"{scheme}://" for scheme in schemes)

    def parse(raw: str) -> str:
        try:
            parts = urlsplit(raw)
            _ = parts.port  # raises ValueError on a bad port
        except ValueError:
            raise _Invalid(f"expected a {listed} URL, got {_echo_url(raw)}") from None
        if parts.scheme.lower() not in schemes or not parts.hostname:
            raise _Invalid(f"expected a {listed} URL with a host, got {_echo_url(raw)}")
        return raw

    return ValueKind(f"{listed} URL", parse)


_HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})")


def _parse_servers(raw: str) -> tuple[str, ...]:
    servers = tuple(part.strip() for part in raw.split(","))
    bad = [
        server
        for server in servers
        if (match := _HOST_PORT.fullmatch(server)) is None
        or not 1 <= int(match.group(1)) <= 65535
    ]
    if bad:
        shown = ", ".join(_echo(server) for server in bad)
        raise _Invalid(f"expected a comma-separated list of host:port, got {shown}")
    return servers


_SERVERS = ValueKind("comma-separated `host:port` list", _parse_servers)

# Kafka's own rule (clients' Topic.validate): 1 to 249 of these characters,
# and not "." or "..".
_TOPIC_CHARS = re.compile(r"[A-Za-z0-9._\-]{1,249}")


def _parse_topic(raw: str) -> str:
    if _TOPIC_CHARS.fullmatch(raw) is None or raw in {".", ".."}:
        raise _Invalid(
            "expected a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -, "
            f"not '.' or '..'), got {_echo(raw)}"
        )
    return raw


_TOPIC = ValueKind("Kafka topic name", _parse_topic)
_SECRET = ValueKind("secret string", Secret)
_PATH = ValueKind("path", str)


# --------------------------------------------------------------------------
# The table


@dataclass(frozen=True, slots=True, kw_only=True)
class Variable(Generic[T]):
    """One ``BRIDGE_*`` variable and the settings field it fills.

    Attributes:
        name: the environment variable, e.g. ``BRIDGE_STREAM_URL``.
        group: the `Settings` field holding its group, e.g. ``"stream"``.
        field: the field of that group it fills, e.g. ``"url"``.
        kind: the values it accepts (``kind.text`` is the documented type).
        default: the value when unset; ``None`` for optional variables and
            for required ones.
        description: what it means, for ``config/README.md``.
        required: the group cannot be loaded without it.
        secret: the value is a credential: never echoed, never described.
        from_file: ``<name>_FILE`` may name a file holding the value.
    """

    name: str
    group: str
    field: str
    kind: ValueKind[T]
    default: T | None
    description: str
    required: bool = False
    secret: bool = False
    from_file: bool = False

    @property
    def type(self) -> str:
        """The documented type, e.g. ``number > 0``."""
        return self.kind.text

    @property
    def file_variable(self) -> str | None:
        """The ``<name>_FILE`` variant, if this variable has one."""
        return self.name + _FILE_SUFFIX if self.from_file else None

    @property
    def default_text(self) -> str:
        """The default as the documentation shows it."""
        if self.required:
            return "required"
        if self.default is None:
            return "unset"
        return _format_value(self.default)


def _format_value(value: object) -> str:
    """Render a settings value the way it would be written in the env."""
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _fmt_number(value)
    if isinstance(value, tuple | list):
        return ",".join(str(item) for item in value)
    return str(value)


_HEADER_STYLES: tuple[HeaderStyle, ...] = get_args(HeaderStyle)
_ACKS: tuple[KafkaAcks, ...] = get_args(KafkaAcks)
_COMPRESSIONS: tuple[Compression, ...] = get_args(Compression)
_PROTOCOLS: tuple[SecurityProtocol, ...] = get_args(SecurityProtocol)
_MECHANISMS: tuple[SaslMechanism, ...] = get_args(SaslMechanism)
_LOG_LEVELS: tuple[LogLevel, ...] = get_args(LogLevel)
_LOG_FORMATS: tuple[LogFormat, ...] = get_args(LogFormat)

_QUERY_KEY = _text(r"[A-Za-z0-9._~\-]+", what="URL-safe characters")

# sendstack ----------------------------------------------------------------
_SENDSTACK_BASE_URL: Variable[str] = Variable(
    name="BRIDGE_SENDSTACK_BASE_URL",
    group="sendstack",
    field="base_url",
    kind=_url(("http", "https")),
    default="https://api.sendstack.africa/api/v1",
    description="Base URL of the Sendstack REST API, including `/api/v1`.",
)
_SENDSTACK_APP_ID: Variable[str] = Variable(
    name="BRIDGE_SENDSTACK_APP_ID",
    group="sendstack",
    field="app_id",
    kind=_text(),
    default=None,
    description="App ID from the Sendstack (CTRL) dashboard.",
    required=True,
    from_file=True,
)
_SENDSTACK_APP_SECRET: Variable[Secret] = Variable(
    name="BRIDGE_SENDSTACK_APP_SECRET",
    group="sendstack",
    field="app_secret",
    kind=_SECRET,
    default=None,
    description="App secret from the same dashboard. Never logged or printed.",
    required=True,
    secret=True,
    from_file=True,
)
_SENDSTACK_SEND_SOURCE_HEADER: Variable[bool] = Variable(
    name="BRIDGE_SENDSTACK_SEND_SOURCE_HEADER",
    group="sendstack",
    field="send_source_header",
    kind=_BOOL,
    default=True,
    description="Send `x-sendstack-source: control.sendstack` on every request.",
)
_SENDSTACK_SESSION_HEADER_STYLE: Variable[HeaderStyle] = Variable(
    name="BRIDGE_SENDSTACK_SESSION_HEADER_STYLE",
    group="sendstack",
    field="session_header_style",
    kind=_choice(_HEADER_STYLES),
    default="both",
    description=(
        "Credential header spelling on `POST /auth/session`: `snake` "
        "(`app_id`), `camel` (`appId`) or `both` (the docs disagree)."
    ),
)
_SENDSTACK_HTTP_TIMEOUT: Variable[float] = Variable(
    name="BRIDGE_SENDSTACK_HTTP_TIMEOUT_SECONDS",
    group="sendstack",
    field="http_timeout_seconds",
    kind=_number(gt=0),
    default=10.0,
    description="Timeout of each HTTP request to Sendstack.",
)

# session ------------------------------------------------------------------
_SESSION_REFRESH_BEFORE: Variable[float] = Variable(
    name="BRIDGE_SESSION_REFRESH_BEFORE_SECONDS",
    group="session",
    field="refresh_before_seconds",
    kind=_number(ge=0),
    default=900.0,
    description="Fetch a new session this long before the current one expires.",
)
_SESSION_REFRESH_JITTER: Variable[float] = Variable(
    name="BRIDGE_SESSION_REFRESH_JITTER_SECONDS",
    group="session",
    field="refresh_jitter_seconds",
    kind=_number(ge=0),
    default=120.0,
    description="Refresh up to this much earlier still, at random.",
)
_AUTH_BACKOFF_INITIAL: Variable[float] = Variable(
    name="BRIDGE_AUTH_BACKOFF_INITIAL_SECONDS",
    group="session",
    field="auth_backoff_initial_seconds",
    kind=_number(gt=0),
    default=5.0,
    description="First wait after a failed session request; doubles each time.",
)
_AUTH_BACKOFF_MAX: Variable[float] = Variable(
    name="BRIDGE_AUTH_BACKOFF_MAX_SECONDS",
    group="session",
    field="auth_backoff_max_seconds",
    kind=_number(gt=0),
    default=300.0,
    description="Longest wait between session requests (at least the initial).",
)
_AUTH_MAX_FAILURES: Variable[int] = Variable(
    name="BRIDGE_AUTH_MAX_FAILURES",
    group="session",
    field="auth_max_failures",
    kind=_integer(
        ge=1,
        le=_LOCKOUT_FAILURES - 1,
        why="Sendstack locks the app out at 20 failures in 15 minutes",
    ),
    default=10,
    description=(
        "Failed session requests allowed per failure window before the bridge "
        "stops asking until the window passes. Sendstack locks the app out at "
        "20 failures in 15 minutes."
    ),
)
_AUTH_FAILURE_WINDOW: Variable[float] = Variable(
    name="BRIDGE_AUTH_FAILURE_WINDOW_SECONDS",
    group="session",
    field="auth_failure_window_seconds",
    kind=_number(gt=0),
    default=900.0,
    description=(
        "The window `BRIDGE_AUTH_MAX_FAILURES` counts over. Shorter than 900 "
        "only if the failures it then allows in 15 minutes stay under 20."
    ),
)

# stream -------------------------------------------------------------------
_STREAM_URL: Variable[str] = Variable(
    name="BRIDGE_STREAM_URL",
    group="stream",
    field="url",
    kind=_url(("ws", "wss")),
    default="wss://api.sendstack.africa/api/v1/tracking/stream",
    description=(
        "Tracking websocket URL, without the session: the bridge appends "
        "`?<query key>=<session>` itself."
    ),
)
_STREAM_SESSION_QUERY_KEY: Variable[str] = Variable(
    name="BRIDGE_STREAM_SESSION_QUERY_KEY",
    group="stream",
    field="session_query_key",
    kind=_QUERY_KEY,
    default="session",
    description="Query parameter that carries the session on the websocket URL.",
)
_STREAM_CODEC: Variable[str] = Variable(
    name="BRIDGE_STREAM_CODEC",
    group="stream",
    field="codec",
    kind=_text(r"[a-z0-9][a-z0-9.\-]*", what="lower-case name"),
    default="traccar-json",
    description="Wire format of stream frames (see `docs/wire-format.md`).",
)
_STREAM_MAX_FRAME_BYTES: Variable[int] = Variable(
    name="BRIDGE_STREAM_MAX_FRAME_BYTES",
    group="stream",
    field="max_frame_bytes",
    kind=_integer(ge=1),
    default=1_048_576,
    description="Larger frames are not parsed; they go to the dead-letter topic.",
)
_STREAM_MAX_MESSAGE_BYTES: Variable[int] = Variable(
    name="BRIDGE_STREAM_MAX_MESSAGE_BYTES",
    group="stream",
    field="max_message_bytes",
    kind=_integer(ge=1),
    default=8_388_608,
    description=(
        "Websocket hard limit: a larger message closes the connection (1009). "
        "At least `BRIDGE_STREAM_MAX_FRAME_BYTES`."
    ),
)
_STREAM_PING_INTERVAL: Variable[float] = Variable(
    name="BRIDGE_STREAM_PING_INTERVAL_SECONDS",
    group="stream",
    field="ping_interval_seconds",
    kind=_number(gt=0),
    default=20.0,
    description="Send a websocket ping this often.",
)
_STREAM_PING_TIMEOUT: Variable[float] = Variable(
    name="BRIDGE_STREAM_PING_TIMEOUT_SECONDS",
    group="stream",
    field="ping_timeout_seconds",
    kind=_number(gt=0),
    default=20.0,
    description="Drop the connection if a ping is not answered within this.",
)
_STREAM_STALE_AFTER: Variable[float] = Variable(
    name="BRIDGE_STREAM_STALE_AFTER_SECONDS",
    group="stream",
    field="stale_after_seconds",
    kind=_number(ge=0),
    default=600.0,
    description=(
        "Reconnect after this long without a message (silence is normal "
        "upstream, so keep it generous); `0` turns the check off."
    ),
)
_STREAM_RECONNECT_INITIAL: Variable[float] = Variable(
    name="BRIDGE_STREAM_RECONNECT_INITIAL_SECONDS",
    group="stream",
    field="reconnect_initial_seconds",
    kind=_number(gt=0),
    default=0.5,
    description="First wait before reconnecting; doubles each time, with jitter.",
)
_STREAM_RECONNECT_MAX: Variable[float] = Variable(
    name="BRIDGE_STREAM_RECONNECT_MAX_SECONDS",
    group="stream",
    field="reconnect_max_seconds",
    kind=_number(gt=0),
    default=30.0,
    description="Longest wait before reconnecting (at least the initial).",
)
_STREAM_OPEN_TIMEOUT: Variable[float] = Variable(
    name="BRIDGE_STREAM_OPEN_TIMEOUT_SECONDS",
    group="stream",
    field="open_timeout_seconds",
    kind=_number(gt=0),
    default=10.0,
    description="Timeout of the websocket opening handshake.",
)
_STREAM_ROTATION_OVERLAP_MAX: Variable[float] = Variable(
    name="BRIDGE_STREAM_ROTATION_OVERLAP_MAX_SECONDS",
    group="stream",
    field="rotation_overlap_max_seconds",
    kind=_number(gt=0),
    default=30.0,
    description=(
        "On session rotation, keep the old connection at most this long while "
        "waiting for the new one's first message."
    ),
)
_STREAM_DEDUPE_CAPACITY: Variable[int] = Variable(
    name="BRIDGE_STREAM_DEDUPE_CAPACITY",
    group="stream",
    field="dedupe_capacity",
    kind=_integer(ge=1),
    default=200_000,
    description="Item ids remembered to drop duplicates across reconnects.",
)
_STREAM_SINGLE_SESSION: Variable[bool] = Variable(
    name="BRIDGE_STREAM_SINGLE_SESSION",
    group="stream",
    field="single_session",
    kind=_BOOL,
    default=False,
    description=(
        "Set if the upstream allows only one session at a time: the old "
        "connection is closed before the new one opens (a short gap)."
    ),
)

# kafka --------------------------------------------------------------------
_KAFKA_BOOTSTRAP_SERVERS: Variable[tuple[str, ...]] = Variable(
    name="BRIDGE_KAFKA_BOOTSTRAP_SERVERS",
    group="kafka",
    field="bootstrap_servers",
    kind=_SERVERS,
    default=None,
    description="Kafka brokers to bootstrap from, e.g. `kafka-0:9092,kafka-1:9092`.",
    required=True,
)
_KAFKA_CLIENT_ID: Variable[str] = Variable(
    name="BRIDGE_KAFKA_CLIENT_ID",
    group="kafka",
    field="client_id",
    kind=_text(),
    default="sendstack-bridge",
    description="Client id reported to the brokers (quotas, broker logs).",
)
_KAFKA_ACKS: Variable[KafkaAcks] = Variable(
    name="BRIDGE_KAFKA_ACKS",
    group="kafka",
    field="acks",
    kind=_choice(_ACKS),
    default="all",
    description="Replica acknowledgements per record; `all` for no loss.",
)
_KAFKA_ENABLE_IDEMPOTENCE: Variable[bool] = Variable(
    name="BRIDGE_KAFKA_ENABLE_IDEMPOTENCE",
    group="kafka",
    field="enable_idempotence",
    kind=_BOOL,
    default=True,
    description=(
        "Idempotent producer (no duplicates on retry). Needs `acks=all`; set "
        "`false` with other acks, or for brokers without it (Tansu)."
    ),
)
_KAFKA_COMPRESSION: Variable[Compression] = Variable(
    name="BRIDGE_KAFKA_COMPRESSION",
    group="kafka",
    field="compression",
    kind=_choice(_COMPRESSIONS),
    default="none",
    description="Batch compression codec.",
)
_KAFKA_LINGER_MS: Variable[int] = Variable(
    name="BRIDGE_KAFKA_LINGER_MS",
    group="kafka",
    field="linger_ms",
    kind=_integer(ge=0),
    default=5,
    description="Wait up to this long to fill a batch.",
)
_KAFKA_MAX_BATCH_BYTES: Variable[int] = Variable(
    name="BRIDGE_KAFKA_MAX_BATCH_BYTES",
    group="kafka",
    field="max_batch_bytes",
    kind=_integer(ge=1),
    default=65_536,
    description="Largest batch per partition.",
)
_KAFKA_REQUEST_TIMEOUT_MS: Variable[int] = Variable(
    name="BRIDGE_KAFKA_REQUEST_TIMEOUT_MS",
    group="kafka",
    field="request_timeout_ms",
    kind=_integer(ge=1),
    default=30_000,
    description="Timeout of each produce request.",
)
_KAFKA_RETRY_BACKOFF_MS: Variable[int] = Variable(
    name="BRIDGE_KAFKA_RETRY_BACKOFF_MS",
    group="kafka",
    field="retry_backoff_ms",
    kind=_integer(ge=0),
    default=200,
    description="Client-side wait between produce retries.",
)
_KAFKA_SECURITY_PROTOCOL: Variable[SecurityProtocol] = Variable(
    name="BRIDGE_KAFKA_SECURITY_PROTOCOL",
    group="kafka",
    field="security_protocol",
    kind=_choice(_PROTOCOLS),
    default="PLAINTEXT",
    description="How to talk to the brokers.",
)
_KAFKA_SASL_MECHANISM: Variable[SaslMechanism | None] = Variable(
    name="BRIDGE_KAFKA_SASL_MECHANISM",
    group="kafka",
    field="sasl_mechanism",
    kind=_choice(_MECHANISMS),
    default=None,
    description=(
        "SASL mechanism (SASL protocols only); unset means `PLAIN` with "
        "them, and `check-config` shows it so."
    ),
)
_KAFKA_SASL_USERNAME: Variable[str | None] = Variable(
    name="BRIDGE_KAFKA_SASL_USERNAME",
    group="kafka",
    field="sasl_username",
    kind=_text(),
    default=None,
    description="SASL user; required with the SASL protocols, only with them.",
    from_file=True,
)
_KAFKA_SASL_PASSWORD: Variable[Secret | None] = Variable(
    name="BRIDGE_KAFKA_SASL_PASSWORD",
    group="kafka",
    field="sasl_password",
    kind=_SECRET,
    default=None,
    description="SASL password; required with the SASL protocols. Never printed.",
    secret=True,
    from_file=True,
)
_KAFKA_SSL_CAFILE: Variable[str | None] = Variable(
    name="BRIDGE_KAFKA_SSL_CAFILE",
    group="kafka",
    field="ssl_cafile",
    kind=_PATH,
    default=None,
    description="CA bundle to verify the brokers (`SSL`/`SASL_SSL` only); "
    "unset means the system store.",
)
_KAFKA_TOPIC_POSITIONS: Variable[str] = Variable(
    name="BRIDGE_KAFKA_TOPIC_POSITIONS",
    group="kafka",
    field="topic_positions",
    kind=_TOPIC,
    default="sendstack.tracking.positions",
    description="Topic for device positions.",
)
_KAFKA_TOPIC_DEVICE_STATUS: Variable[str] = Variable(
    name="BRIDGE_KAFKA_TOPIC_DEVICE_STATUS",
    group="kafka",
    field="topic_device_status",
    kind=_TOPIC,
    default="sendstack.tracking.device-status",
    description="Topic for device status updates.",
)
_KAFKA_TOPIC_EVENTS: Variable[str] = Variable(
    name="BRIDGE_KAFKA_TOPIC_EVENTS",
    group="kafka",
    field="topic_events",
    kind=_TOPIC,
    default="sendstack.tracking.events",
    description="Topic for tracker events (overspeed, geofence, ...).",
)
_KAFKA_TOPIC_DEAD_LETTER: Variable[str] = Variable(
    name="BRIDGE_KAFKA_TOPIC_DEAD_LETTER",
    group="kafka",
    field="topic_dead_letter",
    kind=_TOPIC,
    default="sendstack.tracking.dlq",
    description="Topic for frames that could not be understood, verbatim; "
    "must differ from the three data topics.",
)

# buffer -------------------------------------------------------------------
_BUFFER_MAX_RECORDS: Variable[int] = Variable(
    name="BRIDGE_BUFFER_MAX_RECORDS",
    group="buffer",
    field="max_records",
    kind=_integer(ge=1),
    default=10_000,
    description="Records held while Kafka is slow; when full, reading pauses.",
)
_BUFFER_MAX_BYTES: Variable[int] = Variable(
    name="BRIDGE_BUFFER_MAX_BYTES",
    group="buffer",
    field="max_bytes",
    kind=_integer(ge=1),
    default=16_777_216,
    description="Bytes held likewise; at least `BRIDGE_STREAM_MAX_FRAME_BYTES`.",
)
_PUBLISH_RETRY_INITIAL: Variable[float] = Variable(
    name="BRIDGE_PUBLISH_RETRY_INITIAL_SECONDS",
    group="buffer",
    field="publish_retry_initial_seconds",
    kind=_number(gt=0),
    default=0.2,
    description="First wait before re-publishing after a Kafka error; doubles.",
)
_PUBLISH_RETRY_MAX: Variable[float] = Variable(
    name="BRIDGE_PUBLISH_RETRY_MAX_SECONDS",
    group="buffer",
    field="publish_retry_max_seconds",
    kind=_number(gt=0),
    default=10.0,
    description="Longest wait before re-publishing (at least the initial).",
)

# ops ----------------------------------------------------------------------
_OPS_HOST: Variable[str] = Variable(
    name="BRIDGE_OPS_HOST",
    group="ops",
    field="host",
    kind=_text(r"\S+", what="a host name or address"),
    default="0.0.0.0",  # noqa: S104  (the ops port must be reachable by probes)
    description="Address the ops endpoint (/metrics, /livez, /readyz) binds.",
)
_OPS_PORT: Variable[int] = Variable(
    name="BRIDGE_OPS_PORT",
    group="ops",
    field="port",
    kind=_integer(ge=0, le=65535),
    default=9095,
    description="Port of the ops endpoint; `0` picks a free one.",
)
_SHUTDOWN_GRACE: Variable[float] = Variable(
    name="BRIDGE_SHUTDOWN_GRACE_SECONDS",
    group="ops",
    field="shutdown_grace_seconds",
    kind=_number(gt=0),
    default=20.0,
    description="On SIGTERM, flush and close within this, then cancel.",
)

# webhooks -----------------------------------------------------------------
_WEBHOOK_HOST: Variable[str] = Variable(
    name="BRIDGE_WEBHOOK_HOST",
    group="webhooks",
    field="host",
    kind=_text(r"\S+", what="a host name or address"),
    default="0.0.0.0",  # noqa: S104 - Sendstack must reach it
    description="Address the webhook receiver binds.",
)
_WEBHOOK_PORT: Variable[int] = Variable(
    name="BRIDGE_WEBHOOK_PORT",
    group="webhooks",
    field="port",
    kind=_integer(ge=0, le=65535),
    default=8080,
    description="Port of the webhook receiver (0: any free port).",
)
_WEBHOOK_PATH: Variable[str] = Variable(
    name="BRIDGE_WEBHOOK_PATH",
    group="webhooks",
    field="path",
    kind=_text(r"/\S*", what="a URL path starting with /"),
    default="/webhooks/sendstack",
    description="Path Sendstack posts webhooks to.",
)
_WEBHOOK_SIGNATURE_SCHEME: Variable[SignatureScheme] = Variable(
    name="BRIDGE_WEBHOOK_SIGNATURE_SCHEME",
    group="webhooks",
    field="signature_scheme",
    kind=_choice(_SIGNATURE_SCHEMES),
    default="any",
    description=(
        "Which x-sendstack-signature scheme to accept: webhook_id (current"
        " docs: HMAC of the JSON-encoded webhookId), payload (legacy: HMAC of"
        " the whole body) or any."
    ),
)
_WEBHOOK_MAX_BODY_BYTES: Variable[int] = Variable(
    name="BRIDGE_WEBHOOK_MAX_BODY_BYTES",
    group="webhooks",
    field="max_body_bytes",
    kind=_integer(ge=1),
    default=1_048_576,
    description="Larger bodies get 413 without being read.",
)
_WEBHOOK_DEDUPE_CAPACITY: Variable[int] = Variable(
    name="BRIDGE_WEBHOOK_DEDUPE_CAPACITY",
    group="webhooks",
    field="dedupe_capacity",
    kind=_integer(ge=1),
    default=100_000,
    description="Recent webhookIds remembered, to drop Sendstack's retries.",
)
_WEBHOOK_PUBLISH_TIMEOUT_SECONDS: Variable[float] = Variable(
    name="BRIDGE_WEBHOOK_PUBLISH_TIMEOUT_SECONDS",
    group="webhooks",
    field="publish_timeout_seconds",
    kind=_number(gt=0),
    default=10.0,
    description="How long a webhook waits for Kafka's ack before answering 503.",
)
_WEBHOOK_TOPIC_DELIVERIES: Variable[str] = Variable(
    name="BRIDGE_WEBHOOK_TOPIC_DELIVERIES",
    group="webhooks",
    field="topic_deliveries",
    kind=_TOPIC,
    default="sendstack.webhooks.deliveries",
    description="Topic for delivery webhooks (order.*).",
)
_WEBHOOK_TOPIC_TRACKING: Variable[str] = Variable(
    name="BRIDGE_WEBHOOK_TOPIC_TRACKING",
    group="webhooks",
    field="topic_tracking",
    kind=_TOPIC,
    default="sendstack.webhooks.tracking-events",
    description="Topic for live-tracking event webhooks.",
)
_WEBHOOK_TOPIC_DEAD_LETTER: Variable[str] = Variable(
    name="BRIDGE_WEBHOOK_TOPIC_DEAD_LETTER",
    group="webhooks",
    field="topic_dead_letter",
    kind=_TOPIC,
    default="sendstack.webhooks.dlq",
    description="Topic for webhooks that were verified but not understood.",
)

# commands -----------------------------------------------------------------
_COMMANDS_TOPIC: Variable[str] = Variable(
    name="BRIDGE_COMMANDS_TOPIC",
    group="commands",
    field="topic",
    kind=_TOPIC,
    default="sendstack.commands",
    description="Topic the command worker consumes.",
)
_COMMANDS_RESULTS_TOPIC: Variable[str] = Variable(
    name="BRIDGE_COMMANDS_RESULTS_TOPIC",
    group="commands",
    field="results_topic",
    kind=_TOPIC,
    default="sendstack.commands.results",
    description="Topic with one result per command, keyed by command id.",
)
_COMMANDS_DEAD_LETTER_TOPIC: Variable[str] = Variable(
    name="BRIDGE_COMMANDS_DEAD_LETTER_TOPIC",
    group="commands",
    field="dead_letter_topic",
    kind=_TOPIC,
    default="sendstack.commands.dlq",
    description="Topic for rejected and failed commands.",
)
_COMMANDS_STATE_TOPIC: Variable[str] = Variable(
    name="BRIDGE_COMMANDS_STATE_TOPIC",
    group="commands",
    field="state_topic",
    kind=_TOPIC,
    default="sendstack.commands.state",
    description="Compacted topic recording in-flight and done command ids.",
)
_COMMANDS_GROUP_ID: Variable[str] = Variable(
    name="BRIDGE_COMMANDS_GROUP_ID",
    group="commands",
    field="group_id",
    kind=_text(r"\S+", what="a consumer group id"),
    default="sendstack-bridge-commands",
    description="Kafka consumer group of the command workers.",
)
_COMMANDS_CONCURRENCY: Variable[int] = Variable(
    name="BRIDGE_COMMANDS_CONCURRENCY",
    group="commands",
    field="concurrency",
    kind=_integer(ge=1, le=1024),
    default=8,
    description="Commands executed at once (per worker); one delivery at a time.",
)
_COMMANDS_RATE_PER_SECOND: Variable[float] = Variable(
    name="BRIDGE_COMMANDS_RATE_PER_SECOND",
    group="commands",
    field="rate_per_second",
    kind=_number(gt=0),
    default=10.0,
    description="Sendstack API calls per second, shared by every command.",
)
_COMMANDS_RATE_BURST: Variable[int] = Variable(
    name="BRIDGE_COMMANDS_RATE_BURST",
    group="commands",
    field="rate_burst",
    kind=_integer(ge=1),
    default=20,
    description="Calls that may go at once after a quiet spell.",
)
_COMMANDS_DEFAULT_DEADLINE_SECONDS: Variable[float] = Variable(
    name="BRIDGE_COMMANDS_DEFAULT_DEADLINE_SECONDS",
    group="commands",
    field="default_deadline_seconds",
    kind=_number(gt=0),
    default=120.0,
    description="Deadline of a command that names none.",
)
_COMMANDS_REQUEST_TIMEOUT_SECONDS: Variable[float] = Variable(
    name="BRIDGE_COMMANDS_REQUEST_TIMEOUT_SECONDS",
    group="commands",
    field="request_timeout_seconds",
    kind=_number(gt=0),
    default=15.0,
    description="Timeout of one Sendstack API call.",
)
_COMMANDS_RETRY_INITIAL_SECONDS: Variable[float] = Variable(
    name="BRIDGE_COMMANDS_RETRY_INITIAL_SECONDS",
    group="commands",
    field="retry_initial_seconds",
    kind=_number(gt=0),
    default=0.5,
    description="First retry delay after a 5xx, a timeout or a bare 429.",
)
_COMMANDS_RETRY_MAX_SECONDS: Variable[float] = Variable(
    name="BRIDGE_COMMANDS_RETRY_MAX_SECONDS",
    group="commands",
    field="retry_max_seconds",
    kind=_number(gt=0),
    default=30.0,
    description="Longest delay between retries.",
)
_COMMANDS_BREAKER_FAILURES: Variable[int] = Variable(
    name="BRIDGE_COMMANDS_BREAKER_FAILURES",
    group="commands",
    field="breaker_failures",
    kind=_integer(ge=1),
    default=5,
    description="Consecutive 5xx/timeouts that open the circuit breaker.",
)
_COMMANDS_BREAKER_RESET_SECONDS: Variable[float] = Variable(
    name="BRIDGE_COMMANDS_BREAKER_RESET_SECONDS",
    group="commands",
    field="breaker_reset_seconds",
    kind=_number(gt=0),
    default=30.0,
    description="How long the breaker stays open before one trial call.",
)
_COMMANDS_MAX_MESSAGE_BYTES: Variable[int] = Variable(
    name="BRIDGE_COMMANDS_MAX_MESSAGE_BYTES",
    group="commands",
    field="max_message_bytes",
    kind=_integer(ge=1),
    default=1_048_576,
    description="Larger command messages are rejected.",
)
_COMMANDS_SESSION_TIMEOUT_MS: Variable[int] = Variable(
    name="BRIDGE_COMMANDS_SESSION_TIMEOUT_MS",
    group="commands",
    field="session_timeout_ms",
    kind=_integer(ge=1000),
    default=10_000,
    description=(
        "Consumer-group session timeout: how soon a dead worker's partitions"
        " move to another worker."
    ),
)
_COMMANDS_ASSIGN_METHOD: Variable[AssignMethod] = Variable(
    name="BRIDGE_COMMANDS_ASSIGN_METHOD",
    group="commands",
    field="assign_method",
    kind=_choice(_ASSIGN_METHODS),
    default="POST",
    description="HTTP method of Assign Drop (the docs show both GET and POST).",
)

_COMMANDS_LEASE_SECONDS: Variable[float] = Variable(
    name="BRIDGE_COMMANDS_LEASE_SECONDS",
    group="commands",
    field="lease_seconds",
    kind=_number(gt=0),
    default=40.0,
    description=(
        "Partition lease: a worker calls Sendstack for a partition only while"
        " it holds one (renewed every third of it); a crashed worker's"
        " partitions wait this long. At least twice the request timeout."
    ),
)
_COMMANDS_SETTLE_SECONDS: Variable[float] = Variable(
    name="BRIDGE_COMMANDS_SETTLE_SECONDS",
    group="commands",
    field="settle_seconds",
    kind=_number(gt=0),
    default=60.0,
    description=(
        "How long after sending Sendstack may still complete a booking: an"
        ' empty reconcile read proves "not booked" only after this. Longer'
        " is safer; shorter resolves a lost reply sooner."
    ),
)
_COMMANDS_REVOKE_GRACE_SECONDS: Variable[float] = Variable(
    name="BRIDGE_COMMANDS_REVOKE_GRACE_SECONDS",
    group="commands",
    field="revoke_grace_seconds",
    kind=_number(gt=0),
    default=5.0,
    description=(
        "How long a worker giving a partition away waits for its calls in"
        " flight (commands not yet started are released at once)."
    ),
)

# log ----------------------------------------------------------------------
_LOG_LEVEL: Variable[LogLevel] = Variable(
    name="BRIDGE_LOG_LEVEL",
    group="log",
    field="level",
    kind=_choice(_LOG_LEVELS),
    default="info",
    description="Least severe level logged (libraries included).",
)
_LOG_FORMAT: Variable[LogFormat] = Variable(
    name="BRIDGE_LOG_FORMAT",
    group="log",
    field="format",
    kind=_choice(_LOG_FORMATS),
    default="auto",
    description="`json` lines, `console` for people, or `auto`: console on a TTY.",
)

VARIABLES: tuple[Variable[Any], ...] = (
    _SENDSTACK_BASE_URL,
    _SENDSTACK_APP_ID,
    _SENDSTACK_APP_SECRET,
    _SENDSTACK_SEND_SOURCE_HEADER,
    _SENDSTACK_SESSION_HEADER_STYLE,
    _SENDSTACK_HTTP_TIMEOUT,
    _SESSION_REFRESH_BEFORE,
    _SESSION_REFRESH_JITTER,
    _AUTH_BACKOFF_INITIAL,
    _AUTH_BACKOFF_MAX,
    _AUTH_MAX_FAILURES,
    _AUTH_FAILURE_WINDOW,
    _STREAM_URL,
    _STREAM_SESSION_QUERY_KEY,
    _STREAM_CODEC,
    _STREAM_MAX_FRAME_BYTES,
    _STREAM_MAX_MESSAGE_BYTES,
    _STREAM_PING_INTERVAL,
    _STREAM_PING_TIMEOUT,
    _STREAM_STALE_AFTER,
    _STREAM_RECONNECT_INITIAL,
    _STREAM_RECONNECT_MAX,
    _STREAM_OPEN_TIMEOUT,
    _STREAM_ROTATION_OVERLAP_MAX,
    _STREAM_DEDUPE_CAPACITY,
    _STREAM_SINGLE_SESSION,
    _KAFKA_BOOTSTRAP_SERVERS,
    _KAFKA_CLIENT_ID,
    _KAFKA_ACKS,
    _KAFKA_ENABLE_IDEMPOTENCE,
    _KAFKA_COMPRESSION,
    _KAFKA_LINGER_MS,
    _KAFKA_MAX_BATCH_BYTES,
    _KAFKA_REQUEST_TIMEOUT_MS,
    _KAFKA_RETRY_BACKOFF_MS,
    _KAFKA_SECURITY_PROTOCOL,
    _KAFKA_SASL_MECHANISM,
    _KAFKA_SASL_USERNAME,
    _KAFKA_SASL_PASSWORD,
    _KAFKA_SSL_CAFILE,
    _KAFKA_TOPIC_POSITIONS,
    _KAFKA_TOPIC_DEVICE_STATUS,
    _KAFKA_TOPIC_EVENTS,
    _KAFKA_TOPIC_DEAD_LETTER,
    _BUFFER_MAX_RECORDS,
    _BUFFER_MAX_BYTES,
    _PUBLISH_RETRY_INITIAL,
    _PUBLISH_RETRY_MAX,
    _OPS_HOST,
    _OPS_PORT,
    _SHUTDOWN_GRACE,
    _LOG_LEVEL,
    _LOG_FORMAT,
    _WEBHOOK_HOST,
    _WEBHOOK_PORT,
    _WEBHOOK_PATH,
    _WEBHOOK_SIGNATURE_SCHEME,
    _WEBHOOK_MAX_BODY_BYTES,
    _WEBHOOK_DEDUPE_CAPACITY,
    _WEBHOOK_PUBLISH_TIMEOUT_SECONDS,
    _WEBHOOK_TOPIC_DELIVERIES,
    _WEBHOOK_TOPIC_TRACKING,
    _WEBHOOK_TOPIC_DEAD_LETTER,
    _COMMANDS_TOPIC,
    _COMMANDS_RESULTS_TOPIC,
    _COMMANDS_DEAD_LETTER_TOPIC,
    _COMMANDS_STATE_TOPIC,
    _COMMANDS_GROUP_ID,
    _COMMANDS_CONCURRENCY,
    _COMMANDS_RATE_PER_SECOND,
    _COMMANDS_RATE_BURST,
    _COMMANDS_DEFAULT_DEADLINE_SECONDS,
    _COMMANDS_REQUEST_TIMEOUT_SECONDS,
    _COMMANDS_RETRY_INITIAL_SECONDS,
    _COMMANDS_RETRY_MAX_SECONDS,
    _COMMANDS_BREAKER_FAILURES,
    _COMMANDS_BREAKER_RESET_SECONDS,
    _COMMANDS_MAX_MESSAGE_BYTES,
    _COMMANDS_SESSION_TIMEOUT_MS,
    _COMMANDS_ASSIGN_METHOD,
    _COMMANDS_LEASE_SECONDS,
    _COMMANDS_SETTLE_SECONDS,
    _COMMANDS_REVOKE_GRACE_SECONDS,
)
"""Every settings variable, in documentation order."""

_BY_NAME: Mapping[str, Variable[Any]] = MappingProxyType(
    {variable.name: variable for variable in VARIABLES}
)
_FILE_VARIANTS: Mapping[str, Variable[Any]] = MappingProxyType(
    {v.name + _FILE_SUFFIX: v for v in VARIABLES if v.from_file}
)

KNOWN_VARIABLES: frozenset[str] = frozenset(
    {CONFIG_FILE_VARIABLE, *_BY_NAME, *_FILE_VARIANTS}
)
"""Every ``BRIDGE_*`` name the bridge reads: settings, ``_FILE`` variants and
``BRIDGE_CONFIG_FILE``. Deployment manifests must set no other."""

_GROUP_TYPES: Mapping[str, type] = MappingProxyType(
    {
        "sendstack": SendstackSettings,
        "session": SessionSettings,
        "stream": StreamSettings,
        "kafka": KafkaSettings,
        "buffer": BufferSettings,
        "ops": OpsSettings,
        "log": LogSettings,
        "webhooks": WebhookSettings,
        "commands": CommandSettings,
    }
)

GROUP_NAMES: tuple[str, ...] = tuple(_GROUP_TYPES)
"""The `Settings` fields, in order; also the names `require` accepts."""

REQUIREMENTS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "stream": frozenset({"sendstack", "kafka"}),
        "webhooks": frozenset({"sendstack", "kafka"}),
        "commands": frozenset({"sendstack", "kafka"}),
    }
)
"""The groups each subcommand needs; pass one as ``require=``."""

# Groups that have required variables, so may be absent from Settings.
_OPTIONAL_GROUPS = frozenset(v.group for v in VARIABLES if v.required)


# --------------------------------------------------------------------------
# Settings


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Every setting of the bridge, grouped by concern.

    ``sendstack`` and ``kafka`` are ``None`` when the subcommand did not
    require them and none of their required variables was set; use
    `Settings.require` to get one with its type narrowed.
    """

    sendstack: SendstackSettings | None
    session: SessionSettings
    stream: StreamSettings
    kafka: KafkaSettings | None
    buffer: BufferSettings
    ops: OpsSettings
    log: LogSettings
    webhooks: WebhookSettings
    commands: CommandSettings

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        *,
        require: frozenset[str] = REQUIREMENTS["stream"],
    ) -> Settings:
        """Build settings from ``BRIDGE_*`` variables; pure, reads no files.

        Args:
            env: the variables, e.g. ``os.environ``; names without the
                ``BRIDGE_`` prefix are ignored, and so are empty values.
            require: the groups the caller needs (see `REQUIREMENTS`); their
                required variables must be set.

        Returns:
            The validated settings.

        Raises:
            ConfigError: listing every problem found, one per entry. Secret
                values never appear in it.
            ValueError: if *require* names a group that does not exist (a bug
                in the caller, not in the configuration).
        """
        unknown_groups = require - set(GROUP_NAMES)
        if unknown_groups:
            raise ValueError(f"unknown settings groups: {sorted(unknown_groups)}")
        reader = _Reader(env, require)
        settings = cls(
            sendstack=_read_sendstack(reader),
            session=_read_session(reader),
            stream=_read_stream(reader),
            kafka=_read_kafka(reader),
            buffer=_read_buffer(reader),
            ops=_read_ops(reader),
            log=_read_log(reader),
            webhooks=_read_webhooks(reader),
            commands=_read_commands(reader),
        )
        _check_together(reader, settings)
        reader.check_names()
        if reader.problems:
            raise ConfigError(reader.problems)
        return settings

    def require(self, kind: type[G]) -> G:
        """Return the loaded group of type *kind*.

        Example: ``settings.require(KafkaSettings).bootstrap_servers``.

        Raises:
            ConfigError: if that group was not loaded (the subcommand did not
                list it in ``require=`` and its variables were not set).
        """
        for group in fields(self):
            value = getattr(self, group.name)
            if isinstance(value, kind):
                return value
        names = [
            v.name for v in VARIABLES if v.required and _GROUP_TYPES[v.group] is kind
        ]
        raise ConfigError([f"{name}: required, not set" for name in names])


class _Reader:
    """Reads variables from one mapping and collects every problem."""

    def __init__(self, env: Mapping[str, str], require: frozenset[str]) -> None:
        self._env = {
            name: value
            for name, value in env.items()
            if name.startswith(_PREFIX) and value.strip()
        }
        self.problems: list[str] = []
        self._failed: set[str] = set()
        # A group is loaded when required, or when any of its required
        # variables is set (then it must be complete).
        self.loaded = frozenset(
            group
            for group in GROUP_NAMES
            if group not in _OPTIONAL_GROUPS
            or group in require
            or any(
                v.name in self._env
                for v in VARIABLES
                if v.group == group and v.required
            )
        )

    def __call__(self, variable: Variable[T]) -> T:
        """Return the variable's value, its default, or record a problem."""
        raw = self._env.get(variable.name)
        if raw is None:
            if variable.required and variable.group in self.loaded:
                self._failed.add(variable.name)
                self.problems.append(_missing(variable))
            return cast(T, variable.default)
        try:
            return variable.kind.parse(raw if variable.secret else raw.strip())
        except ValueError as exc:
            self._failed.add(variable.name)
            reason = "invalid value (not shown)" if variable.secret else str(exc)
            self.problems.append(f"{variable.name}: {reason}")
            return cast(T, variable.default)

    def ok(self, *variables: Variable[Any]) -> bool:
        """Whether all *variables* were read without a problem."""
        return not any(v.name in self._failed for v in variables)

    def is_set(self, variable: Variable[Any]) -> bool:
        """Whether *variable* has a (non-empty) value."""
        return variable.name in self._env

    def add(self, variable: Variable[Any], message: str) -> None:
        """Record a problem about *variable*."""
        self.problems.append(f"{variable.name}: {message}")

    def check_names(self) -> None:
        """Record unknown names, and indirections only `load_settings` does."""
        for name in sorted(self._env):
            if name in _FILE_VARIANTS or name == CONFIG_FILE_VARIABLE:
                self.problems.append(
                    f"{name}: files are read by load_settings(), "
                    "not by Settings.from_env()"
                )
            elif name not in KNOWN_VARIABLES and not name.startswith(_TEST_PREFIX):
                self.problems.append(_unknown(name))


def _missing(variable: Variable[Any]) -> str:
    also = f" (or {variable.file_variable})" if variable.from_file else ""
    return f"{variable.name}: required, not set{also}"


def _unknown(name: str) -> str:
    guesses = difflib.get_close_matches(name, sorted(KNOWN_VARIABLES), n=1)
    hint = f"; did you mean {guesses[0]}?" if guesses else ""
    return f"{name}: unknown variable{hint}"


def _read_sendstack(r: _Reader) -> SendstackSettings | None:
    group = SendstackSettings(
        base_url=r(_SENDSTACK_BASE_URL),
        app_id=r(_SENDSTACK_APP_ID),
        app_secret=r(_SENDSTACK_APP_SECRET),
        send_source_header=r(_SENDSTACK_SEND_SOURCE_HEADER),
        session_header_style=r(_SENDSTACK_SESSION_HEADER_STYLE),
        http_timeout_seconds=r(_SENDSTACK_HTTP_TIMEOUT),
    )
    return group if "sendstack" in r.loaded else None


def _read_session(r: _Reader) -> SessionSettings:
    group = SessionSettings(
        refresh_before_seconds=r(_SESSION_REFRESH_BEFORE),
        refresh_jitter_seconds=r(_SESSION_REFRESH_JITTER),
        auth_backoff_initial_seconds=r(_AUTH_BACKOFF_INITIAL),
        auth_backoff_max_seconds=r(_AUTH_BACKOFF_MAX),
        auth_max_failures=r(_AUTH_MAX_FAILURES),
        auth_failure_window_seconds=r(_AUTH_FAILURE_WINDOW),
    )
    _check_at_least(
        r,
        _AUTH_BACKOFF_MAX,
        group.auth_backoff_max_seconds,
        _AUTH_BACKOFF_INITIAL,
        group.auth_backoff_initial_seconds,
    )
    if r.ok(_SESSION_REFRESH_BEFORE, _SESSION_REFRESH_JITTER):
        early = group.refresh_before_seconds + group.refresh_jitter_seconds
        if early >= _SESSION_LIFETIME_SECONDS:
            r.add(
                _SESSION_REFRESH_BEFORE,
                f"plus {_SESSION_REFRESH_JITTER.name} must be under "
                f"{_SESSION_LIFETIME_SECONDS} (a session lives 6 hours), "
                f"got {_fmt_number(early)}",
            )
    if r.ok(_AUTH_MAX_FAILURES, _AUTH_FAILURE_WINDOW):
        # Failures the bridge may make in Sendstack's 15-minute window: one
        # budget per (possibly partial) window of ours that overlaps it.
        windows = math.ceil(_LOCKOUT_WINDOW_SECONDS / group.auth_failure_window_seconds)
        worst = group.auth_max_failures * windows
        if worst >= _LOCKOUT_FAILURES:
            r.add(
                _AUTH_FAILURE_WINDOW,
                f"{group.auth_max_failures} failures per "
                f"{_fmt_number(group.auth_failure_window_seconds)} s allow up to "
                f"{worst} in 15 minutes; Sendstack locks the app out at 20",
            )
    return group


def _read_stream(r: _Reader) -> StreamSettings:
    group = StreamSettings(
        url=r(_STREAM_URL),
        session_query_key=r(_STREAM_SESSION_QUERY_KEY),
        codec=r(_STREAM_CODEC),
        max_frame_bytes=r(_STREAM_MAX_FRAME_BYTES),
        max_message_bytes=r(_STREAM_MAX_MESSAGE_BYTES),
        ping_interval_seconds=r(_STREAM_PING_INTERVAL),
        ping_timeout_seconds=r(_STREAM_PING_TIMEOUT),
        stale_after_seconds=r(_STREAM_STALE_AFTER),
        reconnect_initial_seconds=r(_STREAM_RECONNECT_INITIAL),
        reconnect_max_seconds=r(_STREAM_RECONNECT_MAX),
        open_timeout_seconds=r(_STREAM_OPEN_TIMEOUT),
        rotation_overlap_max_seconds=r(_STREAM_ROTATION_OVERLAP_MAX),
        dedupe_capacity=r(_STREAM_DEDUPE_CAPACITY),
        single_session=r(_STREAM_SINGLE_SESSION),
    )
    if r.ok(_STREAM_URL, _STREAM_SESSION_QUERY_KEY):
        query = urlsplit(group.url).query
        key = group.session_query_key.lower()
        keys = {name.lower() for name, _ in parse_qsl(query, keep_blank_values=True)}
        if key in keys:
            # Never echo the URL: its query holds what looks like a token.
            r.add(
                _STREAM_URL,
                f"must not contain the {group.session_query_key!r} query "
                "parameter (the bridge adds the session itself; value not shown)",
            )
    _check_at_least(
        r,
        _STREAM_MAX_MESSAGE_BYTES,
        group.max_message_bytes,
        _STREAM_MAX_FRAME_BYTES,
        group.max_frame_bytes,
    )
    _check_at_least(
        r,
        _STREAM_RECONNECT_MAX,
        group.reconnect_max_seconds,
        _STREAM_RECONNECT_INITIAL,
        group.reconnect_initial_seconds,
    )
    return group


_SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
_TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})


def _read_kafka(r: _Reader) -> KafkaSettings | None:
    group = KafkaSettings(
        bootstrap_servers=r(_KAFKA_BOOTSTRAP_SERVERS),
        client_id=r(_KAFKA_CLIENT_ID),
        acks=r(_KAFKA_ACKS),
        enable_idempotence=r(_KAFKA_ENABLE_IDEMPOTENCE),
        compression=r(_KAFKA_COMPRESSION),
        linger_ms=r(_KAFKA_LINGER_MS),
        max_batch_bytes=r(_KAFKA_MAX_BATCH_BYTES),
        request_timeout_ms=r(_KAFKA_REQUEST_TIMEOUT_MS),
        retry_backoff_ms=r(_KAFKA_RETRY_BACKOFF_MS),
        security_protocol=r(_KAFKA_SECURITY_PROTOCOL),
        sasl_mechanism=r(_KAFKA_SASL_MECHANISM),
        sasl_username=r(_KAFKA_SASL_USERNAME),
        sasl_password=r(_KAFKA_SASL_PASSWORD),
        ssl_cafile=r(_KAFKA_SSL_CAFILE),
        topic_positions=r(_KAFKA_TOPIC_POSITIONS),
        topic_device_status=r(_KAFKA_TOPIC_DEVICE_STATUS),
        topic_events=r(_KAFKA_TOPIC_EVENTS),
        topic_dead_letter=r(_KAFKA_TOPIC_DEAD_LETTER),
    )
    if "kafka" not in r.loaded:
        return None
    if (
        r.ok(_KAFKA_ACKS, _KAFKA_ENABLE_IDEMPOTENCE)
        and group.enable_idempotence
        and group.acks != "all"
    ):
        r.add(
            _KAFKA_ENABLE_IDEMPOTENCE,
            f"must be false when {_KAFKA_ACKS.name} is {group.acks} "
            "(the idempotent producer needs acks=all)",
        )
    if r.ok(_KAFKA_SECURITY_PROTOCOL):
        _check_kafka_security(r, group.security_protocol)
        if group.security_protocol in _SASL_PROTOCOLS and group.sasl_mechanism is None:
            # Resolve the documented default here, so that "SASL" always
            # comes with a mechanism and consumers need no rule of their own.
            group = replace(group, sasl_mechanism="PLAIN")
    for variable in _DATA_TOPICS:
        topic = getattr(group, variable.field)
        if (
            r.ok(variable, _KAFKA_TOPIC_DEAD_LETTER)
            and topic == group.topic_dead_letter
        ):
            r.add(
                _KAFKA_TOPIC_DEAD_LETTER,
                f"must differ from {variable.name} (both are {topic!r})",
            )
    return group


_DATA_TOPICS: tuple[Variable[str], ...] = (
    _KAFKA_TOPIC_POSITIONS,
    _KAFKA_TOPIC_DEVICE_STATUS,
    _KAFKA_TOPIC_EVENTS,
)
_SASL_VARIABLES: tuple[Variable[Any], ...] = (
    _KAFKA_SASL_MECHANISM,
    _KAFKA_SASL_USERNAME,
    _KAFKA_SASL_PASSWORD,
)


def _check_kafka_security(r: _Reader, protocol: SecurityProtocol) -> None:
    """SASL credentials go with the SASL protocols, a CA file with TLS."""
    by = _KAFKA_SECURITY_PROTOCOL.name
    if protocol in _SASL_PROTOCOLS:
        for variable in (_KAFKA_SASL_USERNAME, _KAFKA_SASL_PASSWORD):
            if not r.is_set(variable):
                r.add(
                    variable,
                    f"required when {by} is {protocol} "
                    "(username and password go together)",
                )
    else:
        for variable in _SASL_VARIABLES:
            if r.is_set(variable):
                r.add(
                    variable,
                    f"only used when {by} is SASL_PLAINTEXT or SASL_SSL, "
                    f"not {protocol}",
                )
    if protocol not in _TLS_PROTOCOLS and r.is_set(_KAFKA_SSL_CAFILE):
        r.add(
            _KAFKA_SSL_CAFILE,
            f"only used when {by} is SSL or SASL_SSL, not {protocol}",
        )


def _read_buffer(r: _Reader) -> BufferSettings:
    group = BufferSettings(
        max_records=r(_BUFFER_MAX_RECORDS),
        max_bytes=r(_BUFFER_MAX_BYTES),
        publish_retry_initial_seconds=r(_PUBLISH_RETRY_INITIAL),
        publish_retry_max_seconds=r(_PUBLISH_RETRY_MAX),
    )
    _check_at_least(
        r,
        _PUBLISH_RETRY_MAX,
        group.publish_retry_max_seconds,
        _PUBLISH_RETRY_INITIAL,
        group.publish_retry_initial_seconds,
    )
    return group


def _read_ops(r: _Reader) -> OpsSettings:
    return OpsSettings(
        host=r(_OPS_HOST),
        port=r(_OPS_PORT),
        shutdown_grace_seconds=r(_SHUTDOWN_GRACE),
    )


def _read_log(r: _Reader) -> LogSettings:
    return LogSettings(level=r(_LOG_LEVEL), format=r(_LOG_FORMAT))


def _read_webhooks(r: _Reader) -> WebhookSettings:
    return WebhookSettings(
        host=r(_WEBHOOK_HOST),
        port=r(_WEBHOOK_PORT),
        path=r(_WEBHOOK_PATH),
        signature_scheme=r(_WEBHOOK_SIGNATURE_SCHEME),
        max_body_bytes=r(_WEBHOOK_MAX_BODY_BYTES),
        dedupe_capacity=r(_WEBHOOK_DEDUPE_CAPACITY),
        publish_timeout_seconds=r(_WEBHOOK_PUBLISH_TIMEOUT_SECONDS),
        topic_deliveries=r(_WEBHOOK_TOPIC_DELIVERIES),
        topic_tracking=r(_WEBHOOK_TOPIC_TRACKING),
        topic_dead_letter=r(_WEBHOOK_TOPIC_DEAD_LETTER),
    )


def _read_commands(r: _Reader) -> CommandSettings:
    group = CommandSettings(
        topic=r(_COMMANDS_TOPIC),
        results_topic=r(_COMMANDS_RESULTS_TOPIC),
        dead_letter_topic=r(_COMMANDS_DEAD_LETTER_TOPIC),
        state_topic=r(_COMMANDS_STATE_TOPIC),
        group_id=r(_COMMANDS_GROUP_ID),
        concurrency=r(_COMMANDS_CONCURRENCY),
        rate_per_second=r(_COMMANDS_RATE_PER_SECOND),
        rate_burst=r(_COMMANDS_RATE_BURST),
        default_deadline_seconds=r(_COMMANDS_DEFAULT_DEADLINE_SECONDS),
        request_timeout_seconds=r(_COMMANDS_REQUEST_TIMEOUT_SECONDS),
        retry_initial_seconds=r(_COMMANDS_RETRY_INITIAL_SECONDS),
        retry_max_seconds=r(_COMMANDS_RETRY_MAX_SECONDS),
        breaker_failures=r(_COMMANDS_BREAKER_FAILURES),
        breaker_reset_seconds=r(_COMMANDS_BREAKER_RESET_SECONDS),
        max_message_bytes=r(_COMMANDS_MAX_MESSAGE_BYTES),
        session_timeout_ms=r(_COMMANDS_SESSION_TIMEOUT_MS),
        assign_method=r(_COMMANDS_ASSIGN_METHOD),
        lease_seconds=r(_COMMANDS_LEASE_SECONDS),
        settle_seconds=r(_COMMANDS_SETTLE_SECONDS),
        revoke_grace_seconds=r(_COMMANDS_REVOKE_GRACE_SECONDS),
    )
    # A call starts only if it ends inside the lease, and the lease is
    # renewed every third of it: two request timeouts leave room for both.
    _check_at_least(
        r,
        _COMMANDS_LEASE_SECONDS,
        group.lease_seconds,
        _COMMANDS_REQUEST_TIMEOUT_SECONDS,
        2 * group.request_timeout_seconds,
    )
    # An empty read proves nothing while the request may still be running.
    _check_at_least(
        r,
        _COMMANDS_SETTLE_SECONDS,
        group.settle_seconds,
        _COMMANDS_REQUEST_TIMEOUT_SECONDS,
        group.request_timeout_seconds,
    )
    return group


def _check_at_least(
    r: _Reader,
    upper: Variable[Any],
    upper_value: float,
    lower: Variable[Any],
    lower_value: float,
) -> None:
    """Record a problem unless *upper* >= *lower* (both read cleanly)."""
    if r.ok(upper, lower) and upper_value < lower_value:
        r.add(
            upper,
            f"must be at least {lower.name} ({_fmt_number(lower_value)}), "
            f"got {_fmt_number(upper_value)}",
        )


def _check_together(r: _Reader, settings: Settings) -> None:
    """Checks that span groups."""
    # A frame that cannot be parsed is dead-lettered whole, so the buffer
    # must be able to hold the largest frame or the stream would stall.
    _check_at_least(
        r,
        _BUFFER_MAX_BYTES,
        settings.buffer.max_bytes,
        _STREAM_MAX_FRAME_BYTES,
        settings.stream.max_frame_bytes,
    )


# --------------------------------------------------------------------------
# Loading from files


def load_settings(
    environ: Mapping[str, str],
    *,
    require: frozenset[str] = REQUIREMENTS["stream"],
) -> Settings:
    """Build settings from the environment, a config file and secret files.

    If ``BRIDGE_CONFIG_FILE`` is set, that file's ``KEY=VALUE`` lines are
    merged *under* *environ*: a variable set (non-empty) in the environment
    wins, and so does its ``_FILE`` variant. Then each ``<NAME>_FILE`` is
    replaced by ``<NAME>`` with the file's content, minus trailing newlines.

    File format: one ``KEY=VALUE`` per line, optionally prefixed with
    ``export``; blank lines and lines starting with ``#`` are skipped; a value
    wrapped in matching single or double quotes loses them. Nothing else is
    interpreted: no escapes, no inline comments, no ``${...}``.

    Args:
        environ: the process environment (the CLI passes ``os.environ``).
        require: as for `Settings.from_env`.

    Returns:
        The validated settings.

    Raises:
        ConfigError: listing every problem, from the files and from
            `Settings.from_env` together.
    """
    problems: list[str] = []
    env = {
        name: value
        for name, value in environ.items()
        if name.startswith(_PREFIX) and value.strip()
    }
    config_file = env.pop(CONFIG_FILE_VARIABLE, None)
    if config_file is not None:
        from_file = _read_config_file(config_file, problems)
        for name, value in from_file.items():
            if not _overridden(name, env):
                env[name] = value
    env, unreadable = _resolve_files(env, problems)
    try:
        settings = Settings.from_env(env, require=require)
    except ConfigError as error:
        # A variable whose file could not be read is already reported; do not
        # also call it missing.
        rest = [
            problem
            for problem in error.problems
            if not any(problem.startswith(f"{name}: required") for name in unreadable)
        ]
        raise ConfigError(problems + rest) from None
    if problems:
        raise ConfigError(problems)
    return settings


def _base_name(name: str) -> str:
    """``X_FILE`` -> ``X`` for file variants; other names unchanged."""
    return _FILE_VARIANTS[name].name if name in _FILE_VARIANTS else name


def _overridden(name: str, env: Mapping[str, str]) -> bool:
    """Whether the environment sets *name*'s variable, directly or by file."""
    base = _base_name(name)
    return base in env or base + _FILE_SUFFIX in env


def _read_config_file(path: str, problems: list[str]) -> dict[str, str]:
    where = f"{CONFIG_FILE_VARIABLE} {path!r}"
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # tolerate a BOM
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{where}: cannot read it ({_reason(exc)})")
        return {}
    values: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("export "):
            stripped = stripped.removeprefix("export ").lstrip()
        name, sep, value = stripped.partition("=")
        name = name.strip()
        # Never quote the line itself: it may hold a secret.
        if not sep or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) is None:
            problems.append(f"{where} line {number}: expected KEY=VALUE")
            continue
        if not name.startswith(_PREFIX):
            problems.append(f"{where} line {number}: {name} is not a BRIDGE_* name")
            continue
        if name == CONFIG_FILE_VARIABLE:
            problems.append(
                f"{where} line {number}: {name} cannot be set in the config file"
            )
            continue
        if name in first_line:
            problems.append(
                f"{where} line {number}: {name} is already set on line "
                f"{first_line[name]}"
            )
            continue
        first_line[name] = number
        value = _unquote(value.strip())
        if value.strip():
            values[name] = value
    return values


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _resolve_files(
    env: dict[str, str], problems: list[str]
) -> tuple[dict[str, str], set[str]]:
    """Replace each ``X_FILE`` in *env* by ``X`` holding the file's content.

    Returns:
        The resolved variables, and the names ``X`` whose file failed.
    """
    resolved = {
        name: value for name, value in env.items() if name not in _FILE_VARIANTS
    }
    unreadable: set[str] = set()
    for file_name, variable in _FILE_VARIANTS.items():
        path = env.get(file_name)
        if path is None:
            continue
        if variable.name in env:
            problems.append(f"{file_name}: set either it or {variable.name}, not both")
            continue
        try:
            content = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{file_name}: cannot read {path!r} ({_reason(exc)})")
            unreadable.add(variable.name)
            continue
        if not content.strip():
            problems.append(f"{file_name}: {path!r} is empty")
            unreadable.add(variable.name)
            continue
        resolved[variable.name] = content
    return resolved, unreadable


def _reason(exc: OSError | UnicodeDecodeError) -> str:
    """A short reason that never quotes file content."""
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    return exc.strerror or type(exc).__name__


# --------------------------------------------------------------------------
# Showing settings


def describe(settings: Settings) -> dict[str, object]:
    """Flatten *settings* to ``{variable name: value}``, secrets masked.

    Groups that were not loaded are left out. Secrets become ``"***"`` (and
    stay ``None`` when unset), URLs lose any embedded password or session,
    and tuples become lists, so the result serialises to JSON as is.
    """
    described: dict[str, object] = {}
    for variable in VARIABLES:
        group = getattr(settings, variable.group)
        if group is None:
            continue
        value = getattr(group, variable.field)
        if isinstance(value, Secret):
            value = MASK
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, str) and "://" in value:
            value = redact_url(value)
        described[variable.name] = value
    return described


def render_check_config(settings: Settings) -> str:
    """Render *settings* for ``sendstack-bridge check-config``.

    One section per group, one aligned ``NAME  value`` line per variable,
    values that differ from the default marked with ``*``. Secrets show as
    ``***``; groups that were not loaded say so.
    """
    width = max(len(variable.name) for variable in VARIABLES)
    described = describe(settings)
    lines = ["sendstack-bridge configuration (* = not the default; secrets masked)"]
    for group in GROUP_NAMES:
        lines.append("")
        if getattr(settings, group) is None:
            lines.append(f"[{group}] not loaded: not required by this command")
            continue
        lines.append(f"[{group}]")
        for variable in VARIABLES:
            if variable.group != group:
                continue
            value = getattr(getattr(settings, group), variable.field)
            shown = described[variable.name]
            text = "(unset)" if shown is None else _format_value(shown)
            marker = " " if value == variable.default else "*"
            lines.append(f"  {marker} {variable.name:<{width}}  {text}")
    return "\n".join(lines) + "\n"


def render_reference_table() -> str:
    """Render the variable reference of ``config/README.md`` from `VARIABLES`.

    ``tests/test_config.py`` checks that the README holds exactly this text
    between its ``BEGIN``/``END`` markers.
    """
    out = [
        "### Loading",
        "",
        "| Variable | Type | Default | Meaning |",
        "|---|---|---|---|",
        f"| `{CONFIG_FILE_VARIABLE}` | path | unset | A `KEY=VALUE` file merged "
        "under the environment (the environment wins). |",
    ]
    out.extend(
        f"| `{variable.file_variable}` | path | unset | File holding "
        f"`{variable.name}` (trailing newline removed); set one or the other. |"
        for variable in VARIABLES
        if variable.from_file
    )
    for group in GROUP_NAMES:
        out += [
            "",
            f"### `{group}`: {_first_line(_GROUP_TYPES[group].__doc__)}",
            "",
            "| Variable | Type | Default | Meaning |",
            "|---|---|---|---|",
        ]
        out.extend(
            _table_row(variable) for variable in VARIABLES if variable.group == group
        )
    return "\n".join(out) + "\n"


REFERENCE_BEGIN: Final = "<!-- BEGIN GENERATED by render_reference_table() -->"
REFERENCE_END: Final = "<!-- END GENERATED -->"


def replace_reference_section(readme: str) -> str:
    """Return *readme* with the text between the reference markers regenerated.

    Raises:
        ValueError: if the markers are missing or out of order.
    """
    begin = readme.find(REFERENCE_BEGIN)
    end = readme.find(REFERENCE_END)
    if begin < 0 or end < begin:
        raise ValueError(f"expected {REFERENCE_BEGIN!r} ... {REFERENCE_END!r}")
    head = readme[: begin + len(REFERENCE_BEGIN)]
    return f"{head}\n{render_reference_table()}{readme[end:]}"


def _first_line(doc: str | None) -> str:
    lines = (doc or "").strip().splitlines()
    return lines[0].rstrip(".") if lines else ""


def _table_row(variable: Variable[Any]) -> str:
    kind = _cell(variable.type)
    meaning = _cell(variable.description)
    return f"| `{variable.name}` | {kind} | {_default_cell(variable)} | {meaning} |"


def _default_cell(variable: Variable[Any]) -> str:
    text = variable.default_text
    if variable.required or variable.default is None:
        return f"*{text}*"
    return f"`{_cell(text)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
