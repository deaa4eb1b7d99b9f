"""What a probe of the tracking wire saw, and what to change: pure judgement.

``sendstack-bridge probe`` (``bridge/app_probe.py``) performs three steps
with the normal configuration (the session call, the websocket upgrade, the
first frames) and records what happened as plain values. This module turns
those values into the report a user reads: what each step saw, what that
most likely means, which setting to change, and whether a usable stream was
reached. Nothing here does I/O, and nothing here ever sees the token.

The wire format is an assumption (``docs/wire-format.md``): the point of the
probe is to say, on a real user's first day, how the real wire differs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import orjson

from bridge.core.close_codes import classify_close
from bridge.core.codec import FrameCodec

# -- what the steps record ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionStep:
    """The session call: its status and envelope message, never the token."""

    status: int | None  # None: no HTTP answer at all
    message: str = ""
    got_session: bool = False
    error: str = ""  # dns | tls | refused | timeout | other, when no answer


@dataclass(frozen=True, slots=True)
class UpgradeStep:
    """The websocket upgrade: status, reason and headers (cookies removed)."""

    status: int | None  # 101 when it worked; None: no HTTP answer
    reason: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    error: str = ""  # dns | tls | refused | timeout | invalid_url | other


@dataclass(frozen=True, slots=True)
class FrameSeen:
    """One frame as received (the bytes are described, then dropped)."""

    at: float  # seconds after the upgrade
    data: bytes
    text: bool


@dataclass(frozen=True, slots=True)
class Closed:
    """How the socket ended during the probe, if it did."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class ProbeRun:
    """Everything the three steps recorded."""

    url: str  # already redacted
    session: SessionStep
    upgrade: UpgradeStep | None = None
    frames: tuple[FrameSeen, ...] = ()
    closed: Closed | None = None
    listened: float = 0.0


# -- judging a frame ----------------------------------------------------------------

Framing = Literal["engine.io", "socket.io", "stomp", "none"]

_ENGINE_IO: Final = re.compile(rb"^[0-6]")
_STOMP_COMMANDS: Final = (b"CONNECTED\n", b"MESSAGE\n", b"ERROR\n", b"RECEIPT\n")


def framing_of(frame: FrameSeen) -> Framing:
    """A recognised framing around the payload, if any."""
    data = frame.data
    if not frame.text:
        return "none"
    if data.startswith(_STOMP_COMMANDS):
        return "stomp"
    if data.startswith(b"0{") and b'"sid"' in data:
        return "engine.io"  # the Engine.IO v4 open packet
    if data.startswith((b"40", b"42", b"43")) and _ENGINE_IO.match(data):
        return "socket.io"  # CONNECT / EVENT / ACK packets inside Engine.IO
    if data in (b"2", b"3"):
        return "engine.io"  # Engine.IO ping / pong
    return "none"


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _described(value: object) -> str:
    if isinstance(value, dict):
        keys = ", ".join(f"{k}: {_type_name(v)}" for k, v in list(value.items())[:12])
        more = f", … {len(value) - 12} more" if len(value) > 12 else ""
        return f"JSON object {{{keys}{more}}}"
    if isinstance(value, list):
        first = f", first item: {_type_name(value[0])}" if value else ""
        return f"JSON array of {len(value)}{first}"
    return f"JSON {_type_name(value)}"


