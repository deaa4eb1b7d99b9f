"""The durable journal's Prometheus metrics (``bridge_journal_*``).

Registered by the stream only when its journal is on (``bridge/app.py``), so
they are their own class beside ``bridge/metrics.py``. Gauges are read at
scrape time from the sink (``bind``), so that nothing is set per record.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# fsync on a local SSD is ~0.2-5 ms; network disks and a loaded node go higher.
_COMMIT_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
)


class JournalMetrics:
    """What the durable journal between the stream pump and Kafka reports."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.bytes = Gauge(
            "bridge_journal_bytes",
            "Bytes of journaled records not yet acknowledged by Kafka.",
            registry=registry,
        )
        self.max_bytes = Gauge(
            "bridge_journal_max_bytes",
            "The journal's bound (BRIDGE_JOURNAL_MAX_BYTES), for fill ratios.",
            registry=registry,
        )
        self.entries = Gauge(
            "bridge_journal_entries",
            "Journaled records not yet acknowledged by Kafka.",
            registry=registry,
        )
        self.oldest_age = Gauge(
            "bridge_journal_oldest_entry_age_seconds",
            "Age of the oldest journaled record not yet acknowledged (0 if none).",
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "bridge_journal_commit_seconds",
            "Time of one group commit (write and, when synced, fsync).",
            buckets=_COMMIT_BUCKETS,
            registry=registry,
        )
        self.committed = Counter(
            "bridge_journal_committed_total",
            "Records written to the journal (not those Kafka acknowledged first).",
            registry=registry,
        )
        self.dropped = Counter(
            "bridge_journal_dropped_total",
            "Records dropped from a full journal (when_full=drop_oldest).",
            registry=registry,
        )
        self.blocked = Counter(
            "bridge_journal_blocked_total",
            "Sends that waited because the journal was full (when_full=block).",
            registry=registry,
        )
        self.blocked_seconds = Counter(
            "bridge_journal_blocked_seconds_total",
            "Time sends spent waiting for room in a full journal.",
            registry=registry,
        )
        self.paced = Counter(
            "bridge_journal_paced_total",
            "Sends that waited (pace_seconds at most) for Kafka's acks to make "
            "room instead of spilling to disk.",
            registry=registry,
        )
        self.paced_seconds = Counter(
            "bridge_journal_paced_seconds_total",
            "Time sends spent waiting for Kafka's acks (pacing).",
            registry=registry,
        )
        self.corrupt = Counter(
            "bridge_journal_corrupt_entries_total",
            "Journal entries that failed their check and were skipped.",
            registry=registry,
        )
        self.quarantined = Counter(
            "bridge_journal_quarantined_files_total",
            "Journal files found unreadable and renamed aside.",
            registry=registry,
        )
        self.replayed = Counter(
            "bridge_journal_replayed_total",
            "Records read back from disk to be sent (backlog and restarts).",
            registry=registry,
        )

    def bind(
        self,
        *,
        entries: Callable[[], float],
        size: Callable[[], float],
        oldest_age: Callable[[], float],
    ) -> None:
        """Read the gauges from these functions at scrape time."""
        self.entries.set_function(entries)
        self.bytes.set_function(size)
        self.oldest_age.set_function(oldest_age)
