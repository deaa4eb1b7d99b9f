"""Settings: every knob of the bridge, read from ``BRIDGE_*`` variables.

Theory of operation:

* The settings groups *are* the table. Each field of a group dataclass
  (`SendstackSettings`, `KafkaSettings`, ...) is declared with `setting`,
  which records its variable name, the values it accepts, its default (none
  means required) and what it means. `VARIABLES` is derived from them, in the
  order of the `Settings` fields and then of each group's fields; so are the
  parser, `describe`, `render_check_config`, `KNOWN_VARIABLES` and the
  reference in ``config/README.md`` (`render_reference_table`), and
  ``tests/test_config.py`` checks that the README still matches, so the docs
  cannot drift from the code. Adding a variable is adding one field
  (``docs/adding-a-config-variable.md``).
* Rules that involve more than one value are small functions per group,
  ``_check_<group>``, registered in `_CHECKS`; they run right after their
  group is read. ``_check_across_groups`` sees the whole `Settings`.
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

import dataclasses
import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields, replace
from pathlib import Path
from types import MappingProxyType, NoneType
from typing import (
    Any,
    Final,
    Generic,
    Literal,
    TypeVar,
    cast,
    dataclass_transform,
    get_args,
    get_type_hints,
    overload,
)
from urllib.parse import parse_qsl, urlsplit

from bridge.errors import ConfigError
from bridge.secrets import MASK, Secret, redact_url, scrub

__all__ = [
    "ACCOUNT_NAME",
    "CONFIG_FILE_VARIABLE",
    "GROUP_NAMES",
    "KNOWN_VARIABLES",
    "REFERENCE_BEGIN",
    "REFERENCE_END",
    "REQUIREMENTS",
    "TOPIC_NAME",
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
    "url_kind",
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
Durability = Literal["interval", "fsync"]
WhenFull = Literal["block", "drop_oldest"]
SignatureScheme = Literal["webhook_id", "payload", "any"]
AssignMethod = Literal["POST", "GET"]

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
        secret: the values are credentials: taken exactly as given (never
            stripped), and never echoed in a message or shown.
    """

    text: str
    parse: Callable[[str], T_co]
    secret: bool = False


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
#: What a Kafka topic name may be, for files read beside the variables.
TOPIC_NAME: Final = _TOPIC
#: What an account's name may be: it is a record key, a label and a path.
ACCOUNT_NAME: Final = _text(r"[A-Za-z0-9._-]{1,64}", what="an account name")


def url_kind(schemes: tuple[str, ...]) -> ValueKind[str]:
    """An absolute URL with one of *schemes* (for files read beside the
    variables); its parse never echoes a query string."""
    return _url(schemes)


_SECRET = ValueKind("secret string", Secret, secret=True)
_PATH = ValueKind("path", str)
StreamCodec = Literal["mapping", "traccar-json"]
_STREAM_CODECS: tuple[StreamCodec, ...] = get_args(StreamCodec)

_HEADER_STYLES: tuple[HeaderStyle, ...] = get_args(HeaderStyle)
_ACKS: tuple[KafkaAcks, ...] = get_args(KafkaAcks)
_COMPRESSIONS: tuple[Compression, ...] = get_args(Compression)
_PROTOCOLS: tuple[SecurityProtocol, ...] = get_args(SecurityProtocol)
_MECHANISMS: tuple[SaslMechanism, ...] = get_args(SaslMechanism)
_LOG_LEVELS: tuple[LogLevel, ...] = get_args(LogLevel)
_LOG_FORMATS: tuple[LogFormat, ...] = get_args(LogFormat)
_DURABILITIES: tuple[Durability, ...] = get_args(Durability)
_WHEN_FULL: tuple[WhenFull, ...] = get_args(WhenFull)
_SIGNATURE_SCHEMES: tuple[SignatureScheme, ...] = get_args(SignatureScheme)
_ASSIGN_METHODS: tuple[AssignMethod, ...] = get_args(AssignMethod)

_QUERY_KEY = _text(r"[A-Za-z0-9._~\-]+", what="URL-safe characters")


# --------------------------------------------------------------------------
# The table: each settings field declares its variable with `setting`

_SETTING: Final = "bridge.config.setting"
"""The key under which `setting` leaves its `_Setting` in a field's metadata."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Setting:
    """What `setting` records about a field; `Variable` adds where it lives."""

    name: str
    kind: ValueKind[Any]
    description: str
    from_file: bool


@overload
def setting(
    *, name: str, kind: ValueKind[T], description: str, from_file: bool = False
) -> T: ...
@overload
def setting(
    *,
    name: str,
    kind: ValueKind[T],
    default: T,
    description: str,
    from_file: bool = False,
) -> T: ...
def setting(
    *,
    name: str,
    kind: ValueKind[Any],
    default: Any = MISSING,
    description: str,
    from_file: bool = False,
) -> Any:
    """Declare the settings field that variable *name* fills.

    Use it as the default of a field of a `settings_group` class; it returns
    a `dataclasses.Field`, typed as the field's value so that mypy checks
    *kind* and *default* against the field's annotation.

    Args:
        name: the environment variable, e.g. ``BRIDGE_STREAM_URL``.
        kind: the values it accepts (``_SECRET`` for credentials).
        default: the value when unset; ``None`` for an optional variable.
            Leave it out and the variable is required: its group cannot be
            loaded without it.
        description: what it means, one or two sentences, for
            ``config/README.md``.
        from_file: ``<name>_FILE`` may name a file holding the value (every
            credential has one).
    """
    spec = _Setting(name=name, kind=kind, description=description, from_file=from_file)
    return dataclasses.field(default=default, metadata={_SETTING: spec})


@dataclass_transform(
    frozen_default=True, kw_only_default=True, field_specifiers=(setting,)
)
def settings_group(cls: type[G]) -> type[G]:
    """Make *cls* a settings group: a frozen, slotted, keyword-only dataclass.

    Every field must be declared with `setting`. The group becomes a
    `Settings` field to be read.
    """
    return dataclass(frozen=True, slots=True, kw_only=True)(cls)


@dataclass(frozen=True, slots=True, kw_only=True)
class Variable(Generic[T]):
    """One ``BRIDGE_*`` variable and the settings field it fills.

    Derived from the `setting` declarations; see `VARIABLES`.

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


# --------------------------------------------------------------------------
# Settings groups: one field per variable, in documentation order