def shape_of(data: bytes) -> str:
    """``JSON object {a: array, b: string}``, ``JSON array of 3``, or ``not JSON``."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return "not JSON"
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
        # A Socket.IO event as the transport hands it over: [name, payload].
        return f"event {value[0][:40]!r} with {_described(value[1])}"
    return _described(value)


@dataclass(frozen=True, slots=True)
class FrameVerdict:
    """One frame described, and what the configured codec made of it."""

    line: str
    framing: Framing
    items: int
    keepalive: bool
    rejection: str | None


def judge_frame(frame: FrameSeen, codec: FrameCodec) -> FrameVerdict:
    """Describe a frame and run it through the configured codec."""
    framing = framing_of(frame)
    kind = "text" if frame.text else "binary"
    if framing != "none":
        shape = f"{framing} packet {frame.data[:24]!r}"
    else:
        shape = shape_of(frame.data) if frame.text else "binary payload"
    decoded = codec.decode(frame.data)
    rejection = None if decoded.rejection is None else decoded.rejection.reason
    if decoded.keepalive:
        outcome = "keep-alive"
    elif decoded.items and rejection is None:
        outcome = f"{len(decoded.items)} item(s) decoded"
    elif decoded.items:
        outcome = f"{len(decoded.items)} item(s), part rejected ({rejection})"
    else:
        outcome = f"not understood ({rejection})"
    line = f"+{frame.at:.2f}s {kind} {len(frame.data)} B: {shape} -> codec: {outcome}"
    return FrameVerdict(line, framing, len(decoded.items), decoded.keepalive, rejection)


# -- the report ------------------------------------------------------------------------


@dataclass
class Report:
    """The lines to print, the settings to look at, and the verdict."""

    lines: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)
    usable: bool = False

    def text(self) -> str:
        out = list(self.lines)
        out.append("")
        out.append("usable stream: " + ("yes" if self.usable else "NO"))
        if self.suggestions:
            out.append("what to change:")
            out.extend(f"  - {s}" for s in self.suggestions)
        return "\n".join(out) + "\n"


_NETWORK_ERRORS: Final[Mapping[str, str]] = {
    "dns": "the host name does not resolve (DNS)",
    "tls": "the TLS handshake failed (wrong scheme wss:// vs ws://, or a certificate"
    " this machine does not trust)",
    "refused": "nothing accepts connections at that host and port",
    "timeout": "no answer in time (a firewall, a proxy, or the wrong port)",
    "invalid_url": "the URL is not a valid websocket URL",
}


def _session_lines(step: SessionStep, report: Report) -> bool:
    if step.status is None:
        meaning = _NETWORK_ERRORS.get(step.error, f"it failed ({step.error})")
        report.lines.append(f"1. session call: no answer: {meaning}")
        report.suggestions.append("check BRIDGE_SENDSTACK_BASE_URL (host, scheme)")
        return False
    message = f", message {step.message!r}" if step.message else ""
    report.lines.append(f"1. session call: HTTP {step.status}{message}")
    if step.got_session:
        return True
    if step.status in (401, 403):
        report.suggestions.append(
            "the credentials were refused: check BRIDGE_SENDSTACK_APP_ID and"
            " BRIDGE_SENDSTACK_APP_SECRET (sandbox and live keys differ), or the"
            " header spelling BRIDGE_SENDSTACK_SESSION_HEADER_STYLE"
        )
    elif step.status == 404:
        report.suggestions.append(
            "BRIDGE_SENDSTACK_BASE_URL is wrong: it should end in /api/v1"
        )
    elif step.status == 429:
        report.suggestions.append(
            "locked out after failed attempts: wait out the 15-minute window and"
            " stop other clients using these credentials"
        )
    else:
        report.suggestions.append(
            "the session reply was not the documented {status, message, data:"
            " {session, expiresAt}}: ask Sendstack, or check"
            " BRIDGE_SENDSTACK_BASE_URL"
        )
    return False


def _upgrade_lines(step: UpgradeStep, report: Report) -> bool:
    if step.status is None:
        meaning = _NETWORK_ERRORS.get(step.error, f"it failed ({step.error})")
        report.lines.append(f"2. websocket upgrade: no answer: {meaning}")
        report.suggestions.append("check the host and scheme of BRIDGE_STREAM_URL")
        return False
    headers = ", ".join(f"{k}: {v}" for k, v in step.headers[:12])
    report.lines.append(
        f"2. websocket upgrade: HTTP {step.status} {step.reason}".rstrip()
        + (f"; headers: {headers}" if headers else "")
    )
    if step.status == 101:
        return True
    if step.status == 404:
        report.suggestions.append(
            "the path is wrong: set BRIDGE_STREAM_URL (a Socket.IO server usually"
            " answers at /socket.io/?EIO=4&transport=websocket)"
        )
    elif step.status in (401, 403):
        report.suggestions.append(
            "the session was refused at the upgrade: the query key"
            " (BRIDGE_STREAM_SESSION_QUERY_KEY) or the place of the session (query,"
            " header, first message) may be wrong"
        )
    elif step.status in (400, 426):
        report.suggestions.append(
            "the server did not accept a plain websocket upgrade here: it may"
            " expect another protocol on this path (Socket.IO, SockJS, STOMP)"
        )
    elif step.status in (409, 429):
        report.suggestions.append(
            "the server refused another socket: it may allow one session or one"
            " socket at a time (BRIDGE_STREAM_SINGLE_SESSION=true)"
        )
    elif step.status in (301, 302, 307, 308):
        report.suggestions.append(
            "the server redirects: put the final URL in BRIDGE_STREAM_URL"
        )
    else:
        report.suggestions.append(f"HTTP {step.status}: check BRIDGE_STREAM_URL")
    return False


def judge(run: ProbeRun, codec: FrameCodec) -> Report:
    """The whole report for one probe run."""
    report = Report()
    report.lines.append(f"probing {run.url}")
    if not _session_lines(run.session, report):
        return report
    if run.upgrade is None or not _upgrade_lines(run.upgrade, report):
        return report
    verdicts = [judge_frame(frame, codec) for frame in run.frames]
    report.lines.append(
        f"3. first frames: {len(verdicts)} in {run.listened:.1f} s"
        + (
            ""
            if verdicts
            else " (updates come only on change: a quiet fleet is silent)"
        )
    )
    report.lines.extend(f"   {v.line}" for v in verdicts)
    if run.closed is not None:
        meaning = classify_close(run.closed.code, run.closed.reason)
        report.lines.append(
            f"4. closed by the server: {run.closed.code} {run.closed.reason!r}"
            f" ({meaning.reason})"
        )
        if meaning.reauth:
            report.suggestions.append(
                "the server closed the socket over the session: check"
                " BRIDGE_STREAM_SESSION_QUERY_KEY and that no other client uses"
                " these credentials"
            )
    _frame_suggestions(verdicts, report)
    report.usable = any(v.items or v.keepalive for v in verdicts) and not any(
        v.framing != "none" for v in verdicts
    )
    return report


def _frame_suggestions(verdicts: Sequence[FrameVerdict], report: Report) -> None:
    framings = {v.framing for v in verdicts} - {"none"}
    if framings & {"engine.io", "socket.io"}:
        report.suggestions.append(
            "the server speaks Socket.IO (Engine.IO v4 packets): set"
            " BRIDGE_STREAM_TRANSPORT=socketio (and BRIDGE_STREAM_SESSION_IN=auth"
            " if the server wants the session in the connect payload)"
        )
    elif "stomp" in framings:
        report.suggestions.append(
            "the server speaks STOMP: subscribe frames are needed before data flows"
        )
    elif verdicts and not any(v.items or v.keepalive for v in verdicts):
        report.suggestions.append(
            "frames arrive but the mapping does not understand them: their shape"
            " differs from the assumed one (docs/wire-format.md); record some"
            " (sendstack-bridge capture), describe them in a mapping file"
            " (docs/mapping.md), check it with sendstack-bridge mapping try, then"
            " set BRIDGE_STREAM_MAPPING_FILE"
        )
    elif not verdicts:
        report.suggestions.append(
            "the socket is open but nothing arrived: listen longer (--seconds)"
            " while vehicles move, or ask Sendstack whether a subscribe message"
            " is expected"
        )
