"""One token bucket for every call to Sendstack.

Theory of operation: a bucket holds up to ``burst`` tokens and refills at
``rate`` tokens per second. A caller reserves a token and is told how long to
wait before using it; reservations queue in order, so waiting callers are
served first come, first served and the long-run rate never exceeds ``rate``.
Time is an argument: the bucket itself never sleeps.
"""

from __future__ import annotations


class TokenBucket:
    """A token bucket that hands out reservations (time is an argument)."""

    def __init__(self, *, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._updated = now

    def reserve(self, now: float) -> float:
        """Take one token; return the seconds to wait before using it (>= 0)."""
        self._refill(now)
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        # In debt: the token arrives once the deficit has refilled.
        return -self._tokens / self._rate

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._updated = max(self._updated, now)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
