"""`journal stats|verify` on journals they cannot read: a clear report, no raise."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bridge.adapters.journal_file import DB_NAME, FORMAT
from bridge.adapters.journal_report import stats, verify


def test_a_file_that_is_not_sqlite_is_reported_unreadable(tmp_path: Path) -> None:
    """Garbage where the journal should be: ok=False and the reason, by both."""
    (tmp_path / DB_NAME).write_bytes(b"this is not a database" * 300)
    for report in (stats(tmp_path), verify(tmp_path)):
        assert report.exists
        assert not report.ok
        assert len(report.problems) == 1
        assert report.problems[0].startswith("unreadable: ")
        assert report.file_bytes == 22 * 300


def test_a_journal_of_a_newer_format_is_reported_not_read(tmp_path: Path) -> None:
    """A file a newer bridge wrote: ok=False, both formats named, no counts."""
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute(f"PRAGMA user_version={FORMAT + 1}")
    db.close()
    report = stats(tmp_path)
    assert not report.ok
    assert report.problems == (
        f"journal format {FORMAT + 1} is newer than this bridge's {FORMAT}",
    )
    assert (report.entries, report.first_seq) == (0, None)


def test_a_missing_journal_is_reported_absent(tmp_path: Path) -> None:
    """No file yet: exists=False, nothing wrong."""
    report = stats(tmp_path / "never-used")
    assert (report.exists, report.ok, report.entries) == (False, True, 0)
