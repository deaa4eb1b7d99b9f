"""The leader's progress messages on the coordination topic. Pure.

One message says: "Kafka acknowledged the records with these digests"
(:func:`bridge.core.standby.digest`), for one account, from one leader term.
The leader sends one every progress interval while it publishes; standbys
read them all and fold them into their acked window.

Layout of the value, little-endian::

    4s  magic b"SBP1"
    u32 count
    u64 digest * count

The account is the record's key (and its partition of the coordination
topic); who sent it and in which term are headers, for people reading the
topic and for tests.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

__all__ = ["MAGIC", "ProgressCorrupt", "decode_progress", "encode_progress"]

MAGIC: Final = b"SBP1"
_HEAD: Final = struct.Struct("<4sI")
_MAX_COUNT: Final = 1_000_000


class ProgressCorrupt(ValueError):
    """The bytes are not a progress message (a foreign or damaged record)."""


def encode_progress(digests: Sequence[int]) -> bytes:
    """The value of a progress message for these digests (each < 2**64)."""
    if len(digests) > _MAX_COUNT:
        raise ValueError(f"at most {_MAX_COUNT} digests per message")
    return _HEAD.pack(MAGIC, len(digests)) + struct.pack(f"<{len(digests)}Q", *digests)


def decode_progress(value: bytes) -> tuple[int, ...]:
    """The digests in a progress message.

    Raises:
        ProgressCorrupt: Not a progress message, or its length is wrong.
    """
    if len(value) < _HEAD.size:
        raise ProgressCorrupt("shorter than its header")
    magic, count = _HEAD.unpack_from(value)
    if magic != MAGIC:
        raise ProgressCorrupt(f"unknown magic {magic!r}")
    if count > _MAX_COUNT or len(value) != _HEAD.size + 8 * count:
        raise ProgressCorrupt(f"length {len(value)} does not hold {count} digests")
    return struct.unpack_from(f"<{count}Q", value, _HEAD.size)
