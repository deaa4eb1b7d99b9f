"""Backoff delays and the auth failure budget."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from bridge.core.retry import Backoff, FailureBudget


def test_backoff_doubles_from_initial_and_stops_at_the_cap() -> None:
    """Without jitter the delays are initial, 2x, 4x ... up to the maximum."""
    b = Backoff(initial=0.5, maximum=3.0, jitter=0.0)
    assert [b.delay(n, 0.7) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_full_jitter_spreads_delays_between_zero_and_the_base() -> None:
    """With jitter 1 the random number picks anywhere in [0, base]."""
    b = Backoff(initial=1.0, maximum=10.0, jitter=1.0)
    assert b.delay(2, 0.0) == 4.0
    assert b.delay(2, 0.75) == 1.0


@given(
    attempt=st.integers(min_value=-5, max_value=10_000),
    rand=st.floats(min_value=-1, max_value=2),
    initial=st.floats(min_value=0.001, max_value=100),
    maximum=st.floats(min_value=0.001, max_value=1_000),
    jitter=st.floats(min_value=-1, max_value=2),
)
def test_delays_are_never_negative_and_never_exceed_the_cap(
    attempt: int, rand: float, initial: float, maximum: float, jitter: float
) -> None:
    """Any attempt number and random draw gives a delay in [0, max(initial, cap)]."""
    d = Backoff(initial=initial, maximum=maximum, jitter=jitter).delay(attempt, rand)
    assert 0.0 <= d <= max(min(initial, maximum), maximum)


def test_budget_allows_max_failures_per_window_then_waits_for_the_oldest() -> None:
    """After N failures the next attempt waits until the first leaves the window."""
    budget = FailureBudget(max_failures=3, window=900)
    for t in (0.0, 10.0, 20.0):
        assert budget.wait_before_next(t) == 0.0
        budget.record_failure(t)
    assert budget.wait_before_next(30.0) == 870.0
    assert budget.wait_before_next(900.0) == 0.0
    assert budget.failures(900.0) == 2


@given(st.lists(st.floats(min_value=0, max_value=10_000), max_size=60))
def test_obeying_the_budget_never_allows_more_than_max_failures_in_any_window(
    gaps: list[float],
) -> None:
    """A caller that waits as told never fails 20 times in 15 minutes."""
    budget = FailureBudget(max_failures=10, window=900)
    now = 0.0
    failures: list[float] = []
    for gap in gaps:
        now += gap
        now += budget.wait_before_next(now)
        budget.record_failure(now)
        failures.append(now)
        in_window = [f for f in failures if f > now - 900]
        assert len(in_window) <= 10


def test_budget_refuses_a_zero_maximum() -> None:
    """A budget that allows no failure at all is a configuration mistake."""
    with pytest.raises(ValueError, match="at least 1"):
        FailureBudget(max_failures=0, window=1)
