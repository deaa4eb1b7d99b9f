"""Which seqs were written to which connection, stored as ranges.

Frames carry contiguous seq runs and a connection sees consecutive frames, so
a million items usually collapse into a handful of ``[first, last]`` ranges.
"""

from __future__ import annotations

from collections.abc import Iterable


class SeqLedger:
    """An append-mostly set of ints kept as sorted, merged ``[first, last]`` runs."""

    __slots__ = ("_ranges", "count")

    def __init__(self) -> None:
        self._ranges: list[list[int]] = []
        self.count = 0

    def add(self, first: int, last: int) -> None:
        """Record ``first..last`` (inclusive); runs arrive in increasing order."""
        if last < first:
            return
        ranges = self._ranges
        if ranges and ranges[-1][1] + 1 >= first:
            if first <= ranges[-1][1]:  # pragma: no cover - seqs never repeat
                raise ValueError("seq ranges must be added in increasing order")
            ranges[-1][1] = last
        else:
            ranges.append([first, last])
        self.count += last - first + 1

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
