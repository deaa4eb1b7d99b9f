"""The journal entry encoding: exact round trip, every alteration detected."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given, strategies as st

from bridge.core.journal_entry import (
    EntryCorrupt,
    chunk_table,
    decode,
    decode_at,
    encode,
    encoded_size,
    read_chunk_table,
)
from bridge.core.records import OutboundRecord, fast_record


def encode_v1(seq: int, record: OutboundRecord) -> bytes:
    """A version 1 entry, as the journal wrote them before chunks (for migration)."""
    topic = record.topic.encode()
    key = record.key or b""
    dedupe = (record.dedupe_id or "").encode()
    flags = (
        (1 if record.key is not None else 0)
        | (2 if record.dedupe_id is not None else 0)
        | (4 if record.event_time_ms is not None else 0)
    )
    parts = [
        struct.pack(
            "<BBQqHIIHH",
            1,
            flags,
            seq,
            record.event_time_ms or 0,
            len(topic),
            len(key),
            len(record.value),
            len(dedupe),
            len(record.headers),
        ),
        topic,
        key,
        dedupe,
        record.value,
    ]
    for name, value in record.headers:
        raw = name.encode()
        parts += [struct.pack("<HI", len(raw), len(value)), raw, value]
    body = b"".join(parts)
    return body + struct.pack("<I", zlib.crc32(body))


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
def test_a_record_with_its_header_names_known_sizes_the_same(
    seq: int, record: OutboundRecord
) -> None:
    """A record that carries its header names as one tuple (as to_record's do)
    is sized without walking its headers, to the very length encode gives,
    non-ASCII names included."""
    hinted = fast_record(
        record.topic,
        record.key,
        record.value,
        record.headers,
        record.dedupe_id,
        record.event_time_ms,
        record.size,
        tuple(name for name, _ in record.headers),
    )
    assert encoded_size(hinted) == len(encode(seq, hinted)) == encoded_size(record)


@given(seqs, records)
def test_round_trip(seq: int, record: OutboundRecord) -> None:
    """Decoding an encoded record gives back the sequence and an equal record."""
    data = encode(seq, record)
    assert len(data) == encoded_size(record)
    decoded = decode(data, seq)
    assert decoded == (seq, record)
    assert decoded[1].size == record.size  # set by decode, as to_record does


@given(seqs, records)
def test_version_1_entries_still_decode(seq: int, record: OutboundRecord) -> None:
    """An entry of the journal's first format decodes (to migrate old files)."""
    assert decode(encode_v1(seq, record), seq) == (seq, record)


@given(st.lists(st.tuples(seqs, records), min_size=1, max_size=8))
def test_entries_decode_in_place_within_a_chunk(
    entries: list[tuple[int, OutboundRecord]],
) -> None:
    """Entries back to back decode at their offsets; the table gives them back."""
    blobs = [encode(seq, record) for seq, record in entries]
    data = b"".join(blobs)
    table = chunk_table([len(b) for b in blobs], list(range(len(blobs))))
    sizes, borns = read_chunk_table(table, len(blobs))
    assert list(sizes) == [len(b) for b in blobs]
    assert list(borns) == list(range(len(blobs)))
    start = 0
    for (seq, record), size in zip(entries, sizes, strict=True):
        assert decode_at(data, start, start + size, seq) == (seq, record)
        start += size


def test_a_damaged_chunk_table_is_rejected() -> None:
    """A flipped bit in a chunk table, or a table for another count, is caught."""
    table = chunk_table([10, 20, 30], [1, 2, 3])
    for i in range(len(table)):
        flipped = bytearray(table)
        flipped[i] ^= 0x10
        with pytest.raises(EntryCorrupt):
            read_chunk_table(bytes(flipped), 3)
    with pytest.raises(EntryCorrupt):
        read_chunk_table(table, 2)


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