@settings_group
class SendstackSettings:
    """How to reach the Sendstack API and authenticate to it."""

    base_url: str = setting(
        name="BRIDGE_SENDSTACK_BASE_URL",
        kind=_url(("http", "https")),
        default="https://api.sendstack.africa/api/v1",
        description="Base URL of the Sendstack REST API, including `/api/v1`.",
    )
    app_id: str = setting(
        name="BRIDGE_SENDSTACK_APP_ID",
        kind=_text(),
        description="App ID from the Sendstack (CTRL) dashboard.",
        from_file=True,
    )
    app_secret: Secret = setting(
        name="BRIDGE_SENDSTACK_APP_SECRET",
        kind=_SECRET,
        description="App secret from the same dashboard. Never logged or printed.",
        from_file=True,
    )
    send_source_header: bool = setting(
        name="BRIDGE_SENDSTACK_SEND_SOURCE_HEADER",
        kind=_BOOL,
        default=True,
        description="Send `x-sendstack-source: control.sendstack` on every request.",
    )
    session_header_style: HeaderStyle = setting(
        name="BRIDGE_SENDSTACK_SESSION_HEADER_STYLE",
        kind=_choice(_HEADER_STYLES),
        default="both",
        description=(
            "Credential header spelling on `POST /auth/session`: `snake` "
            "(`app_id`), `camel` (`appId`) or `both` (the docs disagree)."
        ),
    )
    http_timeout_seconds: float = setting(
        name="BRIDGE_SENDSTACK_HTTP_TIMEOUT_SECONDS",
        kind=_number(gt=0),
        default=10.0,
        description="Timeout of each HTTP request to Sendstack.",
    )


