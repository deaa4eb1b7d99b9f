"""JournalStore on real SQLite files: commit, read, delete, verify, stats, disk full."""

from __future__ import annotations

import contextlib
import random
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.adapters.journal_report import stats, verify
from bridge.adapters.journal_store import (
    DB_NAME,
    FORMAT,
    JournalIOError,
    JournalStore,
)
from bridge.core.journal_entry import CHUNK_BYTES, CHUNK_ENTRIES, encode
from bridge.core.records import OutboundRecord
from tests.core.test_journal_entry import encode_v1


def record(i: int, *, pad: int = 0) -> OutboundRecord:
    """A small record whose dedupe id carries ``i``."""
    return OutboundRecord(
        "positions", b"k", b"%d" % i + b" " * pad, (("ce_id", b"x"),), f"id-{i}", i
    )


def number(rec: OutboundRecord) -> int:
    """The ``i`` a record was built from."""
    assert rec.dedupe_id is not None
    return int(rec.dedupe_id.removeprefix("id-"))


def rows(first: int, last: int, pad: int = 0) -> list[tuple[int, int, bytes]]:
    """Entries ``first..last`` as ``commit`` takes them."""
    return [
        (i, 1000 + i, encode(i, record(i, pad=pad))) for i in range(first, last + 1)
    ]


def test_commit_read_delete_round_trip(tmp_path: Path) -> None:
    """Committed entries read back in sequence order, minus deleted ranges."""
    store = JournalStore(tmp_path)
    assert store.open().entries == 0
    store.commit(rows(0, 99), [])
    result = store.commit([], [(10, 19), (50, 50), (0, 0)])
    assert result.oldest_born_ms == 1001
    read = store.read(0, 1000, 10**9)
    assert [seq for seq, _, _ in read.entries] == [
        i for i in range(100) if not (10 <= i <= 19 or i in (0, 50))
    ]
    assert [number(r) for _, _, r in read.entries] == [s for s, _, _ in read.entries]
    assert store.read(0, 5, 10**9).end_seq == 6
    store.close()
    state = JournalStore(tmp_path).open()
    assert (state.entries, state.first_seq, state.last_seq) == (88, 1, 99)


def test_drop_oldest_frees_the_bytes_asked(tmp_path: Path) -> None:
    """Dropping deletes the oldest entries until the bytes asked are freed."""
    store = JournalStore(tmp_path)
    store.open()
    store.commit(rows(0, 9, pad=100), [])
    size = len(rows(0, 0, pad=100)[0][2])
    dropped = store.commit(rows(10, 10, pad=100), [], drop_bytes=3 * size).dropped
    assert [seq for seq, _ in dropped] == [0, 1, 2]
    assert stats(tmp_path).first_seq == 3
    store.close()


def test_stats_and_verify_report(tmp_path: Path) -> None:
    """stats counts cheaply, verify checks every entry; a missing one is reported."""
    assert not stats(tmp_path / "none").exists
    store = JournalStore(tmp_path)
    store.open()
    store.commit(rows(0, 9), [])
    report = stats(tmp_path)
    assert (report.entries, report.first_seq, report.last_seq) == (10, 0, 9)
    assert report.oldest_born_ms == 1000
    assert report.file_bytes > 0
    checked = verify(tmp_path, chunk=3)
    assert checked.ok
    assert checked.entries == 10
    assert checked.bytes == report.bytes
    store.close()


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (we run as root); skipped where mounting is not allowed."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(  # noqa: S603
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],  # noqa: S607
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)  # noqa: S603, S607


def test_a_real_full_disk_raises_journal_io_error(tiny_fs: Path) -> None:
    """On a full file system commit raises JournalIOError; what was committed stays."""
    store = JournalStore(tiny_fs / "journal")
    store.open()
    committed = 0

    def fill() -> None:
        nonlocal committed
        for first in range(0, 100_000, 100):
            store.commit(rows(first, first + 99, pad=1000), [])
            committed = first + 100

    with pytest.raises(JournalIOError, match="full"):
        fill()
    assert committed > 0
    with contextlib.suppress(JournalIOError):
        store.close()
    assert stats(tiny_fs / "journal").entries == committed


# -- format 2: chunks ---------------------------------------------------------------


def chunk_rows(directory: Path) -> list[tuple[int, int, int]]:
    """``(first_seq, count, data bytes)`` of every chunk row, in order."""
    db = sqlite3.connect(directory / DB_NAME)
    try:
        return db.execute(
            "SELECT first_seq, count, length(data) FROM chunks ORDER BY first_seq"
        ).fetchall()
    finally:
        db.close()


