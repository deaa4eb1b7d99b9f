"""Redrive: dead letters decoded again, with the current mapping, as records.

Theory of operation
-------------------
A frame the bridge did not understand went to the dead-letter topic verbatim,
with its receive time and, when part of it was understood, the ``ce_id``\\s
of the items published all the same (``bridge_dlq_published_ids``). Once the
mapping is fixed, :func:`plan_dead_letter` decodes such a frame again and says
what to publish: every item it now understands, **with the ``ce_id`` it
would have had live** (ids derive from the item, not from when it is read),
minus the items published live. The records carry the original receive time
(``ce_bridgereceivedat``), so a consumer sees them as the live stream would
have published them.

A frame that still fails is reported, never written back to the dead-letter
topic: the dead-letter topic is only ever read. The same holds for webhook
dead letters (verified bodies the receiver could not classify), planned again
with the current classification rules.

:class:`ReceiveOrderMerge` restores receive order across the dead-letter
topic's partitions (each partition is in receive order already; dead
letters have no key, so a device's frames can be on any partition), so
records are published in per-device order with bounded memory.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import orjson

from bridge.core.codec import FrameCodec, FrameRejection
from bridge.core.records import (
    ACCOUNT_HEADER,
    OutboundRecord,
    Topics,
    account_source,
    to_record,
)
from bridge.core.webhooks import Malformed, WebhookTopics, parse, plan

__all__ = [
    "DeadLetter",
    "Outcome",
    "ReceiveOrderMerge",
    "RedriveFilter",
    "RedriveSummary",
    "plan_dead_letter",
]

Origin = Literal["stream", "webhook"]
_REDRIVEN_BY: Final = b"webhook_id"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of a dead-letter topic."""

    partition: int
    offset: int
    value: bytes
    headers: Mapping[str, bytes]

    @property
    def received_at(self) -> str:
        return self.headers.get("bridge_dlq_received_at", b"").decode(
            "ascii", "replace"
        )

    @property
    def reason(self) -> str:
        return self.headers.get("bridge_dlq_reason", b"").decode("ascii", "replace")

    @property
    def origin(self) -> str:
        return self.headers.get("bridge_dlq_origin", b"").decode("ascii", "replace")


@dataclass(frozen=True, slots=True)
class RedriveFilter:
    """Which dead letters to redrive: origin, receive-time range, reasons."""

    origin: Origin = "stream"
    since: str | None = None  # ISO-8601 UTC ms Z, inclusive
    until: str | None = None  # exclusive
    reasons: frozenset[str] = frozenset()

    def selects(self, letter: DeadLetter) -> bool:
        # The receive times share one fixed format, so text order is time order.
        received = letter.received_at
        return (
            letter.origin == self.origin
            and (self.since is None or received >= self.since)
            and (self.until is None or received < self.until)
            and (not self.reasons or letter.reason in self.reasons)
        )


