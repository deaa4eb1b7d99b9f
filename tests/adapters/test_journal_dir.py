"""The journal's directory: where it defaults to, and one process at a time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.adapters.journal_dir import JournalLock, journal_directory
from bridge.adapters.journal_store import JournalIOError


def test_configured_directory_wins() -> None:
    """BRIDGE_JOURNAL_DIR, when set, is used as is."""
    env = {"XDG_STATE_HOME": "/state", "HOME": "/home/u"}
    assert journal_directory("/data/j", env) == Path("/data/j")


def test_default_is_the_xdg_state_directory_then_home() -> None:
    """Unset: $XDG_STATE_HOME/sendstack-bridge/journal, else ~/.local/state/…."""
    assert journal_directory(None, {"XDG_STATE_HOME": "/s", "HOME": "/h"}) == Path(
        "/s/sendstack-bridge/journal"
    )
    # A relative XDG_STATE_HOME is invalid per the spec and ignored.
    assert journal_directory(None, {"XDG_STATE_HOME": "rel", "HOME": "/h"}) == Path(
        "/h/.local/state/sendstack-bridge/journal"
    )
    assert journal_directory(None, {"HOME": "/h"}) == Path(
        "/h/.local/state/sendstack-bridge/journal"
    )


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    """Another process holding the lock: a clear error naming it, at once."""
    with subprocess.Popen(  # noqa: S603 - this interpreter, a fixed script
        [
            sys.executable,
            "-c",
            "import sys, pathlib;"
            "from bridge.adapters.journal_dir import JournalLock;"
            "lock = JournalLock(pathlib.Path(sys.argv[1])); lock.acquire();"
            "print('held', flush=True); sys.stdin.read()",
            str(tmp_path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == b"held\n"
            with pytest.raises(JournalIOError) as raised:
                JournalLock(tmp_path).acquire()
            message = str(raised.value)
            assert f"pid {holder.pid}" in message
            assert "BRIDGE_JOURNAL_DIR" in message
        finally:
            holder.kill()
    # The kernel released the dead holder's lock: no stale lock to clean up.
    lock = JournalLock(tmp_path)
    lock.acquire()
    assert (tmp_path / "LOCK").read_text().strip() == str(os.getpid())
    lock.release()


def test_an_unusable_directory_is_a_clear_journal_error(tmp_path: Path) -> None:
    """A file where the directory should be: JournalIOError naming the place."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(JournalIOError, match="cannot use the journal directory"):
        JournalLock(blocker / "journal").acquire()
