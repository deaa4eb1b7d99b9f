"""``sendstack-bridge journal verify|stats``: read a journal directory, change nothing.

Both open the file read-only (WAL-aware, so what a running bridge committed
is seen) and are safe beside it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

from bridge.adapters.journal_file import (
    DB_NAME,
    FORMAT,
    chunk_sizes,
    file_format,
    gone_flags,
    quarantined_files,
    summarize,
    table_names,
)
from bridge.core.journal_entry import EntryCorrupt, decode, decode_at

__all__ = ["JournalReport", "stats", "verify"]


@dataclass(frozen=True, slots=True)
class JournalReport:
    """``verify``/``stats`` of a journal directory."""

    path: Path
    exists: bool
    entries: int = 0
    bytes: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    oldest_born_ms: int | None = None
    file_bytes: int = 0
    ok: bool = True
    corrupt_entries: tuple[int, ...] = ()
    problems: tuple[str, ...] = ()
    quarantined_files: tuple[str, ...] = ()


def _open_read_only(path: Path) -> sqlite3.Connection:
    # Read-only but WAL-aware: what a running bridge committed is seen.
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)


def stats(directory: Path | str) -> JournalReport:
    """Counts of a journal directory, cheap (no entry is decoded).

    Safe beside a running bridge (read-only). A file SQLite cannot read is
    reported with ``ok=False`` and the error in ``problems``.
    """
    directory = Path(directory)
    path = directory / DB_NAME
    if not path.exists():
        return JournalReport(
            path, exists=False, quarantined_files=quarantined_files(directory)
        )
    file_bytes = sum(
        p.stat().st_size
        for p in directory.glob(f"{DB_NAME}*")
        if "corrupt" not in p.name
    )

    def failed(problem: str) -> JournalReport:
        return JournalReport(
            path,
            exists=True,
            file_bytes=file_bytes,
            ok=False,
            problems=(problem,),
            quarantined_files=quarantined_files(directory),
        )

    try:
        db = _open_read_only(path)
        try:
            fmt = file_format(db)
            summary = summarize(db) if fmt <= FORMAT else None
        finally:
            db.close()
    except sqlite3.Error as exc:
        return failed(f"unreadable: {exc}")
    if summary is None:
        return failed(f"journal format {fmt} is newer than this bridge's {FORMAT}")
    return JournalReport(
        path,
        exists=True,
        entries=summary.entries,
        bytes=summary.bytes,
        first_seq=summary.first_seq,
        last_seq=summary.last_seq,
        oldest_born_ms=summary.oldest_born_ms,
        file_bytes=file_bytes,
        quarantined_files=quarantined_files(directory),
    )


def verify(directory: Path | str, *, chunk: int = 1000) -> JournalReport:
    """Check a journal directory: SQLite's ``quick_check``, then every entry's CRC.

    Reads one chunk (or, in a format 1 file, ``chunk`` entries) at a time,
    changes nothing, and is safe beside a running bridge. Only live entries
    (not yet acknowledged) are checked and counted. ``ok`` is False if
    anything is wrong; the bad sequences are in ``corrupt_entries`` (the
    first 1,000).
    """
    base = stats(directory)
    if not base.exists or not base.ok:
        return base
    problems: list[str] = []
    corrupt: list[int] = []
    counts = [0, 0]  # entries, bytes

    def bad(seq: int, why: str) -> None:
        if len(corrupt) < 1000:
            corrupt.append(seq)
        if len(problems) < 20:
            problems.append(f"entry {seq}: {why}")

    try:
        db = _open_read_only(base.path)
        try:
            check = db.execute("PRAGMA quick_check").fetchall()
            if check != [("ok",)]:
                problems.extend(f"quick_check: {row[0]}" for row in check[:20])
            tables = table_names(db)
            if "chunks" in tables:
                _verify_chunks(db, counts, bad)
            if "entries" in tables:
                _verify_entries(db, chunk, counts, bad)
        finally:
            db.close()
    except sqlite3.Error as exc:
        problems.append(f"unreadable: {exc}")
    return JournalReport(
        base.path,
        exists=True,
        entries=counts[0],
        bytes=counts[1],
        first_seq=base.first_seq,
        last_seq=base.last_seq,
        oldest_born_ms=base.oldest_born_ms,
        file_bytes=base.file_bytes,
        ok=not problems and not corrupt,
        corrupt_entries=tuple(corrupt),
        problems=tuple(problems),
        quarantined_files=base.quarantined_files,
    )


def _verify_chunks(
    db: sqlite3.Connection,
    counts: list[int],
    bad: Callable[[int, str], None],
) -> None:
    after = -1
    while True:
        row = db.execute(
            "SELECT c.first_seq, c.count, c.tbl, c.data, a.bits FROM chunks AS c"
            " LEFT JOIN acks AS a ON a.first_seq = c.first_seq"
            " WHERE c.first_seq > ? ORDER BY c.first_seq LIMIT 1",
            (after,),
        ).fetchone()
        if row is None:
            return
        first, count, table, data, bits = row
        after = first
        sizes, ok = chunk_sizes(table, count, len(data))
        offsets = list(accumulate(sizes, initial=0))
        for k, gone in enumerate(gone_flags(bits, count)):
            if gone:
                continue
            counts[0] += 1
            counts[1] += sizes[k]
            if not ok:
                bad(first + k, "its chunk's table is damaged")
                continue
            try:
                decode_at(data, offsets[k], offsets[k + 1], first + k)
            except EntryCorrupt as exc:
                bad(first + k, str(exc))


def _verify_entries(
    db: sqlite3.Connection,
    chunk: int,
    counts: list[int],
    bad: Callable[[int, str], None],
) -> None:
    """A format 1 table (not migrated yet): one row per entry."""
    after = -1
    while True:
        rows = db.execute(
            "SELECT seq, data FROM entries WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, chunk),
        ).fetchall()
        if not rows:
            return
        for seq, data in rows:
            after = seq
            counts[0] += 1
            counts[1] += len(data)
            try:
                decode(data, seq)
            except EntryCorrupt as exc:
                bad(seq, str(exc))
