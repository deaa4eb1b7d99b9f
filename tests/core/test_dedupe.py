"""The bounded memory of recent event ids."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from bridge.core.dedupe import RecentIds


def test_add_reports_new_ids_once() -> None:
    """The first add of an id is new; the second is a duplicate."""
    ids = RecentIds(10)
    assert ids.add("a") is True
    assert ids.add("a") is False
    assert "a" in ids


def test_oldest_ids_are_forgotten_beyond_capacity() -> None:
    """Capacity bounds memory: the oldest id is evicted first."""
    ids = RecentIds(2)
    for i in ("a", "b", "c"):
        ids.add(i)
    assert len(ids) == 2
    assert "a" not in ids
    assert ids.add("a") is True


@given(
    st.lists(st.text(max_size=3), max_size=200), st.integers(min_value=1, max_value=50)
)
def test_never_holds_more_than_capacity_and_never_reports_a_remembered_id_as_new(
    stream: list[str], capacity: int
) -> None:
    """Whatever arrives, size stays bounded and remembered ids are always duplicates."""
    ids = RecentIds(capacity)
    for event_id in stream:
        remembered = event_id in ids
        assert ids.add(event_id) is (not remembered)
        assert len(ids) <= capacity


def test_capacity_must_be_positive() -> None:
    """A zero-capacity memory would drop nothing and is refused."""
    with pytest.raises(ValueError, match="at least 1"):
        RecentIds(0)
