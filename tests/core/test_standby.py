"""The standby's buffer, the leader's acked window, and what a takeover publishes."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from bridge.core.progress import (
    ProgressCorrupt,
    decode_progress,
    encode_progress,
)
from bridge.core.records import OutboundRecord
from bridge.core.standby import AckedDigests, RecentRecords, digest


def rec(item: int, *, value: bytes = b"v" * 100, dedupe: bool = True) -> OutboundRecord:
    return OutboundRecord(
        topic="positions",
        key=f"d{item % 7}".encode(),
        value=value,
        headers=(("ce_id", f"id-{item}".encode()),),
        dedupe_id=f"id-{item}" if dedupe else None,
        event_time_ms=None,
    )


def test_digest_is_the_identity_not_the_object() -> None:
    """Two replicas decoding the same item get the same digest; other items differ."""
    assert digest(rec(1)) == digest(rec(1, value=b"other bytes"))
    assert digest(rec(1)) != digest(rec(2))
    # Dead letters have no id: their bytes identify them.
    assert digest(rec(1, dedupe=False)) == digest(rec(2, dedupe=False))
    assert digest(rec(1, dedupe=False)) != digest(rec(1, value=b"x", dedupe=False))
    assert 0 <= digest(rec(3)) < 2**64


def test_takeover_publishes_exactly_what_the_leader_did_not_report() -> None:
    """Not-acked records come out in receive order; acked ones are skipped."""
    recent = RecentRecords(max_age=60, max_bytes=10**6)
    acked = AckedDigests(max_age=60)
    digests = [recent.add(rec(i), now=float(i) / 10) for i in range(20)]
    acked.add(digests[:12], now=2.0)
    acked.add([digests[14]], now=2.0)
    out = [r.dedupe_id for _, r in recent.not_acked(acked)]
    assert out == [f"id-{i}" for i in range(12, 20) if i != 14]


def test_records_added_during_the_walk_are_included() -> None:
    """A takeover walk sees records that arrive while it publishes."""
    recent = RecentRecords(max_age=60, max_bytes=10**6)
    acked = AckedDigests(max_age=60)
    for i in range(3):
        recent.add(rec(i), now=0.0)
    seen = []
    for seq, record in recent.not_acked(acked):
        seen.append(record.dedupe_id)
        if seq == 1:
            recent.add(rec(99), now=0.1)
    assert seen == ["id-0", "id-1", "id-2", "id-99"]


def test_buffer_forgets_by_age_and_by_bytes() -> None:
    """Older than max_age or over max_bytes: the oldest go first."""
    recent = RecentRecords(max_age=10, max_bytes=1000)
    for i in range(5):
        recent.add(rec(i), now=float(i))
    recent.expire(now=13.5)
    assert [r.dedupe_id for _, r in recent.not_acked(AckedDigests(max_age=1))] == [
        "id-4"
    ]
    assert recent.oldest_age(now=13.5) == pytest.approx(9.5)
    big = RecentRecords(max_age=100, max_bytes=3 * rec(0).size)
    for i in range(10):
        big.add(rec(i), now=0.0)
    assert len(big) == 3
    assert big.bytes == 3 * rec(0).size
    assert big.evicted == 7


def test_acked_window_forgets_old_progress_only() -> None:
    """A digest stays acked while any progress message within max_age holds it."""
    acked = AckedDigests(max_age=5)
    acked.add([1, 2], now=0.0)
    acked.add([2, 3], now=3.0)
    acked.expire(now=6.0)
    assert 1 not in acked
    assert 2 in acked
    assert 3 in acked
    acked.expire(now=9.0)
    assert len(acked) == 0


@given(st.lists(st.integers(min_value=0, max_value=2**64 - 1), max_size=300))
def test_progress_round_trips(digests: list[int]) -> None:
    """Any list of 64-bit digests decodes back to itself."""
    assert list(decode_progress(encode_progress(digests))) == digests


@given(st.binary(max_size=64))
def test_foreign_bytes_are_refused_not_misread(value: bytes) -> None:
    """Bytes that are not a progress message raise ProgressCorrupt."""
    try:
        decoded = decode_progress(value)
    except ProgressCorrupt:
        return
    assert encode_progress(decoded) == value


def test_truncated_progress_is_refused() -> None:
    """A message cut short is damaged, not fewer digests."""
    value = encode_progress([1, 2, 3])
    with pytest.raises(ProgressCorrupt):
        decode_progress(value[:-1])
