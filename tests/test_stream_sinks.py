"""The stream's sink chain is chosen from settings: journal or not, fencing or not."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from bridge.adapters.journaled_sink import JournaledSink
from bridge.adapters.kafka_producer import KafkaRecordSink
from bridge.adapters.kafka_transactions import TransactionalRecordSink
from bridge.config import KafkaSettings, Settings
from bridge.metrics import OutputMetrics
from bridge.stream_sinks import SinkChain, SinkHooks, build_sinks

BASE = {
    "BRIDGE_SENDSTACK_APP_ID": "7302915",
    "BRIDGE_SENDSTACK_APP_SECRET": "not-a-real-secret",
    "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": "localhost:9092",
}
HOOKS = SinkHooks(
    acked=lambda records: None,
    released=lambda account, count: None,
    fenced=lambda account: None,
    confirmed=lambda account: True,
)


def chain(env: dict[str, str]) -> SinkChain:
    settings = Settings.from_env({**BASE, **env})
    registry = CollectorRegistry()
    return build_sinks(
        settings,
        settings.require(KafkaSettings),
        accounts=["default"],
        topic_kinds={"sendstack.positions": "position"},
        metrics=OutputMetrics(registry).sink,
        registry=registry,
        hooks=HOOKS,
    )


def test_with_the_journal_off_the_pump_sends_to_the_plain_kafka_sink() -> None:
    """BRIDGE_JOURNAL_ENABLED=false: no journal, no lock, no fencing."""
    built = chain({"BRIDGE_JOURNAL_ENABLED": "false"})
    assert isinstance(built.kafka, KafkaRecordSink)
    assert built.sink is built.kafka
    assert (built.journal, built.lock, built.fencing) == (None, None, None)


def test_with_the_journal_on_the_pump_sends_to_it_and_it_owns_the_kafka_sink(
    tmp_path: Path,
) -> None:
    """The default: the journal in front, on a lockable directory, the Kafka
    sink as its inner sink."""
    built = chain({"BRIDGE_JOURNAL_DIR": str(tmp_path)})
    assert isinstance(built.journal, JournaledSink)
    assert built.sink is built.journal
    assert built.journal.inner is built.kafka
    assert isinstance(built.kafka, KafkaRecordSink)
    assert built.lock is not None
    assert built.fencing is None


def test_with_fencing_the_journal_forwards_to_the_transactional_sink(
    tmp_path: Path,
) -> None:
    """BRIDGE_HA_TRANSACTIONAL_ID: the Kafka sink is the per-account
    transactional one, behind the journal, and is the standby's fencing."""
    built = chain(
        {
            "BRIDGE_JOURNAL_DIR": str(tmp_path),
            "BRIDGE_HA_ENABLED": "true",
            "BRIDGE_HA_TRANSACTIONAL_ID": "bridge",
            "BRIDGE_KAFKA_ACKS": "all",
        }
    )
    assert isinstance(built.kafka, TransactionalRecordSink)
    assert built.fencing is built.kafka
    assert built.journal is not None
    assert built.journal.inner is built.kafka
