"""The journal entry encoding: exact round trip, every alteration detected."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from bridge.core.journal_entry import EntryCorrupt, decode, encode, encoded_size
from bridge.core.records import OutboundRecord

_text = st.text(max_size=40)
records = st.builds(
    OutboundRecord,
    topic=_text,
    key=st.none() | st.binary(max_size=64),
    value=st.binary(max_size=512),
    headers=st.lists(st.tuples(_text, st.binary(max_size=64)), max_size=12).map(tuple),
    dedupe_id=st.none() | _text,
    event_time_ms=st.none() | st.integers(-(2**63), 2**63 - 1),
)
seqs = st.integers(0, 2**64 - 1)


@given(seqs, records)
def test_round_trip(seq: int, record: OutboundRecord) -> None:
    """Decoding an encoded record gives back the sequence and an equal record."""
    data = encode(seq, record)
    assert len(data) == encoded_size(record)
    assert decode(data, seq) == (seq, record)


@given(seqs, records, st.data())
def test_any_flipped_byte_is_detected(
    seq: int, record: OutboundRecord, data: st.DataObject
) -> None:
    """Flipping any bit of an entry makes it fail its check."""
    raw = bytearray(encode(seq, record))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(EntryCorrupt):
        decode(bytes(raw), seq)


@given(seqs, records, st.data())
def test_truncated_entry_is_detected(
    seq: int, record: OutboundRecord, data: st.DataObject
) -> None:
    """A torn (shortened) entry fails its check."""
    raw = encode(seq, record)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(EntryCorrupt):
        decode(raw[:cut], seq)


def test_entry_under_the_wrong_sequence_is_rejected() -> None:
    """An entry stored under another sequence number is not trusted."""
    record = OutboundRecord("t", b"k", b"v", (), None, None)
    with pytest.raises(EntryCorrupt, match="stored as"):
        decode(encode(7, record), 8)


def test_out_of_range_sequence_is_refused() -> None:
    """Sequence numbers must fit 64 bits unsigned."""
    record = OutboundRecord("t", None, b"", (), None, None)
    with pytest.raises(ValueError, match="out of range"):
        encode(-1, record)
