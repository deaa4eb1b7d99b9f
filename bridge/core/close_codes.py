"""What a websocket close means for the stream: one pure classifier.

Every decision about a close lives here: whether the session is no longer
good (fetch a new one before reconnecting), and which reason label the
disconnect is counted and logged under. The adapter only reports the code
and the reason text it saw (or 1006 when the connection just vanished); the
pump reconnects or re-authenticates by what this module says.

[ASSUMPTION] Sendstack documents no close codes. 4001 is what we assume it
sends when a session expires; 1008 (policy violation) and 4401/4403 are the
usual "unauthorised" codes of other servers.

Sendstack does not say either whether it allows two sessions or sockets at
once, which make-before-break rotation needs. ``single_session_cause`` reads
what the upstream did during a rotation we started (the new socket's upgrade
refused, or the old socket closed by the server) as "one socket at a time".
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
    "replaced",
    "other",
]

#: Every reason label, in the order metrics create them.
CLOSE_REASONS: Final[tuple[CloseReason, ...]] = get_args(CloseReason)

#: Close codes that mean "your session is no longer good".
REAUTH_CLOSE_CODES: Final = frozenset({4001, 1008, 4401, 4403})

#: The code our own staleness watchdog closes with (application range).
STALE_CLOSE_CODE: Final = 4000

#: [ASSUMPTION] The code a one-socket upstream closes the older socket with
#: when a newer one opens ("replaced by a newer connection").
REPLACED_CLOSE_CODE: Final = 4409

#: Upgrade statuses that, while our other socket is open, mean "no second
#: socket": 409 Conflict, 403 Forbidden, 429 Too Many Requests.
SECOND_SOCKET_REFUSED: Final = frozenset({403, 409, 429})

#: Why the bridge concluded that the upstream allows one socket at a time.
SingleSessionCause = Literal["refused", "replaced", "revoked"]
SINGLE_SESSION_CAUSES: Final[tuple[SingleSessionCause, ...]] = get_args(
    SingleSessionCause
)

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
    REPLACED_CLOSE_CODE: "replaced",
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


def upgrade_status(error: BaseException) -> int | None:
    """The HTTP status of a refused upgrade, if the error tells it.

    The adapters' connect errors carry it as ``status`` (``UpstreamRefusal``).
    None: no HTTP answer (network, timeout) or a transport that hides it.
    """
    status = getattr(error, "status", None)
    if isinstance(status, int) and not isinstance(status, bool):
        return status
    return None


def is_refused_upgrade(status: int | None) -> bool:
    """An upgrade the server answered with a 4xx: a request it counted as failed."""
    return status is not None and 400 <= status < 500


def single_session_cause(
    *, refused_status: int | None = None, close_code: int | None = None
) -> SingleSessionCause | None:
    """What a rotation's trouble says about the upstream, if anything.

    Only for a rotation we started, while the old socket was still open: the
    new socket's upgrade refused with ``refused_status``, or the old socket
    closed by the server with ``close_code`` (the caller checks the timing).
    """
    if refused_status is not None and refused_status in SECOND_SOCKET_REFUSED:
        return "refused"
    if close_code == REPLACED_CLOSE_CODE:
        return "replaced"
    if close_code is not None and close_code in REAUTH_CLOSE_CODES:
        return "revoked"
    return None
