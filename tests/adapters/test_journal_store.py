"""JournalStore on real SQLite files: commit, read, delete, verify, stats, disk full."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.adapters.journal_store import (
    JournalIOError,
    JournalStore,
    stats,
    verify,
)
from bridge.core.journal_entry import encode
from bridge.core.records import OutboundRecord


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
