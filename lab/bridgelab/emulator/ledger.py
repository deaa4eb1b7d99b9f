"""Which seqs were written to which connection, stored as ranges.

Frames carry contiguous seq runs and a connection sees consecutive frames, so
a million items usually collapse into a handful of ``[first, last]`` ranges.
Runs may also arrive out of order (a Socket.IO batch is emitted section by
section: positions, then devices, then events); they are inserted in place.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable


class SeqLedger:
    """An append-mostly set of ints kept as sorted, merged ``[first, last]`` runs."""

    __slots__ = ("_ranges", "count")

    def __init__(self) -> None:
        self._ranges: list[list[int]] = []
        self.count = 0

    def add(self, first: int, last: int) -> None:
        """Record ``first..last`` (inclusive); a seq may be recorded only once."""
        if last < first:
            return
        ranges = self._ranges
        if not ranges or ranges[-1][1] < first:  # the usual case: append
            if ranges and ranges[-1][1] + 1 == first:
                ranges[-1][1] = last
            else:
                ranges.append([first, last])
        else:
            self._insert(first, last)
        self.count += last - first + 1

    def _insert(self, first: int, last: int) -> None:
        ranges = self._ranges
        at = bisect.bisect_right(ranges, first, key=lambda r: r[0])
        before = ranges[at - 1] if at > 0 else None
        after = ranges[at] if at < len(ranges) else None
        if (before is not None and before[1] >= first) or (
            after is not None and after[0] <= last
        ):  # pragma: no cover - seqs never repeat on one connection
            raise ValueError(f"seqs {first}..{last} were already recorded")
        if before is not None and before[1] + 1 == first:
            before[1] = last
            if after is not None and after[0] == last + 1:
                before[1] = after[1]
                del ranges[at]
        elif after is not None and after[0] == last + 1:
            after[0] = first
        else:
            ranges.insert(at, [first, last])

    def ranges(self) -> list[tuple[int, int]]:
        """The runs, oldest first."""
        return [(a, b) for a, b in self._ranges]

    def seqs(self) -> set[int]:
        """Every seq as a set (memory grows with the count; meant for tests)."""
        out: set[int] = set()
        for a, b in self._ranges:
            out.update(range(a, b + 1))
        return out


def merge_ranges(runs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Union of possibly overlapping runs, as sorted disjoint runs."""
    merged: list[list[int]] = []
    for a, b in sorted(runs):
        if merged and a <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def ranges_to_set(runs: Iterable[tuple[int, int]]) -> set[int]:
    """Expand runs into a set of ints."""
    out: set[int] = set()
    for a, b in runs:
        out.update(range(a, b + 1))
    return out
