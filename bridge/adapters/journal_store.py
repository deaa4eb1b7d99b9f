"""The durable journal's storage: one SQLite file in WAL mode, blocking calls.

Why SQLite and not segment files
--------------------------------
Both were on the table (``docs``: the design notes on Vector's disk buffer,
Filebeat's disk queue and Fluent Bit's chunks). We picked SQLite (stdlib
``sqlite3``) in WAL mode with one transaction per group commit because:

* **Out-of-order acks are bookkeeping in the same transaction.** Kafka
  acknowledges per partition, so acks come back out of sequence order. A
  segment journal can only drop a segment once *every* entry in it is
  acknowledged, so it needs an ack ledger beside it, and a restart re-sends
  whatever was acked in a live segment (Filebeat #32560). Here the ledger is
  a table in the same file, written in the same commit as the data: a restart
  re-sends exactly what Kafka has not acknowledged, nothing else.
* **Atomic group commit and crash recovery come for free**, tested by SQLite's
  own suite: a torn WAL frame is ignored at open (its checksum fails), so a
  crash loses at most the commit in progress; no ledger can disagree with the
  data (the Vector crash loop between unlink and ledger fsync, PR #25570).
* **Memory stays bounded** whatever the backlog: reads go one chunk at a time
  on the rowid B-tree (Vector #26035, Fluent Bit #2566 loaded everything at
  start). One file, one descriptor (Fluent Bit #5166).

Layout (format 2, ``PRAGMA user_version``)
------------------------------------------
One row per *chunk*: a run of consecutive sequence numbers committed together
(a group commit, less the entries Kafka acknowledged before it: see
``commit_runs``; split at ``CHUNK_ENTRIES`` entries or ``CHUNK_BYTES``), its
entries back to back in ``data`` and their sizes and birth times in ``tbl``
(``bridge/core/journal_entry.py``). Format 1 stored one row per entry, and
per row SQLite's insert and delete cost more than the rest of the journal:
measured here for 100,000 position entries (~670 bytes) in commits of 6,000
(300), acknowledged a commit later in partition order, the writer thread's
CPU was 6.9 (4.4) us per entry for one row each and 2.6 (2.0) us in chunks,
with 16 KiB pages and ``secure_delete=FAST`` (Debian's SQLite zeroes every
freed page by default: a second write of everything the journal deletes).

``acks`` holds, per chunk with some entries gone (acknowledged by Kafka,
dropped by ``when_full=drop_oldest`` or found corrupt), a bitmap of those
entries. A commit sets the bits of the sequences acknowledged since the
previous one; a chunk whose every bit is set is deleted with its bitmap.
Reads skip the set bits, so a restart re-sends exactly the unacknowledged
entries, with the same bytes. A partly acknowledged chunk stays on disk
whole; when its bitmap has not changed for 30 s and at least half of it is
gone (a partition Kafka does not acknowledge while the others go on), a
commit rewrites it as chunks of its live entries (compaction, a few chunks
per commit, at most every 10 s), so the file stays near the live bytes that
``max_bytes`` bounds instead of growing with every chunk such a partition
touches.

A format 1 file (a table ``entries``) is migrated at open, in place, in
batches of one transaction each (a crash mid-way resumes it): each entry is
decoded, checked and re-encoded with its sequence number and birth; one that
fails its check is skipped, logged and counted (``OpenState.corrupt``). A file
of a *newer* format than this code knows is quarantined, as a damaged one.

The price: SQLite has no checksum of its own on row contents, so each entry
carries a CRC32 and each chunk table one too; a bad entry is counted, marked
gone and skipped (a bad table: every entry of its chunk). A file SQLite itself
finds damaged (``quick_check`` at open, or an error while reading) is renamed
aside (quarantined, the newest three kept) after salvaging what still reads,
and a fresh journal starts: the pod never crash-loops on a bad file (Vector
#17644, #18130; Fluent Bit #1950).

Durability: ``synchronous=FULL`` in WAL mode, so each commit is fsynced
before it returns. How often commits happen (every ``flush_interval``, or
back to back) is the caller's choice; see ``bridge/adapters/journaled_sink.py``.
A full disk or an I/O error raises :class:`JournalIOError`, which the app
lets end the process (Kubernetes restarts the pod; Fluent Bit #11847).

All methods block: call them from one thread (the sink's dedicated writer
thread); the connection is not shared between threads concurrently.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any, Final

import structlog

from bridge.adapters.journal_file import (
    CHUNK_COLUMNS,
    DB_NAME,
    FORMAT,
    SCHEMA,
    JournalCorrupt,
    JournalError,
    JournalIOError,
    UnknownFormat,
    all_gone,
    chunk_sizes,
    file_format,
    first_live,
    gone_flags,
    quarantined_files,
    summarize,
    table_names,
    translated,
)
from bridge.core.journal_entry import (
    CHUNK_BYTES,
    CHUNK_ENTRIES,
    EntryCorrupt,
    chunk_table,
    decode,
    decode_at,
    encode,
    read_chunk_table,
)
from bridge.core.records import OutboundRecord

log = structlog.get_logger("bridge.journal")

__all__ = [
    "DB_NAME",
    "FORMAT",
    "CommitResult",
    "JournalCorrupt",
    "JournalError",
    "JournalIOError",
    "JournalStore",
    "OpenState",
    "ReadResult",
]

_PAGE_SIZE: Final = 16384  # new files only; fewer pages per chunk than 4 KiB
_KEEP_QUARANTINED: Final = 3
_SALVAGE_MAX: Final = 100_000
_MIGRATE_BATCH: Final = 4096
_KNOWN_MAX: Final = 4096  # chunks whose gone-bitmap is cached
# Compaction: a chunk at least half gone whose bitmap has not changed for
# _COMPACT_IDLE_MS (a partition Kafka does not acknowledge while the others
# go on) is rewritten as chunks of its live entries; looked for at most every
# _COMPACT_EVERY_MS, _COMPACT_BATCH chunks at a time (bounds one commit).
_COMPACT_IDLE_MS: Final = 30_000
_COMPACT_EVERY_MS: Final = 10_000
_COMPACT_BATCH: Final = 16
_COMPACT_SCAN: Final = 256


@dataclass(frozen=True, slots=True)
class OpenState:
    """What an opened journal holds."""

    entries: int
    bytes: int
    first_seq: int | None
    last_seq: int | None
    oldest_born_ms: int | None
    quarantined: Path | None = None
    salvaged: int = 0
    migrated: int = 0  # format 1 entries converted at this open
    corrupt: int = 0  # format 1 entries that failed their check (skipped)


@dataclass(slots=True)
class CommitResult:
    """What one group commit did."""

    seconds: float
    dropped: list[tuple[int, int]] = field(default_factory=list)  # (seq, size)
    oldest_born_ms: int | None = None


@dataclass(slots=True)
class ReadResult:
    """Entries read from ``from_seq`` on, in sequence order, decoded."""

    entries: list[tuple[int, int, OutboundRecord]]  # (seq, size, record)
    corrupt: list[tuple[int, int]]  # (seq, size) skipped and marked gone
    end_seq: int  # the next sequence to read from


# -- chunks ------------------------------------------------------------------------


class _Chunk:
    """A chunk's gone-bitmap while a transaction changes it."""

    __slots__ = ("bits", "changed", "count", "end", "first")

    def __init__(self, first: int, count: int, bits: bytes | None) -> None:
        self.first = first
        self.count = count
        self.end = first + count
        self.bits = bytearray(bits) if bits is not None else bytearray(-(-count // 8))
        self.changed = False

    def mark(self, start: int, stop: int) -> None:
        """Entries ``start..stop-1`` (indexes in the chunk) are gone."""
        bits = self.bits
        for k in range(start, stop):
            bits[k >> 3] |= 1 << (k & 7)
        self.changed = True

    def gone(self, k: int) -> bool:
        return bool(self.bits[k >> 3] >> (k & 7) & 1)

    def full(self) -> bool:
        return self.bits == all_gone(self.count)


@dataclass(slots=True)
class _Cached:
    """The chunk read last (reads go on where they stopped)."""

    first: int
    count: int
    data: bytes
    offsets: list[int]
    sizes: tuple[int, ...]
    table_ok: bool


# -- the store ------------------------------------------------------------------------


class JournalStore:
    """Append, read in order, mark gone by sequence: the journal on one SQLite file.

    Args:
        directory: The journal's directory (created if missing); the file is
            ``journal.sqlite3`` in it.
        check_on_open: Run ``PRAGMA quick_check`` at open (reads the whole
            file once; a damaged file is quarantined).
        max_pages: Cap on the file's pages (SQLite's ``max_page_count``); the
            cap hit reads as a full disk. For tests; ``None``: no cap.
        wall_clock: Epoch seconds (when a chunk's acks last changed, for
            compaction).
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        check_on_open: bool = True,
        max_pages: int | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / DB_NAME
        self._check = check_on_open
        self._max_pages = max_pages
        self._wall = wall_clock
        self._next_compact = 0  # wall ms
        self._compact_after = -1  # where the next look for chunks to compact starts
        self.compacted = 0  # chunks rewritten
        self._db: sqlite3.Connection | None = None
        self._cached: _Cached | None = None
        self._head: tuple[int, tuple[int, ...]] | None = None  # first chunk's births
        # Committed chunks whose count and gone-bitmap are known (inserted or
        # looked up by this connection): acks need no query for them.
        self._known: dict[int, _Chunk] = {}
        self._known_firsts: list[int] = []  # sorted

    # -- open / close --------------------------------------------------------

    def open(self) -> OpenState:
        """Open (or create) the journal; quarantine a damaged file first.

        A format 1 file is migrated to format 2 first (see the module's doc).

        Raises:
            JournalIOError: If the directory or file cannot be created, read
                or written (missing parent, a file in the way, full disk).
        """
        with translated("opening"):
            self.directory.mkdir(parents=True, exist_ok=True)
        quarantined: Path | None = None
        salvaged: list[tuple[int, int, int, bytes, bytes, bytes | None]] = []
        migrated = corrupt = 0
        try:
            self._db = self._connect()
            with translated("opening"):
                fmt = file_format(self._db)
            if fmt > FORMAT:
                raise UnknownFormat(
                    f"journal format {fmt} is newer than this bridge's {FORMAT}"
                )
            if self._check:
                self._quick_check()
            if fmt == 1:
                migrated, corrupt = self._migrate(self._db)
        except JournalCorrupt as exc:
            if self._db is not None:
                if not isinstance(exc, UnknownFormat):
                    salvaged = _salvage(self._db)
                self._db.close()
                self._db = None
            quarantined = self._quarantine()
            log.warning(
                "journal_quarantined",
                path=str(quarantined),
                salvaged=sum(row[1] for row in salvaged),
                error=str(exc),
            )
            self._db = self._connect()
        db = self._db
        assert db is not None  # noqa: S101 - set just above
        with translated("creating the tables"):
            self._create(db)
        if salvaged:
            with translated("salvaging"):
                db.execute("BEGIN IMMEDIATE")
                db.executemany(
                    "INSERT OR IGNORE INTO chunks VALUES (?, ?, ?, ?, ?)",
                    [row[:5] for row in salvaged],
                )
                now = int(self._wall() * 1000)
                db.executemany(
                    "INSERT OR IGNORE INTO acks VALUES (?, ?, ?)",
                    [(row[0], row[5], now) for row in salvaged if row[5] is not None],
                )
                db.execute("COMMIT")
        with translated("reading the state"):
            summary = summarize(db)
        return OpenState(
            entries=summary.entries,
            bytes=summary.bytes,
            first_seq=summary.first_seq,
            last_seq=summary.last_seq,
            oldest_born_ms=summary.oldest_born_ms,
            quarantined=quarantined,
            salvaged=sum(row[1] for row in salvaged),
            migrated=migrated,
            corrupt=corrupt,
        )

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise JournalIOError(f"cannot open the journal {self.path}: {exc}") from exc
        try:
            with translated("opening"):
                db.execute(f"PRAGMA page_size={_PAGE_SIZE}")  # a new file only
                db.execute("PRAGMA journal_mode=WAL").fetchone()
                db.execute("PRAGMA synchronous=FULL")
                # Debian's SQLite zeroes every freed page (SECURE_DELETE):
                # for a journal that deletes all it writes, a second write.
                db.execute("PRAGMA secure_delete=FAST")
                db.execute("PRAGMA cache_size=-16384")  # KiB: a few chunks
                db.execute("PRAGMA journal_size_limit=67108864")
                if self._max_pages is not None:
                    db.execute(f"PRAGMA max_page_count={int(self._max_pages)}")
        except JournalError:
            db.close()
            raise
        return db

    @staticmethod
    def _create(db: sqlite3.Connection) -> None:
        if db.execute("PRAGMA user_version").fetchone()[0] == FORMAT:
            return  # no write (another process may be running on this file)
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in SCHEMA:
                db.execute(statement)
            db.execute(f"PRAGMA user_version={FORMAT}")
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise

    def _migrate(self, db: sqlite3.Connection) -> tuple[int, int]:
        """Format 1 -> 2, one transaction per batch; (moved, corrupt)."""
        moved = corrupt = 0
        with translated("migrating"):
            db.execute("BEGIN IMMEDIATE")
            for statement in SCHEMA:
                db.execute(statement)
            db.execute("COMMIT")
            while True:
                rows = db.execute(
                    "SELECT seq, born_ms, data FROM entries ORDER BY seq LIMIT ?",
                    (_MIGRATE_BATCH,),
                ).fetchall()
                if not rows:
                    break
                inserts: list[tuple[int, int, bytes]] = []
                for seq, born, data in rows:
                    try:
                        _, record = decode(data, seq)
                    except EntryCorrupt as exc:
                        corrupt += 1
                        log.warning("journal_entry_corrupt", seq=seq, error=str(exc))
                        continue
                    inserts.append((seq, born, encode(seq, record)))
                db.execute("BEGIN IMMEDIATE")
                try:
                    if inserts:
                        _insert(db, inserts)
                    db.execute("DELETE FROM entries WHERE seq <= ?", (rows[-1][0],))
                    db.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                    raise
                moved += len(inserts)
            db.execute("BEGIN IMMEDIATE")
            db.execute("DROP TABLE entries")
            db.execute(f"PRAGMA user_version={FORMAT}")
            db.execute("COMMIT")
        log.info(
            "journal_migrated", path=str(self.path), entries=moved, corrupt=corrupt
        )
        return moved, corrupt

    def _quick_check(self) -> None:
        assert self._db is not None  # noqa: S101 - after _connect
        with translated("checking"):
            result = self._db.execute("PRAGMA quick_check").fetchone()
        if result is None or result[0] != "ok":
            raise JournalCorrupt(f"quick_check: {result}")

    def _quarantine(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path.with_name(f"{DB_NAME}.corrupt-{stamp}-{os.getpid()}")
        with translated("quarantining"):
            for suffix in ("-wal", "-shm", ""):
                source = Path(f"{self.path}{suffix}")
                if source.exists():
                    source.rename(f"{target}{suffix}")
            # Oldest first: the names carry a UTC timestamp.
            old = quarantined_files(self.directory)
            for name in old[:-_KEEP_QUARANTINED]:
                stale = self.directory / name
                for suffix in ("-wal", "-shm", ""):
                    Path(f"{stale}{suffix}").unlink(missing_ok=True)
        return target

    def _forget(self) -> None:
        """Drop what is cached of the file (after a rollback, at close)."""
        self._cached = None
        self._head = None
        self._known = {}
        self._known_firsts = []

    def _remember(self, chunk: _Chunk) -> None:
        known = self._known
        if len(known) >= _KNOWN_MAX:
            self._known = known = {}
            self._known_firsts = []
        known[chunk.first] = chunk
        firsts = self._known_firsts
        if not firsts or firsts[-1] < chunk.first:
            firsts.append(chunk.first)
        else:
            insort(firsts, chunk.first)

    def close(self) -> None:
        """Close the file (everything committed stays)."""
        self._forget()
        if self._db is not None:
            db, self._db = self._db, None
            with contextlib.suppress(sqlite3.Error):
                db.close()

    # -- the hot path --------------------------------------------------------

    def commit(
        self,
        inserts: Sequence[tuple[int, int, bytes]],
        delete_ranges: Sequence[tuple[int, int]],
        drop_bytes: int = 0,
    ) -> CommitResult:
        """One transaction: add entries, mark acknowledged ones gone, drop oldest.

        Args:
            inserts: ``(seq, born_ms, data)`` of new entries, in sequence
                order (runs of consecutive sequences become chunks).
            delete_ranges: Inclusive ``(first, last)`` sequence ranges that
                Kafka acknowledged.
            drop_bytes: Mark the oldest live entries gone until this many
                bytes are freed (``when_full=drop_oldest``); 0: drop nothing.

        Returns:
            The commit's duration, the dropped ``(seq, size)`` and the birth of
            the oldest entry left.

        Raises:
            JournalIOError: Disk full or I/O error (nothing of this commit is
                kept).
            JournalCorrupt: SQLite found the file damaged.
        """
        return self._commit(_runs(inserts), delete_ranges, (), drop_bytes)

    def commit_run(
        self,
        first_seq: int,
        born_ms: int,
        entries: Sequence[bytes],
        acked: Sequence[int],
        drop_bytes: int = 0,
    ) -> CommitResult:
        """:meth:`commit` for the sink's group commit, without per-entry tuples.

        Args:
            first_seq: The sequence number of ``entries[0]``; the others follow.
            born_ms: The birth of every entry (the group's first).
            entries: Encoded entries (may be empty).
            acked: Sequence numbers Kafka acknowledged, ascending.
            drop_bytes: As for :meth:`commit`.
        """
        return self.commit_runs(born_ms, [(first_seq, entries)], acked, drop_bytes)

    def commit_runs(
        self,
        born_ms: int,
        runs: Sequence[tuple[int, Sequence[bytes]]],
        acked: Sequence[int],
        drop_bytes: int = 0,
    ) -> CommitResult:
        """:meth:`commit_run` for a group with holes (entries not to write).

        Args:
            born_ms: The birth of every entry (the group's first).
            runs: ``(first_seq, entries)`` in sequence order, each a run of
                consecutive sequence numbers (empty ones are skipped).
            acked: As for :meth:`commit_run`.
            drop_bytes: As for :meth:`commit`.
        """
        chunks: list[_Run] = [
            (first, [born_ms] * len(entries), entries)
            for first, entries in runs
            if entries
        ]
        return self._commit(chunks, (), acked, drop_bytes)

    def _commit(
        self,
        runs: list[_Run],
        ranges: Sequence[tuple[int, int]],
        acked: Sequence[int],
        drop_bytes: int,
    ) -> CommitResult:
        db = self._require()
        started = time.perf_counter()
        result = CommitResult(seconds=0.0)
        with translated("committing"):
            try:
                db.execute("BEGIN IMMEDIATE")
                if runs:
                    for first, count in _insert_runs(db, runs):
                        self._remember(_Chunk(first, count, None))
                touched: dict[int, _Chunk] = {}
                if ranges:
                    self._mark(db, ranges, touched)
                if acked:
                    self._mark_seqs(db, acked, touched)
                if drop_bytes > 0:
                    result.dropped = self._drop_oldest(db, drop_bytes, touched)
                if touched:
                    self._write_marks(db, touched)
                self._compact(db)
                db.execute("COMMIT")
            except BaseException:
                self._forget()
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise
            result.seconds = time.perf_counter() - started
            result.oldest_born_ms = self._oldest_born()
        return result

    def _chunk_at(
        self, db: sqlite3.Connection, seq: int, touched: dict[int, _Chunk]
    ) -> _Chunk | None:
        """The chunk holding ``seq``, else the first one after it, else None."""
        firsts = self._known_firsts
        i = bisect_right(firsts, seq) - 1
        if i >= 0:
            chunk = self._known[firsts[i]]
            if seq < chunk.end:
                touched[chunk.first] = chunk
                return chunk
        row = _holding_or_next(
            db,
            "SELECT c.first_seq, c.count, a.bits FROM chunks AS c"
            " LEFT JOIN acks AS a ON a.first_seq = c.first_seq",
            seq,
        )
        if row is None:
            return None
        return self._chunk(row[0], row[1], row[2], touched)

    def _chunk(
        self, first: int, count: int, bits: bytes | None, touched: dict[int, _Chunk]
    ) -> _Chunk:
        """The chunk ``first`` as this transaction sees it (the cache's, if known)."""
        chunk = touched.get(first) or self._known.get(first)
        if chunk is None:
            chunk = _Chunk(first, count, bits)
            self._remember(chunk)
        touched[first] = chunk
        return chunk

    def _mark(
        self,
        db: sqlite3.Connection,
        ranges: Sequence[tuple[int, int]],
        touched: dict[int, _Chunk],
    ) -> None:
        chunk: _Chunk | None = None
        for first, last in sorted(ranges):
            seq = first
            while seq <= last:
                if chunk is None or not chunk.first <= seq < chunk.end:
                    chunk = self._chunk_at(db, seq, touched)
                    if chunk is None:
                        return  # nothing at or after seq
                    seq = max(seq, chunk.first)
                    if seq > last:
                        break
                stop = min(last + 1, chunk.end)
                if stop - seq == 1:  # the common case: acks of one partition
                    k = seq - chunk.first
                    chunk.bits[k >> 3] |= 1 << (k & 7)
                    chunk.changed = True
                else:
                    chunk.mark(seq - chunk.first, stop - chunk.first)
                seq = stop

    def _mark_seqs(
        self, db: sqlite3.Connection, seqs: Sequence[int], touched: dict[int, _Chunk]
    ) -> None:
        """As :meth:`_mark`, for ascending sequence numbers (once per entry)."""
        first = end = 0
        bits = bytearray()
        for seq in seqs:
            if seq >= end or seq < first:
                if seq < first:
                    continue  # in a gap before the next chunk: gone already
                chunk = self._chunk_at(db, seq, touched)
                if chunk is None:
                    return
                chunk.changed = True
                first, end, bits = chunk.first, chunk.end, chunk.bits
                if seq < first:
                    continue
            k = seq - first
            bits[k >> 3] |= 1 << (k & 7)

    def _drop_oldest(
        self, db: sqlite3.Connection, need: int, touched: dict[int, _Chunk]
    ) -> list[tuple[int, int]]:
        dropped: list[tuple[int, int]] = []
        freed = 0
        after = -1
        while freed < need:
            row = db.execute(
                f"{CHUNK_COLUMNS} WHERE c.first_seq > ? ORDER BY c.first_seq LIMIT 1",
                (after,),
            ).fetchone()
            if row is None:
                break
            first, count, _, table, size, bits = row
            after = first
            chunk = self._chunk(first, count, bits, touched)
            sizes = chunk_sizes(table, count, size)[0]
            for k in range(count):
                if chunk.gone(k):
                    continue
                chunk.mark(k, k + 1)
                dropped.append((first + k, sizes[k]))
                freed += sizes[k]
                if freed >= need:
                    break
        return dropped

    def _write_marks(self, db: sqlite3.Connection, touched: dict[int, _Chunk]) -> None:
        gone: list[tuple[int]] = []
        partly: list[tuple[int, bytes, int]] = []
        now = int(self._wall() * 1000)
        for chunk in touched.values():
            if not chunk.changed:
                continue
            chunk.changed = False
            if chunk.full():
                gone.append((chunk.first,))
            else:
                partly.append((chunk.first, bytes(chunk.bits), now))
        if gone:
            self._delete_chunks(db, [first for (first,) in gone])
        if partly:
            db.executemany("INSERT OR REPLACE INTO acks VALUES (?, ?, ?)", partly)

    def _delete_chunks(self, db: sqlite3.Connection, firsts: list[int]) -> None:
        rows = [(first,) for first in firsts]
        db.executemany("DELETE FROM chunks WHERE first_seq = ?", rows)
        db.executemany("DELETE FROM acks WHERE first_seq = ?", rows)
        known = self._known
        for first in firsts:
            if known.pop(first, None) is not None:
                del self._known_firsts[bisect_left(self._known_firsts, first)]
            if self._cached is not None and self._cached.first == first:
                self._cached = None
            if self._head is not None and self._head[0] == first:
                self._head = None

    def _compact(self, db: sqlite3.Connection) -> None:
        """Rewrite idle, mostly gone chunks as chunks of their live entries.

        Without it, a partition Kafka stops acknowledging (its leader is
        down) while the others go on would keep every chunk on disk for its
        few entries of that partition: the file would grow to several times
        the live bytes that ``max_bytes`` bounds.
        """
        now = int(self._wall() * 1000)
        if now < self._next_compact:
            return
        self._next_compact = now + _COMPACT_EVERY_MS
        rows = db.execute(
            "SELECT a.first_seq, a.bits, c.count FROM acks AS a"
            " JOIN chunks AS c ON c.first_seq = a.first_seq"
            " WHERE a.first_seq > ? AND a.changed_ms <= ?"
            " ORDER BY a.first_seq LIMIT ?",
            (self._compact_after, now - _COMPACT_IDLE_MS, _COMPACT_SCAN),
        ).fetchall()
        # Round robin over the candidates, a scan at a time.
        self._compact_after = rows[-1][0] if len(rows) == _COMPACT_SCAN else -1
        picked = [
            first
            for first, bits, count in rows
            if 2 * int.from_bytes(bits, "little").bit_count() >= count
        ][:_COMPACT_BATCH]
        moved = 0
        for first in picked:
            moved += self._rewrite(db, first)
        if picked:
            self.compacted += len(picked)
            log.info("journal_compacted", chunks=len(picked), entries=moved)

    def _rewrite(self, db: sqlite3.Connection, first: int) -> int:
        """Chunk ``first`` as chunks of its live entries; how many there are."""
        count, table, data, bits = db.execute(
            "SELECT c.count, c.tbl, c.data, a.bits FROM chunks AS c"
            " JOIN acks AS a ON a.first_seq = c.first_seq WHERE c.first_seq = ?",
            (first,),
        ).fetchone()
        try:
            sizes, borns = read_chunk_table(table, count)
        except EntryCorrupt:
            return 0  # left as it is: its entries are reported when read
        if sum(sizes) != len(data):
            return 0
        offsets = list(accumulate(sizes, initial=0))
        flags = gone_flags(bits, count)
        runs: list[_Run] = []
        k = 0
        while k < count:
            if flags[k]:
                k += 1
                continue
            j = k
            while j < count and not flags[j]:
                j += 1
            runs.append(
                (
                    first + k,
                    borns[k:j],
                    [data[offsets[i] : offsets[i + 1]] for i in range(k, j)],
                )
            )
            k = j
        self._delete_chunks(db, [first])
        for new, n in _insert_runs(db, runs):
            self._remember(_Chunk(new, n, None))
        return sum(len(run[2]) for run in runs)

    def read(
        self,
        from_seq: int,
        limit: int,
        max_bytes: int,
        end_seq: int | None = None,
    ) -> ReadResult:
        """Up to ``limit`` live entries (and about ``max_bytes``) from ``from_seq`` on.

        Entries failing their check are marked gone, listed in ``corrupt`` and
        skipped (they count towards ``limit``). Nothing at or after ``end_seq``
        is read, if given. Memory: one chunk at a time.

        Raises:
            JournalIOError, JournalCorrupt: As for :meth:`commit`.
        """
        db = self._require()
        entries: list[tuple[int, int, OutboundRecord]] = []
        corrupt: list[tuple[int, int]] = []
        end = from_seq
        total = 0
        seen = 0
        stop_seq = end_seq if end_seq is not None else 1 << 64
        with translated("reading"):
            seq = from_seq
            while seen < limit and total < max_bytes and seq < stop_seq:
                chunk = self._load(db, seq)
                if chunk is None or chunk.first >= stop_seq:
                    break
                row = db.execute(
                    "SELECT bits FROM acks WHERE first_seq = ?", (chunk.first,)
                ).fetchone()
                bits = None if row is None else row[0]
                data, offsets, sizes = chunk.data, chunk.offsets, chunk.sizes
                first = chunk.first
                k = max(0, seq - first)
                count = min(chunk.count, stop_seq - first)
                if not chunk.table_ok and k < count:
                    log.warning("journal_chunk_table_corrupt", first_seq=first)
                while k < count:
                    if bits is not None and bits[k >> 3] >> (k & 7) & 1:
                        k += 1
                        continue
                    seq = first + k
                    end = seq + 1
                    seen += 1
                    size = sizes[k]
                    if chunk.table_ok:
                        try:
                            _, record = decode_at(data, offsets[k], offsets[k + 1], seq)
                        except EntryCorrupt as exc:
                            corrupt.append((seq, size))
                            log.warning(
                                "journal_entry_corrupt", seq=seq, error=str(exc)
                            )
                        else:
                            entries.append((seq, size, record))
                            total += size
                    else:
                        corrupt.append((seq, size))
                    k += 1
                    if seen >= limit or total >= max_bytes:
                        break
                seq = first + k
                if k < chunk.count:
                    break  # stopped inside the chunk (limit, bytes or end_seq)
            if corrupt:
                db.execute("BEGIN IMMEDIATE")
                try:
                    touched: dict[int, _Chunk] = {}
                    self._mark(db, [(s, s) for s, _ in corrupt], touched)
                    self._write_marks(db, touched)
                    db.execute("COMMIT")
                except BaseException:
                    self._forget()
                    if db.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            db.execute("ROLLBACK")
                    raise
        return ReadResult(entries, corrupt, end)

    def _load(self, db: sqlite3.Connection, seq: int) -> _Cached | None:
        """The chunk holding ``seq`` (else the next one), data and table read."""
        cached = self._cached
        if cached is not None and cached.first <= seq < cached.first + cached.count:
            return cached
        row = _holding_or_next(
            db, "SELECT c.first_seq, c.count, c.tbl, c.data FROM chunks AS c", seq
        )
        if row is None:
            return None
        first, count, table, data = row
        sizes, ok = chunk_sizes(table, count, len(data))
        self._cached = _Cached(
            first, count, data, list(accumulate(sizes, initial=0)), sizes, ok
        )
        return self._cached

    def _oldest_born(self) -> int | None:
        db = self._require()
        row = db.execute(f"{CHUNK_COLUMNS} ORDER BY c.first_seq LIMIT 1").fetchone()
        if row is None:
            return None
        first, count, born, table, _, bits = row
        k = first_live(bits, count)
        if k == 0 or k >= count:
            return int(born)
        head = self._head
        if head is None or head[0] != first:
            try:
                borns = read_chunk_table(table, count)[1]
            except EntryCorrupt:
                return int(born)
            head = self._head = (first, borns)
        return head[1][k]

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise JournalError("the journal is not open")
        return self._db


_Run = tuple[int, Sequence[int], Sequence[bytes]]  # first_seq, births, entries


def _runs(inserts: Sequence[tuple[int, int, bytes]]) -> list[_Run]:
    """``(seq, born_ms, data)`` in sequence order as runs of consecutive seqs."""
    if not inserts:
        return []
    seqs, borns, datas = zip(*inserts, strict=True)
    n = len(seqs)
    if seqs == tuple(range(seqs[0], seqs[0] + n)):
        return [(seqs[0], borns, datas)]
    runs: list[_Run] = []
    start = 0
    for i in range(1, n + 1):
        if i == n or seqs[i] != seqs[i - 1] + 1:
            runs.append((seqs[start], borns[start:i], datas[start:i]))
            start = i
    return runs


def _insert(db: sqlite3.Connection, inserts: Sequence[tuple[int, int, bytes]]) -> None:
    _insert_runs(db, _runs(inserts))


def _insert_runs(db: sqlite3.Connection, runs: list[_Run]) -> list[tuple[int, int]]:
    """Insert runs as chunks, each split at ``CHUNK_ENTRIES``/``CHUNK_BYTES``."""
    rows = []
    for first, borns, datas in runs:
        stop = len(datas)
        sizes = list(map(len, datas))
        ends = list(accumulate(sizes, initial=0))
        i = 0
        while i < stop:
            limit = min(stop, i + CHUNK_ENTRIES)
            j = bisect_right(ends, ends[i] + CHUNK_BYTES, i + 1, limit + 1) - 1
            j = max(i + 1, j)
            rows.append(
                (
                    first + i,
                    j - i,
                    borns[i],
                    chunk_table(sizes[i:j], borns[i:j]),
                    b"".join(datas[i:j]),
                )
            )
            i = j
    db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?)", rows)
    return [(row[0], row[1]) for row in rows]


def _salvage(
    db: sqlite3.Connection,
) -> list[tuple[int, int, int, bytes, bytes, bytes | None]]:
    """Chunks of a damaged file that still read, stepping over the damage.

    ``(first_seq, count, born_ms, tbl, data, bits)`` rows; format 1 entries
    that still check out are converted. A read that fails (a garbled page)
    does not end the salvage: :func:`_next_readable` finds the next chunk
    that still reads, so one bad page costs the chunks on it, not the rest of
    the file. Bounded: at most 100,000 entries are kept (the rest is in the
    quarantined file for a human).
    """
    rows: list[tuple[int, int, int, bytes, bytes, bytes | None]] = []
    kept = 0
    try:
        tables = table_names(db)
    except sqlite3.Error:
        return rows
    if "chunks" in tables:
        after = -1
        while kept < _SALVAGE_MAX:
            row = _next_readable(db, after)
            if row is None:
                break
            first, count, _, table, data, _ = row
            after = first
            if chunk_sizes(table, count, len(data))[1]:
                rows.append(row)
                kept += count
    try:
        after = -1
        while "entries" in tables and kept < _SALVAGE_MAX:
            chunk = db.execute(
                "SELECT seq, born_ms, data FROM entries WHERE seq > ?"
                " ORDER BY seq LIMIT 1000",
                (after,),
            ).fetchall()
            if not chunk:
                break
            for seq, born, data in chunk:
                after = seq
                try:
                    _, record = decode(data, seq)
                except EntryCorrupt:
                    continue
                entry = encode(seq, record)
                rows.append(
                    (seq, 1, born, chunk_table((len(entry),), (born,)), entry, None)
                )
                kept += 1
    except sqlite3.Error:
        pass  # format 1 is migrated at open; what follows stays quarantined
    return rows


def _holding_or_next(db: sqlite3.Connection, select: str, seq: int) -> Any:
    """The row of the chunk holding ``seq``, else of the next chunk, else None.

    ``select`` names the chunks table ``c`` and starts its columns with
    ``c.first_seq, c.count``.
    """
    row = db.execute(
        f"{select} WHERE c.first_seq <= ? ORDER BY c.first_seq DESC LIMIT 1",
        (seq,),
    ).fetchone()
    if row is None or row[0] + row[1] <= seq:
        row = db.execute(
            f"{select} WHERE c.first_seq > ? ORDER BY c.first_seq LIMIT 1",
            (seq,),
        ).fetchone()
    return row


_CHUNK_AFTER: Final = (
    "SELECT c.first_seq, c.count, c.born_ms, c.tbl, c.data, a.bits"
    " FROM chunks AS c LEFT JOIN acks AS a ON a.first_seq = c.first_seq"
    " WHERE c.first_seq > ? ORDER BY c.first_seq LIMIT 1"
)
_SEQ_LIMIT: Final = 2**63 - 1


def _chunk_after(
    db: sqlite3.Connection, after: int
) -> tuple[int, int, int, bytes, bytes, bytes | None] | None:
    row: tuple[int, int, int, bytes, bytes, bytes | None] | None = db.execute(
        _CHUNK_AFTER, (after,)
    ).fetchone()
    return row


def _next_readable(
    db: sqlite3.Connection, after: int
) -> tuple[int, int, int, bytes, bytes, bytes | None] | None:
    """The first chunk after ``after`` that reads, skipping unreadable ones.

    A lookup fails when its path through the B-tree crosses a damaged page.
    Probing ever further starts (after + 1, + 2, + 4, ...) finds a start
    whose lookup avoids the damage; a binary search between the last
    failing and that start then finds the first readable chunk after the
    damage, so readable chunks are not skipped. O(log) lookups per damage.
    """
    try:
        return _chunk_after(db, after)
    except sqlite3.Error:
        pass
    failing, step = after, 1
    while True:  # a start whose lookup avoids the damage
        probe = after + step
        if probe >= _SEQ_LIMIT:
            return None
        try:
            found = _chunk_after(db, probe)
            break
        except sqlite3.Error:
            failing, step = probe, step * 2
    # Readable chunks may lie in (failing, probe]: narrow down to the first.
    low, high = failing, probe
    while high - low > 1:
        mid = (low + high) // 2
        try:
            row = _chunk_after(db, mid)
        except sqlite3.Error:
            low = mid
            continue
        high = mid
        if row is not None:
            found = row
    return found
