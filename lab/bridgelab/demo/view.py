"""What the demo shows: pure functions from readings to lines of text.

Nothing here does I/O, so the layout can be read (and tested) without a
broker. `Tracker` turns one reading per second into rates and into event
lines (rotations, reconnects, dead letters); `render_panel` draws the
full-screen view for a terminal, `render_line` the one-line-per-second log
for pipes, and `render_summary` the closing report with the exactly-once
check computed by `verify`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "KINDS",
    "BridgeReading",
    "Tracker",
    "Verification",
    "View",
    "describe_data",
    "describe_dead_letter",
    "header_value",
    "render_event",
    "render_line",
    "render_panel",
    "render_summary",
    "seq_of",
    "verify",
]

# Record kinds in display order, with the short label used on one-line logs.
KINDS: Mapping[str, str] = {
    "positions": "pos",
    "device-status": "status",
    "events": "events",
    "dead-letter": "dlq",
}

_CLEAR = "\x1b[H\x1b[J"  # cursor home, erase below: redraw without flicker
_BOLD, _DIM, _RESET = "\x1b[1m", "\x1b[2m", "\x1b[0m"
_SAMPLE_BYTES = 48


@dataclass(frozen=True, slots=True)
class BridgeReading:
    """The bridge's own counters at one instant."""

    expires_in: float  # negative: no valid session
    state: str
    open_connections: int
    reconnects: int
    rotations: int
    gap_sum: float  # rotation intake gaps, summed (histogram _sum)
    gap_count: int
    buffer_records: int


@dataclass(frozen=True, slots=True)
class View:
    """Everything one refresh shows."""

    elapsed: float
    topics: Mapping[str, str]  # kind -> topic name
    totals: Mapping[str, int]
    rates: Mapping[str, float]
    latest: Mapping[str, str]
    bridge: BridgeReading
    last_gap: float | None
    dead_letters: int
    last_reason: str | None
    events: Sequence[str] = ()
    header: str = ""


@dataclass
class Tracker:
    """Rates and notable changes between consecutive readings."""

    last_gap: float | None = None
    _elapsed: float = 0.0
    _totals: dict[str, int] = field(default_factory=dict)
    _bridge: BridgeReading | None = None
    _dead_letters: int = 0

    def rates(self, elapsed: float, totals: Mapping[str, int]) -> dict[str, float]:
        """Records per second per kind since the previous call."""
        span = max(elapsed - self._elapsed, 1e-6)
        rates = {
            kind: (count - self._totals.get(kind, 0)) / span
            for kind, count in totals.items()
        }
        self._elapsed, self._totals = elapsed, dict(totals)
        return rates

    def changes(
        self, bridge: BridgeReading, dead_letters: int, last_reason: str | None
    ) -> list[str]:
        """Event lines for rotations, reconnects and dead letters since last time."""
        before = self._bridge
        self._bridge = bridge
        events: list[str] = []
        if before is not None and bridge.rotations > before.rotations:
            if bridge.gap_count > before.gap_count:
                self.last_gap = (bridge.gap_sum - before.gap_sum) / (
                    bridge.gap_count - before.gap_count
                )
            gap = "" if self.last_gap is None else f", intake gap {_ms(self.last_gap)}"
            events.append(f"session rotated (#{bridge.rotations}{gap})")
        if before is not None and bridge.reconnects > before.reconnects:
            events.append(f"socket lost, reconnecting (#{bridge.reconnects})")
        if dead_letters > self._dead_letters:
            new = dead_letters - self._dead_letters
            events.append(f"{new} dead letter(s), last reason {last_reason}")
            self._dead_letters = dead_letters
        return events


@dataclass(frozen=True, slots=True)
class Verification:
    """The exactly-once check: written seqs against consumed seqs."""

    written: int
    lost: int
    duplicates: int
    unexpected: int

    @property
    def ok(self) -> bool:
        return self.written > 0 and not (
            self.lost or self.duplicates or self.unexpected
        )


def verify(written: set[int], seen: Counter[int]) -> Verification:
    """Compare what the emulator wrote to the sockets with what Kafka holds."""
    return Verification(
        written=len(written),
        lost=len(written - seen.keys()),
        duplicates=sum(1 for n in seen.values() if n > 1),
        unexpected=len(seen.keys() - written),
    )


def describe_data(kind: str, key: bytes | None, data: object) -> str:
    """A short sample of one data record: its key and a few telling fields."""
    shown = f"key={(key or b'').decode('utf-8', 'replace')}"
    if not isinstance(data, dict):
        return f"{shown} (value is not a JSON object)"
    if kind == "positions":
        shown += (
            f" lat={data.get('latitude')} lon={data.get('longitude')}"
            f" kph={data.get('speedKph')}"
        )
    elif kind == "device-status":
        shown += f" status={data.get('status')}"
    else:
        shown += f" type={data.get('eventType')}"
    seq = seq_of(data)
    return shown if seq is None else f"{shown} seq={seq}"