OutcomeKind = Literal["redriven", "still_failing", "not_redrivable", "filtered_out"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What redriving one dead letter means.

    Attributes:
        kind: ``redriven`` (fully understood now), ``still_failing`` (some of
            it still is not: its understood items are published, the rest is
            reported), ``not_redrivable`` (truncated: the frame is not whole),
            ``filtered_out``.
        records: What to publish, in frame order.
        already_published: Items skipped because they were published live.
        rejection: Why (part of) it still fails.
    """

    kind: OutcomeKind
    records: tuple[OutboundRecord, ...] = ()
    already_published: int = 0
    rejection: FrameRejection | None = None


def _published_ids(letter: DeadLetter) -> frozenset[str]:
    raw = letter.headers.get("bridge_dlq_published_ids")
    if raw is None:
        return frozenset()
    try:
        ids = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return frozenset()
    return (
        frozenset(i for i in ids if type(i) is str)
        if type(ids) is list
        else frozenset()
    )


def plan_dead_letter(
    letter: DeadLetter,
    selection: RedriveFilter,
    *,
    codec: FrameCodec,
    topics: Topics,
    webhook_topics: WebhookTopics,
    source: str,
) -> Outcome:
    """Decide what redriving ``letter`` publishes; pure, never raises."""
    if not selection.selects(letter):
        return Outcome("filtered_out")
    if letter.headers.get("bridge_dlq_truncated") == b"true":
        return Outcome(
            "not_redrivable",
            rejection=FrameRejection("truncated", "the dead letter holds a cut frame"),
        )
    if selection.origin == "webhook":
        return _plan_webhook(letter, webhook_topics)
    decoded = codec.decode(letter.value)
    live = _published_ids(letter)
    # A letter of one of several accounts: its records say whose, as live.
    account = letter.headers.get(ACCOUNT_HEADER)
    if account is not None:
        source = account_source(account.decode("utf-8", "replace"))
    records: list[OutboundRecord] = []
    skipped = 0
    for item in decoded.items:
        if item.event_id in live:
            skipped += 1
            continue
        records.append(
            to_record(
                item,
                topics,
                received_at=letter.received_at,
                source=source,
                account=account,
            )
        )
    kind: OutcomeKind = "redriven" if decoded.rejection is None else "still_failing"
    return Outcome(kind, tuple(records), skipped, decoded.rejection)


def _plan_webhook(letter: DeadLetter, topics: WebhookTopics) -> Outcome:
    inbound = parse(letter.value)
    if isinstance(inbound, Malformed):
        return Outcome(
            "still_failing", rejection=FrameRejection("malformed", inbound.detail)
        )
    verified = letter.headers.get("bridge_dlq_verified_by", _REDRIVEN_BY)
    scheme: Literal["webhook_id", "payload"] = (
        "payload" if verified == b"payload" else "webhook_id"
    )
    planned = plan(inbound, topics, verified_by=scheme, received_at=letter.received_at)
    if planned.rejection is not None:
        return Outcome("still_failing", rejection=planned.rejection)
    return Outcome("redriven", (planned.record,))


@dataclass(slots=True)
class RedriveSummary:
    """Counts of a redrive run."""

    read: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    published: int = 0
    duplicates: int = 0
    already_published: int = 0
    still_failing: list[tuple[int, int, str, str]] = field(default_factory=list)

    def add(self, letter: DeadLetter, outcome: Outcome) -> None:
        self.read += 1
        self.outcomes[outcome.kind] += 1
        self.already_published += outcome.already_published
        if outcome.rejection is not None and len(self.still_failing) < 1000:
            self.still_failing.append(
                (
                    letter.partition,
                    letter.offset,
                    outcome.rejection.reason,
                    outcome.rejection.detail,
                )
            )


class ReceiveOrderMerge:
    """Merges per-partition runs of dead letters into receive order.

    Feed each partition's records in offset order; :meth:`ready` yields a
    record only when every partition that may still deliver one has a
    record buffered (or is finished), so nothing later can come before it.
    """

    def __init__(self, partitions: Sequence[int]) -> None:
        self._buffers: dict[int, deque[DeadLetter]] = {p: deque() for p in partitions}
        self._done: set[int] = set()

    def add(self, letter: DeadLetter) -> None:
        self._buffers.setdefault(letter.partition, deque()).append(letter)

    def finish(self, partition: int) -> None:
        """No more records will come from ``partition`` in this run."""
        self._done.add(partition)

    def buffered(self) -> int:
        return sum(len(b) for b in self._buffers.values())

    def ready(self) -> Iterator[DeadLetter]:
        while True:
            heads: list[tuple[str, int, int]] = []
            for partition, buffer in self._buffers.items():
                if buffer:
                    head = buffer[0]
                    heads.append((head.received_at, partition, head.offset))
                elif partition not in self._done:
                    return  # this partition may still bring an earlier record
            if not heads:
                return
            _, partition, _ = min(heads)
            yield self._buffers[partition].popleft()