@settings_group
class SessionSettings:
    """When to refresh the streaming session and how to back off on failure."""

    refresh_before_seconds: float = setting(
        name="BRIDGE_SESSION_REFRESH_BEFORE_SECONDS",
        kind=_number(ge=0),
        default=900.0,
        description="Fetch a new session this long before the current one expires.",
    )
    refresh_jitter_seconds: float = setting(
        name="BRIDGE_SESSION_REFRESH_JITTER_SECONDS",
        kind=_number(ge=0),
        default=120.0,
        description="Refresh up to this much earlier still, at random.",
    )
    auth_backoff_initial_seconds: float = setting(
        name="BRIDGE_AUTH_BACKOFF_INITIAL_SECONDS",
        kind=_number(gt=0),
        default=5.0,
        description="First wait after a failed session request; doubles each time.",
    )
    auth_backoff_max_seconds: float = setting(
        name="BRIDGE_AUTH_BACKOFF_MAX_SECONDS",
        kind=_number(gt=0),
        default=300.0,
        description="Longest wait between session requests (at least the initial).",
    )
    auth_max_failures: int = setting(
        name="BRIDGE_AUTH_MAX_FAILURES",
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
    auth_failure_window_seconds: float = setting(
        name="BRIDGE_AUTH_FAILURE_WINDOW_SECONDS",
        kind=_number(gt=0),
        default=900.0,
        description=(
            "The window `BRIDGE_AUTH_MAX_FAILURES` counts over. Shorter than 900 "
            "only if the failures it then allows in 15 minutes stay under 20."
        ),
    )


@settings_group
class StreamSettings:
    """The tracking websocket: where it is, limits, keep-alive, reconnects."""

    url: str = setting(
        name="BRIDGE_STREAM_URL",
        kind=_url(("ws", "wss")),
        default="wss://api.sendstack.africa/api/v1/tracking/stream",
        description=(
            "Tracking websocket URL, without the session: the bridge appends "
            "`?<query key>=<session>` itself."
        ),
    )
    session_query_key: str = setting(
        name="BRIDGE_STREAM_SESSION_QUERY_KEY",
        kind=_QUERY_KEY,
        default="session",
        description="Query parameter that carries the session on the websocket URL.",
    )
    transport: Literal["websocket", "socketio"] = setting(
        name="BRIDGE_STREAM_TRANSPORT",
        kind=_choice(("websocket", "socketio")),
        default="websocket",
        description=(
            "How the stream is spoken: `websocket` (plain frames) or `socketio` "
            "(Socket.IO v5 over Engine.IO v4, websocket transport; the URL is "
            "then the Engine.IO endpoint, e.g. `wss://host/socket.io/`)."
        ),
    )
    socketio_namespace: str = setting(
        name="BRIDGE_STREAM_SOCKETIO_NAMESPACE",
        kind=_text(r"/[^\s,?#]*", what="a namespace starting with /"),
        default="/",
        description="Socket.IO namespace to connect (`socketio` transport only).",
    )
    session_in: Literal["query", "auth"] = setting(
        name="BRIDGE_STREAM_SESSION_IN",
        kind=_choice(("query", "auth")),
        default="query",
        description=(
            "Where the session goes: `query` (`?<query key>=<session>` on the URL) "
            "or `auth` (the Socket.IO connect payload; `socketio` transport only)."
        ),
    )
    socketio_auth_key: str = setting(
        name="BRIDGE_STREAM_SOCKETIO_AUTH_KEY",
        kind=_text(),
        default="token",
        description=(
            'Key of the session in the Socket.IO connect payload (`{"<key>": '
            "<session>}`) when `BRIDGE_STREAM_SESSION_IN` is `auth`."
        ),
    )
    codec: StreamCodec = setting(
        name="BRIDGE_STREAM_CODEC",
        kind=_choice(_STREAM_CODECS),
        default="mapping",
        description=(
            "How frames become records: `mapping` (a mapping file, see "
            "`docs/mapping.md`) or `traccar-json` (the hand-written codec the "
            "shipped mapping reproduces, kept as the reference)."
        ),
    )
    mapping_file: str | None = setting(
        name="BRIDGE_STREAM_MAPPING_FILE",
        kind=_PATH,
        default=None,
        description=(
            "Mapping file (YAML or JSON) for `BRIDGE_STREAM_CODEC=mapping`; unset "
            "means the shipped `traccar-json` mapping. Checked at start-up and by "
            "`check-config`, every problem listed with its line."
        ),
    )
    max_frame_bytes: int = setting(
        name="BRIDGE_STREAM_MAX_FRAME_BYTES",
        kind=_integer(ge=1),
        default=1_048_576,
        description="Larger frames are not parsed; they go to the dead-letter topic.",
    )
    max_message_bytes: int = setting(
        name="BRIDGE_STREAM_MAX_MESSAGE_BYTES",
        kind=_integer(ge=1),
        default=8_388_608,
        description=(
            "Websocket hard limit: a larger message closes the connection (1009). "
            "At least `BRIDGE_STREAM_MAX_FRAME_BYTES`."
        ),
    )
    ping_interval_seconds: float = setting(
        name="BRIDGE_STREAM_PING_INTERVAL_SECONDS",
        kind=_number(gt=0),
        default=20.0,
        description="Send a websocket ping this often.",
    )
    ping_timeout_seconds: float = setting(
        name="BRIDGE_STREAM_PING_TIMEOUT_SECONDS",
        kind=_number(gt=0),
        default=20.0,
        description="Drop the connection if a ping is not answered within this.",
    )
    stale_after_seconds: float = setting(
        name="BRIDGE_STREAM_STALE_AFTER_SECONDS",
        kind=_number(ge=0),
        default=600.0,
        description=(
            "Reconnect after this long without a message (silence is normal "
            "upstream, so keep it generous); `0` turns the check off."
        ),
    )
    reconnect_initial_seconds: float = setting(
        name="BRIDGE_STREAM_RECONNECT_INITIAL_SECONDS",
        kind=_number(gt=0),
        default=0.5,
        description="First wait before reconnecting; doubles each time, with jitter.",
    )
    reconnect_max_seconds: float = setting(
        name="BRIDGE_STREAM_RECONNECT_MAX_SECONDS",
        kind=_number(gt=0),
        default=30.0,
        description="Longest wait before reconnecting (at least the initial).",
    )
    open_timeout_seconds: float = setting(
        name="BRIDGE_STREAM_OPEN_TIMEOUT_SECONDS",
        kind=_number(gt=0),
        default=10.0,
        description="Timeout of the websocket opening handshake.",
    )
    rotation_overlap_max_seconds: float = setting(
        name="BRIDGE_STREAM_ROTATION_OVERLAP_MAX_SECONDS",
        kind=_number(gt=0),
        default=30.0,
        description=(
            "On session rotation, keep the old connection at most this long while "
            "waiting for the new one's first message."
        ),
    )
    dedupe_capacity: int = setting(
        name="BRIDGE_STREAM_DEDUPE_CAPACITY",
        kind=_integer(ge=1),
        default=200_000,
        description="Item ids remembered to drop duplicates across reconnects.",
    )
    single_session: bool = setting(
        name="BRIDGE_STREAM_SINGLE_SESSION",
        kind=_BOOL,
        default=False,
        description=(
            "Set if the upstream allows only one session at a time: the old "
            "connection is closed before the new one opens (a short gap). "
            "Unset, the bridge falls back to that by itself when the upstream "
            "refuses or replaces a second socket (`bridge_stream_session_policy`). "
            "With `BRIDGE_HA_ENABLED` the standby is then cold: it connects only "
            "when it takes over (a gap of about the HA session timeout)."
        ),
    )
    accounts_dir: str | None = setting(
        name="BRIDGE_STREAM_ACCOUNTS_DIR",
        kind=_PATH,
        default=None,
        description=(
            "More Sendstack accounts to stream, beside the one of "
            "`BRIDGE_SENDSTACK_APP_ID` (named by `BRIDGE_HA_ACCOUNT`): one "
            "subdirectory per account, named for it, holding `app_id` and "
            "`app_secret` files (a mounted Secret); optional `base_url`, "
            "`stream_url` and `topic_positions`/`topic_device_status`/"
            "`topic_events`/`topic_dead_letter` files override the shared ones. "
            "Every record then carries its account in `ce_source` and the "
            "`bridge_account` header."
        ),
    )


@settings_group
class KafkaSettings:
    """The Kafka producer: brokers, delivery guarantees, security, topics."""

    bootstrap_servers: tuple[str, ...] = setting(
        name="BRIDGE_KAFKA_BOOTSTRAP_SERVERS",
        kind=_SERVERS,
        description=(
            "Kafka brokers to bootstrap from, e.g. `kafka-0:9092,kafka-1:9092`."
        ),
    )
    client_id: str = setting(
        name="BRIDGE_KAFKA_CLIENT_ID",
        kind=_text(),
        default="sendstack-bridge",
        description="Client id reported to the brokers (quotas, broker logs).",
    )
    acks: KafkaAcks = setting(
        name="BRIDGE_KAFKA_ACKS",
        kind=_choice(_ACKS),
        default="all",
        description="Replica acknowledgements per record; `all` for no loss.",
    )
    enable_idempotence: bool = setting(
        name="BRIDGE_KAFKA_ENABLE_IDEMPOTENCE",
        kind=_BOOL,
        default=True,
        description=(
            "Idempotent producer (no duplicates on retry). Needs `acks=all`; set "
            "`false` with other acks, or for brokers without it (Tansu)."
        ),
    )
    compression: Compression = setting(
        name="BRIDGE_KAFKA_COMPRESSION",
        kind=_choice(_COMPRESSIONS),
        default="none",
        description="Batch compression codec.",
    )
    linger_ms: int = setting(
        name="BRIDGE_KAFKA_LINGER_MS",
        kind=_integer(ge=0),
        default=5,
        description="Wait up to this long to fill a batch.",
    )
    max_batch_bytes: int = setting(
        name="BRIDGE_KAFKA_MAX_BATCH_BYTES",
        kind=_integer(ge=1),
        default=65_536,
        description="Largest batch per partition.",
    )
    request_timeout_ms: int = setting(
        name="BRIDGE_KAFKA_REQUEST_TIMEOUT_MS",
        kind=_integer(ge=1),
        default=30_000,
        description="Timeout of each produce request.",
    )
    retry_backoff_ms: int = setting(
        name="BRIDGE_KAFKA_RETRY_BACKOFF_MS",
        kind=_integer(ge=0),
        default=200,
        description="Client-side wait between produce retries.",
    )
    security_protocol: SecurityProtocol = setting(
        name="BRIDGE_KAFKA_SECURITY_PROTOCOL",
        kind=_choice(_PROTOCOLS),
        default="PLAINTEXT",
        description="How to talk to the brokers.",
    )
    sasl_mechanism: SaslMechanism | None = setting(
        name="BRIDGE_KAFKA_SASL_MECHANISM",
        kind=_choice(_MECHANISMS),
        default=None,
        description=(
            "SASL mechanism (SASL protocols only); unset means `PLAIN` with "
            "them, and `check-config` shows it so."
        ),
    )
    sasl_username: str | None = setting(
        name="BRIDGE_KAFKA_SASL_USERNAME",
        kind=_text(),
        default=None,
        description="SASL user; required with the SASL protocols, only with them.",
        from_file=True,
    )
    sasl_password: Secret | None = setting(
        name="BRIDGE_KAFKA_SASL_PASSWORD",
        kind=_SECRET,
        default=None,
        description="SASL password; required with the SASL protocols. Never printed.",
        from_file=True,
    )
    ssl_cafile: str | None = setting(
        name="BRIDGE_KAFKA_SSL_CAFILE",
        kind=_PATH,
        default=None,
        description=(
            "CA bundle to verify the brokers (`SSL`/`SASL_SSL` only); "
            "unset means the system store."
        ),
    )
    topic_positions: str = setting(
        name="BRIDGE_KAFKA_TOPIC_POSITIONS",
        kind=_TOPIC,
        default="sendstack.tracking.positions",
        description="Topic for device positions.",
    )
    topic_device_status: str = setting(
        name="BRIDGE_KAFKA_TOPIC_DEVICE_STATUS",
        kind=_TOPIC,
        default="sendstack.tracking.device-status",
        description="Topic for device status updates.",
    )
    topic_events: str = setting(
        name="BRIDGE_KAFKA_TOPIC_EVENTS",
        kind=_TOPIC,
        default="sendstack.tracking.events",
        description="Topic for tracker events (overspeed, geofence, ...).",
    )
    topic_dead_letter: str = setting(
        name="BRIDGE_KAFKA_TOPIC_DEAD_LETTER",
        kind=_TOPIC,
        default="sendstack.tracking.dlq",
        description=(
            "Topic for frames that could not be understood, verbatim; "
            "must differ from the three data topics."
        ),
    )


@settings_group
class BufferSettings:
    """The bounded buffer between the stream and Kafka, and publish retries."""

    max_records: int = setting(
        name="BRIDGE_BUFFER_MAX_RECORDS",
        kind=_integer(ge=1),
        default=10_000,
        description="Records held while Kafka is slow; when full, reading pauses.",
    )
    max_bytes: int = setting(
        name="BRIDGE_BUFFER_MAX_BYTES",
        kind=_integer(ge=1),
        default=16_777_216,
        description="Bytes held likewise; at least `BRIDGE_STREAM_MAX_FRAME_BYTES`.",
    )
    publish_retry_initial_seconds: float = setting(
        name="BRIDGE_PUBLISH_RETRY_INITIAL_SECONDS",
        kind=_number(gt=0),
        default=0.2,
        description="First wait before re-publishing after a Kafka error; doubles.",
    )
    publish_retry_max_seconds: float = setting(
        name="BRIDGE_PUBLISH_RETRY_MAX_SECONDS",
        kind=_number(gt=0),
        default=10.0,
        description="Longest wait before re-publishing (at least the initial).",
    )


@settings_group
class JournalSettings:
    """The stream's durable local journal between the socket and Kafka."""

    enabled: bool = setting(
        name="BRIDGE_JOURNAL_ENABLED",
        kind=_BOOL,
        default=True,
        description=(
            "Journal every record on local disk before Kafka, so the stream keeps "
            "reading while Kafka is down and a restart re-sends what Kafka did not "
            "acknowledge. `false` falls back to the in-memory buffer alone."
        ),
    )
    dir: str | None = setting(
        name="BRIDGE_JOURNAL_DIR",
        kind=_PATH,
        default=None,
        description=(
            "Directory of the journal (created if missing; one process at a time). "
            "Unset: `$XDG_STATE_HOME/sendstack-bridge/journal`, else "
            "`~/.local/state/sendstack-bridge/journal`; the image sets "
            "`/var/lib/sendstack-bridge/journal`."
        ),
    )
    max_bytes: int = setting(
        name="BRIDGE_JOURNAL_MAX_BYTES",
        kind=_integer(ge=1_048_576),
        default=1_073_741_824,
        description=(
            "Bound on journaled bytes Kafka has not acknowledged; keep it under the "
            "volume's size. At 200 positions/s, 1 GiB holds hours of backlog."
        ),
    )
    durability: Durability = setting(
        name="BRIDGE_JOURNAL_DURABILITY",
        kind=_choice(_DURABILITIES),
        default="interval",
        description=(
            "`interval`: a group commit every flush interval (a crash of the "
            "process or the node loses at most the records of that interval); "
            "`fsync`: commits back to back, each synced (the window shrinks to "
            "one commit's time, about 1 ms, for about twice the CPU per record "
            "at high rates: almost every record is written)."
        ),
    )
    flush_interval_ms: int = setting(
        name="BRIDGE_JOURNAL_FLUSH_INTERVAL_MS",
        kind=_integer(ge=1, le=10_000),
        default=100,
        description=(
            "Time between group commits with `interval` durability: the loss "
            "window on a node crash, and latency added before Kafka."
        ),
    )
    when_full: WhenFull = setting(
        name="BRIDGE_JOURNAL_WHEN_FULL",
        kind=_choice(_WHEN_FULL),
        default="block",
        description=(
            "`block`: stop reading the socket until Kafka frees room (loss moves "
            "upstream, counted); `drop_oldest`: delete the oldest records (counted)."
        ),
    )
    pace_ms: int = setting(
        name="BRIDGE_JOURNAL_PACE_MS",
        kind=_integer(ge=0, le=1_000),
        default=20,
        description=(
            "While Kafka acknowledges but lags by `BRIDGE_JOURNAL_PACE_BYTES`, a "
            "record waits up to this long for its acks before the journal writes "
            "it to disk (then to read it back): a burst costs less CPU. At most "
            "0.5 s per episode, never while Kafka is down; 0: never waits."
        ),
    )
    pace_bytes: int = setting(
        name="BRIDGE_JOURNAL_PACE_BYTES",
        kind=_integer(ge=65_536),
        default=1_048_576,
        description=(
            "Bytes sent but not yet acknowledged past which records are paced "
            "(`BRIDGE_JOURNAL_PACE_MS`); raise it for a Kafka far away (more "
            "bytes in flight per round trip)."
        ),
    )


@settings_group
class HaSettings:
    """Hot standby: replicas elect one publisher per account through Kafka."""

    enabled: bool = setting(
        name="BRIDGE_HA_ENABLED",
        kind=_BOOL,
        default=False,
        description=(
            "Run as one of several stream replicas: each reads the stream, the one "
            "holding the account's partition of the coordination topic publishes, "
            "the others hold the last records and take over without a gap."
        ),
    )
    account: str = setting(
        name="BRIDGE_HA_ACCOUNT",
        kind=ACCOUNT_NAME,
        default="default",
        description=(
            "The name of the account of `BRIDGE_SENDSTACK_APP_ID`: its key on the "
            "coordination topic, and, beside `BRIDGE_STREAM_ACCOUNTS_DIR`'s "
            "accounts, its `ce_source` and `bridge_account` header."
        ),
    )
    coordination_topic: str = setting(
        name="BRIDGE_HA_COORDINATION_TOPIC",
        kind=_TOPIC,
        default="sendstack-bridge.coordination",
        description=(
            "One partition per account: group membership elects the leaders, and "
            "leaders write their progress there (created if missing)."
        ),
    )
    group_id: str = setting(
        name="BRIDGE_HA_GROUP_ID",
        kind=_text(r"\S+", what="a consumer group id"),
        default="sendstack-bridge-stream",
        description="Consumer group of the stream replicas (one per deployment).",
    )
    session_timeout_ms: int = setting(
        name="BRIDGE_HA_SESSION_TIMEOUT_MS",
        kind=_integer(ge=1000),
        default=6_000,
        description=(
            "How soon a dead leader's accounts move to a standby (within the "
            "broker's group.min/max.session.timeout.ms; Kafka's minimum is 6000)."
        ),
    )
    heartbeat_interval_ms: int = setting(
        name="BRIDGE_HA_HEARTBEAT_INTERVAL_MS",
        kind=_integer(ge=100),
        default=1_500,
        description="Group heartbeat interval; at most a third of the session timeout.",
    )
    buffer_seconds: float = setting(
        name="BRIDGE_HA_BUFFER_SECONDS",
        kind=_number(gt=0),
        default=60.0,
        description=(
            "Records a standby keeps, in seconds: a takeover republishes from it "
            "what the leader did not report. At least twice the session timeout."
        ),
    )
    buffer_bytes: int = setting(
        name="BRIDGE_HA_BUFFER_BYTES",
        kind=_integer(ge=1_048_576),
        default=67_108_864,
        description="Bound of the standby's buffer in bytes (the oldest go first).",
    )
    progress_interval_ms: int = setting(
        name="BRIDGE_HA_PROGRESS_INTERVAL_MS",
        kind=_integer(ge=10, le=60_000),
        default=200,
        description=(
            "How often the leader reports what Kafka acknowledged: about that "
            "many records are published twice (same ce_id) after a takeover."
        ),
    )
    catch_up_seconds: float = setting(
        name="BRIDGE_HA_CATCH_UP_SECONDS",
        kind=_number(gt=0),
        default=5.0,
        description=(
            "How long a takeover waits to read the old leader's last progress "
            "before it publishes anyway (duplicates rather than a gap)."
        ),
    )
    transactional_id: str | None = setting(
        name="BRIDGE_HA_TRANSACTIONAL_ID",
        kind=_text(r"[A-Za-z0-9._-]{1,200}", what="a transactional.id prefix"),
        default=None,
        description=(
            "Fence a deposed leader with Kafka transactions: each account's "
            "producer uses `<this>.<account>` as its `transactional.id`, opened "
            "only while leading, so a successor's takeover makes the old "
            "leader's sends fail. Needs a Kafka with transactions (not Tansu), "
            "`BRIDGE_KAFKA_ACKS=all`, and consumers reading with "
            "`isolation.level=read_committed`. Unset: no fencing."
        ),
    )
    transaction_ms: int = setting(
        name="BRIDGE_HA_TRANSACTION_MS",
        kind=_integer(ge=1, le=60_000),
        default=100,
        description=(
            "With `BRIDGE_HA_TRANSACTIONAL_ID`: how often each account's "
            "transaction commits (records are acknowledged, and visible to "
            "read_committed consumers, only then)."
        ),
    )


@settings_group
class OpsSettings:
    """The operations HTTP endpoint (/metrics, /livez, /readyz) and shutdown."""

    host: str = setting(
        name="BRIDGE_OPS_HOST",
        kind=_text(r"\S+", what="a host name or address"),
        default="0.0.0.0",  # noqa: S104  (the ops port must be reachable by probes)
        description="Address the ops endpoint (/metrics, /livez, /readyz) binds.",
    )
    port: int = setting(
        name="BRIDGE_OPS_PORT",
        kind=_integer(ge=0, le=65535),
        default=9095,
        description="Port of the ops endpoint; `0` picks a free one.",
    )
    shutdown_grace_seconds: float = setting(
        name="BRIDGE_SHUTDOWN_GRACE_SECONDS",
        kind=_number(gt=0),
        default=20.0,
        description="On SIGTERM, flush and close within this, then cancel.",
    )


@settings_group
class LogSettings:
    """Log verbosity and rendering (see `bridge.logs.configure_logging`)."""

    level: LogLevel = setting(
        name="BRIDGE_LOG_LEVEL",
        kind=_choice(_LOG_LEVELS),
        default="info",
        description="Least severe level logged (libraries included).",
    )
    format: LogFormat = setting(
        name="BRIDGE_LOG_FORMAT",
        kind=_choice(_LOG_FORMATS),
        default="auto",
        description="`json` lines, `console` for people, or `auto`: console on a TTY.",
    )


@settings_group
class WebhookSettings:
    """The webhook receiver: where it listens, what it accepts and publishes."""

    host: str = setting(
        name="BRIDGE_WEBHOOK_HOST",
        kind=_text(r"\S+", what="a host name or address"),
        default="0.0.0.0",  # noqa: S104 - Sendstack must reach it
        description="Address the webhook receiver binds.",
    )
    port: int = setting(
        name="BRIDGE_WEBHOOK_PORT",
        kind=_integer(ge=0, le=65535),
        default=8080,
        description="Port of the webhook receiver (0: any free port).",
    )
    path: str = setting(
        name="BRIDGE_WEBHOOK_PATH",
        kind=_text(r"/\S*", what="a URL path starting with /"),
        default="/webhooks/sendstack",
        description="Path Sendstack posts webhooks to.",
    )
    signature_scheme: SignatureScheme = setting(
        name="BRIDGE_WEBHOOK_SIGNATURE_SCHEME",
        kind=_choice(_SIGNATURE_SCHEMES),
        default="any",
        description=(
            "Which x-sendstack-signature scheme to accept: webhook_id (current"
            " docs: HMAC of the JSON-encoded webhookId), payload (legacy: HMAC of"
            " the whole body) or any."
        ),
    )
    max_body_bytes: int = setting(
        name="BRIDGE_WEBHOOK_MAX_BODY_BYTES",
        kind=_integer(ge=1),
        default=1_048_576,
        description="Larger bodies get 413 without being read.",
    )
    dedupe_capacity: int = setting(
        name="BRIDGE_WEBHOOK_DEDUPE_CAPACITY",
        kind=_integer(ge=1),
        default=100_000,
        description="Recent webhookIds remembered, to drop Sendstack's retries.",
    )
    publish_timeout_seconds: float = setting(
        name="BRIDGE_WEBHOOK_PUBLISH_TIMEOUT_SECONDS",
        kind=_number(gt=0),
        default=10.0,
        description="How long a webhook waits for Kafka's ack before answering 503.",
    )
    topic_deliveries: str = setting(
        name="BRIDGE_WEBHOOK_TOPIC_DELIVERIES",
        kind=_TOPIC,
        default="sendstack.webhooks.deliveries",
        description="Topic for delivery webhooks (order.*).",
    )
    topic_tracking: str = setting(
        name="BRIDGE_WEBHOOK_TOPIC_TRACKING",
        kind=_TOPIC,
        default="sendstack.webhooks.tracking-events",
        description="Topic for live-tracking event webhooks.",
    )
    topic_dead_letter: str = setting(
        name="BRIDGE_WEBHOOK_TOPIC_DEAD_LETTER",
        kind=_TOPIC,
        default="sendstack.webhooks.dlq",
        description="Topic for webhooks that were verified but not understood.",
    )


@settings_group
class CommandSettings:
    """The command worker: topics, concurrency, politeness towards Sendstack."""

    topic: str = setting(
        name="BRIDGE_COMMANDS_TOPIC",
        kind=_TOPIC,
        default="sendstack.commands",
        description="Topic the command worker consumes.",
    )
    results_topic: str = setting(
        name="BRIDGE_COMMANDS_RESULTS_TOPIC",
        kind=_TOPIC,
        default="sendstack.commands.results",
        description="Topic with one result per command, keyed by command id.",
    )
    dead_letter_topic: str = setting(
        name="BRIDGE_COMMANDS_DEAD_LETTER_TOPIC",
        kind=_TOPIC,
        default="sendstack.commands.dlq",
        description="Topic for rejected and failed commands.",
    )
    state_topic: str = setting(
        name="BRIDGE_COMMANDS_STATE_TOPIC",
        kind=_TOPIC,
        default="sendstack.commands.state",
        description="Compacted topic recording in-flight and done command ids.",
    )
    group_id: str = setting(
        name="BRIDGE_COMMANDS_GROUP_ID",
        kind=_text(r"\S+", what="a consumer group id"),
        default="sendstack-bridge-commands",
        description="Kafka consumer group of the command workers.",
    )
    concurrency: int = setting(
        name="BRIDGE_COMMANDS_CONCURRENCY",
        kind=_integer(ge=1, le=1024),
        default=8,
        description="Commands executed at once (per worker); one delivery at a time.",
    )
    rate_per_second: float = setting(
        name="BRIDGE_COMMANDS_RATE_PER_SECOND",
        kind=_number(gt=0),
        default=10.0,
        description="Sendstack API calls per second, shared by every command.",
    )
    rate_burst: int = setting(
        name="BRIDGE_COMMANDS_RATE_BURST",
        kind=_integer(ge=1),
        default=20,
        description="Calls that may go at once after a quiet spell.",
    )
    default_deadline_seconds: float = setting(
        name="BRIDGE_COMMANDS_DEFAULT_DEADLINE_SECONDS",
        kind=_number(gt=0),
        default=120.0,
        description="Deadline of a command that names none.",
    )
    request_timeout_seconds: float = setting(
        name="BRIDGE_COMMANDS_REQUEST_TIMEOUT_SECONDS",
        kind=_number(gt=0),
        default=15.0,
        description="Timeout of one Sendstack API call.",
    )
    retry_initial_seconds: float = setting(
        name="BRIDGE_COMMANDS_RETRY_INITIAL_SECONDS",
        kind=_number(gt=0),
        default=0.5,
        description="First retry delay after a 5xx, a timeout or a bare 429.",
    )
    retry_max_seconds: float = setting(
        name="BRIDGE_COMMANDS_RETRY_MAX_SECONDS",
        kind=_number(gt=0),
        default=30.0,
        description="Longest delay between retries.",
    )
    breaker_failures: int = setting(
        name="BRIDGE_COMMANDS_BREAKER_FAILURES",
        kind=_integer(ge=1),
        default=5,
        description="Consecutive 5xx/timeouts that open the circuit breaker.",
    )
    breaker_reset_seconds: float = setting(
        name="BRIDGE_COMMANDS_BREAKER_RESET_SECONDS",
        kind=_number(gt=0),
        default=30.0,
        description="How long the breaker stays open before one trial call.",
    )
    max_message_bytes: int = setting(
        name="BRIDGE_COMMANDS_MAX_MESSAGE_BYTES",
        kind=_integer(ge=1),
        default=1_048_576,
        description="Larger command messages are rejected.",
    )
    session_timeout_ms: int = setting(
        name="BRIDGE_COMMANDS_SESSION_TIMEOUT_MS",
        kind=_integer(ge=1000),
        default=10_000,
        description=(
            "Consumer-group session timeout: how soon a dead worker's partitions"
            " move to another worker."
        ),
    )
    assign_method: AssignMethod = setting(
        name="BRIDGE_COMMANDS_ASSIGN_METHOD",
        kind=_choice(_ASSIGN_METHODS),
        default="POST",
        description="HTTP method of Assign Drop (the docs show both GET and POST).",
    )
    lease_seconds: float = setting(
        name="BRIDGE_COMMANDS_LEASE_SECONDS",
        kind=_number(gt=0),
        default=40.0,
        description=(
            "Partition lease: a worker calls Sendstack for a partition only while"
            " it holds one (renewed every third of it); a crashed worker's"
            " partitions wait this long. At least twice the request timeout."
        ),
    )
    settle_seconds: float = setting(
        name="BRIDGE_COMMANDS_SETTLE_SECONDS",
        kind=_number(gt=0),
        default=60.0,
        description=(
            "How long after sending Sendstack may still complete a booking: an"
            ' empty reconcile read proves "not booked" only after this. Longer'
            " is safer; shorter resolves a lost reply sooner."
        ),
    )
    revoke_grace_seconds: float = setting(
        name="BRIDGE_COMMANDS_REVOKE_GRACE_SECONDS",
        kind=_number(gt=0),
        default=5.0,
        description=(
            "How long a worker giving a partition away waits for its calls in"
            " flight (commands not yet started are released at once)."
        ),
    )


# --------------------------------------------------------------------------
# Settings

REQUIREMENTS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "stream": frozenset({"sendstack", "kafka"}),
        "webhooks": frozenset({"sendstack", "kafka"}),
        "commands": frozenset({"sendstack", "kafka"}),
        "probe": frozenset({"sendstack"}),  # no Kafka: it publishes nothing
        "capture": frozenset({"sendstack"}),
        "mapping": frozenset(),  # offline: neither Sendstack nor Kafka
        "redrive": frozenset({"kafka"}),  # reads and writes Kafka only
        "journal": frozenset(),  # a local file, read-only
    }
)
"""The groups each subcommand needs; pass one as ``require=``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Every setting of the bridge, grouped by concern.

    Each field is a `settings_group`; their order is the documentation order.
    ``sendstack`` and ``kafka`` are ``None`` when the subcommand did not
    require them and none of their required variables was set; use
    `Settings.require` to get one with its type narrowed.
    """

    sendstack: SendstackSettings | None
    session: SessionSettings
    stream: StreamSettings
    kafka: KafkaSettings | None
    buffer: BufferSettings
    journal: JournalSettings
    ha: HaSettings
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
        groups = {group: _read_group(reader, group) for group in GROUP_NAMES}
        settings = _run_checks(reader, _BY_PATH, cls(**groups))
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


