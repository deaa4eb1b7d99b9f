"""Session tokens (the JWTs the websocket needs) and the failed-request lockout."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from bridgelab.emulator import jwt

Clock = Callable[[], float]


def session_id_of(token: str) -> str:
    """A short, non-reversible id for a token: safe to log and to show in stats."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


@dataclass(slots=True)
class Session:
    """One issued session; ``expires_at`` is precise, the JWT's ``exp`` its floor."""

    session_id: str
    app_id: str
    issued_at: float
    expires_at: float
    ended: str | None = None  # "expired" (admin) or "replaced" (single-session)

    def alive(self, now: float) -> bool:
        """Still usable for a websocket."""
        return self.ended is None and now < self.expires_at


@dataclass(frozen=True, slots=True)
class Issued:
    """What ``SessionStore.issue`` hands back."""

    token: str
    session: Session
    replaced: list[Session] = field(default_factory=list)


class SessionStore:
    """Issues and checks session JWTs; remembers them by hash, never by token."""

    def __init__(
        self,
        signing_key: bytes,
        ttl_seconds: float,
        *,
        single_session: bool = False,
        clock: Clock = time.time,
    ) -> None:
        self._key = signing_key
        self._ttl = ttl_seconds
        self._single = single_session
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self.issued_count = 0

    def issue(self, app_id: str, app_secret: str) -> Issued:
        """Mint a session JWT shaped like the docs' sample."""
        now = self._clock()
        expires_at = now + self._ttl
        iat = int(now)
        # exp is the floor of the precise expiry, as in the docs' sample
        # (exp 1749927941 <-> expiresAt ...:41.207Z); exp - iat == ttl for
        # whole-second TTLs.
        payload = {
            "sub": {"appId": app_id, "appSecret": app_secret},
            "iat": iat,
            "exp": int(expires_at),
        }
        token = jwt.encode(payload, self._key)
        sid = session_id_of(token)
        self._prune(now)
        # The payload has no nonce, so two requests within the same second
        # get the same token: that is the same session, stretched to the
        # later expiry (a real jsonwebtoken server behaves alike).
        session = self._sessions.get(sid)
        if session is None or session.ended is not None:
            session = Session(sid, app_id, now, expires_at)
            self._sessions[sid] = session
        else:
            session.expires_at = max(session.expires_at, expires_at)
        replaced: list[Session] = []
        if self._single:
            for other in self._sessions.values():
                if other is not session and other.alive(now):
                    other.ended = "replaced"
                    replaced.append(other)
        self.issued_count += 1
        return Issued(token, session, replaced)

    def lookup(self, token: str) -> tuple[Session | None, str]:
        """The live session for ``token``, or None with a reason (no token in it)."""
        try:
            jwt.decode(token, self._key, verify_exp=False)
        except jwt.JwtError as exc:
            return None, f"invalid token: {exc}"
        session = self._sessions.get(session_id_of(token))
        now = self._clock()
        if session is None:
            # Signed by us but forgotten (pruned after expiry) or foreign.
            return None, "unknown session"
        if session.ended is not None:
            return None, f"session {session.ended}"
        if now >= session.expires_at:
            return None, "session expired"
        return session, "ok"

    def expire_all(self) -> list[Session]:
        """End every live session now; returns the ones that were live."""
        now = self._clock()
        ended = [s for s in self._sessions.values() if s.alive(now)]
        for session in ended:
            session.ended = "expired"
            session.expires_at = min(session.expires_at, now)
        return ended

    def live_count(self) -> int:
        """How many sessions are still usable."""
        now = self._clock()
        return sum(1 for s in self._sessions.values() if s.alive(now))

    def _prune(self, now: float) -> None:
        # Forget sessions long dead so a long demo does not grow without bound.
        dead = [
            sid
            for sid, s in self._sessions.items()
            if not s.alive(now) and now - s.expires_at > 60.0
        ]
        for sid in dead:
            del self._sessions[sid]


def credentials_match(
    got_id: str | None, got_secret: str | None, app_id: str, app_secret: str
) -> bool:
    """Constant-time comparison of an app id/secret pair."""
    if got_id is None or got_secret is None:
        return False
    id_ok = hmac.compare_digest(got_id.encode(), app_id.encode())
    secret_ok = hmac.compare_digest(got_secret.encode(), app_secret.encode())
    return id_ok and secret_ok


class FailureLimiter:
    """[DOC] N failed requests within a window lock the caller out with 429.

    Undocumented, so assumed: the window slides, it is counted per client IP,
    and the 429 answers themselves do not count as failures (otherwise a
    client retrying politely would never get back in).
    """

    def __init__(
        self, threshold: int, window_seconds: float, clock: Clock = time.monotonic
    ) -> None:
        self._threshold = threshold
        self._window = window_seconds
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self.failures_total = 0
        self.lockouts_total = 0  # times a caller crossed the threshold
        self.rejections_total = 0  # 429 answers served

    def retry_after(self, key: str) -> float | None:
        """Seconds until ``key`` may try again, or None when it is not locked out."""
        failures = self._failures.get(key)
        if not failures:
            return None
        now = self._clock()
        while failures and failures[0] <= now - self._window:
            failures.popleft()
        if len(failures) < self._threshold:
            return None
        # Unlocked once the threshold-th most recent failure leaves the window.
        return failures[-self._threshold] + self._window - now

    def record_failure(self, key: str) -> None:
        """Count one failed request."""
        failures = self._failures.setdefault(key, deque())
        now = self._clock()
        while failures and failures[0] <= now - self._window:
            failures.popleft()
        failures.append(now)
        self.failures_total += 1
        if len(failures) == self._threshold:  # this failure crossed the line
            self.lockouts_total += 1
        # Only the newest `threshold` entries can matter.
        while len(failures) > self._threshold:
            failures.popleft()
