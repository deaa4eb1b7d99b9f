"""The rotation decision: when to fetch the next session."""

from __future__ import annotations

from hypothesis import given, strategies as st

from bridge.core.session import (
    RotationPolicy,
    Session,
    effective_margin,
    rotation_at,
)
from bridge.secrets import Secret

SIX_HOURS = 21_600.0


def session(obtained: float = 1_000.0, lifetime: float = SIX_HOURS) -> Session:
    return Session(
        token=Secret("t"),
        obtained_at=obtained,
        expires_at=obtained + lifetime,
        generation=1,
    )


def test_six_hour_session_rotates_15_to_17_minutes_before_expiry() -> None:
    """A 6 h session rotates 15 to 17 minutes before it expires with default policy."""
    s = session()
    policy = RotationPolicy(margin=900, jitter=120)
    assert rotation_at(s, policy, 0.0) == s.expires_at - 900
    assert rotation_at(s, policy, 0.999) < s.expires_at - 1019


def test_short_sessions_keep_half_their_lifetime_before_rotating() -> None:
    """A session shorter than twice the margin is used for half its life."""
    s = session(lifetime=4.0)
    assert effective_margin(s, RotationPolicy(margin=900, jitter=0)) == 2.0
    assert (
        rotation_at(s, RotationPolicy(margin=900, jitter=0), 0.5) == s.obtained_at + 2.0
    )


@given(
    lifetime=st.floats(min_value=0.0, max_value=10 * SIX_HOURS),
    margin=st.floats(min_value=0.0, max_value=SIX_HOURS),
    jitter=st.floats(min_value=0.0, max_value=3_600.0),
    rand=st.floats(min_value=-1.0, max_value=2.0),
)
def test_rotation_instant_is_within_the_session_and_at_least_the_margin_early(
    lifetime: float, margin: float, jitter: float, rand: float
) -> None:
    """For any policy the instant lies in [obtained, expires - effective margin]."""
    s = session(lifetime=lifetime)
    policy = RotationPolicy(margin=margin, jitter=jitter)
    at = rotation_at(s, policy, rand)
    assert s.obtained_at <= at <= s.expires_at - effective_margin(s, policy) + 1e-6
