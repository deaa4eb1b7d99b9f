"""The journal file's layout and what reads it: names, schema, chunk helpers, errors.

Shared by the store (``journal_store.py``, which writes the file and says why
it is laid out so) and the operators' reports (``journal_report.py``, which
only read it). Format 2: one row per chunk of consecutive entries
(``chunks``), and a bitmap of the entries gone per partly gone chunk
(``acks``).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import compress
from pathlib import Path
from typing import Final

from bridge.core.journal_entry import EntryCorrupt, read_chunk_table
from bridge.errors import BridgeError

__all__ = [
    "CHUNK_COLUMNS",
    "DB_NAME",
    "FORMAT",
    "SCHEMA",
    "JournalCorrupt",
    "JournalError",
    "JournalIOError",
    "Summary",
    "UnknownFormat",
    "all_gone",
    "born_of",
    "chunk_sizes",
    "file_format",
    "first_live",
    "gone_flags",
    "is_corruption",
    "quarantined_files",
    "spread_sizes",
    "summarize",
    "table_names",
    "translated",
]

DB_NAME: Final = "journal.sqlite3"
#: The file's format (``PRAGMA user_version``): 2, chunks; 1 (no version
#: set, a table ``entries``), one row per entry.
FORMAT: Final = 2
SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS chunks ("
    " first_seq INTEGER PRIMARY KEY,"
    " count INTEGER NOT NULL,"
    " born_ms INTEGER NOT NULL,"
    " tbl BLOB NOT NULL,"
    " data BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS acks ("
    " first_seq INTEGER PRIMARY KEY,"
    " bits BLOB NOT NULL,"
    " changed_ms INTEGER NOT NULL)",
)
CHUNK_COLUMNS: Final = (
    "SELECT c.first_seq, c.count, c.born_ms, c.tbl, length(c.data), a.bits"
    " FROM chunks AS c LEFT JOIN acks AS a ON a.first_seq = c.first_seq"
)


class JournalError(BridgeError):
    """The journal cannot go on."""


class JournalIOError(JournalError):
    """The journal's disk failed: full, read-only, missing or erroring.

    Not retryable here: the app exits and Kubernetes restarts the pod.
    """


class JournalCorrupt(JournalError):
    """SQLite found the journal file damaged while running.

    The next open quarantines the file, so a restart does not loop on it.
    """


class UnknownFormat(JournalCorrupt):
    """The file is of a newer format than this code reads."""


def is_corruption(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or (
        "malformed" in str(exc) or "not a database" in str(exc)
    )


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn sqlite3/OS errors into JournalCorrupt or JournalIOError."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if is_corruption(exc):
            raise JournalCorrupt(f"journal file damaged while {what}: {exc}") from exc
        raise JournalIOError(f"journal I/O failed while {what}: {exc}") from exc
    except OSError as exc:
        raise JournalIOError(f"journal I/O failed while {what}: {exc}") from exc


def spread_sizes(total: int, count: int) -> tuple[int, ...]:
    """Sizes for the entries of a chunk whose table is unreadable (sum: total)."""
    share = total // count
    return (share,) * (count - 1) + (total - share * (count - 1),)


def chunk_sizes(
    table: bytes, count: int, data_bytes: int
) -> tuple[tuple[int, ...], bool]:
    """A chunk's entry sizes, and whether its table checked out."""
    try:
        sizes, _ = read_chunk_table(table, count)
    except EntryCorrupt:
        return spread_sizes(data_bytes, count), False
    if sum(sizes) != data_bytes:
        return spread_sizes(data_bytes, count), False
    return sizes, True


def all_gone(count: int) -> bytes:
    """The bitmap of a chunk of ``count`` entries that are all gone."""
    whole, rest = divmod(count, 8)
    return b"\xff" * whole + (bytes(((1 << rest) - 1,)) if rest else b"")


def gone_flags(bits: bytes | None, count: int) -> list[int]:
    """Per entry of a chunk, 1 if it is gone, else 0."""
    if bits is None:
        return [0] * count
    return [(byte >> j) & 1 for byte in bits for j in range(8)][:count]


def first_live(bits: bytes | None, count: int) -> int:
    """The index of a chunk's first entry still live (``count``: none)."""
    if bits is None:
        return 0
    mask = int.from_bytes(bits, "little")
    return min(count, ((mask + 1) & ~mask).bit_length() - 1)


@dataclass(slots=True)
class Summary:
    entries: int = 0
    bytes: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    oldest_born_ms: int | None = None


def table_names(db: sqlite3.Connection) -> set[str]:
    return {
        name
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
    }


def file_format(db: sqlite3.Connection) -> int:
    """The file's format: 0 (empty, new), 1, 2, or a newer one."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version:
        return int(version)
    tables = table_names(db)
    if "entries" in tables:
        return 1
    return 2 if "chunks" in tables else 0


def summarize(db: sqlite3.Connection) -> Summary:
    """Counts of live entries, first/last sequence and the oldest birth."""
    out = Summary()
    tables = table_names(db)
    heads: list[tuple[int, int | None]] = []  # (first live seq, its birth)
    lasts: list[int] = []
    if "chunks" in tables:
        count, total, last = db.execute(
            "SELECT coalesce(sum(count), 0), coalesce(sum(length(data)), 0),"
            " max(first_seq + count - 1) FROM chunks"
        ).fetchone()
        out.entries, out.bytes = count, total
        for bits, n, table, size in db.execute(
            "SELECT a.bits, c.count, c.tbl, length(c.data)"
            " FROM acks AS a JOIN chunks AS c ON c.first_seq = a.first_seq"
        ):
            flags = gone_flags(bits, n)
            out.entries -= sum(flags)
            out.bytes -= sum(compress(chunk_sizes(table, n, size)[0], flags))
        row = db.execute(f"{CHUNK_COLUMNS} ORDER BY c.first_seq LIMIT 1").fetchone()
        if row is not None:
            first, n, born, table, _, bits = row
            k = first_live(bits, n)
            heads.append((first + k, born_of(table, n, k, born)))
            lasts.append(last)
    if "entries" in tables:  # format 1 (maybe half migrated)
        count, total, first, last = db.execute(
            "SELECT count(*), coalesce(sum(length(data)), 0), min(seq), max(seq)"
            " FROM entries"
        ).fetchone()
        out.entries += count
        out.bytes += total
        if first is not None:
            (born,) = db.execute(
                "SELECT born_ms FROM entries WHERE seq = ?", (first,)
            ).fetchone()
            heads.append((first, born))
            lasts.append(last)
    if heads:
        out.first_seq, out.oldest_born_ms = min(heads)
        out.last_seq = max(lasts)
    return out


def born_of(table: bytes, count: int, k: int, fallback: int) -> int:
    """Entry ``k``'s birth, or the chunk's (its first entry's) if unreadable."""
    if k == 0 or k >= count:
        return fallback
    try:
        _, borns = read_chunk_table(table, count)
    except EntryCorrupt:
        return fallback
    return borns[k]


def quarantined_files(directory: Path) -> tuple[str, ...]:
    """The quarantined (renamed aside) files of a journal directory, oldest first."""
    return tuple(
        sorted(
            p.name
            for p in directory.glob(f"{DB_NAME}.corrupt-*")
            if not p.name.endswith(("-wal", "-shm"))
        )
    )
