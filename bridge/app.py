"""The composition root: build adapters from settings, wire workers, run, shut down.

This is the only module that knows every concrete adapter. ``StreamApp.run``
runs the session keeper, the stream pump and the ops server in one
``asyncio.TaskGroup``: a worker that fails for an unexpected reason cancels
the others and the process exits non-zero (Kubernetes restarts it).
Shutdown (a set ``stop`` event) is ordered and bounded by the grace period:
stop intake (close the sockets), flush the producer, stop the ops server.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import httpx
import structlog
from prometheus_client import CollectorRegistry

from bridge.adapters.auth_api import HttpSessionSource
from bridge.adapters.clock import SystemClock
from bridge.adapters.kafka_producer import KafkaRecordSink, build_producer
from bridge.adapters.ops_http import ops_server
from bridge.adapters.upstream_ws import SocketOptions, WebsocketConnector
from bridge.config import KafkaSettings, SendstackSettings, Settings
from bridge.core.codec import codec_by_name
from bridge.core.records import OutboundRecord, Topics
from bridge.core.retry import Backoff, FailureBudget
from bridge.core.session import RotationPolicy
from bridge.metrics import ReadyMetric, StreamMetrics
from bridge.workers.session_keeper import SessionKeeper
from bridge.workers.stream_pump import PumpOptions, StreamPump

log = structlog.get_logger("bridge.app")


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


def topics_of(settings: Settings) -> Topics:
    k = settings.require(KafkaSettings)
    return Topics(
        positions=k.topic_positions,
        device_status=k.topic_device_status,
        events=k.topic_events,
        dead_letter=k.topic_dead_letter,
    )


class StreamApp:
    """The ``stream`` process: Sendstack tracking socket → Kafka."""

    def __init__(
        self, settings: Settings, *, registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = StreamMetrics(self.registry)
        self.clock = SystemClock()
        s = settings
        sendstack = s.require(SendstackSettings)
        kafka = s.require(KafkaSettings)
        self.topics = topics_of(s)
        self._http = httpx.AsyncClient(timeout=sendstack.http_timeout_seconds)
        source = HttpSessionSource(
            self._http,
            base_url=sendstack.base_url,
            app_id=sendstack.app_id,
            app_secret=sendstack.app_secret,
            header_style=sendstack.session_header_style,
            send_source=sendstack.send_source_header,
        )
        self.keeper = SessionKeeper(
            source,
            clock=self.clock,
            policy=RotationPolicy(
                margin=s.session.refresh_before_seconds,
                jitter=s.session.refresh_jitter_seconds,
            ),
            backoff=Backoff(
                initial=s.session.auth_backoff_initial_seconds,
                maximum=s.session.auth_backoff_max_seconds,
            ),
            budget=FailureBudget(
                max_failures=s.session.auth_max_failures,
                window=s.session.auth_failure_window_seconds,
            ),
            metrics=self.metrics,
        )
        self.sink = KafkaRecordSink(
            functools.partial(build_producer, **producer_settings(kafka)),
            max_records=s.buffer.max_records,
            max_bytes=s.buffer.max_bytes,
            retry_backoff=Backoff(
                initial=s.buffer.publish_retry_initial_seconds,
                maximum=s.buffer.publish_retry_max_seconds,
            ),
            metrics=self.metrics.sink,
            topic_kinds={
                self.topics.positions: "position",
                self.topics.device_status: "device_status",
                self.topics.events: "event",
                self.topics.dead_letter: "dead_letter",
            },
            on_batch_ack=self._batch_acked,
            linger=kafka.linger_ms / 1000,
        )
        st = s.stream
        connector = WebsocketConnector(
            url=st.url,
            query_key=st.session_query_key,
            options=SocketOptions(
                ping_interval=st.ping_interval_seconds,
                ping_timeout=st.ping_timeout_seconds,
                # A peer that let a ping go unanswered gets no longer to close.
                close_timeout=st.ping_timeout_seconds,
                open_timeout=st.open_timeout_seconds,
                max_message_bytes=st.max_message_bytes,
            ),
        )
        self.pump = StreamPump(
            self.keeper,
            connector,
            codec_by_name(st.codec, max_frame_bytes=st.max_frame_bytes),
            self.sink,
            topics=self.topics,
            clock=self.clock,
            options=PumpOptions(
                reconnect=Backoff(
                    initial=st.reconnect_initial_seconds,
                    maximum=st.reconnect_max_seconds,
                ),
                dedupe_capacity=st.dedupe_capacity,
                overlap_max=st.rotation_overlap_max_seconds,
                stale_after=st.stale_after_seconds,
                single_session=st.single_session,
            ),
            metrics=self.metrics,
        )
        self.ops = ops_server(
            self.registry, self.readiness, host=s.ops.host, port=s.ops.port
        )
        self.metrics.session_expires_in.set_function(self.keeper.expires_in)
        ReadyMetric(self.registry).track(self.readiness)
        self._end_to_end = self.metrics.end_to_end

    def _batch_acked(self, records: Sequence[OutboundRecord]) -> None:
        # One observation per batch, of its first record: per record, the
        # clock read and the observation cost as much as publishing it.
        for record in records:
            if record.event_time_ms is not None:
                self._end_to_end.observe(
                    max(0.0, time.time() - record.event_time_ms / 1000)
                )
                return

    def readiness(self) -> Mapping[str, bool]:
        """Ready: a valid session, an open socket and a connected producer."""
        return {
            "session_valid": self.keeper.current() is not None,
            "socket_open": self.pump.statistics().connected,
            "producer_connected": self.sink.statistics().connected,
        }

    async def run(self, stop: asyncio.Event) -> int:
        """Run until ``stop`` is set, then shut down within the grace period."""
        try:
            await self.ops.start()
            log.info("ops_listening", port=self.ops.port)
            await until_kafka_answers(self.sink.start, stop=stop)
        except BaseException:
            await self._http.aclose()
            await self.ops.stop()
            raise
        # A worker that crashes cancels this body too, and the TaskGroup re-raises.
        async with asyncio.TaskGroup() as group:
            keeper = group.create_task(self.keeper.run(), name="session-keeper")
            pump = group.create_task(self.pump.run(), name="stream-pump")
            await stop.wait()
            log.info(
                "shutdown_started",
                grace_seconds=self.settings.ops.shutdown_grace_seconds,
            )
            await self._shutdown(pump)
            keeper.cancel()
        return 0

    async def _shutdown(self, pump: asyncio.Task[None]) -> None:
        grace = self.settings.ops.shutdown_grace_seconds
        deadline = time.monotonic() + grace
        await self.pump.stop()
        try:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                await asyncio.shield(pump)
        except TimeoutError:
            pump.cancel()
        flushed = await self.sink.flush(max(0.1, deadline - time.monotonic()))
        stats = self.sink.statistics()
        if not flushed:
            log.error("shutdown_unflushed", records=stats.in_flight_records)
        try:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                await self.sink.stop()
        except TimeoutError:
            log.exception("producer_stop_timed_out")
        await self._http.aclose()
        await self.ops.stop()
        log.info("shutdown_complete", flushed=flushed, acked=stats.acked)
