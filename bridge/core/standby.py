"""What a standby keeps, and what it publishes when it takes over. Pure.

A hot standby reads the same account's stream as the leader, on its own
session, and publishes nothing. It keeps the records of the last
``max_age`` seconds (bounded by bytes too) in a :class:`RecentRecords`
buffer. The leader reports which records Kafka acknowledged, as 64-bit
digests of their identity (:func:`digest`), in progress messages the standby
folds into an :class:`AckedDigests` window. On takeover the standby publishes,
in the order it received them, the buffered records whose digest the leader
never reported (:meth:`RecentRecords.not_acked`): every record both replicas
received is then in Kafka, at most a few twice (those the leader had
published after its last progress message), each time with the same
``ce_id``.

Why digests of identities rather than per-device high-water marks: event
times are not monotonic per device (a device offline for an hour uploads its
backlog late), and a high-water mark would silently skip those. 8 bytes per
record keeps the progress traffic small (1.6 KB/s at 200 records/s), and at
the window's size a 64-bit collision is about 1 in 10^10.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from bridge.core.records import OutboundRecord

__all__ = ["AckedDigests", "RecentRecords", "digest"]


def digest(record: OutboundRecord) -> int:
    """A stable 64-bit digest of the record's identity (same on every replica).

    The item's ``dedupe_id`` (what ``ce_id`` derives from) when it has one;
    a dead letter has none, so its topic and bytes stand for it.
    """
    h = hashlib.blake2b(digest_size=8)
    if record.dedupe_id is not None:
        h.update(b"i")
        h.update(record.dedupe_id.encode())
    else:
        h.update(b"t")
        h.update(record.topic.encode())
        h.update(b"\0")
        h.update(record.value)
    return int.from_bytes(h.digest(), "little")


@dataclass(frozen=True, slots=True)
class _Held:
    at: float
    seq: int
    digest: int
    record: OutboundRecord


class RecentRecords:
    """The records received in the last ``max_age`` seconds, at most ``max_bytes``.

    Each record gets a receive sequence number, so that a takeover can walk
    the buffer while new records keep arriving (:meth:`not_acked` from a
    sequence on).
    """

    def __init__(self, *, max_age: float, max_bytes: int) -> None:
        if max_age <= 0 or max_bytes <= 0:
            raise ValueError("max_age and max_bytes must be > 0")
        self.max_age = max_age
        self.max_bytes = max_bytes
        self._held: deque[_Held] = deque()
        self._bytes = 0
        self._next_seq = 0
        self.evicted = 0  # records pushed out by the byte bound before max_age

    def __len__(self) -> int:
        return len(self._held)

    @property
    def bytes(self) -> int:
        """Bytes held (record sizes)."""
        return self._bytes

    @property
    def next_seq(self) -> int:
        """The sequence number the next record will get."""
        return self._next_seq

    def oldest_age(self, now: float) -> float:
        """Seconds the oldest record has been held (0 when empty)."""
        return now - self._held[0].at if self._held else 0.0

    def add(self, record: OutboundRecord, now: float) -> int:
        """Hold ``record`` (received at ``now``); return its digest."""
        d = digest(record)
        self._held.append(_Held(now, self._next_seq, d, record))
        self._next_seq += 1
        self._bytes += record.size
        self.expire(now)
        while self._bytes > self.max_bytes and len(self._held) > 1:
            self._drop_oldest()
            self.evicted += 1
        return d

    def expire(self, now: float) -> None:
        """Forget records older than ``max_age``."""
        limit = now - self.max_age
        held = self._held
        while held and held[0].at < limit:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        old = self._held.popleft()
        self._bytes -= old.record.size

    def not_acked(
        self, acked: AckedDigests, from_seq: int = 0
    ) -> Iterator[tuple[int, OutboundRecord]]:
        """Held records from ``from_seq`` on whose digest ``acked`` lacks.

        Yields ``(seq, record)`` in receive order. Safe while records are
        added between steps (it re-finds its place by sequence number).
        """
        seq = from_seq
        while True:
            item = self._at_or_after(seq)
            if item is None:
                return
            seq = item.seq + 1
            if item.digest not in acked:
                yield item.seq, item.record

    def _at_or_after(self, seq: int) -> _Held | None:
        held = self._held
        if not held or held[-1].seq < seq:
            return None
        first = held[0].seq
        # Sequence numbers in the deque are contiguous: index by offset.
        return held[max(0, seq - first)]


class AckedDigests:
    """Digests the leader reported acknowledged, for the last ``max_age`` seconds."""

    def __init__(self, *, max_age: float) -> None:
        if max_age <= 0:
            raise ValueError("max_age must be > 0")
        self.max_age = max_age
        self._batches: deque[tuple[float, frozenset[int]]] = deque()
        self._all: dict[int, int] = {}  # digest -> batches holding it

    def __contains__(self, d: object) -> bool:
        return d in self._all

    def __len__(self) -> int:
        return len(self._all)

    def add(self, digests: Iterable[int], now: float) -> None:
        """Fold in one progress message (received at ``now``)."""
        batch = frozenset(digests)
        self._batches.append((now, batch))
        counts = self._all
        for d in batch:
            counts[d] = counts.get(d, 0) + 1
        self.expire(now)

    def expire(self, now: float) -> None:
        """Forget progress older than ``max_age``."""
        limit = now - self.max_age
        batches = self._batches
        counts = self._all
        while batches and batches[0][0] < limit:
            _, batch = batches.popleft()
            for d in batch:
                left = counts[d] - 1
                if left:
                    counts[d] = left
                else:
                    del counts[d]
