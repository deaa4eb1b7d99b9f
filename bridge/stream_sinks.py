"""The stream's sink chain, built from settings: journal in front, Kafka behind.

Part of the ``stream`` composition root (``bridge/app.py``), kept apart because
the choice has two independent axes:

* **The Kafka sink**: ``KafkaRecordSink``, or with fencing
  (``BRIDGE_HA_ENABLED`` and ``BRIDGE_HA_TRANSACTIONAL_ID``) the
  ``TransactionalRecordSink``, one transactional producer per account.
* **The journal** (``BRIDGE_JOURNAL_ENABLED``, the default): a
  ``JournaledSink`` in front of it, on a locked directory; the pump sends to
  the journal, which connects the Kafka sink itself.

What the chain tells the app goes through :class:`SinkHooks`: each batch Kafka
acknowledged (progress for the standby, latency metrics), and, with fencing,
the standby's word on an account and what a successor's fence let go.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from bridge.adapters.journal_dir import JournalLock, journal_directory
from bridge.adapters.journal_store import JournalStore
from bridge.adapters.journaled_sink import JournaledSink
from bridge.adapters.kafka_client import producer_settings, until_kafka_answers
from bridge.adapters.kafka_producer import KafkaRecordSink, build_producer
from bridge.adapters.kafka_transactions import (
    TransactionalProducer,
    TransactionalRecordSink,
)
from bridge.config import JournalSettings, KafkaSettings, Settings
from bridge.core.records import OutboundRecord
from bridge.core.retry import Backoff
from bridge.journal_metrics import JournalMetrics
from bridge.metrics import SinkMetrics
from bridge.ports import RecordSink
from bridge.workers.stream_roles import AccountOf

__all__ = ["BatchAck", "KafkaSink", "SinkChain", "SinkHooks", "build_sinks"]

BatchAck = Callable[[Sequence[OutboundRecord]], None]
#: What publishes to Kafka: per-account transactions with fencing, or not.
KafkaSink = KafkaRecordSink | TransactionalRecordSink


@dataclass(frozen=True, slots=True)
class SinkHooks:
    """What the chain calls back in the app.

    Attributes:
        acked: Each batch Kafka acknowledged (after the journal let it go).
        released: With fencing: ``(account, count)`` records a successor's
            fence let go (they leave the journal unreported).
        fenced: With fencing: a successor fenced this account's producer.
        confirmed: With fencing: whether the group still confirms this
            replica leads the account (a new epoch only then).
    """

    acked: BatchAck
    released: Callable[[str, int], None]
    fenced: Callable[[str], None]
    confirmed: Callable[[str], bool]


@dataclass(frozen=True, slots=True)
class SinkChain:
    """The built chain.

    Attributes:
        sink: What the pump sends to: the journal, or the Kafka sink.
        kafka: The Kafka sink (the journal's inner sink, if journaled).
        journal: The journal, if on.
        lock: The journal directory's lock (acquired by whoever starts it).
    """

    sink: RecordSink
    kafka: KafkaSink
    journal: JournaledSink | None
    lock: JournalLock | None

    @property
    def fencing(self) -> TransactionalRecordSink | None:
        """The transactional sink, if fencing is on."""
        return self.kafka if isinstance(self.kafka, TransactionalRecordSink) else None


def build_sinks(
    settings: Settings,
    kafka: KafkaSettings,
    *,
    accounts: Sequence[str],
    topic_kinds: Mapping[str, str],
    metrics: SinkMetrics,
    registry: CollectorRegistry,
    hooks: SinkHooks,
) -> SinkChain:
    """Build the Kafka sink and, with the journal on, the journal in front."""
    s = settings
    backoff = Backoff(
        initial=s.buffer.publish_retry_initial_seconds,
        maximum=s.buffer.publish_retry_max_seconds,
    )
    fenced = s.ha.enabled and s.ha.transactional_id is not None

    def kafka_sink(acked: BatchAck, release: BatchAck | None = None) -> KafkaSink:
        if not fenced:
            return KafkaRecordSink(
                functools.partial(build_producer, **producer_settings(kafka)),
                max_records=s.buffer.max_records,
                max_bytes=s.buffer.max_bytes,
                retry_backoff=backoff,
                metrics=metrics,
                topic_kinds=topic_kinds,
                linger=kafka.linger_ms / 1000,
                on_batch_ack=acked,
            )

        def released(account: str, records: Sequence[OutboundRecord]) -> None:
            if release is not None:
                release(records)
            hooks.released(account, len(records))

        return TransactionalRecordSink(
            functools.partial(_transactional_producer, kafka, s.ha.transactional_id),
            account_of=AccountOf(list(accounts)),
            max_records=s.buffer.max_records,
            max_bytes=s.buffer.max_bytes,
            commit_interval=s.ha.transaction_ms / 1000,
            retry_backoff=backoff,
            metrics=metrics,
            topic_kinds=topic_kinds,
            on_batch_ack=acked,
            on_released=released,
            on_fenced=hooks.fenced,
            confirmed=hooks.confirmed,
        )

    if not s.journal.enabled:
        plain = kafka_sink(hooks.acked)
        return SinkChain(sink=plain, kafka=plain, journal=None, lock=None)
    return _journaled(s.journal, kafka_sink, registry, hooks.acked)


def _journaled(
    j: JournalSettings,
    kafka_sink: Callable[[BatchAck, BatchAck], KafkaSink],
    registry: CollectorRegistry,
    app_acked: BatchAck,
) -> SinkChain:
    directory = journal_directory(j.dir, os.environ)
    built: list[KafkaSink] = []

    def inner(journal_acked: BatchAck) -> KafkaSink:
        def acked(records: Sequence[OutboundRecord]) -> None:
            journal_acked(records)
            app_acked(records)

        # Records let go to another leader leave the journal unreported.
        built.append(kafka_sink(acked, journal_acked))
        return built[0]

    journal = JournaledSink(
        JournalStore(directory),
        inner,
        max_bytes=j.max_bytes,
        durability=j.durability,
        flush_interval=j.flush_interval_ms / 1000,
        when_full=j.when_full,
        metrics=JournalMetrics(registry),
        connect=lambda: until_kafka_answers(built[0].start),
        disconnect=lambda: built[0].stop(),
        pace_seconds=j.pace_ms / 1000,
        pace_bytes=j.pace_bytes,
    )
    return SinkChain(
        sink=journal, kafka=built[0], journal=journal, lock=JournalLock(directory)
    )


def _transactional_producer(
    kafka: KafkaSettings, prefix: str | None, account: str
) -> TransactionalProducer:
    # One fixed id per account: whoever opens it next fences this holder.
    producer: TransactionalProducer = build_producer(
        **producer_settings(kafka), transactional_id=f"{prefix}.{account}"
    )
    return producer