# --------------------------------------------------------------------------
# The derived table


def _group_types(root: type) -> dict[str, type]:
    """Each field of *root* and its group class (``X | None`` gives ``X``)."""
    hints = get_type_hints(root)
    groups: dict[str, type] = {}
    for declared in fields(root):
        hint = hints[declared.name]
        (groups[declared.name],) = [
            kind for kind in get_args(hint) or (hint,) if kind is not NoneType
        ]
    return groups


def _variable(
    group: str, kind: type, declared: dataclasses.Field[Any]
) -> Variable[Any]:
    """The variable that *declared*, a field of group *kind*, says it reads."""
    spec = declared.metadata.get(_SETTING)
    if not isinstance(spec, _Setting):
        raise TypeError(
            f"{kind.__name__}.{declared.name}: declare settings fields with setting()"
        )
    required = declared.default is MISSING
    return Variable(
        name=spec.name,
        group=group,
        field=declared.name,
        kind=spec.kind,
        default=None if required else declared.default,
        description=spec.description,
        required=required,
        secret=spec.kind.secret,
        from_file=spec.from_file,
    )


_GROUP_TYPES: Mapping[str, type] = MappingProxyType(_group_types(Settings))

GROUP_NAMES: tuple[str, ...] = tuple(_GROUP_TYPES)
"""The `Settings` fields, in order; also the names `require` accepts."""

