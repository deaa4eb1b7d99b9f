"""The on-disk encoding of one journaled ``OutboundRecord``: compact, checked.

Theory of operation
-------------------
The durable journal (``bridge/adapters/journal_store.py``) stores each record
the pump accepted as one opaque blob, keyed by its sequence number. This
module owns that blob, and nothing here does I/O: :func:`encode` and
:func:`decode` are pure functions of their arguments.

Layout, little-endian (``struct``), fixed part first::

    u8  version (1)      u8  flags (1: key, 2: dedupe_id, 4: event_time_ms)
    u64 seq              i64 event_time_ms (0 when absent)
    u16 topic length     u32 key length     u32 value length
    u16 dedupe length    u16 header count
    topic | key | dedupe_id | value
    per header: u16 name length | u32 value length | name | value
    u32 CRC32 of everything before it

The sequence number is inside the checked bytes, so a blob found under the
wrong key (or a torn, truncated or bit-flipped one) is rejected with
:class:`EntryCorrupt` instead of being published; the journal counts and
skips it. Text (topic, dedupe id, header names) is UTF-8. Replaying a blob
gives back the very bytes that were accepted, so a re-sent record carries the
same ``ce_id`` and consumers can drop the duplicate.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

from bridge.core.records import OutboundRecord

__all__ = ["VERSION", "EntryCorrupt", "decode", "encode", "encoded_size"]

VERSION: Final = 1

_FIXED: Final = struct.Struct("<BBQqHIIHH")
_HEADER: Final = struct.Struct("<HI")
_CRC: Final = struct.Struct("<I")
_FLAG_KEY: Final = 1
_FLAG_DEDUPE: Final = 2
_FLAG_TIME: Final = 4
_MAX_U16: Final = 0xFFFF
_MAX_U32: Final = 0xFFFF_FFFF
_MAX_U64: Final = 0xFFFF_FFFF_FFFF_FFFF

# Header names repeat in every record: decode them once.
_names: dict[bytes, str] = {}


class EntryCorrupt(ValueError):
    """The bytes are not a valid journal entry (torn, truncated or altered)."""


def encoded_size(record: OutboundRecord) -> int:
    """The length :func:`encode` returns for ``record`` (for accounting)."""
    size = _FIXED.size + _CRC.size + len(record.topic.encode())
    size += len(record.value)
    if record.key is not None:
        size += len(record.key)
    if record.dedupe_id is not None:
        size += len(record.dedupe_id.encode())
    for name, value in record.headers:
        size += _HEADER.size + len(name.encode()) + len(value)
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
    topic = record.topic.encode()
    key = record.key
    dedupe = None if record.dedupe_id is None else record.dedupe_id.encode()
    value = record.value
    event_time = record.event_time_ms
    headers = record.headers
    flags = 0
    if key is not None:
        flags |= _FLAG_KEY
    else:
        key = b""
    if dedupe is not None:
        flags |= _FLAG_DEDUPE
    else:
        dedupe = b""
    if event_time is not None:
        flags |= _FLAG_TIME
    else:
        event_time = 0
    if (
        len(topic) > _MAX_U16
        or len(dedupe) > _MAX_U16
        or len(headers) > _MAX_U16
        or len(key) > _MAX_U32
        or len(value) > _MAX_U32
    ):
        raise ValueError("a record field is too long for a journal entry")
    parts = [
        _FIXED.pack(
            VERSION,
            flags,
            seq,
            event_time,
            len(topic),
            len(key),
            len(value),
            len(dedupe),
            len(headers),
        ),
        topic,
        key,
        dedupe,
        value,
    ]
    pack = _HEADER.pack
    append = parts.append
    for name, header_value in headers:
        raw_name = name.encode()
        if len(raw_name) > _MAX_U16 or len(header_value) > _MAX_U32:
            raise ValueError("a header is too long for a journal entry")
        append(pack(len(raw_name), len(header_value)))
        append(raw_name)
        append(header_value)
    body = b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body))


def decode(data: bytes, expected_seq: int | None = None) -> tuple[int, OutboundRecord]:
    """Decode a journal entry.

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
    view = memoryview(data)
    if len(view) < _FIXED.size + _CRC.size:
        raise EntryCorrupt(f"entry too short: {len(view)} bytes")
    end = len(view) - _CRC.size
    (crc,) = _CRC.unpack_from(view, end)
    if zlib.crc32(view[:end]) != crc:
        raise EntryCorrupt("CRC32 mismatch")
    (
        version,
        flags,
        seq,
        event_time,
        topic_len,
        key_len,
        value_len,
        dedupe_len,
        header_count,
    ) = _FIXED.unpack_from(view, 0)
    if version != VERSION:
        raise EntryCorrupt(f"unknown entry version {version}")
    if expected_seq is not None and seq != expected_seq:
        raise EntryCorrupt(f"entry {seq} stored as {expected_seq}")
    try:
        pos = _FIXED.size
        topic = str(view[pos : pos + topic_len], "utf-8")
        pos += topic_len
        key = bytes(view[pos : pos + key_len]) if flags & _FLAG_KEY else None
        pos += key_len
        dedupe = str(view[pos : pos + dedupe_len], "utf-8")
        pos += dedupe_len
        value = bytes(view[pos : pos + value_len])
        pos += value_len
        headers: list[tuple[str, bytes]] = []
        unpack = _HEADER.unpack_from
        for _ in range(header_count):
            name_len, header_len = unpack(view, pos)
            pos += _HEADER.size
            raw_name = bytes(view[pos : pos + name_len])
            name = _names.get(raw_name)
            if name is None:
                if len(_names) >= 1024:
                    _names.clear()
                name = _names[raw_name] = raw_name.decode()
            pos += name_len
            headers.append((name, bytes(view[pos : pos + header_len])))
            pos += header_len
    except (struct.error, UnicodeDecodeError) as exc:
        raise EntryCorrupt(f"malformed entry: {exc}") from None
    if pos != end:
        raise EntryCorrupt(f"entry lengths do not add up ({pos} != {end})")
    record = OutboundRecord(
        topic=topic,
        key=key,
        value=value,
        headers=tuple(headers),
        dedupe_id=dedupe if flags & _FLAG_DEDUPE else None,
        event_time_ms=event_time if flags & _FLAG_TIME else None,
    )
    return seq, record
