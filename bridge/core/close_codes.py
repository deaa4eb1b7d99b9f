"""What a websocket close means for the stream: one pure classifier.

Every decision about a close lives here: whether the session is no longer
good (fetch a new one before reconnecting), and which reason label the
disconnect is counted and logged under. The adapter only reports the code
and the reason text it saw (or 1006 when the connection just vanished); the
pump reconnects or re-authenticates by what this module says.

[ASSUMPTION] Sendstack documents no close codes. 4001 is what we assume it
sends when a session expires; 1008 (policy violation) and 4401/4403 are the
usual "unauthorised" codes of other servers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, get_args

CloseReason = Literal[
    "normal",
    "abnormal",
    "keepalive_timeout",
    "session",
    "too_big",
    "server_error",
    "stale",
    "rotation",
    "other",
]

#: Every reason label, in the order metrics create them.
CLOSE_REASONS: Final[tuple[CloseReason, ...]] = get_args(CloseReason)

#: Close codes that mean "your session is no longer good".
REAUTH_CLOSE_CODES: Final = frozenset({4001, 1008, 4401, 4403})

#: The code our own staleness watchdog closes with (application range).
STALE_CLOSE_CODE: Final = 4000

_BY_CODE: Final[dict[int, CloseReason]] = {
    1000: "normal",
    1001: "normal",
    1006: "abnormal",
    1009: "too_big",
    1011: "server_error",
    1012: "server_error",
    1013: "server_error",
    1014: "server_error",
    STALE_CLOSE_CODE: "stale",
}


@dataclass(frozen=True, slots=True)
class CloseVerdict:
    """A close's reason label, and whether a new session is needed first."""

    reason: CloseReason
    reauth: bool


def classify_close(code: int, reason: str) -> CloseVerdict:
    """Classify a close by its code and reason text (ours or the server's)."""
    if code in REAUTH_CLOSE_CODES:
        return CloseVerdict("session", reauth=True)
    if code == 1011 and "keepalive" in reason:
        # websockets closes with 1011 "keepalive ping timeout" on a dead peer.
        return CloseVerdict("keepalive_timeout", reauth=False)
    return CloseVerdict(_BY_CODE.get(code, "other"), reauth=False)
