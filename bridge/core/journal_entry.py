"""The on-disk encoding of journaled ``OutboundRecord``s: compact, checked.

Theory of operation
-------------------
The durable journal (``bridge/adapters/journal_store.py``) stores the records
the pump accepted, less those Kafka acknowledged before their commit, in
*chunks*: one SQLite row per run of consecutive sequence numbers (a group
commit, split at ``CHUNK_ENTRIES``/``CHUNK_BYTES``). This
module owns the bytes of a chunk, and nothing here does I/O: every function is
a pure function of its arguments.

A chunk is two blobs: its *table* and its *data*. The data is the chunk's
entries back to back; each entry is self-checked (its own CRC32, its own
sequence number), so one damaged entry costs that entry only. The table says
where each entry ends and when it was accepted::

    u32 CRC32 of what follows   u32 count
    u32 entry size x count      i64 born_ms x count

Entry layout (version 2), little-endian (``struct``), fixed part first::

    u8  version (2)      u8  flags (1: key, 2: dedupe_id, 4: event_time_ms)
    u64 seq              i64 event_time_ms (0 when absent)
    u16 topic length     u32 key length     u32 value length
    u16 dedupe length    u16 header count   u32 header names length
    u32 header value length x header count
    topic | key | dedupe_id | value
    header names: per header, u16 length | name
    header values, back to back
    u32 CRC32 of everything before it

Version 2 keeps the header names together (the same block in every record of
a topic, built once and cached) and packs every length with one ``struct``
call per entry (one compiled ``Struct`` per header count): per-header packing
was most of version 1's cost. Version 1
entries (one per row, per-header ``u16 name length | u32 value length | name |
value``) still decode, so a version 1 journal can be migrated.

The sequence number is inside the checked bytes, so an entry found under the
wrong sequence (or a torn, truncated or bit-flipped one) is rejected with
:class:`EntryCorrupt` instead of being published; the journal counts and
skips it. Text (topic, dedupe id, header names) is UTF-8. Replaying an entry
gives back the very record that was accepted, so a re-sent record carries the
same ``ce_id`` and consumers can drop the duplicate.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from itertools import accumulate, pairwise
from typing import Final

from bridge.core.records import OutboundRecord, fast_record

__all__ = [
    "CHUNK_BYTES",
    "CHUNK_ENTRIES",
    "VERSION",
    "EntryCorrupt",
    "chunk_table",
    "decode",
    "decode_at",
    "encode",
    "encoded_size",
    "read_chunk_table",
]

VERSION: Final = 2
#: A chunk holds at most this many entries, and stops growing past this many
#: bytes (one larger entry still makes a chunk of its own): what a replay
#: reads at once.
CHUNK_ENTRIES: Final = 4096
CHUNK_BYTES: Final = 1024 * 1024

_FIXED: Final = struct.Struct("<BBQqHIIHHI")  # then u32 x header count
_COUNT_AT: Final = 30  # offset of the header count
_CRC: Final = struct.Struct("<I")
_NAME: Final = struct.Struct("<H")
_TABLE_HEAD: Final = struct.Struct("<II")  # CRC32, count
_V1_FIXED: Final = struct.Struct("<BBQqHIIHH")
_V1_HEADER: Final = struct.Struct("<HI")
_FLAG_KEY: Final = 1
_FLAG_DEDUPE: Final = 2
_FLAG_TIME: Final = 4
_MAX_U64: Final = 0xFFFF_FFFF_FFFF_FFFF
_MIN_SIZE: Final = _V1_FIXED.size + _CRC.size  # the smallest entry (version 1)
_BASE_SIZE: Final = _FIXED.size + _CRC.size  # an entry without variable parts
_CACHE_MAX: Final = 1024


class EntryCorrupt(ValueError):
    """The bytes are not a valid journal entry (torn, truncated or altered)."""


# -- caches: topics and header names repeat in every record ----------------------

_topics_out: dict[str, bytes] = {}
_topics_in: dict[bytes, str] = {}
# Header names tuple -> (names block, the names' total length in characters).
_names_out: dict[tuple[str, ...], tuple[bytes, int]] = {}
# Names block -> (header names, total length in characters).
_names_in: dict[bytes, tuple[tuple[str, ...], int]] = {}
_heads: dict[int, struct.Struct] = {}
# Header value lengths -> the Struct that splits the values in one call (they
# repeat: most headers have a fixed or a few lengths). Not cleared when full:
# entries of new lengths are split in Python instead.
_splits: dict[tuple[int, ...], struct.Struct] = {}


def _head(count: int) -> struct.Struct:
    """The fixed part and header value lengths of an entry with ``count`` headers."""
    found = _heads.get(count)
    if found is None:
        if len(_heads) >= 64:
            _heads.clear()
        found = _heads[count] = struct.Struct(f"{_FIXED.format}{count}I")
    return found


def _topic_bytes(topic: str) -> bytes:
    raw = _topics_out.get(topic)
    if raw is None:
        if len(_topics_out) >= _CACHE_MAX:
            _topics_out.clear()
        raw = _topics_out[topic] = topic.encode()
    return raw


def _names_block(names: tuple[str, ...]) -> tuple[bytes, int]:
    found = _names_out.get(names)
    if found is None:
        parts: list[bytes] = []
        for name in names:
            raw = name.encode()
            if len(raw) > 0xFFFF:
                raise ValueError("a header name is too long for a journal entry")
            parts += (_NAME.pack(len(raw)), raw)
        if len(_names_out) >= _CACHE_MAX:
            _names_out.clear()
        found = _names_out[names] = (b"".join(parts), sum(map(len, names)))
    return found


def _names_of(block: bytes, count: int) -> tuple[tuple[str, ...], int]:
    found = _names_in.get(block)
    if found is None:
        names = []
        pos = 0
        for _ in range(count):
            if pos + _NAME.size > len(block):
                raise EntryCorrupt("header names overrun their block")
            (length,) = _NAME.unpack_from(block, pos)
            pos += _NAME.size
            if pos + length > len(block):
                raise EntryCorrupt("header names overrun their block")
            names.append(str(block[pos : pos + length], "utf-8"))
            pos += length
        if pos != len(block):
            raise EntryCorrupt("header names do not fill their block")
        if len(_names_in) >= _CACHE_MAX:
            _names_in.clear()
        found = _names_in[block] = (tuple(names), sum(map(len, names)))
    return found


# Header names tuple -> what its names add to an entry beyond their lengths
# in OutboundRecord.size: their block's framing and a value length each.
_names_extra: dict[tuple[str, ...], int] = {}


def _names_extra_of(names: tuple[str, ...]) -> int:
    block, chars = _names_block(names)
    if len(_names_extra) >= _CACHE_MAX:
        _names_extra.clear()
    extra = _names_extra[names] = len(block) - chars + 4 * len(names)
    return extra


# -- entries ---------------------------------------------------------------------------


def encoded_size(record: OutboundRecord) -> int:
    """The length :func:`encode` returns for ``record`` (for accounting).

    Cheaper than :func:`encode` (the topic and header names come from the same
    caches, nothing is packed): the journal accounts a record's bytes with it
    when it accepts the record, and encodes it only if it has to write it.

    Raises:
        ValueError: If a field does not fit its slot, as :func:`encode` would.
    """
    topic = _topics_out.get(record.topic)
    if topic is None:
        topic = _topic_bytes(record.topic)
    names = record.known_header_names
    if names is not None:
        # The names' share of the entry is a constant of the tuple; the rest
        # is the record's size (key, value, header values and name lengths),
        # so nothing is walked. Small records only: no field can overflow.
        size = record.size
        dedupe_id = record.dedupe_id
        if size < 0xFFFF and dedupe_id is not None and dedupe_id.isascii():
            extra = _names_extra.get(names)
            if extra is None:
                extra = _names_extra_of(names)
            return _BASE_SIZE + len(topic) + len(dedupe_id) + size + extra
    value = record.value
    size = _BASE_SIZE + len(topic) + len(value)
    long = len(topic) > 0xFFFF or len(value) > 0xFFFF_FFFF
    key = record.key
    if key is not None:
        size += len(key)
        long |= len(key) > 0xFFFF_FFFF
    dedupe_id = record.dedupe_id
    if dedupe_id is not None:
        dedupe = len(dedupe_id) if dedupe_id.isascii() else len(dedupe_id.encode())
        size += dedupe
        long |= dedupe > 0xFFFF
    headers = record.headers
    if headers:
        names, values = zip(*headers)  # noqa: B905 - pairs, by type
        block = (_names_out.get(names) or _names_block(names))[0]
        total = sum(map(len, values))
        size += len(block) + 4 * len(values) + total
        long |= len(values) > 0xFFFF or len(block) > 0xFFFF_FFFF
        long |= total > 0xFFFF_FFFF and max(map(len, values)) > 0xFFFF_FFFF
    if long:
        raise ValueError("a record field is too long for a journal entry")
    return size


def encode(seq: int, record: OutboundRecord) -> bytes:
    """Encode ``record`` as the journal entry with sequence number ``seq``.

    Args:
        seq: The entry's sequence number, ``0 <= seq < 2**64``.
        record: The record to store.

    Returns:
        The entry's bytes, CRC32 included.

    Raises:
        ValueError: If ``seq`` or a field length does not fit its slot
            (topic, dedupe id and header names up to 65,535 bytes, key, value
            and header values up to 4 GiB, at most 65,535 headers).
    """
    if not 0 <= seq <= _MAX_U64:
        raise ValueError(f"sequence number out of range: {seq}")
    topic = _topics_out.get(record.topic)
    if topic is None:
        topic = _topic_bytes(record.topic)
    key = record.key
    dedupe_id = record.dedupe_id
    event_time = record.event_time_ms
    value = record.value
    headers = record.headers
    flags = 0
    if key is None:
        key = b""
    else:
        flags = _FLAG_KEY
    if dedupe_id is None:
        dedupe = b""
    else:
        dedupe = dedupe_id.encode()
        flags |= _FLAG_DEDUPE
    if event_time is None:
        event_time = 0
    else:
        flags |= _FLAG_TIME
    try:
        if headers:
            names, values = zip(*headers)  # noqa: B905 - pairs, by type
            found = _names_out.get(names)
            block = (found or _names_block(names))[0]
        else:
            values = ()
            block = b""
        count = len(values)
        head = _heads.get(count) or _head(count)
        fixed = head.pack(
            VERSION,
            flags,
            seq,
            event_time,
            len(topic),
            len(key),
            len(value),
            len(dedupe),
            count,
            len(block),
            *map(len, values),
        )
    except struct.error:
        raise ValueError("a record field is too long for a journal entry") from None
    body = b"".join((fixed, topic, key, dedupe, value, block, *values))
    return body + _CRC.pack(zlib.crc32(body))


def decode(data: bytes, expected_seq: int | None = None) -> tuple[int, OutboundRecord]:
    """Decode a journal entry (version 2, or version 1).

    Args:
        data: The entry's bytes, as :func:`encode` returned them.
        expected_seq: If given, the sequence number the entry must carry (the
            key it was stored under).

    Returns:
        The sequence number and the record (equal to the one encoded).

    Raises:
        EntryCorrupt: If the CRC, the version, a length or the sequence
            number does not check out, or the text is not UTF-8.
    """
    data = bytes(data)
    return decode_at(data, 0, len(data), expected_seq)


def decode_at(
    buf: bytes, start: int, end: int, expected_seq: int | None = None
) -> tuple[int, OutboundRecord]:
    """Decode the entry at ``buf[start:end]`` (in a chunk's data), as :func:`decode`."""
    if end - start < _MIN_SIZE or start < 0 or end > len(buf):
        raise EntryCorrupt(f"entry too short: {max(0, end - start)} bytes")
    stop = end - _CRC.size
    (crc,) = _CRC.unpack_from(buf, stop)
    if zlib.crc32(memoryview(buf)[start:stop]) != crc:
        raise EntryCorrupt("CRC32 mismatch")
    version = buf[start]
    if version != VERSION:
        if version == 1:
            return _decode_v1(buf[start:stop], expected_seq)
        raise EntryCorrupt(f"unknown entry version {version}")
    count = buf[start + _COUNT_AT] | buf[start + _COUNT_AT + 1] << 8
    head = _heads.get(count) or _head(count)
    if head.size > stop - start:
        raise EntryCorrupt(f"entry too short for {count} headers")
    fields = head.unpack_from(buf, start)
    (
        _,
        flags,
        seq,
        event_time,
        topic_len,
        key_len,
        value_len,
        dedupe_len,
        _,
        names_len,
    ) = fields[:10]
    if expected_seq is not None and seq != expected_seq:
        raise EntryCorrupt(f"entry {seq} stored as {expected_seq}")
    try:
        pos = start + head.size
        raw = buf[pos : pos + topic_len]
        topic = _topics_in.get(raw)
        if topic is None:
            if len(_topics_in) >= _CACHE_MAX:
                _topics_in.clear()
            topic = _topics_in[raw] = str(raw, "utf-8")
        pos += topic_len
        key = buf[pos : pos + key_len] if flags & _FLAG_KEY else None
        pos += key_len
        dedupe = str(buf[pos : pos + dedupe_len], "utf-8")
        pos += dedupe_len
        value = buf[pos : pos + value_len]
        pos += value_len
        if count:
            block = buf[pos : pos + names_len]
            found = _names_in.get(block)
            names, names_size = found or _names_of(block, count)
            if len(names) != count:
                raise EntryCorrupt("header names do not match the header count")
            pos += names_len
            lengths = fields[10:]
            split = _splits.get(lengths)
            if split is None and len(_splits) < _CACHE_MAX:
                split = _splits[lengths] = struct.Struct(
                    "<" + "".join(f"{n}s" for n in lengths)
                )
            if split is not None and pos + split.size <= stop:
                values = split.unpack_from(buf, pos)  # one call for all values
                pos += split.size
            else:
                offsets = list(accumulate(lengths, initial=pos))
                values = tuple([buf[a:b] for a, b in pairwise(offsets)])
                pos = offsets[-1]
            headers = tuple(zip(names, values))  # noqa: B905 - same count
            size = names_size + sum(lengths)
        else:
            if names_len:
                raise EntryCorrupt("header names without headers")
            headers = ()
            size = 0
    except (struct.error, UnicodeDecodeError) as exc:
        raise EntryCorrupt(f"malformed entry: {exc}") from None
    if pos != stop:
        raise EntryCorrupt(f"entry lengths do not add up ({pos} != {stop})")
    record = fast_record(
        topic,
        key,
        value,
        headers,
        dedupe if flags & _FLAG_DEDUPE else None,
        event_time if flags & _FLAG_TIME else None,
        size + value_len + key_len,
    )
    return seq, record


def _decode_v1(body: bytes, expected_seq: int | None) -> tuple[int, OutboundRecord]:
    """A version 1 entry (CRC already checked), for migrating old journals."""
    (
        _,
        flags,
        seq,
        event_time,
        topic_len,
        key_len,
        value_len,
        dedupe_len,
        header_count,
    ) = _V1_FIXED.unpack_from(body, 0)
    if expected_seq is not None and seq != expected_seq:
        raise EntryCorrupt(f"entry {seq} stored as {expected_seq}")
    try:
        pos = _V1_FIXED.size
        topic = str(body[pos : pos + topic_len], "utf-8")
        pos += topic_len
        key = body[pos : pos + key_len] if flags & _FLAG_KEY else None
        pos += key_len
        dedupe = str(body[pos : pos + dedupe_len], "utf-8")
        pos += dedupe_len
        value = body[pos : pos + value_len]
        pos += value_len
        headers: list[tuple[str, bytes]] = []
        for _ in range(header_count):
            name_len, header_len = _V1_HEADER.unpack_from(body, pos)
            pos += _V1_HEADER.size
            name = str(body[pos : pos + name_len], "utf-8")
            pos += name_len
            headers.append((name, body[pos : pos + header_len]))
            pos += header_len
    except (struct.error, UnicodeDecodeError) as exc:
        raise EntryCorrupt(f"malformed entry: {exc}") from None
    if pos != len(body):
        raise EntryCorrupt(f"entry lengths do not add up ({pos} != {len(body)})")
    return seq, OutboundRecord(
        topic=topic,
        key=key,
        value=value,
        headers=tuple(headers),
        dedupe_id=dedupe if flags & _FLAG_DEDUPE else None,
        event_time_ms=event_time if flags & _FLAG_TIME else None,
    )


# -- chunk tables -----------------------------------------------------------------


def chunk_table(sizes: Sequence[int], borns: Sequence[int]) -> bytes:
    """The table of a chunk whose entries have these sizes and birth times (ms)."""
    count = len(sizes)
    if len(borns) != count:
        raise ValueError("one birth time per entry")
    body = struct.pack(f"<I{count}I{count}q", count, *sizes, *borns)
    return _CRC.pack(zlib.crc32(body)) + body


def read_chunk_table(
    table: bytes, count: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The entry sizes and birth times (ms) of a chunk of ``count`` entries.

    Raises:
        EntryCorrupt: If the table fails its CRC or is not for ``count``
            entries.
    """
    if len(table) != _TABLE_HEAD.size + 12 * count:
        raise EntryCorrupt(f"chunk table of {len(table)} bytes for {count} entries")
    crc, stored = _TABLE_HEAD.unpack_from(table, 0)
    if zlib.crc32(memoryview(table)[_CRC.size :]) != crc or stored != count:
        raise EntryCorrupt("chunk table CRC32 mismatch")
    sizes = struct.unpack_from(f"<{count}I", table, _TABLE_HEAD.size)
    borns = struct.unpack_from(f"<{count}q", table, _TABLE_HEAD.size + 4 * count)
    return sizes, borns
