"""The composition root of the ``stream`` process: tracking socket → Kafka.

The only module that knows the concrete adapters of this process. It builds
them from settings, wires the session keeper and the stream pump, and hands
them to the shared `Lifecycle` (``bridge.bootstrap``): start once Kafka
answers, run both workers in one ``asyncio.TaskGroup``, and on ``stop``
drain in order within the grace period: stop intake (close the sockets),
flush the producer, stop it.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Mapping, Sequence

import httpx
import structlog
from prometheus_client import CollectorRegistry

from bridge.adapters.auth_api import HttpSessionSource
from bridge.adapters.clock import SystemClock
from bridge.adapters.kafka_client import producer_settings, until_kafka_answers
from bridge.adapters.kafka_producer import KafkaRecordSink, build_producer
from bridge.adapters.mapping_files import stream_codec
from bridge.adapters.ops_http import Readiness
from bridge.adapters.upstream_connectors import stream_connector
from bridge.bootstrap import Deadline, Lifecycle, Tasks
from bridge.config import KafkaSettings, SendstackSettings, Settings
from bridge.core.records import OutboundRecord, Topics
from bridge.core.retry import Backoff, FailureBudget
from bridge.core.session import RotationPolicy
from bridge.metrics import StreamMetrics
from bridge.workers.session_keeper import SessionKeeper
from bridge.workers.stream_pump import PumpOptions, StreamPump

log = structlog.get_logger("bridge.app")


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
        self.pump = StreamPump(
            self.keeper,
            stream_connector(st),
            stream_codec(st.codec, st.mapping_file, max_frame_bytes=st.max_frame_bytes),
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
        self.lifecycle = Lifecycle(s, self.registry, self.readiness, clock=self.clock)
        self.lifecycle.close_last(self._http.aclose)
        self.ops = self.lifecycle.ops
        self.metrics.session_expires_in.set_function(self.keeper.expires_in)
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
        """Ready: a valid session, an open socket and a connected producer.

        Details (not checks): the session policy rotations follow.
        """
        policy = self.pump.session_policy()
        return Readiness(
            {
                "session_valid": self.keeper.current() is not None,
                "socket_open": self.pump.statistics().connected,
                "producer_connected": self.sink.statistics().connected,
            },
            details={
                "session_policy": policy.policy,
                "session_policy_basis": policy.basis,
                "session_policy_cause": policy.cause,
            },
        )

    async def run(self, stop: asyncio.Event) -> int:
        """Run until ``stop`` is set, then shut down within the grace period."""
        return await self.lifecycle.run(
            stop,
            start=lambda: until_kafka_answers(self.sink.start, stop=stop),
            workers={"session-keeper": self.keeper.run, "stream-pump": self.pump.run},
            drain=self._drain,
        )

    async def _drain(self, deadline: Deadline, tasks: Tasks) -> Mapping[str, object]:
        # No session request after the signal: each failed one counts toward
        # Sendstack's lockout, and nothing left to do needs a new session.
        tasks["session-keeper"].cancel()
        await self.pump.stop()
        pump = tasks["stream-pump"]
        if not self.pump.statistics().connected:
            # Parked waiting for a session or a reconnect: nothing to drain.
            pump.cancel()
        # wait() rather than awaiting the task: a cancelled pump is not an error.
        await asyncio.wait({pump}, timeout=deadline.left())
        if not pump.done():
            pump.cancel()
        flushed = await self.sink.flush(deadline.left())
        stats = self.sink.statistics()
        if not flushed:
            log.error("shutdown_unflushed", records=stats.in_flight_records)
        try:
            async with asyncio.timeout(deadline.left()):
                await self.sink.stop()
        except TimeoutError:
            log.exception("producer_stop_timed_out")
        return {"flushed": flushed, "acked": stats.acked}
