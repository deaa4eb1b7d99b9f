"""The composition root of ``sendstack-bridge mapping``: check and try mappings.

Offline: nothing here talks to Kafka or Sendstack. ``check`` lists every
problem of a mapping file with its line (exit 2 when there is one); ``try``
runs captured messages through it and prints what would be published
(exit 1 when any message would be dead-lettered, so a mapping can be tested
in CI against a capture); ``show`` prints the Python a rule compiles to.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import IO, Final

from bridge.adapters.mapping_files import read_mapping
from bridge.config import Settings
from bridge.core.mapping import MappingCodec
from bridge.core.mapping.trial import (
    TrialMessage,
    TrialSummary,
    messages_of,
    try_mapping,
)
from bridge.core.records import Topics

_VALUE_SHOWN: Final = 240


def topics_from(settings: Settings) -> Topics:
    """The configured topic names, or the defaults when Kafka is not configured."""
    kafka = settings.kafka
    if kafka is None:
        return Topics()
    return Topics(
        positions=kafka.topic_positions,
        device_status=kafka.topic_device_status,
        events=kafka.topic_events,
        dead_letter=kafka.topic_dead_letter,
    )


def _load(
    mapping: str | None, out: IO[str], max_frame_bytes: int
) -> MappingCodec | None:
    codec, problems = read_mapping(mapping, max_frame_bytes=max_frame_bytes)
    if codec is None:
        name = mapping or "the shipped mapping"
        print(f"{name}: {len(problems)} problem(s)", file=out)
        for problem in problems:
            print(f"  {problem}", file=out)
    return codec


def check(mapping: str | None, out: IO[str], err: IO[str]) -> int:
    """``mapping check``: 0 when the file compiles, 2 with every problem."""
    codec = _load(mapping, err, 1)
    if codec is None:
        return 2
    print(
        f"{mapping or 'the shipped mapping'}: ok ({codec.name}, "
        f"{len(codec.sources)} rule(s))",
        file=out,
    )
    return 0


def show(mapping: str | None, out: IO[str], err: IO[str]) -> int:
    """``mapping show``: the source each rule compiles to."""
    codec = _load(mapping, err, 1)
    if codec is None:
        return 2
    for name, source in codec.sources.items():
        print(f"# rule {name}\n{source}", file=out)
    return 0


def _lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        yield from handle


def _render(message: TrialMessage, out: IO[str], *, full: bool) -> None:
    if message.keepalive:
        print(f"#{message.number} keep-alive", file=out)
        return
    count = len(message.records)
    print(f"#{message.number} {count} record(s)", file=out)
    for record in message.records:
        ce_type = dict(record.headers).get("ce_type", b"").decode()
        value = record.value.decode("utf-8", "replace")
        if not full and len(value) > _VALUE_SHOWN:
            value = value[: _VALUE_SHOWN - 3] + "..."
        key = "" if record.key is None else record.key.decode("utf-8", "replace")
        print(f"  {record.topic} key={key} {ce_type}\n    {value}", file=out)
    if message.rejection is not None:
        print(
            f"  dead letter: {message.rejection.reason}: {message.rejection.detail}",
            file=out,
        )


def _summary(summary: TrialSummary) -> str:
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(summary.records_by_kind.items()))
    reasons = ", ".join(
        f"{r} {n}" for r, n in sorted(summary.dead_letters_by_reason.items())
    )
    return (
        f"{summary.messages} message(s): {summary.records} record(s)"
        f"{f' ({kinds})' if kinds else ''}, {summary.keepalives} keep-alive(s),"
        f" {summary.dead_letters} dead letter(s){f' ({reasons})' if reasons else ''}"
    )


def trial(
    mapping: str | None,
    capture: Path,
    out: IO[str],
    err: IO[str],
    *,
    topics: Topics,
    max_frame_bytes: int,
    quiet: bool = False,
    full: bool = False,
) -> int:
    """``mapping try``: 0 when every message is understood, 1 if any would be
    dead-lettered, 2 when the mapping itself has problems."""
    codec = _load(mapping, err, max_frame_bytes)
    if codec is None:
        return 2
    try:
        lines = list(_lines(capture))
    except OSError as exc:
        print(f"cannot read {capture}: {exc.strerror}", file=err)
        return 2
    summary = TrialSummary()
    for message in try_mapping(codec, messages_of(lines), topics, summary):
        if not quiet or message.rejection is not None:
            _render(message, out, full=full)
    print(f"summary: {_summary(summary)}", file=out)
    return 1 if summary.dead_letters else 0
