"""Retry policy as data: backoff delays and the auth failure budget.

Theory of operation: every loop that retries (reconnecting the socket,
fetching a session, re-sending a record) asks a ``Backoff`` for the delay of
attempt *n*: exponential from ``initial``, capped at ``maximum``, with a random
share (``jitter``) taken off so that many clients do not retry in lockstep.
The loop resets its attempt counter after a success.

Sendstack locks an app out (HTTP 429 for the rest of a 15-minute window)
after 20 failed requests. ``FailureBudget`` remembers recent failures and says
how long to wait so that no more than ``max_failures`` happen in any window,
which keeps the bridge well under the lockout whatever the other delays are.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Capped exponential backoff with jitter.

    ``jitter`` is the share of each delay that is random: 0 gives fixed
    delays, 1 gives "full jitter" (uniform in [0, base]).
    """

    initial: float
    maximum: float
    multiplier: float = 2.0
    jitter: float = 0.5

    def delay(self, attempt: int, rand: float) -> float:
        """The delay before retry number ``attempt`` (0-based); ``rand`` in [0, 1)."""
        exponent = min(max(attempt, 0), 64)
        base = min(self.maximum, self.initial * self.multiplier**exponent)
        share = min(max(self.jitter, 0.0), 1.0)
        return base * (1.0 - share * min(max(rand, 0.0), 1.0))


class FailureBudget:
    """At most ``max_failures`` failures in any ``window`` seconds.

    A sliding window over failure instants; time is always an argument.
    """

    def __init__(self, *, max_failures: int, window: float) -> None:
        if max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        self._max = max_failures
        self._window = window
        self._failures: deque[float] = deque()

    def record_failure(self, now: float) -> None:
        self._forget(now)
        self._failures.append(now)

    def failures(self, now: float) -> int:
        self._forget(now)
        return len(self._failures)

    def wait_before_next(self, now: float) -> float:
        """Seconds to wait so that one more failure stays within the budget."""
        self._forget(now)
        if len(self._failures) < self._max:
            return 0.0
        # The attempt after the last allowed failure waits for the oldest to age out.
        return max(0.0, self._failures[0] + self._window - now)

    def _forget(self, now: float) -> None:
        while self._failures and self._failures[0] <= now - self._window:
            self._failures.popleft()
