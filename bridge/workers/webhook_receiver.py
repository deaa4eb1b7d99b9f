"""The webhook receiver: one request in, one answer out, 2xx only once Kafka has it.

Theory of operation
-------------------
``handle`` runs for every request the HTTP adapter hands it, in this order
(each step answers at once when it decides):

1. `bridge.core.webhooks.admit` (pure) answers what must not be published:
   404 wrong path, 405 wrong method, 413 over ``max_body_bytes``, **401**
   ``missing_signature``, **400** ``malformed`` (not a JSON object), **401**
   ``bad_signature``. Each has its counter.
2. Every other status comes from the core too (``published_reply``,
   ``unavailable_reply``); this worker decides only *when* (Kafka's ack).
3. The pure core (`bridge.core.webhooks.plan`) turns the verified body into
   one record: data (by family) or dead letter (with a reason).
4. De-duplication on the ``webhookId`` (`RecentIds`, bounded) is safe with
   "2xx only after Kafka's ack":

   * an id is remembered only **after** Kafka acknowledged its record, so a
     retry after a failure is published, not dropped;
   * while a record is in flight its id maps to its ack future, and a
     concurrent duplicate waits for that same future (within its own
     timeout) and answers as the first would, instead of publishing again;
   * the future outlives a 503: the sink keeps retrying the record, and if
     Kafka acknowledges it later the id is remembered then, so Sendstack's
     retry of a webhook we answered 503 is recognised as a duplicate and
     never written twice.
5. If the producer is disconnected (not started, or its last send failed),
   or the in-flight records already fill the bound: **503** at once, nothing
   handed over, so the retry is the one that publishes. Otherwise the record
   is submitted and the request waits up to ``publish_timeout`` for the ack:
   **200** (``accepted``, ``dead_lettered``), or **503** with ``Retry-After``.

The worker knows nothing of HTTP libraries or Kafka clients: it gets plain
`WebhookRequest` values and a publisher port, and returns `WebhookReply`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from bridge.core import webhooks
from bridge.core.dedupe import RecentIds
from bridge.core.records import iso_ms
from bridge.core.webhooks import WebhookOutcome, WebhookReply, WebhookRequest
from bridge.metrics import WebhookMetrics, webhook_dlq_reason_label
from bridge.ports import Clock, RecordSubmitter

log = structlog.get_logger("bridge.webhooks")


@dataclass(frozen=True, slots=True)
class ReceiverOptions:
    """How the receiver behaves (from ``WebhookSettings`` and the buffer bound).

    Attributes:
        path: The only path webhooks are accepted on.
        publish_timeout: How long a request waits for Kafka's ack.
        dedupe_capacity: How many acknowledged webhook ids are remembered.
        max_body_bytes: Larger bodies get 413.
        max_in_flight_records: Records awaiting an ack before new webhooks
            get 503 instead of piling up in memory.
        max_in_flight_bytes: The same bound in bytes.
        retry_after_seconds: The ``Retry-After`` sent with 503.
        max_value_bytes: Larger verified bodies are dead-lettered truncated.
        source: ``ce_source`` of the records.
        rules: How a webhook's family is recognised.
    """

    path: str
    publish_timeout: float
    dedupe_capacity: int
    max_body_bytes: int
    max_in_flight_records: int
    max_in_flight_bytes: int
    retry_after_seconds: int = 5
    max_value_bytes: int = 900_000
    source: str = webhooks.DEFAULT_SOURCE
    rules: webhooks.FamilyRules = webhooks.DEFAULT_RULES


@dataclass(frozen=True, slots=True)
class ReceiverStatistics:
    """What the receiver holds and has done (for readiness and tests)."""

    in_flight: int
    in_flight_bytes: int
    remembered: int
    answered: Mapping[str, int]


@dataclass(slots=True)
class _Pending:
    """A record handed to Kafka and not yet acknowledged."""

    future: asyncio.Future[None]
    family: str
    size: int
    started: float
    dead_letter_reason: str | None


class WebhookReceiver:
    """Verifies, de-duplicates and publishes webhooks; see the module doc."""

    def __init__(
        self,
        publisher: RecordSubmitter,
        *,
        verifier: webhooks.SignatureVerifier,
        topics: webhooks.WebhookTopics,
        options: ReceiverOptions,
        clock: Clock,
        metrics: WebhookMetrics,
    ) -> None:
        self._publisher = publisher
        self._verifier = verifier
        self._topics = topics
        self._options = options
        self._clock = clock
        self._metrics = metrics
        self._recent = RecentIds(options.dedupe_capacity)
        self._in_flight: dict[str, _Pending] = {}
        self._in_flight_bytes = 0
        self._answered: dict[str, int] = {}

    def statistics(self) -> ReceiverStatistics:
        return ReceiverStatistics(
            in_flight=len(self._in_flight),
            in_flight_bytes=self._in_flight_bytes,
            remembered=len(self._recent),
            answered=dict(self._answered),
        )

    async def handle(self, request: WebhookRequest) -> WebhookReply:
        """Answer one webhook request (never raises for a bad request)."""
        reply = await self._handle(request)
        self.count(reply.outcome)
        return reply

    def count(self, outcome: WebhookOutcome) -> None:
        """Count an answer, also for answers the HTTP adapter gives itself (413)."""
        self._metrics.requests.labels(outcome).inc()
        self._answered[outcome] = self._answered.get(outcome, 0) + 1

    async def _handle(self, request: WebhookRequest) -> WebhookReply:
        started = self._clock.monotonic()
        opts = self._options
        admitted = webhooks.admit(
            request,
            path=opts.path,
            max_body_bytes=opts.max_body_bytes,
            verifier=self._verifier,
        )
        if isinstance(admitted, WebhookReply):
            if admitted.status in (400, 401):
                log.info("webhook_rejected", reason=admitted.outcome, peer=request.peer)
            return admitted
        inbound = admitted.inbound
        self._metrics.verified.labels(admitted.scheme).inc()
        plan = webhooks.plan(
            inbound,
            self._topics,
            verified_by=admitted.scheme,
            received_at=iso_ms(self._clock.time()),
            source=opts.source,
            rules=opts.rules,
            max_value_bytes=opts.max_value_bytes,
        )
        return await self._publish(plan, inbound.webhook_id, started)

    async def _publish(
        self, plan: webhooks.Plan, webhook_id: str | None, started: float
    ) -> WebhookReply:
        key = plan.dedupe_key
        if key in self._recent:
            log.debug("webhook_duplicate", webhook_id=webhook_id)
            return webhooks.published_reply("duplicate", webhook_id)
        pending = self._in_flight.get(key)
        if pending is not None:
            # Another request for this webhook is in flight: share its fate.
            if await self._acked(pending, started):
                return webhooks.published_reply("duplicate", webhook_id)
            return self._unavailable(
                webhook_id, "failed" if pending.future.done() else "timeout"
            )
        if not self._publisher.is_connected():
            return self._unavailable(webhook_id, "disconnected")
        size = plan.record.size
        if self._in_flight and (
            len(self._in_flight) >= self._options.max_in_flight_records
            or self._in_flight_bytes + size > self._options.max_in_flight_bytes
        ):
            return self._unavailable(webhook_id, "full")
        pending = _Pending(
            future=self._publisher.submit(plan.record),
            family=plan.family,
            size=size,
            started=started,
            dead_letter_reason=(
                None if plan.rejection is None else plan.rejection.reason
            ),
        )
        self._in_flight[key] = pending
        self._in_flight_bytes += size
        self._metrics.in_flight.set(len(self._in_flight))
        pending.future.add_done_callback(
            lambda future: self._settled(key, pending, future)
        )
        if plan.rejection is not None:
            log.warning(
                "webhook_dead_lettered",
                reason=plan.rejection.reason,
                detail=plan.rejection.detail,
                webhook_id=webhook_id,
                event_type=plan.event_type,
            )
        if not await self._acked(pending, started):
            return self._unavailable(
                webhook_id, "failed" if pending.future.done() else "timeout"
            )
        return webhooks.published_reply(
            "dead_lettered" if plan.family == "dead_letter" else "accepted", webhook_id
        )

    async def _acked(self, pending: _Pending, started: float) -> bool:
        """Wait for ``pending``'s ack within this request's budget; True if acked.

        ``asyncio.wait`` neither raises nor cancels the shared future, which
        other requests and the sink's retries still depend on.
        """
        budget = self._options.publish_timeout - (self._clock.monotonic() - started)
        if not pending.future.done() and budget > 0:
            with contextlib.suppress(TimeoutError):
                async with self._clock.timeout(budget):
                    await asyncio.wait({pending.future})
        future = pending.future
        return future.done() and not future.cancelled() and future.exception() is None

    def _settled(
        self, key: str, pending: _Pending, future: asyncio.Future[None]
    ) -> None:
        """The record was acknowledged (remember its id) or never handed over."""
        if self._in_flight.get(key) is pending:
            del self._in_flight[key]
            self._in_flight_bytes -= pending.size
        self._metrics.in_flight.set(len(self._in_flight))
        if future.cancelled() or future.exception() is not None:
            return  # not in Kafka: the id stays unknown so a retry publishes
        self._recent.add(key)
        self._metrics.published.labels(pending.family).inc()
        if pending.dead_letter_reason is not None:
            self._metrics.dead_lettered.labels(
                webhook_dlq_reason_label(pending.dead_letter_reason)
            ).inc()
        self._metrics.publish_seconds.observe(self._clock.monotonic() - pending.started)

    def _unavailable(self, webhook_id: str | None, cause: str) -> WebhookReply:
        self._metrics.unavailable.labels(cause).inc()
        log.info("webhook_unavailable", cause=cause, webhook_id=webhook_id)
        return webhooks.unavailable_reply(webhook_id, self._options.retry_after_seconds)