VARIABLES: tuple[Variable[Any], ...] = tuple(
    _variable(group, kind, declared)
    for group, kind in _GROUP_TYPES.items()
    for declared in fields(kind)
)
"""Every settings variable, in documentation order: derived from the
`setting` declarations of the `Settings` groups, in field order."""

_BY_NAME: Mapping[str, Variable[Any]] = MappingProxyType(
    {variable.name: variable for variable in VARIABLES}
)
_FILE_VARIANTS: Mapping[str, Variable[Any]] = MappingProxyType(
    {v.name + _FILE_SUFFIX: v for v in VARIABLES if v.from_file}
)
# How cross-checks name variables: by field within a group, and by
# "group.field" across groups.
_BY_GROUP: Mapping[str, Mapping[str, Variable[Any]]] = MappingProxyType(
    {
        group: MappingProxyType({v.field: v for v in VARIABLES if v.group == group})
        for group in GROUP_NAMES
    }
)
_BY_PATH: Mapping[str, Variable[Any]] = MappingProxyType(
    {f"{v.group}.{v.field}": v for v in VARIABLES}
)

KNOWN_VARIABLES: frozenset[str] = frozenset(
    {CONFIG_FILE_VARIABLE, *_BY_NAME, *_FILE_VARIANTS}
)
"""Every ``BRIDGE_*`` name the bridge reads: settings, ``_FILE`` variants and
``BRIDGE_CONFIG_FILE``. Deployment manifests must set no other."""

