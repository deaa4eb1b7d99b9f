"""Owns the Sendstack session: obtains it, rotates it, and is its only holder.

The keeper fetches a session, sleeps until ``core.session.rotation_at`` (or
until someone reports the session refused), then fetches the next one while
the current one is still valid, so the pump can open the new socket before
closing the old. Failures back off with ``core.retry.Backoff`` and every
failed request counts against a ``FailureBudget`` kept well under Sendstack's
lockout (20 failures in 15 minutes). A 429 is waited out, never hammered.
Upgrades of the tracking socket that the server refused (the pump reports
them) count against the same budget: Sendstack may count them as failures too.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import structlog

from bridge.core.retry import Backoff, FailureBudget
from bridge.core.session import RotationPolicy, Session, rotation_at
from bridge.errors import (
    AuthLockedOut,
    SessionRejected,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamUnavailable,
)
from bridge.metrics import IntakeMetrics
from bridge.ports import Clock, SessionSource

log = structlog.get_logger("bridge.session")


@dataclass(frozen=True, slots=True)
class KeeperStatistics:
    generation: int
    valid: bool
    expires_in: float | None
    consecutive_failures: int
    last_error: str | None


class SessionKeeper:
    """Keeps a valid session available and rotates it before expiry."""

    def __init__(
        self,
        source: SessionSource,
        *,
        clock: Clock,
        policy: RotationPolicy,
        backoff: Backoff,
        budget: FailureBudget,
        metrics: IntakeMetrics,
    ) -> None:
        self._source = source
        self._clock = clock
        self._policy = policy
        self._backoff = backoff
        self._budget = budget
        self._metrics = metrics
        self._session: Session | None = None
        self._changed = asyncio.Condition()
        self._refresh = asyncio.Event()
        self._failures = 0
        self._last_error: str | None = None
        self._requesting = False  # a session request is in flight

    def current(self) -> Session | None:
        """The current session if it has not expired."""
        s = self._session
        if s is None or self._clock.time() >= s.expires_at:
            return None
        return s

    def statistics(self) -> KeeperStatistics:
        s = self.current()
        return KeeperStatistics(
            generation=self._session.generation if self._session else 0,
            valid=s is not None,
            expires_in=s.expires_in(self._clock.time()) if s else None,
            consecutive_failures=self._failures,
            last_error=self._last_error,
        )

    def expires_in(self) -> float:
        """Seconds to expiry of the current session; -1 when there is none."""
        s = self.current()
        return s.expires_in(self._clock.time()) if s else -1.0

    async def wait_for_session(self) -> Session:
        """A valid session, waiting for one if needed."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.current() is not None)
        s = self.current()
        assert s is not None  # noqa: S101 - wait_for guarantees it
        return s

    async def wait_newer(self, generation: int) -> Session:
        """Wait for a valid session newer than ``generation``."""

        def newer() -> bool:
            s = self.current()
            return s is not None and s.generation > generation

        async with self._changed:
            await self._changed.wait_for(newer)
        s = self.current()
        assert s is not None  # noqa: S101 - wait_for guarantees it
        return s

    def report_rejected(self, generation: int) -> None:
        """The tracking socket refused session ``generation``: fetch a new one now."""
        if self._session is not None and self._session.generation == generation:
            log.info("session_refused_by_socket", generation=generation)
            self._refresh.set()

    def report_refused_upgrade(self, generation: int, status: int) -> float:
        """An upgrade was refused with ``status``: count it toward the budget.

        Returns the seconds to wait before the next upgrade (0: none).
        """
        now = self._clock.time()
        self._budget.record_failure(now)
        wait = self._budget.wait_before_next(now)
        if wait > 0:
            log.warning(
                "auth_budget_exhausted",
                wait_seconds=round(wait, 1),
                after="socket_upgrade_refused",
                generation=generation,
                status=status,
            )
        return wait

    def renewing(self, generation: int, within: float) -> bool:
        """A session newer than ``generation`` is requested now or just came."""
        s = self._session
        if s is None:
            return False
        if s.generation > generation:
            return self._clock.time() - s.obtained_at < within
        return self._requesting

    async def run(self) -> None:
        """Obtain and rotate sessions until cancelled."""
        while True:
            session = await self._obtain()
            self._refresh.clear()
            rotate = rotation_at(session, self._policy, random.random())
            log.info(
                "session_obtained",
                generation=session.generation,
                expires_in=round(session.expires_in(self._clock.time()), 3),
                rotate_in=round(rotate - self._clock.time(), 3),
            )
            try:
                async with self._clock.timeout(max(0.0, rotate - self._clock.time())):
                    await self._refresh.wait()
            except TimeoutError:
                pass

    async def _obtain(self) -> Session:
        attempt = 0
        while True:
            wait = self._budget.wait_before_next(self._clock.time())
            if wait > 0:
                log.warning("auth_budget_exhausted", wait_seconds=round(wait, 1))
                await self._clock.sleep(wait)
            self._requesting = True
            try:
                grant = await self._source.obtain()
            except (
                SessionRejected,
                AuthLockedOut,
                UpstreamUnavailable,
                UpstreamProtocolError,
            ) as exc:
                self._requesting = False
                delay = self._failed(exc, attempt)
                attempt += 1
                await self._clock.sleep(delay)
                continue
            except BaseException:
                self._requesting = False  # cancelled: nothing is requested any more
                raise
            now = self._clock.time()
            generation = (self._session.generation if self._session else 0) + 1
            session = Session(
                token=grant.token,
                obtained_at=now,
                expires_at=grant.expires_at,
                generation=generation,
            )
            self._failures = 0
            self._last_error = None
            self._metrics.session_obtained.inc()
            async with self._changed:
                self._session = session
                # Cleared only once the newer session is held, so that
                # renewing() answers True throughout.
                self._requesting = False
                self._changed.notify_all()
            return session

    def _failed(self, exc: UpstreamError, attempt: int) -> float:
        reasons: dict[type[UpstreamError], str] = {
            SessionRejected: "rejected",
            AuthLockedOut: "locked_out",
            UpstreamUnavailable: "unavailable",
        }
        reason = reasons.get(type(exc), "protocol")
        self._metrics.auth_failures.labels(reason).inc()
        self._budget.record_failure(self._clock.time())
        self._failures += 1
        self._last_error = reason
        delay = self._backoff.delay(attempt, random.random())
        if isinstance(exc, AuthLockedOut) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        # Wrong credentials will not fix themselves: log loudly, back off hard.
        level = "error" if isinstance(exc, SessionRejected) else "warning"
        getattr(log, level)(
            "session_request_failed",
            reason=reason,
            error=str(exc),
            attempt=attempt + 1,
            retry_in=round(delay, 2),
        )
        return delay
