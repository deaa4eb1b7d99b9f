"""The composition root of ``sendstack-bridge journal stats|verify``.

For operators: what the stream's journal holds (``stats``: cheap counts) and
whether every entry in it reads back intact (``verify``: SQLite's own check,
then each entry's CRC, in bounded chunks). Both open the file read-only, so
they are safe beside a running stream (``kubectl exec`` into its pod).

Exit codes: 0 fine; 1 ``verify`` found a problem or there is no journal to
verify, or ``stats`` could not read the file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO

from bridge.adapters.journal_report import JournalReport, stats, verify


def run(
    verb: str,
    directory: Path,
    out: IO[str],
    *,
    max_bytes: int | None = None,
    as_json: bool = False,
    now: float | None = None,
) -> int:
    """Print ``stats`` or ``verify`` of the journal in ``directory``."""
    report = verify(directory) if verb == "verify" else stats(directory)
    wall = time.time() if now is None else now
    if as_json:
        out.write(json.dumps(_as_dict(report, wall), indent=2) + "\n")
    else:
        out.write(_as_text(verb, report, max_bytes, wall))
    if verb == "verify":
        return 0 if report.exists and report.ok else 1
    return 0 if report.ok else 1


def _age(report: JournalReport, now: float) -> float | None:
    if report.oldest_born_ms is None:
        return None
    return max(0.0, now - report.oldest_born_ms / 1000)


def _as_dict(report: JournalReport, now: float) -> dict[str, object]:
    return {
        "path": str(report.path),
        "exists": report.exists,
        "ok": report.ok,
        "entries": report.entries,
        "bytes": report.bytes,
        "file_bytes": report.file_bytes,
        "first_seq": report.first_seq,
        "last_seq": report.last_seq,
        "oldest_entry_age_seconds": _age(report, now),
        "corrupt_entries": list(report.corrupt_entries),
        "problems": list(report.problems),
        "quarantined_files": list(report.quarantined_files),
    }


def _as_text(
    verb: str, report: JournalReport, max_bytes: int | None, now: float
) -> str:
    lines = [f"journal {report.path}"]
    if not report.exists:
        lines.append("  no journal here (nothing journaled yet, or another directory)")
    else:
        fill = ""
        if max_bytes:
            fill = f" of {max_bytes:,} ({100 * report.bytes / max_bytes:.1f} %)"
        lines.append(
            f"  entries        {report.entries:,} (not yet acknowledged by Kafka)"
        )
        lines.append(f"  bytes          {report.bytes:,}{fill}")
        if report.first_seq is not None:
            lines.append(f"  sequences      {report.first_seq}..{report.last_seq}")
        age = _age(report, now)
        if age is not None and report.oldest_born_ms is not None:
            born = time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(report.oldest_born_ms / 1000)
            )
            lines.append(f"  oldest entry   {born} ({age:,.0f} s ago)")
        lines.append(f"  files on disk  {report.file_bytes:,} bytes")
    quarantined = ", ".join(report.quarantined_files) or "none"
    lines.append(f"  quarantined    {quarantined}")
    if report.problems:
        lines.append(f"  {len(report.problems)} problem(s):")
        lines.extend(f"    {problem}" for problem in report.problems)
    if verb == "verify" and report.exists:
        verdict = "ok" if report.ok else "NOT ok"
        checked = f"{report.entries:,} entries checked"
        lines.append(f"verify: {verdict} ({checked})")
    return "\n".join(lines) + "\n"