# Groups that have required variables, so may be absent from Settings.
_OPTIONAL_GROUPS = frozenset(v.group for v in VARIABLES if v.required)


# --------------------------------------------------------------------------
# Reading


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


def _read_group(r: _Reader, group: str) -> Any:
    """Read one group's variables, build the group and run its checks.

    Every variable is read, so a bad value is reported even in a group that
    is not loaded; such a group is ``None`` and is not checked.
    """
    variables = _BY_GROUP[group]
    values = {key: r(variable) for key, variable in variables.items()}
    if group not in r.loaded:
        return None
    return _run_checks(r, variables, _GROUP_TYPES[group](**values))


def _run_checks(r: _Reader, variables: Mapping[str, Variable[Any]], value: G) -> G:
    """Run the cross-checks registered for *value*'s class in `_CHECKS`."""
    check = _CHECKS.get(type(value))
    if check is None:
        return value
    checker = _Checker(r, variables, value)
    check(checker)
    return checker.value


class _Checker(Generic[G]):
    """What a cross-check sees: the values read, and where problems go.

    A check names variables by field (``"lease_seconds"``), or by
    ``"group.field"`` in ``_check_across_groups``. It may replace `value`, to
    resolve a default that depends on another value.
    """

    def __init__(
        self, reader: _Reader, variables: Mapping[str, Variable[Any]], value: G
    ) -> None:
        self.value = value
        self._reader = reader
        self._variables = variables

    def variable(self, key: str) -> Variable[Any]:
        """The variable behind *key*; a `KeyError` names the valid keys."""
        try:
            return self._variables[key]
        except KeyError:
            valid = ", ".join(self._variables)
            raise KeyError(f"no setting {key!r}; expected one of {valid}") from None

    def name(self, key: str) -> str:
        """The variable name of *key*, for a message."""
        return self.variable(key).name

    def ok(self, *keys: str) -> bool:
        """Whether all *keys* were read without a problem."""
        return self._reader.ok(*(self.variable(key) for key in keys))

    def is_set(self, key: str) -> bool:
        """Whether the variable of *key* has a (non-empty) value."""
        return self._reader.is_set(self.variable(key))

    def add(self, key: str, message: str) -> None:
        """Record a problem about the variable of *key*."""
        self._reader.add(self.variable(key), message)

    def at_least(self, upper: str, lower: str, *, times: int = 1) -> None:
        """Record a problem unless *upper* >= *times* x *lower* (both read)."""
        if not self.ok(upper, lower):
            return
        upper_value, lower_value = self._number(upper), times * self._number(lower)
        if upper_value < lower_value:
            self.add(
                upper,
                f"must be at least {self.name(lower)} ({_fmt_number(lower_value)}), "
                f"got {_fmt_number(upper_value)}",
            )

    def _number(self, key: str) -> float:
        value: Any = self.value
        for part in key.split("."):
            value = getattr(value, part)
        number: float = value
        return number


