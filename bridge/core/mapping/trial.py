"""``mapping try``: what a mapping would publish for captured messages, offline.

The edit-run loop of a user whose wire differs from the shipped mapping:
run a capture (``sendstack-bridge capture``) or a file of raw messages (one
per line) through a mapping and see, per message, the records it would
publish or the dead-letter reason, then a summary. No Kafka, no Sendstack:
the records are built by the same functions the stream uses.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import orjson

from bridge.core.capture import frame_bytes
from bridge.core.codec import FrameCodec, FrameRejection
from bridge.core.records import OutboundRecord, Topics, to_record

__all__ = ["TrialMessage", "TrialSummary", "messages_of", "try_mapping"]

_RECEIVED_AT = "1970-01-01T00:00:00.000Z"  # the records' receive time is not shown


@dataclass(frozen=True, slots=True)
class TrialMessage:
    """One message and what the mapping made of it."""

    number: int
    raw: bytes
    records: tuple[OutboundRecord, ...]
    rejection: FrameRejection | None
    keepalive: bool


@dataclass(slots=True)
class TrialSummary:
    """Counts over a trial."""

    messages: int = 0
    keepalives: int = 0
    records_by_kind: Counter[str] = field(default_factory=Counter)
    dead_letters_by_reason: Counter[str] = field(default_factory=Counter)

    @property
    def records(self) -> int:
        return sum(self.records_by_kind.values())

    @property
    def dead_letters(self) -> int:
        return sum(self.dead_letters_by_reason.values())

    def add(self, message: TrialMessage, kinds: Iterable[str]) -> None:
        self.messages += 1
        self.keepalives += message.keepalive
        self.records_by_kind.update(kinds)
        if message.rejection is not None:
            self.dead_letters_by_reason[message.rejection.reason] += 1


def messages_of(lines: Iterable[bytes]) -> Iterator[bytes]:
    """The messages of a capture file, or of a file with one raw message per line.

    A capture starts with its header line (``{"capture": 1, ...}``); its
    ``frame`` events are the messages. Any other file is read as one message
    per non-empty line, verbatim.
    """
    capture: bool | None = None
    for line in lines:
        text = line.rstrip(b"\r\n")
        if capture is None:
            try:
                header = orjson.loads(text)
            except orjson.JSONDecodeError:
                header = None
            capture = type(header) is dict and "capture" in header
            if capture:
                continue
        if capture:
            event = orjson.loads(text)
            if event.get("kind") == "frame":
                yield frame_bytes(event)
        elif text.strip():
            yield text


def try_mapping(
    codec: FrameCodec, messages: Iterable[bytes], topics: Topics, summary: TrialSummary
) -> Iterator[TrialMessage]:
    """Decode each message, counting it in ``summary``."""
    for number, raw in enumerate(messages, start=1):
        decoded = codec.decode(raw)
        records = tuple(
            to_record(item, topics, received_at=_RECEIVED_AT) for item in decoded.items
        )
        message = TrialMessage(
            number, raw, records, decoded.rejection, decoded.keepalive
        )
        summary.add(message, (item.kind for item in decoded.items))
        yield message
