"""The composition root of ``sendstack-bridge redrive``: dead letters → records.

Reads the tracking (or webhook) dead-letter topic from where this redrive's
consumer group left off up to the end it had at the start, decodes each
selected frame with the current mapping (``bridge.core.redrive``), publishes
what it now understands with the ``ce_id``\\s it would have had live, in
receive order, and commits progress only after Kafka acknowledged the
records. The dead-letter topic is only read: still-failing frames are
reported, never written back. A second run with the same group therefore
publishes nothing new; ``--reset`` starts the group over (re-published
records carry the same ``ce_id``\\s, so consumers that de-duplicate see no
difference).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Final

from bridge.adapters.kafka_client import until_kafka_answers
from bridge.adapters.kafka_redrive import DeadLetterReader, RecordPublisher
from bridge.adapters.mapping_files import stream_codec
from bridge.config import KafkaSettings, Settings
from bridge.core.codec import FrameCodec
from bridge.core.dedupe import RecentIds
from bridge.core.records import OutboundRecord, Topics, iso_ms
from bridge.core.redrive import (
    DeadLetter,
    ReceiveOrderMerge,
    RedriveFilter,
    RedriveSummary,
    plan_dead_letter,
)
from bridge.core.webhooks import WebhookTopics

_FETCH: Final = 500
_BATCH: Final = 2_000  # records published (and progress committed) together
_DEDUPE: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class RedriveOptions:
    selection: RedriveFilter
    group: str | None
    reset: bool
    dry_run: bool


def utc_bound(text: str | None) -> str | None:
    """A ``--since``/``--until`` value as the dead letters' time format.

    Raises:
        ValueError: Not ISO-8601, or without a zone (never guessed).
    """
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO-8601 time: {text!r}") from None
    if parsed.utcoffset() is None:
        raise ValueError(f"give the zone, e.g. {text}Z")
    return iso_ms(parsed.timestamp())


def group_for(selection: RedriveFilter) -> str:
    """The default group: one per selection, so a narrower run does not hide
    the rest from a later, wider one."""
    text = f"{selection.origin}|{selection.since}|{selection.until}|"
    text += ",".join(sorted(selection.reasons))
    digest = hashlib.blake2b(text.encode(), digest_size=4).hexdigest()
    return f"sendstack-bridge-redrive-{selection.origin}-{digest}"


def _topics(settings: Settings) -> tuple[Topics, WebhookTopics]:
    kafka = settings.require(KafkaSettings)
    wh = settings.webhooks
    return (
        Topics(
            positions=kafka.topic_positions,
            device_status=kafka.topic_device_status,
            events=kafka.topic_events,
            dead_letter=kafka.topic_dead_letter,
        ),
        WebhookTopics(
            deliveries=wh.topic_deliveries,
            tracking=wh.topic_tracking,
            dead_letter=wh.topic_dead_letter,
        ),
    )


class _Progress:
    """A one-line progress display, on a terminal only."""

    def __init__(self, out: IO[str], total: int) -> None:
        self._out = out
        self._total = total
        self._tty = out.isatty()

    def show(self, summary: RedriveSummary) -> None:
        if self._tty:
            self._out.write(
                f"\rredrive: {summary.read}/{self._total} dead letters read,"
                f" {summary.published} records published"
            )
            self._out.flush()

    def end(self) -> None:
        if self._tty:
            self._out.write("\n")


async def redrive(
    settings: Settings, options: RedriveOptions, out: IO[str]
) -> RedriveSummary:
    """Run one redrive; returns its summary (also printed to ``out``)."""
    stream = settings.stream
    codec = stream_codec(
        stream.codec, stream.mapping_file, max_frame_bytes=stream.max_frame_bytes
    )
    topics, webhook_topics = _topics(settings)
    selection = options.selection
    dlq = (
        topics.dead_letter
        if selection.origin == "stream"
        else webhook_topics.dead_letter
    )
    group = options.group or group_for(selection)
    kafka = settings.require(KafkaSettings)
    reader = DeadLetterReader(kafka, topic=dlq, group=group, reset=options.reset)
    publisher = RecordPublisher(kafka)
    await until_kafka_answers(reader.start)
    summary = RedriveSummary()
    try:
        if not options.dry_run:
            await until_kafka_answers(publisher.start)
        # As the broker counts them (Tansu's count can be a few short).
        total = sum(
            max(0, end - reader.start_offsets[p]) for p, end in reader.end.items()
        )
        print(
            f"redrive: {dlq} with group {group}: {total} dead letter(s) to read",
            file=out,
        )
        progress = _Progress(out, total)
        await _run(
            reader, publisher, codec, topics, webhook_topics, options, summary, progress
        )
        progress.end()
    finally:
        await publisher.stop()
        await reader.stop()
    _report(summary, options, out)
    return summary


async def _run(
    reader: DeadLetterReader,
    publisher: RecordPublisher,
    codec: FrameCodec,
    topics: Topics,
    webhook_topics: WebhookTopics,
    options: RedriveOptions,
    summary: RedriveSummary,
    progress: _Progress,
) -> None:
    merge = ReceiveOrderMerge(sorted(reader.end))
    seen = RecentIds(_DEDUPE)
    pending: list[OutboundRecord] = []
    offsets: dict[int, int] = {}

    async def flush() -> None:
        if not options.dry_run:
            if pending:
                await publisher.publish(pending)
            await reader.commit(offsets)
        summary.published += len(pending)
        pending.clear()
        offsets.clear()
        progress.show(summary)

    while True:
        letters = await reader.fetch(_FETCH)
        for letter in letters:
            merge.add(letter)
        for partition in await reader.finished():
            merge.finish(partition)
        for letter in merge.ready():
            _take(
                letter, codec, topics, webhook_topics, options, summary, seen, pending
            )
            offsets[letter.partition] = letter.offset + 1
            if len(pending) >= _BATCH:
                await flush()
        if (
            not letters
            and merge.buffered() == 0
            and len(await reader.finished()) == len(reader.end)
        ):
            break
    await flush()


def _take(
    letter: DeadLetter,
    codec: FrameCodec,
    topics: Topics,
    webhook_topics: WebhookTopics,
    options: RedriveOptions,
    summary: RedriveSummary,
    seen: RecentIds,
    pending: list[OutboundRecord],
) -> None:
    outcome = plan_dead_letter(
        letter,
        options.selection,
        codec=codec,
        topics=topics,
        webhook_topics=webhook_topics,
        source="/sendstack/tracking",
    )
    summary.add(letter, outcome)
    for record in outcome.records:
        if record.dedupe_id is not None and not seen.add(record.dedupe_id):
            summary.duplicates += 1
            continue
        pending.append(record)


def _report(summary: RedriveSummary, options: RedriveOptions, out: IO[str]) -> None:
    verb = "would publish" if options.dry_run else "published"
    outcomes = ", ".join(f"{k} {n}" for k, n in sorted(summary.outcomes.items()))
    print(
        f"redrive: read {summary.read} dead letter(s) ({outcomes or 'none'});"
        f" {verb} {summary.published} record(s); skipped {summary.already_published}"
        f" published live and {summary.duplicates} duplicate(s)",
        file=out,
    )
    for partition, offset, reason, detail in summary.still_failing:
        print(
            f"  still failing: partition {partition} offset {offset}:"
            f" {reason}: {detail}",
            file=out,
        )
