"""Where the stream's journal lives, and the lock that keeps it to one process.

Two bridges writing one journal would each re-send the other's records and
delete entries the other still needs, so the directory is locked (``flock``
on ``LOCK`` in it) for as long as the stream runs. The lock is released by
the kernel when the process dies, so a SIGKILLed bridge never leaves a stale
lock behind (no pid files to clean up).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from bridge.adapters.journal_store import JournalIOError

__all__ = ["JournalLock", "journal_directory"]

LOCK_NAME: Final = "LOCK"


def journal_directory(configured: str | None, env: Mapping[str, str]) -> Path:
    """The journal directory: the configured one, else the XDG state directory.

    ``$XDG_STATE_HOME/sendstack-bridge/journal``, else
    ``~/.local/state/sendstack-bridge/journal``: per user, kept across
    reboots, and outside the working tree (the image sets its own).
    """
    if configured:
        return Path(configured)
    state = env.get("XDG_STATE_HOME")
    if state and Path(state).is_absolute():
        return Path(state) / "sendstack-bridge" / "journal"
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".local" / "state" / "sendstack-bridge" / "journal"


class JournalLock:
    """An exclusive, non-blocking ``flock`` on ``<directory>/LOCK``.

    Raises :class:`JournalIOError` from :meth:`acquire` when another process
    holds it, naming that process when it wrote its pid.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (creating the directory), or raise at once."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise JournalIOError(
                f"cannot use the journal directory {self.path.parent}: "
                f"{exc.strerror or exc}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise JournalIOError(
                f"the journal {self.path.parent} is in use by another process"
                f"{f' (pid {holder})' if holder else ''}: each stream needs its own"
                " BRIDGE_JOURNAL_DIR"
            ) from None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Give the lock back (closing the descriptor releases it)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def _read_holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return text
    return ""
