"""The circuit breaker in front of Sendstack's API."""

from __future__ import annotations

import pytest

from bridge.core.breaker import BreakerState, CircuitBreaker


def test_opens_after_threshold_consecutive_failures() -> None:
    """N failures in a row open it; calls must then wait out the reset time."""
    breaker = CircuitBreaker(threshold=3, reset_after=10)
    for _ in range(3):
        assert breaker.wait_before_call(0.0) == 0.0
        breaker.record_failure(0.0)
    assert breaker.state(1.0) is BreakerState.OPEN
    assert breaker.wait_before_call(1.0) == pytest.approx(9.0)


def test_a_success_resets_the_count() -> None:
    """Failures separated by a success never open the breaker."""
    breaker = CircuitBreaker(threshold=2, reset_after=10)
    breaker.record_failure(0.0)
    breaker.record_success()
    breaker.record_failure(0.0)
    assert breaker.state(0.0) is BreakerState.CLOSED


def test_half_open_lets_one_trial_through_and_its_result_decides() -> None:
    """After the reset time one call goes; success closes, failure reopens."""
    breaker = CircuitBreaker(threshold=1, reset_after=5)
    breaker.record_failure(0.0)
    assert breaker.wait_before_call(5.0) == 0.0  # the trial
    assert breaker.wait_before_call(5.0) > 0  # others wait while it is out
    breaker.record_failure(5.5)
    assert breaker.state(6.0) is BreakerState.OPEN
    assert breaker.wait_before_call(10.5) == 0.0
    breaker.record_success()
    assert breaker.state(10.6) is BreakerState.CLOSED


def test_breaker_refuses_nonsense_parameters() -> None:
    """A zero threshold would never let a call through."""
    with pytest.raises(ValueError, match="threshold"):
        CircuitBreaker(threshold=0, reset_after=1)