# --------------------------------------------------------------------------
# Cross-checks: rules that involve more than one value, one function per
# group, registered in `_CHECKS`


def _check_session(c: _Checker[SessionSettings]) -> None:
    """Back-off bounds, the refresh margin and the failure budget."""
    c.at_least("auth_backoff_max_seconds", "auth_backoff_initial_seconds")
    session = c.value
    if c.ok("refresh_before_seconds", "refresh_jitter_seconds"):
        early = session.refresh_before_seconds + session.refresh_jitter_seconds
        if early >= _SESSION_LIFETIME_SECONDS:
            c.add(
                "refresh_before_seconds",
                f"plus {c.name('refresh_jitter_seconds')} must be under "
                f"{_SESSION_LIFETIME_SECONDS} (a session lives 6 hours), "
                f"got {_fmt_number(early)}",
            )
    if c.ok("auth_max_failures", "auth_failure_window_seconds"):
        # Failures the bridge may make in Sendstack's 15-minute window: one
        # budget per (possibly partial) window of ours that overlaps it.
        window = session.auth_failure_window_seconds
        worst = session.auth_max_failures * math.ceil(_LOCKOUT_WINDOW_SECONDS / window)
        if worst >= _LOCKOUT_FAILURES:
            c.add(
                "auth_failure_window_seconds",
                f"{session.auth_max_failures} failures per "
                f"{_fmt_number(window)} s allow up to "
                f"{worst} in 15 minutes; Sendstack locks the app out at 20",
            )


def _check_stream(c: _Checker[StreamSettings]) -> None:
    """No session in the URL; limits and back-off bounds in order."""
    stream = c.value
    if c.ok("url", "session_query_key"):
        query = urlsplit(stream.url).query
        key = stream.session_query_key.lower()
        keys = {name.lower() for name, _ in parse_qsl(query, keep_blank_values=True)}
        if key in keys:
            # Never echo the URL: its query holds what looks like a token.
            c.add(
                "url",
                f"must not contain the {stream.session_query_key!r} query "
                "parameter (the bridge adds the session itself; value not shown)",
            )
    c.at_least("max_message_bytes", "max_frame_bytes")
    c.at_least("reconnect_max_seconds", "reconnect_initial_seconds")
    _check_stream_transport(c)
    _check_stream_mapping(c)


