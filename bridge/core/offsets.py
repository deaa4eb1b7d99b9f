"""Which offset a partition may commit: the contiguous prefix of finished work.

Theory of operation: commands of one partition start in offset order but
finish in any order (different deliveries run concurrently). Committing an
offset says "everything before it is done", so the commit point is the first
offset that is still running; if nothing runs, one past the last finished.
A crash then replays only work that had not finished, never skips any.
"""

from __future__ import annotations


class PartitionOffsets:
    """Offsets taken from one partition and which of them are finished."""

    def __init__(self) -> None:
        self._pending: dict[int, bool] = {}  # offset -> finished, in offset order
        self._next_commit: int | None = None

    def take(self, offset: int) -> None:
        """Record that ``offset`` was taken (offsets arrive in increasing order)."""
        self._pending[offset] = False

    def finish(self, offset: int) -> None:
        if offset in self._pending:
            self._pending[offset] = True

    def committable(self) -> int | None:
        """The offset to commit now (the next one to read), or None if unchanged."""
        advanced = False
        while self._pending:
            first = next(iter(self._pending))
            if not self._pending[first]:
                break
            del self._pending[first]
            self._next_commit = first + 1
            advanced = True
        return self._next_commit if advanced else None

    @property
    def running(self) -> int:
        return sum(1 for done in self._pending.values() if not done)

    @property
    def outstanding(self) -> int:
        return len(self._pending)
