"""Committing only the contiguous prefix of finished commands."""

from __future__ import annotations

from hypothesis import given, strategies as st

from bridge.core.command_ledger import CommandLedger, CommandState, Marker
from bridge.core.offsets import PartitionOffsets


def test_commit_point_stops_at_the_first_unfinished_offset() -> None:
    """Finishing 11 and 12 before 10 commits nothing; finishing 10 commits 13."""
    offsets = PartitionOffsets()
    for o in (10, 11, 12):
        offsets.take(o)
    offsets.finish(11)
    offsets.finish(12)
    assert offsets.committable() is None
    offsets.finish(10)
    assert offsets.committable() == 13
    assert offsets.committable() is None  # unchanged since


@given(st.permutations(list(range(30))), st.integers(min_value=0, max_value=30))
def test_committed_offset_never_passes_an_unfinished_command(
    order: list[int], finished_count: int
) -> None:
    """For any finishing order, everything below the commit point is finished."""
    offsets = PartitionOffsets()
    for o in range(30):
        offsets.take(o)
    done = set(order[:finished_count])
    for o in order[:finished_count]:
        offsets.finish(o)
    point = offsets.committable()
    if point is not None:
        assert all(o in done for o in range(point))
        assert point == 30 or point not in done


def test_ledger_moves_from_new_to_started_to_done() -> None:
    """A command is new, then started, then done; done wins over a late start."""
    ledger = CommandLedger()
    assert ledger.state("c1") is CommandState.NEW
    ledger.mark_started("c1", Marker("w1", 1.0, 41.0))
    assert ledger.state("c1") is CommandState.STARTED
    ledger.mark_done("c1")
    ledger.mark_started("c1", Marker("w2", 2.0, 42.0))
    assert ledger.state("c1") is CommandState.DONE