def _check_stream_mapping(c: _Checker[StreamSettings]) -> None:
    """A mapping file only with the mapping codec, and every problem in it listed."""
    if not c.ok("codec", "mapping_file", "max_frame_bytes"):
        return
    stream = c.value
    if stream.codec != "mapping":
        if stream.mapping_file is not None:
            c.add("mapping_file", f"only used when {c.name('codec')} is mapping")
        return
    # Imported here: only the stream-side commands compile a mapping.
    from bridge.adapters.mapping_files import read_mapping

    _, problems = read_mapping(
        stream.mapping_file, max_frame_bytes=stream.max_frame_bytes
    )
    for problem in problems:
        c.add("mapping_file", str(problem))


def _check_stream_transport(c: _Checker[StreamSettings]) -> None:
    """The session goes in a connect payload, and namespaces exist, only with
    Socket.IO."""
    if not c.ok("transport"):
        return
    transport = c.value.transport
    if transport == "socketio":
        return
    by = c.name("transport")
    if c.ok("session_in") and c.value.session_in == "auth":
        c.add(
            "session_in",
            f"auth needs {by}=socketio (a plain websocket has no connect "
            f"payload), not {transport}",
        )
    for key in ("socketio_namespace", "socketio_auth_key"):
        if c.is_set(key):
            c.add(key, f"only used when {by} is socketio, not {transport}")


_SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
_TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
_SASL_FIELDS = ("sasl_mechanism", "sasl_username", "sasl_password")
_DATA_TOPICS = ("topic_positions", "topic_device_status", "topic_events")


def _check_kafka(c: _Checker[KafkaSettings]) -> None:
    """Idempotence needs acks=all; security settings agree; topics differ."""
    kafka = c.value
    if (
        c.ok("acks", "enable_idempotence")
        and kafka.enable_idempotence
        and kafka.acks != "all"
    ):
        c.add(
            "enable_idempotence",
            f"must be false when {c.name('acks')} is {kafka.acks} "
            "(the idempotent producer needs acks=all)",
        )
    if c.ok("security_protocol"):
        _check_kafka_security(c, kafka.security_protocol)
        if kafka.security_protocol in _SASL_PROTOCOLS and kafka.sasl_mechanism is None:
            # Resolve the documented default here, so that "SASL" always
            # comes with a mechanism and consumers need no rule of their own.
            c.value = replace(kafka, sasl_mechanism="PLAIN")
    for key in _DATA_TOPICS:
        topic = getattr(kafka, key)
        if c.ok(key, "topic_dead_letter") and topic == kafka.topic_dead_letter:
            c.add(
                "topic_dead_letter",
                f"must differ from {c.name(key)} (both are {topic!r})",
            )


def _check_kafka_security(c: _Checker[KafkaSettings], protocol: str) -> None:
    """SASL credentials go with the SASL protocols, a CA file with TLS."""
    by = c.name("security_protocol")
    if protocol in _SASL_PROTOCOLS:
        for key in ("sasl_username", "sasl_password"):
            if not c.is_set(key):
                c.add(
                    key,
                    f"required when {by} is {protocol} "
                    "(username and password go together)",
                )
    else:
        for key in _SASL_FIELDS:
            if c.is_set(key):
                c.add(
                    key,
                    f"only used when {by} is SASL_PLAINTEXT or SASL_SSL, "
                    f"not {protocol}",
                )
    if protocol not in _TLS_PROTOCOLS and c.is_set("ssl_cafile"):
        c.add("ssl_cafile", f"only used when {by} is SSL or SASL_SSL, not {protocol}")


def _check_buffer(c: _Checker[BufferSettings]) -> None:
    """The publish back-off cap is at least its first delay."""
    c.at_least("publish_retry_max_seconds", "publish_retry_initial_seconds")


def _check_ha(c: _Checker[HaSettings]) -> None:
    """Heartbeats fit in a session; the buffer outlives a takeover; fencing
    is part of the hot standby."""
    if c.value.transactional_id is not None and not c.value.enabled:
        c.add(
            "transactional_id",
            f"fences a deposed leader: it needs {c.name('enabled')}=true",
        )
    c.at_least("session_timeout_ms", "heartbeat_interval_ms", times=3)
    # A dead leader is noticed after the session timeout; what it had not
    # reported by then must still be in the standby's buffer.
    if (
        c.ok("buffer_seconds", "session_timeout_ms")
        and c.value.buffer_seconds * 1000 < 2 * c.value.session_timeout_ms
    ):
        c.add(
            "buffer_seconds",
            f"must be at least twice {c.name('session_timeout_ms')} "
            f"({2 * c.value.session_timeout_ms / 1000:g} s), "
            f"got {c.value.buffer_seconds:g}",
        )


def _check_commands(c: _Checker[CommandSettings]) -> None:
    """The lease and the settle time leave room for a request to finish."""
    # A call starts only if it ends inside the lease, and the lease is
    # renewed every third of it: two request timeouts leave room for both.
    c.at_least("lease_seconds", "request_timeout_seconds", times=2)
    # An empty read proves nothing while the request may still be running.
    c.at_least("settle_seconds", "request_timeout_seconds")


def _check_across_groups(c: _Checker[Settings]) -> None:
    """Checks that span groups (variables named ``"group.field"``)."""
    # A frame that cannot be parsed is dead-lettered whole, so the buffer
    # must be able to hold the largest frame or the stream would stall.
    c.at_least("buffer.max_bytes", "stream.max_frame_bytes")
    # aiokafka waits for a group join with the request timeout, and the
    # coordinator may hold a join up to a session timeout.
    if (
        c.value.kafka is not None
        and c.ok("ha.enabled", "ha.session_timeout_ms")
        and c.value.ha.enabled
    ):
        c.at_least("kafka.request_timeout_ms", "ha.session_timeout_ms")
    # A transactional producer is idempotent, and that needs acks=all.
    if (
        c.value.kafka is not None
        and c.ok("ha.transactional_id", "kafka.acks")
        and c.value.ha.transactional_id is not None
        and c.value.kafka.acks != "all"
    ):
        c.add(
            "kafka.acks",
            f"must be all when {c.name('ha.transactional_id')} is set "
            f"(a transactional producer needs acks=all), got {c.value.kafka.acks}",
        )


_CHECKS: Mapping[type, Callable[[_Checker[Any]], None]] = MappingProxyType(
    {
        SessionSettings: _check_session,
        StreamSettings: _check_stream,
        KafkaSettings: _check_kafka,
        BufferSettings: _check_buffer,
        HaSettings: _check_ha,
        CommandSettings: _check_commands,
        Settings: _check_across_groups,
    }
)
"""The cross-checks of each group class, run right after the group is read
(only if it is loaded), and those across groups, run on the `Settings`."""


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
