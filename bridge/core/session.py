"""When to rotate the Sendstack session: a pure decision.

Theory of operation: a session (``POST {base}/auth/session``) is a JWT with an
``expiresAt`` (6 hours, but we read the value instead of assuming it). The
tracking socket authenticates once, at the upgrade, with the session in the
query string, so a socket outlives nothing: before the session expires the
bridge must fetch a new one and open a new socket (make-before-break).

``rotation_at`` picks the instant to fetch the next session: ``margin`` before
expiry, minus a random share of ``jitter`` so a fleet of bridges does not
rotate in lockstep. For short-lived sessions (as in tests) the margin is
capped at half the lifetime so a session is always used for a while. Time
and randomness are arguments, so every decision is deterministic under test.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.secrets import Secret


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """One session: the token (never printable) and its validity window."""

    token: Secret
    obtained_at: float
    expires_at: float
    generation: int

    @property
    def lifetime(self) -> float:
        return max(0.0, self.expires_at - self.obtained_at)

    def expires_in(self, now: float) -> float:
        return self.expires_at - now


@dataclass(frozen=True, slots=True, kw_only=True)
class RotationPolicy:
    """How early to rotate: ``margin`` seconds before expiry, minus jitter."""

    margin: float = 900.0
    jitter: float = 120.0


def effective_margin(session: Session, policy: RotationPolicy) -> float:
    """The margin actually kept before expiry: at most half the lifetime."""
    return min(policy.margin, session.lifetime / 2)


def rotation_at(session: Session, policy: RotationPolicy, rand: float) -> float:
    """The instant to start rotating ``session``.

    Args:
        session: the session in use.
        policy: margin and jitter.
        rand: a number in [0, 1) that picks the jitter.

    Returns:
        An epoch instant no later than ``expires_at - effective_margin`` and
        never before ``obtained_at``.
    """
    margin = effective_margin(session, policy)
    jitter = min(policy.jitter, session.lifetime / 10) * min(max(rand, 0.0), 1.0)
    return max(session.obtained_at, session.expires_at - margin - jitter)
