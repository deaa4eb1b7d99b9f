"""The command ledger: markers, done, and the partition lease fold."""

from __future__ import annotations

from hypothesis import given, strategies as st

from bridge.core.command_ledger import (
    Claim,
    CommandLedger,
    CommandState,
    Lease,
    claim_key,
    claim_value,
    fold_claim,
    started_value,
)


def test_a_hold_on_a_free_partition_takes_the_lease() -> None:
    """Nobody held it: the first hold wins."""
    assert fold_claim(None, Claim("hold", "a", 10.0, 50.0)) == Lease("a", 50.0)


def test_another_owner_s_hold_while_a_lease_is_live_is_void() -> None:
    """A second worker cannot take a live lease, even if its record lands later."""
    lease = Lease("a", 50.0)
    assert fold_claim(lease, Claim("hold", "b", 49.9, 89.9)) == lease


def test_an_expired_or_released_lease_can_be_taken() -> None:
    """Expiry or a release frees the partition for the next owner."""
    expired = fold_claim(Lease("a", 50.0), Claim("hold", "b", 50.0, 90.0))
    assert expired == Lease("b", 90.0)
    released = fold_claim(Lease("a", 50.0), Claim("release", "a", 20.0, 20.0))
    assert released == Lease("a", 20.0, released=True)
    assert fold_claim(released, Claim("hold", "b", 21.0, 61.0)) == Lease("b", 61.0)


def test_the_holder_renews_and_only_the_holder_releases() -> None:
    """Renewal extends the holder's lease; someone else's release changes nothing."""
    lease = fold_claim(Lease("a", 50.0), Claim("hold", "a", 30.0, 70.0))
    assert lease == Lease("a", 70.0)
    assert fold_claim(lease, Claim("release", "b", 31.0, 31.0)) == lease


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["hold", "release"]),
            st.sampled_from(["a", "b", "c"]),
            st.floats(min_value=0, max_value=100),
        ),
        max_size=30,
    )
)
def test_leases_of_different_owners_never_overlap(
    records: list[tuple[str, str, float]],
) -> None:
    """In any time-ordered log a new owner's lease starts after the last one ended."""
    lease: Lease | None = None
    ended_at = 0.0  # when the current holder's lease ends (or was released)
    for kind, owner, at in sorted(records, key=lambda r: r[2]):
        claim = Claim("hold" if kind == "hold" else "release", owner, at, at + 10.0)
        after = fold_claim(lease, claim)
        if after is not None and lease is not None and after.owner != lease.owner:
            assert at >= ended_at
        lease = after
        if lease is not None:
            ended_at = lease.until


def test_the_state_log_folds_markers_leases_and_done() -> None:
    """Started markers, lease records and results replay into the same state."""
    ledger = CommandLedger()
    ledger.apply_state("c1", started_value("book_delivery", "a", 5.0, 45.0))
    ledger.apply_state(claim_key(3), claim_value(Claim("hold", "a", 1.0, 41.0)))
    ledger.apply_state("legacy", b'{"state":"started","type":"x","at":"2025-01-01"}')
    ledger.apply_state(claim_key(3), b"not json")
    assert ledger.state("c1") is CommandState.STARTED
    marker = ledger.marker("c1")
    assert marker is not None
    assert (marker.owner, marker.at, marker.until) == ("a", 5.0, 45.0)
    assert ledger.state("legacy") is CommandState.STARTED
    assert ledger.lease(3) == Lease("a", 41.0)
    ledger.mark_done("c1")
    assert ledger.state("c1") is CommandState.DONE
    assert ledger.marker("c1") is None
