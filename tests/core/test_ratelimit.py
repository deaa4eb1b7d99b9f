"""The shared token bucket."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from bridge.core.ratelimit import TokenBucket


def test_burst_goes_at_once_then_calls_are_spaced_by_the_rate() -> None:
    """A full bucket lets ``burst`` calls go now; the next waits 1/rate each."""
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert [bucket.reserve(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve(0.0) == pytest.approx(0.1)
    assert bucket.reserve(0.0) == pytest.approx(0.2)


def test_tokens_refill_over_time_up_to_the_burst() -> None:
    """After a quiet spell the bucket is full again, never fuller."""
    bucket = TokenBucket(rate=1, burst=2, now=0.0)
    bucket.reserve(0.0)
    bucket.reserve(0.0)
    assert bucket.reserve(100.0) == 0.0
    assert bucket.reserve(100.0) == 0.0
    assert bucket.reserve(100.0) == pytest.approx(1.0)


@given(
    rate=st.floats(min_value=0.5, max_value=1000),
    burst=st.integers(min_value=1, max_value=50),
    gaps=st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=200),
)
def test_calls_made_when_told_never_exceed_burst_plus_rate_times_time(
    rate: float, burst: int, gaps: list[float]
) -> None:
    """Whatever the arrival pattern, calls by time t are at most burst + rate*t."""
    bucket = TokenBucket(rate=rate, burst=burst, now=0.0)
    now = 0.0
    call_times: list[float] = []
    for gap in gaps:
        now += gap
        call_times.append(now + bucket.reserve(now))
    last = max(call_times)
    assert len(call_times) <= burst + rate * last + 1e-6 * len(call_times) + 1


def test_bucket_refuses_nonsense_parameters() -> None:
    """A zero rate or an empty bucket is a configuration mistake."""
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate=0, burst=1, now=0.0)
