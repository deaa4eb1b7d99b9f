"""The ``commands`` process: Kafka command messages → Sendstack API calls.

Composition root of the command path: builds the consumer, the acking
producer, the state log, the REST gateway and the executor from settings,
and runs the worker under the shared `Lifecycle` (``bridge.bootstrap``):
start once Kafka answers, and on ``stop`` drain within the grace period
(stop taking commands, let calls in flight finish, commit, release the
partition leases), then leave the group and stop the producer.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import uuid
from collections.abc import Mapping

import httpx
import structlog
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry

from bridge.adapters.clock import SystemClock
from bridge.adapters.kafka_client import (
    client_settings,
    producer_settings,
    until_kafka_answers,
)
from bridge.adapters.kafka_commands import (
    KafkaAckingPublisher,
    KafkaCommandSource,
    KafkaStateLog,
)
from bridge.adapters.kafka_producer import build_producer
from bridge.adapters.sendstack_rest import SendstackRest
from bridge.bootstrap import Deadline, Lifecycle, Tasks
from bridge.config import KafkaSettings, SendstackSettings, Settings
from bridge.core.breaker import CircuitBreaker
from bridge.core.commands import COMMAND_TYPES, RestRequest
from bridge.core.ratelimit import TokenBucket
from bridge.core.retry import Backoff, FailureBudget
from bridge.metrics import CommandMetrics
from bridge.workers.command_executor import CommandExecutor
from bridge.workers.command_worker import CommandWorker, WorkerOptions

log = structlog.get_logger("bridge.app")

# The cheapest authenticated read, used to learn when credentials work again.
_PROBE = RestRequest(
    method="GET",
    path="/wallet/balance",
    query=(),
    body=None,
    idempotency_key="credentials-probe",
    reconcile=None,
)


def _owner_id() -> str:
    """Names this process in lease records and ownership log lines."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class CommandApp:
    """The ``commands`` process."""

    def __init__(
        self, settings: Settings, *, registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = CommandMetrics(self.registry, (*COMMAND_TYPES, "invalid"))
        sendstack = settings.require(SendstackSettings)
        kafka = settings.require(KafkaSettings)
        c = settings.commands
        clock = SystemClock()
        self._http = httpx.AsyncClient(timeout=c.request_timeout_seconds)
        gateway = SendstackRest(
            self._http,
            base_url=sendstack.base_url,
            app_id=sendstack.app_id,
            app_secret=sendstack.app_secret,
            send_source=sendstack.send_source_header,
        )
        self.executor = CommandExecutor(
            gateway,
            clock=clock,
            bucket=TokenBucket(
                rate=c.rate_per_second, burst=c.rate_burst, now=clock.time()
            ),
            breaker=CircuitBreaker(
                threshold=c.breaker_failures, reset_after=c.breaker_reset_seconds
            ),
            retry=Backoff(initial=c.retry_initial_seconds, maximum=c.retry_max_seconds),
            auth_backoff=Backoff(
                initial=settings.session.auth_backoff_initial_seconds,
                maximum=settings.session.auth_backoff_max_seconds,
            ),
            auth_budget=FailureBudget(
                max_failures=settings.session.auth_max_failures,
                window=settings.session.auth_failure_window_seconds,
            ),
            probe=_PROBE,
            metrics=self.metrics,
            concurrency=c.concurrency,
            settle_seconds=c.settle_seconds,
        )
        self.publisher = KafkaAckingPublisher(
            functools.partial(build_producer, **producer_settings(kafka)),
            timeout=max(30.0, kafka.request_timeout_ms / 1000 * 2),
            retry=Backoff(initial=0.1, maximum=2.0),
        )
        consumer_kwargs = client_settings(kafka)
        self.state_log = KafkaStateLog(
            functools.partial(
                AIOKafkaConsumer,
                **consumer_kwargs,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
            ),
            [c.state_topic, c.results_topic],
        )
        self.worker = CommandWorker(
            self.executor,
            self.publisher,
            self.state_log,
            clock=clock,
            options=WorkerOptions(
                command_topic=c.topic,
                results_topic=c.results_topic,
                dead_letter_topic=c.dead_letter_topic,
                state_topic=c.state_topic,
                owner=_owner_id(),
                max_outstanding=max(64, c.concurrency * 16),
                default_deadline=c.default_deadline_seconds,
                max_message_bytes=c.max_message_bytes,
                assign_method=c.assign_method,
                lease_seconds=c.lease_seconds,
                call_budget=c.request_timeout_seconds + 1.0,
                revoke_grace=c.revoke_grace_seconds,
            ),
            metrics=self.metrics,
        )
        self.source = KafkaCommandSource(
            functools.partial(
                AIOKafkaConsumer,
                **consumer_kwargs,
                group_id=c.group_id,
                session_timeout_ms=c.session_timeout_ms,
                heartbeat_interval_ms=max(300, c.session_timeout_ms // 3),
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                # A command a transactional producer aborted must not book
                # anything; without transactions this changes nothing.
                isolation_level="read_committed",
            ),
            topic=c.topic,
            handler=self.worker,
        )
        self.worker.attach(self.source)
        self.lifecycle = Lifecycle(settings, self.registry, self.readiness, clock=clock)
        self.lifecycle.close_last(
            self.source.stop,
            self.state_log.stop,
            self.executor.stop,
            self.publisher.stop,
            self._http.aclose,
        )
        self.ops = self.lifecycle.ops

    def readiness(self) -> Mapping[str, bool]:
        """Ready: partitions assigned, Sendstack reachable, producer connected."""
        return {
            "partitions_assigned": bool(self.source.assignment()),
            "sendstack_authorised": self.executor.authorised,
            "sendstack_circuit_closed": not self.executor.breaker_open(),
            "producer_connected": self.publisher.connected,
        }

    async def run(self, stop: asyncio.Event) -> int:
        """Run until ``stop`` is set, then shut down within the grace period."""

        async def start() -> None:
            await until_kafka_answers(
                self._start_kafka, stop=stop, cleanup=self._stop_kafka
            )
            log.info("commands_started", ops_port=self.ops.port)

        return await self.lifecycle.run(
            stop,
            start=start,
            workers={"command-worker": self.worker.run},
            drain=self._drain,
        )

    async def _drain(self, deadline: Deadline, tasks: Tasks) -> Mapping[str, object]:
        # Two seconds stay for leaving the group and stopping the producer.
        await self.worker.stop(grace=deadline.left(keep=2.0))
        return {}

    async def _start_kafka(self) -> None:
        await self.publisher.start()
        await self.state_log.start()
        await self.source.start()

    async def _stop_kafka(self) -> None:
        await self.source.stop()
        await self.state_log.stop()
        await self.publisher.stop()
