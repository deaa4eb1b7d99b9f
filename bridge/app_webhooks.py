"""The composition root of the ``webhooks`` process: signed webhooks → Kafka.

The only module that knows the concrete adapters of this process: the h11
webhook server (`WebhookHttpServer`), the acknowledging Kafka sink
(`AckingSink` over `KafkaRecordSink`) and the ops server. `WebhookApp.run`
starts the ops server and the receiver at once (while Kafka is unreachable
every webhook gets 503, so Sendstack keeps it and retries), connects the
producer in the background, and on ``stop`` shuts down in order within
``BRIDGE_SHUTDOWN_GRACE_SECONDS``: stop intake (no new connections; requests
being handled may finish), flush the producer, stop it, stop the ops server.
Nothing was answered 2xx that Kafka does not hold, so a shutdown that runs out
of time loses nothing Sendstack considers delivered.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping

import structlog
from prometheus_client import CollectorRegistry

from bridge.adapters.clock import SystemClock
from bridge.adapters.kafka_client import producer_settings, until_kafka_answers
from bridge.adapters.kafka_producer import AckCallback, KafkaRecordSink, build_producer
from bridge.adapters.webhook_http import WebhookHttpServer
from bridge.adapters.webhook_sink import AckingSink
from bridge.bootstrap import Deadline, Lifecycle, Tasks
from bridge.config import (
    KafkaSettings,
    SendstackSettings,
    Settings,
    SignatureScheme,
)
from bridge.core import webhooks
from bridge.core.retry import Backoff
from bridge.metrics import SinkMetrics, WebhookMetrics
from bridge.workers.webhook_receiver import ReceiverOptions, WebhookReceiver

log = structlog.get_logger("bridge.app_webhooks")

_WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # noqa: S104 - only used to build URLs


def accepted_schemes(setting: SignatureScheme) -> tuple[webhooks.Scheme, ...]:
    """The schemes ``BRIDGE_WEBHOOK_SIGNATURE_SCHEME`` accepts (``any``: both)."""
    if setting == "any":
        return webhooks.SCHEMES
    return (setting,)


class WebhookApp:
    """The ``webhooks`` process: Sendstack webhooks → Kafka, acked before 2xx."""

    def __init__(
        self, settings: Settings, *, registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = WebhookMetrics(self.registry)
        self.clock = SystemClock()
        s = settings
        wh = s.webhooks
        kafka = s.require(KafkaSettings)
        secret = s.require(SendstackSettings).app_secret
        self.topics = webhooks.WebhookTopics(
            deliveries=wh.topic_deliveries,
            tracking=wh.topic_tracking,
            dead_letter=wh.topic_dead_letter,
        )
        sink_metrics = SinkMetrics(
            self.registry,
            kinds=("webhook_delivery", "webhook_tracking", "dead_letter"),
        )

        def make_sink(on_ack: AckCallback) -> KafkaRecordSink:
            return KafkaRecordSink(
                functools.partial(build_producer, **producer_settings(kafka)),
                max_records=s.buffer.max_records,
                max_bytes=s.buffer.max_bytes,
                retry_backoff=Backoff(
                    initial=s.buffer.publish_retry_initial_seconds,
                    maximum=s.buffer.publish_retry_max_seconds,
                ),
                metrics=sink_metrics,
                topic_kinds={
                    self.topics.deliveries: "webhook_delivery",
                    self.topics.tracking: "webhook_tracking",
                    self.topics.dead_letter: "dead_letter",
                },
                on_ack=on_ack,
                linger=kafka.linger_ms / 1000,
            )

        self.sink = AckingSink(make_sink)
        self.receiver = WebhookReceiver(
            self.sink,
            verifier=webhooks.SignatureVerifier(
                secret.reveal().encode(), accepted_schemes(wh.signature_scheme)
            ),
            topics=self.topics,
            options=ReceiverOptions(
                path=wh.path,
                publish_timeout=wh.publish_timeout_seconds,
                dedupe_capacity=wh.dedupe_capacity,
                max_body_bytes=wh.max_body_bytes,
                max_in_flight_records=s.buffer.max_records,
                max_in_flight_bytes=s.buffer.max_bytes,
            ),
            clock=self.clock,
            metrics=self.metrics,
        )
        self.http = WebhookHttpServer(
            self.receiver.handle,
            self.receiver.count,
            wh.host,
            wh.port,
            max_body_bytes=wh.max_body_bytes,
        )
        self.lifecycle = Lifecycle(s, self.registry, self.readiness, clock=self.clock)
        self.ops = self.lifecycle.ops

    @property
    def webhook_url(self) -> str:
        """Where to POST webhooks (a wildcard bind is given as 127.0.0.1)."""
        host = self.settings.webhooks.host
        if host in _WILDCARD_HOSTS:
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.http.port}{self.settings.webhooks.path}"

    def readiness(self) -> Mapping[str, bool]:
        """Ready: the producer is connected and the receiver is listening."""
        return {
            "producer_connected": self.sink.is_connected(),
            "receiver_listening": bool(self.http.sockets_names),
        }

    async def run(self, stop: asyncio.Event) -> int:
        """Run until ``stop`` is set, then shut down within the grace period."""

        async def start() -> None:
            await self.http.start()
            log.info(
                "webhooks_listening",
                port=self.http.port,
                path=self.settings.webhooks.path,
                ops_port=self.ops.port,
            )

        # Kafka connects in the background: meanwhile every webhook gets 503
        # and Sendstack keeps it and retries.
        return await self.lifecycle.run(
            stop,
            start=start,
            workers={"kafka-connect": lambda: until_kafka_answers(self.sink.start)},
            drain=self._drain,
        )

    async def _drain(self, deadline: Deadline, tasks: Tasks) -> Mapping[str, object]:
        tasks["kafka-connect"].cancel()
        # Keep a quarter of the grace to stop the producer, which closes its
        # connections only once its own pending batches are done or expired.
        keep = self.lifecycle.grace / 4
        # Requests being answered wait for their ack at most the publish timeout.
        await self.http.stop(
            grace=min(
                deadline.left(), self.settings.webhooks.publish_timeout_seconds + 1.0
            )
        )
        flushed = await self.sink.drain(deadline.left(keep=keep))
        stats = self.sink.statistics()
        if not flushed:
            # Their webhooks were answered 503 (or not at all): Sendstack retries.
            log.error("shutdown_unflushed", records=stats.in_flight_records)
        try:
            async with asyncio.timeout(deadline.left()):
                await self.sink.stop()
        except TimeoutError:
            log.exception("producer_stop_timed_out")
        return {"flushed": flushed, "acked": stats.acked}
