"""Remembering recently seen event ids, to drop the overlap of two sockets.

Theory of operation: during a make-before-break rotation, and right after a
reconnect, the same upstream items can arrive twice. Every item has a
deterministic event id (``bridge.core.codec``); ``RecentIds.add`` says
whether an id is new. Memory is bounded: a FIFO of the last ``capacity`` ids
(a set for membership, a deque for eviction order, both O(1)).
"""

from __future__ import annotations

from collections import deque


class RecentIds:
    """A bounded set of the most recently added ids."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._order: deque[str] = deque()
        self._members: set[str] = set()

    def add(self, event_id: str) -> bool:
        """Remember ``event_id``; True if it was not already remembered."""
        if event_id in self._members:
            return False
        self._members.add(event_id)
        self._order.append(event_id)
        if len(self._order) > self._capacity:
            self._members.discard(self._order.popleft())
        return True

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._members

    def __len__(self) -> int:
        return len(self._order)
