"""A circuit breaker for Sendstack's API: stop hammering a failing upstream.

Theory of operation: ``closed`` lets every call through and counts
consecutive failures (5xx, timeouts). At ``threshold`` failures it turns
``open``: calls wait instead of going out. After ``reset_after`` seconds it is
``half_open``: one trial call goes through; success closes the breaker,
failure opens it again for another ``reset_after``. Any success resets the
count. Time is an argument.
"""

from __future__ import annotations

from enum import Enum


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Consecutive-failure circuit breaker with a single half-open trial."""

    def __init__(self, *, threshold: int, reset_after: float) -> None:
        if threshold < 1 or reset_after <= 0:
            raise ValueError("threshold must be >= 1 and reset_after > 0")
        self._threshold = threshold
        self._reset_after = reset_after
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_out = False

    def state(self, now: float) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if now - self._opened_at >= self._reset_after:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def wait_before_call(self, now: float) -> float:
        """0 if a call may go now (half-open: the one trial), else seconds to wait."""
        state = self.state(now)
        if state is BreakerState.CLOSED:
            return 0.0
        if state is BreakerState.HALF_OPEN and not self._trial_out:
            self._trial_out = True
            return 0.0
        assert self._opened_at is not None  # noqa: S101 - not closed
        remaining = self._opened_at + self._reset_after - now
        # While a trial is out, others check back shortly.
        return remaining if remaining > 0 else min(1.0, self._reset_after)

    def record_success(self) -> None:
        """Sendstack answered (2xx or 4xx): it is up."""
        self._failures = 0
        self._opened_at = None
        self._trial_out = False

    def record_failure(self, now: float) -> None:
        self._failures += 1
        if self._trial_out or self._failures >= self._threshold:
            self._opened_at = now
        self._trial_out = False