def describe_dead_letter(reason: str, value: bytes | None) -> str:
    """A short sample of one dead letter: why, and how the input began."""
    raw = (value or b"")[:_SAMPLE_BYTES].decode("utf-8", "replace")
    return f"reason={reason} value={raw!r}"


def header_value(headers: Iterable[object], name: str) -> str | None:
    """The first header called *name*, decoded (aiokafka gives (str, bytes))."""
    for header in headers:
        if isinstance(header, tuple) and len(header) == 2 and header[0] == name:
            value = header[1]
            return (
                value.decode("utf-8", "replace") if isinstance(value, bytes) else None
            )
    return None


def seq_of(data: object) -> int | None:
    """The emulator's sequence number (``attributes.seq``), if the item has one."""
    attributes = data.get("attributes") if isinstance(data, dict) else None
    seq = attributes.get("seq") if isinstance(attributes, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def render_panel(view: View, *, width: int = 120, color: bool = True) -> str:
    """The full-screen view, redrawn in place once a second; lines fit *width*."""
    bold, dim, reset = (_BOLD, _DIM, _RESET) if color else ("", "", "")
    name_width = max(len(name) for name in view.topics.values())
    rows = [
        f"{topic:<{name_width}}  {view.rates.get(kind, 0.0):>6.1f}  "
        f"{view.totals.get(kind, 0):>7}  {view.latest.get(kind, '-')}"
        for kind, topic in view.topics.items()
    ]
    b = view.bridge
    status = [
        f"session   expires in {_expiry(b.expires_in)}   rotations {b.rotations}"
        f" (last intake gap {_ms(view.last_gap)})",
        f"socket    {b.state}, {b.open_connections} connection(s)"
        f"   reconnects {b.reconnects}",
        f"buffer    {b.buffer_records} record(s) awaiting Kafka's ack",
        f"dead      {view.dead_letters} dead letter(s)"
        f" (last reason {view.last_reason or '-'})",
    ]
    fit = [_fit(line, width) for line in (*rows, "", *status, "")]
    title = _fit(f"sendstack-bridge demo  {_clock(view.elapsed)}", width)
    heading = _fit(
        f"{'topic':<{name_width}}  {'rec/s':>6}  {'total':>7}  latest", width
    )
    lines = [
        f"{bold}{title}{reset}",
        f"{dim}{_fit(view.header, width)}{reset}",
        "",
        f"{dim}{heading}{reset}",
        *fit,
        f"{dim}recent{reset}",
        *(_fit(f"  {event}", width) for event in view.events),
        "",
        f"{dim}Ctrl-C stops, drains and verifies.{reset}",
    ]
    return _CLEAR + "\n".join(lines)


def render_line(view: View) -> str:
    """One line per second, for logs and pipes."""
    b = view.bridge
    flows = " · ".join(
        f"{KINDS[kind]} {view.rates.get(kind, 0.0):.0f}/s {view.totals.get(kind, 0)}"
        for kind in view.topics
    )
    return (
        f"[{_clock(view.elapsed)}] {flows} | session {_expiry(b.expires_in)}"
        f" rotations {b.rotations} | ws {b.state} ({b.open_connections})"
        f" reconnects {b.reconnects} | dead letters {view.dead_letters}"
        f" | buffer {b.buffer_records}"
    )


def render_event(elapsed: float, event: str) -> str:
    """An event line, time-stamped like `render_line`."""
    return f"[{_clock(elapsed)}] {event}"


def render_summary(view: View, check: Verification | None) -> list[str]:
    """The closing report; *check* is None when the run ended too badly to verify."""
    b = view.bridge
    records = " · ".join(f"{kind} {view.totals.get(kind, 0)}" for kind in view.topics)
    lines = [
        "",
        f"summary after {view.elapsed:.1f} s",
        f"  records       {records}",
        f"  rotations     {b.rotations} (last intake gap {_ms(view.last_gap)})",
        f"  reconnects    {b.reconnects}",
        f"  dead letters  {view.dead_letters} (last reason {view.last_reason or '-'})",
    ]
    lines.append(f"  {_verdict(check)}")
    return lines


def _verdict(check: Verification | None) -> str:
    if check is None:
        return "NOT verified: the run did not reach the drain"
    counts = (
        f"{check.written} written, {check.lost} lost, {check.duplicates} duplicates"
    )
    if check.ok:
        return (
            "verified: every item the emulator wrote was published exactly once "
            f"({counts})"
        )
    if check.written == 0:
        return "NOT verified: the emulator wrote no items to the bridge"
    return f"NOT verified: {counts}, {check.unexpected} unexpected"


def _fit(text: str, width: int) -> str:
    """Cut *text* to *width* columns: a wrapped line would break the redraw."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(max(seconds, 0.0), 60)
    return f"{int(minutes):02d}:{secs:04.1f}"


def _expiry(seconds: float) -> str:
    return "- (no session)" if seconds < 0 else f"{seconds:.1f} s"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"