def test_a_commit_becomes_chunks_split_at_the_caps_and_at_gaps(tmp_path: Path) -> None:
    """Runs of consecutive sequences become chunks of bounded entries and bytes."""
    store = JournalStore(tmp_path)
    store.open()
    big = rows(0, CHUNK_ENTRIES + 9)  # more entries than one chunk holds
    fat = rows(20_000, 20_009, pad=CHUNK_BYTES // 4)  # ~4 of these per chunk
    store.commit([*big, *rows(10_000, 10_002), *fat], [])
    chunks = chunk_rows(tmp_path)
    assert [(first, count) for first, count, _ in chunks[:3]] == [
        (0, CHUNK_ENTRIES),
        (CHUNK_ENTRIES, 10),
        (10_000, 3),  # a gap starts a chunk
    ]
    assert sum(count for first, count, _ in chunks if first >= 20_000) == 10
    assert all(size <= CHUNK_BYTES for first, _, size in chunks if first >= 20_000)
    read = store.read(0, 100_000, 10**10)
    expected = [*range(CHUNK_ENTRIES + 10), *range(10_000, 10_003)]
    expected += range(20_000, 20_010)
    assert [seq for seq, _, _ in read.entries] == expected
    assert [number(r) for _, _, r in read.entries] == expected
    upto = store.read(5, 100_000, 10**10, end_seq=10_001)  # stops before 10_001
    assert [seq for seq, _, _ in upto.entries] == [*expected[5:-12]]
    assert upto.end_seq == 10_001
    store.close()


def test_a_partly_acknowledged_chunk_keeps_exactly_the_rest(tmp_path: Path) -> None:
    """Acks inside a chunk survive a reopen; the chunk goes with its last entry."""
    store = JournalStore(tmp_path)
    store.open()
    entries = rows(0, 99)
    store.commit(entries, [])
    store.commit_run(100, 5000, [encode(i, record(i)) for i in range(100, 110)], [])
    store.commit([], [(s, s) for s in range(1, 100, 2)])  # the odd ones
    store.commit_run(0, 0, [], [100, 105])
    store.close()
    report = stats(tmp_path)
    assert report.entries == 50 + 8
    evens = sum(len(data) for seq, _, data in entries if seq % 2 == 0)
    assert report.bytes == evens + sum(
        len(encode(i, record(i))) for i in range(101, 110) if i != 105
    )
    assert (report.first_seq, report.last_seq, report.oldest_born_ms) == (0, 109, 1000)

    again = JournalStore(tmp_path)
    state = again.open()
    assert (state.entries, state.first_seq, state.last_seq) == (58, 0, 109)
    read = again.read(0, 1000, 10**9)
    expected = [*range(0, 100, 2), 101, 102, 103, 104, 106, 107, 108, 109]
    assert [seq for seq, _, _ in read.entries] == expected
    assert [number(r) for _, _, r in read.entries] == expected
    result = again.commit([], [(0, 0)])
    assert result.oldest_born_ms == 1002  # entry 2's birth, inside the chunk
    again.commit_run(0, 0, [], list(range(0, 100, 2)))
    assert [first for first, _, _ in chunk_rows(tmp_path)] == [100]
    again.close()
    assert verify(tmp_path).ok


def test_a_damaged_chunk_table_counts_its_live_entries_corrupt(tmp_path: Path) -> None:
    """A table that fails its CRC: every live entry of its chunk is corrupt, once."""
    store = JournalStore(tmp_path)
    store.open()
    store.commit(rows(0, 9), [])
    store.commit(rows(10, 19), [(3, 4)])
    store.close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    (table,) = db.execute("SELECT tbl FROM chunks WHERE first_seq = 0").fetchone()
    flipped = bytearray(table)
    flipped[-1] ^= 0x01
    db.execute("UPDATE chunks SET tbl = ? WHERE first_seq = 0", (bytes(flipped),))
    db.commit()
    db.close()
    assert verify(tmp_path).corrupt_entries == (0, 1, 2, 5, 6, 7, 8, 9)

    store = JournalStore(tmp_path)
    store.open()
    read = store.read(0, 1000, 10**9)
    assert [seq for seq, _ in read.corrupt] == [0, 1, 2, 5, 6, 7, 8, 9]
    assert [seq for seq, _, _ in read.entries] == list(range(10, 20))
    assert store.read(0, 1000, 10**9).corrupt == []  # marked gone: not twice
    store.close()
    assert verify(tmp_path).ok
    assert stats(tmp_path).entries == 10


# -- older and newer files ------------------------------------------------------------


def write_format_1(directory: Path, entries: list[tuple[int, int, bytes]]) -> None:
    """A journal file as the first format left it: one row per entry."""
    directory.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(directory / DB_NAME)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(
        "CREATE TABLE entries ("
        " seq INTEGER PRIMARY KEY, born_ms INTEGER NOT NULL, data BLOB NOT NULL)"
    )
    db.executemany("INSERT INTO entries VALUES (?, ?, ?)", entries)
    db.commit()
    db.close()


def test_a_format_1_journal_is_migrated_with_the_same_records(tmp_path: Path) -> None:
    """Old rows become chunks: same sequences, records and births; bad ones counted."""
    kept = [i for i in range(5000) if i % 7 and i != 1234]  # acked gaps
    old = [(i, 1000 + i, encode_v1(i, record(i))) for i in kept]
    bad = bytearray(encode_v1(1234, record(1234)))
    bad[20] ^= 0xFF
    write_format_1(tmp_path, [*old, (1234, 2234, bytes(bad))])
    before = stats(tmp_path)
    assert (before.entries, before.first_seq, before.last_seq) == (
        len(kept) + 1,
        1,
        4999,
    )
    assert verify(tmp_path).corrupt_entries == (1234,)

    store = JournalStore(tmp_path)
    state = store.open()
    assert (state.migrated, state.corrupt, state.quarantined) == (len(kept), 1, None)
    assert (state.entries, state.first_seq, state.last_seq) == (len(kept), 1, 4999)
    assert state.oldest_born_ms == 1001
    assert state.bytes == sum(len(encode(i, record(i))) for i in kept)
    read = store.read(0, 100_000, 10**10)
    assert [seq for seq, _, _ in read.entries] == kept
    assert [r for _, _, r in read.entries] == [record(i) for i in kept]
    store.close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    assert db.execute("PRAGMA user_version").fetchone() == (FORMAT,)
    assert "entries" not in {
        name for (name,) in db.execute("SELECT name FROM sqlite_master")
    }
    db.close()
    assert verify(tmp_path).ok


def test_a_newer_format_is_quarantined_not_misread(tmp_path: Path) -> None:
    """A file of a format this code does not know is moved aside; a fresh one starts."""
    store = JournalStore(tmp_path)
    store.open()
    store.commit(rows(0, 9), [])
    store.close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute(f"PRAGMA user_version = {FORMAT + 1}")
    db.commit()
    db.close()
    report = stats(tmp_path)
    assert not report.ok
    assert "newer" in report.problems[0]

    state = JournalStore(tmp_path).open()
    assert state.quarantined is not None
    assert state.entries == 0
    assert len(stats(tmp_path).quarantined_files) == 1


@pytest.mark.parametrize("seed", range(6))
def test_random_commits_acks_drops_and_reopens_match_a_model(
    tmp_path: Path, seed: int
) -> None:
    """Whatever the mix of runs, acks (in any order), drops and reopens, the
    journal holds exactly the entries neither acknowledged nor dropped."""
    rng = random.Random(seed)
    live: dict[int, tuple[int, bytes]] = {}  # seq -> (born, data): the model
    now = [0.0]  # and time passes: idle, mostly acked chunks get compacted

    def clock() -> float:
        return now[0]

    store = JournalStore(tmp_path, wall_clock=clock)
    store.open()
    seq = 0
    for step in range(60):
        now[0] += rng.choice([0.0, 1.0, 45.0])
        action = rng.random()
        if action < 0.45:  # a group commit, maybe with acks
            n = rng.choice([1, 3, 50, 700, 5000])
            born = 10_000 + step
            entries = [
                encode(s, record(s, pad=rng.choice([0, 300])))
                for s in range(seq, seq + n)
            ]
            acked = sorted(
                rng.sample(sorted(live), min(len(live), rng.randint(0, 400)))
            )
            store.commit_run(seq, born, entries, acked)
            for s in acked:
                live.pop(s)
            live.update({seq + i: (born, data) for i, data in enumerate(entries)})
            seq += n
        elif action < 0.7 and live:  # acks as ranges, some for unknown seqs
            picks = rng.sample(sorted(live), min(len(live), rng.randint(1, 300)))
            ranges = [(s, s) for s in picks] + [(seq + 5, seq + 9)]
            store.commit([], ranges)
            for s in picks:
                live.pop(s)
        elif action < 0.8 and live:  # drop the oldest for some bytes
            need = rng.randint(1, 20_000)
            dropped = store.commit([], [], drop_bytes=need).dropped
            expected, freed = [], 0
            for s in sorted(live):
                if freed >= need:
                    break
                expected.append((s, len(live[s][1])))
                freed += len(live[s][1])
            assert dropped == expected
            for s, _ in dropped:
                live.pop(s)
        else:  # reopen
            store.close()
            store = JournalStore(
                tmp_path, check_on_open=rng.random() < 0.3, wall_clock=clock
            )
            state = store.open()
            assert state.entries == len(live)
            assert state.bytes == sum(len(d) for _, d in live.values())
        if rng.random() < 0.3:
            first = rng.choice([0, *sorted(live)[:1]])
            read = store.read(first, rng.choice([10, 1000, 10**6]), 10**9)
            want = [s for s in sorted(live) if s >= first][: len(read.entries)]
            assert [s for s, _, _ in read.entries] == want
            assert all(number(r) == s for s, _, r in read.entries)
            assert not read.corrupt
    store.close()
    report = verify(tmp_path)
    assert report.ok, report.problems
    assert (report.entries, report.bytes) == (
        len(live),
        sum(len(d) for _, d in live.values()),
    )
    if live:
        first = min(live)
        assert (report.first_seq, report.oldest_born_ms) == (first, live[first][0])
    everything = JournalStore(tmp_path)
    everything.open()
    read = everything.read(0, 10**6, 10**10)
    assert [s for s, _, _ in read.entries] == sorted(live)
    assert [encode(s, r) for s, _, r in read.entries] == [
        live[s][1] for s in sorted(live)
    ]
    everything.close()


def test_idle_mostly_acknowledged_chunks_are_compacted(tmp_path: Path) -> None:
    """A partition left unacknowledged does not keep whole chunks on disk: once
    their acks stop changing, chunks at least half gone keep their live entries
    only (same sequences, bytes and births); busy or mostly live ones stay."""
    now = [1000.0]
    store = JournalStore(tmp_path, wall_clock=lambda: now[0])
    store.open()
    store.commit(rows(0, 99), [])  # compaction looked (nothing): next in 10 s
    store.commit(rows(100, 199), [])
    store.commit(rows(200, 299), [])
    stuck = [s for s in range(300) if s % 4 == 1]  # "partition 1" is down
    store.commit([], [(s, s) for s in range(100) if s % 4 != 1])  # 3/4 gone
    store.commit([], [(s, s) for s in range(100, 200) if s % 4 == 0])  # 1/4 gone
    now[0] += 25
    store.commit([], [(s, s) for s in range(200, 300) if s % 4 in (0, 2)])  # busy
    now[0] += 10  # chunks 0 and 100 idle for 35 s, chunk 200 for 10 s
    before = stats(tmp_path)
    store.commit([], [])
    assert store.compacted == 1  # chunk 0 only: 100 is mostly live, 200 busy
    chunks = chunk_rows(tmp_path)
    assert [first for first, _, _ in chunks if first < 100] == stuck[:25]
    assert all(count == 1 for first, count, _ in chunks if first < 100)
    after = stats(tmp_path)
    assert (after.entries, after.bytes, after.first_seq, after.oldest_born_ms) == (
        before.entries,
        before.bytes,
        before.first_seq,
        before.oldest_born_ms,
    )
    now[0] += 30  # chunk 200's acks idle too now, half gone
    store.commit([], [])
    assert store.compacted == 2
    read = store.read(0, 10_000, 10**9)
    live = [*stuck[:25], *(s for s in range(100, 200) if s % 4), *range(201, 300, 2)]
    assert [seq for seq, _, _ in read.entries] == live
    assert [r for _, _, r in read.entries] == [record(s) for s in live]
    store.commit([], [(s, s) for s in stuck])
    store.close()
    assert verify(tmp_path).ok
    assert stats(tmp_path).entries == len(live) - len(stuck)


def test_salvage_steps_over_a_garbled_stretch_of_the_file(tmp_path: Path) -> None:
    """Pages of garbage mid-file: the file is quarantined, and the chunks after
    the damage are salvaged too, not only those before it."""
    store = JournalStore(tmp_path)
    store.open()
    for n in range(300):  # one chunk per commit: many B-tree leaves
        store.commit(rows(n * 4, n * 4 + 3, pad=300), [])
    store.close()
    db = tmp_path / DB_NAME
    size = db.stat().st_size
    with db.open("r+b") as f:  # 8 pages of garbage at 40 % of the file
        f.seek(int(size * 0.4) // 4096 * 4096)
        f.write(random.Random(7).randbytes(8 * 4096))
    again = JournalStore(tmp_path)
    state = again.open()
    seqs = [seq for seq, _, _ in again.read(0, 10_000, 1 << 30).entries]
    again.close()
    assert state.quarantined is not None
    assert 0 < state.salvaged < 1200
    first_gap = next(i for i, seq in enumerate(seqs) if seq != i)
    print(
        f"salvaged {state.salvaged} of 1200 entries; first gap at seq {first_gap},"
        f" last salvaged {seqs[-1]}"
    )
    assert seqs[-1] > first_gap + 100, "nothing was salvaged past the damage"
    assert seqs == sorted(set(seqs))
