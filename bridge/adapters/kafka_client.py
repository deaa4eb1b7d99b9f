"""Kafka client settings and start-up, shared by every process.

aiokafka keyword arguments are derived here, once, from ``KafkaSettings``
(SASL and TLS included), and ``until_kafka_answers`` retries a start-up call
until the cluster answers: Kafka may come up after us (a fresh cluster, a
rolling restart), and a process that exits instead would crash-loop.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bridge.config import KafkaSettings
from bridge.core.retry import Backoff

log = structlog.get_logger("bridge.kafka")

_TOPIC_ALREADY_EXISTS = 36


def client_settings(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka keyword arguments shared by producers and consumers."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": ",".join(kafka.bootstrap_servers),
        "client_id": kafka.client_id,
        "request_timeout_ms": kafka.request_timeout_ms,
        "retry_backoff_ms": kafka.retry_backoff_ms,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.sasl_mechanism:
        kwargs["sasl_mechanism"] = kafka.sasl_mechanism
        kwargs["sasl_plain_username"] = kafka.sasl_username
        kwargs["sasl_plain_password"] = (
            kafka.sasl_password.reveal() if kafka.sasl_password is not None else None
        )
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = ssl.create_default_context(cafile=kafka.ssl_cafile)
    return kwargs


def producer_settings(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka producer keyword arguments from our Kafka settings."""
    return {
        **client_settings(kafka),
        "acks": "all" if kafka.acks == "all" else int(kafka.acks),
        "enable_idempotence": kafka.enable_idempotence,
        "compression_type": None if kafka.compression == "none" else kafka.compression,
        "linger_ms": kafka.linger_ms,
        "max_batch_size": kafka.max_batch_bytes,
    }


async def until_kafka_answers(
    start: Callable[[], Awaitable[None]],
    *,
    stop: asyncio.Event | None = None,
    cleanup: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Call ``start`` until Kafka answers: it may come up after us (a fresh
    cluster, a rolling restart). Gives up only when ``stop`` is set."""
    attempt = 0
    backoff = Backoff(initial=0.5, maximum=10.0)
    while True:
        try:
            await start()
        except Exception as exc:  # aiokafka raises several unrelated types here
            if cleanup is not None:
                await cleanup()
            if stop is not None and stop.is_set():
                raise
            delay = backoff.delay(attempt, 0.5)
            log.warning("kafka_unavailable", error=type(exc).__name__, retry_in=delay)
            attempt += 1
            await asyncio.sleep(delay)
        else:
            log.info("kafka_connected")
            return


async def ensure_topic(
    kafka: KafkaSettings, topic: str, partitions: int, *, config: dict[str, str]
) -> None:
    """Create ``topic`` with ``partitions`` unless it exists (then it is left as is).

    Replicated on up to three brokers (as many as the cluster has). A
    refusal (no rights to create topics) is logged, not raised: the topic may
    be managed by other means, and its users say clearly if it is missing.
    """
    admin = AIOKafkaAdminClient(**client_settings(kafka))
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        replication = max(1, min(3, len(cluster.get("brokers", ()))))
        response = await admin.create_topics(
            [NewTopic(topic, partitions, replication, topic_configs=config)]
        )
    finally:
        await admin.close()
    for name, code, *detail in response.topic_errors:
        if code not in (0, _TOPIC_ALREADY_EXISTS):
            log.warning("topic_not_created", topic=name, error=code, detail=detail)
        elif code == 0:
            log.info("topic_created", topic=name, partitions=partitions)
