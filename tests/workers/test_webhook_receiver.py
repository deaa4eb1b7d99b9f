"""The webhook receiver with a fake submitter, in virtual time (looptime).

The submitter is a small fake of the ``RecordSubmitter`` port whose acks the
test controls, so the races (a duplicate while the first is in flight, an ack
after a 503) are played out deterministically, and publish timeouts pass in
virtual seconds. End-to-end tests with the real broker and emulator are in
``tests/webhooks/test_e2e.py`` and ``test_faults.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac

import orjson
import pytest
from prometheus_client import CollectorRegistry

from bridge.core import webhooks
from bridge.core.records import OutboundRecord
from bridge.core.webhooks import WebhookRequest
from bridge.errors import PublishError
from bridge.metrics import WebhookMetrics
from bridge.workers.webhook_receiver import ReceiverOptions, WebhookReceiver
from tests.workers.fakes import LoopClock, now

pytestmark = pytest.mark.looptime

SECRET = b"receiver-test-secret"
PATH = "/hooks"


class FakePublisher:
    """A ``RecordSubmitter`` whose records are acknowledged when the test says."""

    def __init__(self) -> None:
        self.connected = True
        self.submitted: list[tuple[OutboundRecord, asyncio.Future[None]]] = []

    def is_connected(self) -> bool:
        return self.connected

    def submit(self, record: OutboundRecord) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.submitted.append((record, future))
        return future

    def ack(self, index: int = -1) -> None:
        self.submitted[index][1].set_result(None)

    def fail(self, index: int = -1) -> None:
        self.submitted[index][1].set_exception(PublishError("not handed over"))


def make(
    publisher: FakePublisher,
    *,
    timeout: float = 0.3,
    capacity: int = 100,
    max_records: int = 100,
    max_body: int = 10_000,
) -> tuple[WebhookReceiver, CollectorRegistry]:
    registry = CollectorRegistry()
    receiver = WebhookReceiver(
        publisher,
        verifier=webhooks.SignatureVerifier(SECRET, webhooks.SCHEMES),
        topics=webhooks.WebhookTopics(),
        options=ReceiverOptions(
            path=PATH,
            publish_timeout=timeout,
            dedupe_capacity=capacity,
            max_body_bytes=max_body,
            max_in_flight_records=max_records,
            max_in_flight_bytes=1_000_000,
        ),
        clock=LoopClock(),
        metrics=WebhookMetrics(registry),
    )
    return receiver, registry


def signed(
    webhook_id: str | None = "w1",
    event_type: str = "order.new",
    *,
    signature: str | None = "current",
) -> WebhookRequest:
    payload: dict[str, object] = {"eventType": event_type, "batchId": "B1"}
    if webhook_id is not None:
        payload["webhookId"] = webhook_id
    body = orjson.dumps(payload)
    headers = {}
    if signature == "current":
        message = orjson.dumps(webhook_id)
        headers["x-sendstack-signature"] = hmac.new(
            SECRET, message, hashlib.sha256
        ).hexdigest()
    elif signature == "legacy":
        headers["x-sendstack-signature"] = hmac.new(
            SECRET, body, hashlib.sha256
        ).hexdigest()
    elif signature is not None:
        headers["x-sendstack-signature"] = signature
    return WebhookRequest("POST", PATH, headers, body, "127.0.0.1")


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_answers_200_only_once_kafka_acknowledged() -> None:
    """The reply waits for the record's ack; then it is 200 accepted."""
    publisher = FakePublisher()
    receiver, registry = make(publisher, timeout=5)
    answer = asyncio.create_task(receiver.handle(signed()))
    await asyncio.sleep(0.05)
    assert not answer.done()
    assert len(publisher.submitted) == 1
    assert receiver.statistics().in_flight == 1
    publisher.ack()
    reply = await answer
    assert (reply.status, reply.outcome, reply.webhook_id) == (200, "accepted", "w1")
    assert reply.body() == {"ok": True, "outcome": "accepted", "webhookId": "w1"}
    assert receiver.statistics().in_flight == 0
    assert (
        sample(registry, "bridge_webhook_records_published_total", family="delivery")
        == 1
    )
    assert sample(registry, "bridge_webhook_publish_seconds_count") == 1
    assert sample(registry, "bridge_webhook_in_flight_records") == 0


async def test_a_late_ack_after_a_503_makes_the_retry_a_duplicate() -> None:
    """A record acked after its request timed out (503) is not published again."""
    publisher = FakePublisher()
    receiver, registry = make(publisher, timeout=0.1)
    first = await receiver.handle(signed())
    assert (first.status, first.outcome, first.retry_after) == (503, "unavailable", 5)
    assert sample(registry, "bridge_webhook_unavailable_total", cause="timeout") == 1
    publisher.ack()  # Kafka got it after all
    await asyncio.sleep(0)
    retry = await receiver.handle(signed())
    assert (retry.status, retry.outcome) == (200, "duplicate")
    assert len(publisher.submitted) == 1


async def test_a_retry_while_the_first_is_still_in_flight_waits_for_it() -> None:
    """A retry during a long outage shares the first record, never submits anew."""
    publisher = FakePublisher()
    receiver, _ = make(publisher, timeout=0.1)
    assert (await receiver.handle(signed())).status == 503
    assert (await receiver.handle(signed())).status == 503  # still in flight
    assert len(publisher.submitted) == 1
    waiting = asyncio.create_task(receiver.handle(signed()))
    await asyncio.sleep(0.02)
    publisher.ack()
    assert (await waiting).outcome == "duplicate"
    assert len(publisher.submitted) == 1


async def test_concurrent_duplicates_share_the_first_outcome() -> None:
    """Two deliveries of one webhook at once: one record, both answered 200."""
    publisher = FakePublisher()
    receiver, _ = make(publisher, timeout=5)
    first = asyncio.create_task(receiver.handle(signed()))
    second = asyncio.create_task(receiver.handle(signed(signature="legacy")))
    await asyncio.sleep(0.05)
    assert len(publisher.submitted) == 1
    publisher.ack()
    outcomes = sorted([(await first).outcome, (await second).outcome])
    assert outcomes == ["accepted", "duplicate"]


async def test_a_failed_hand_over_is_republished_on_retry() -> None:
    """A record that never reached Kafka: both waiters get 503, the retry publishes."""
    publisher = FakePublisher()
    receiver, registry = make(publisher, timeout=5)
    first = asyncio.create_task(receiver.handle(signed()))
    second = asyncio.create_task(receiver.handle(signed()))
    await asyncio.sleep(0.05)
    publisher.fail()
    assert [(await first).status, (await second).status] == [503, 503]
    assert sample(registry, "bridge_webhook_unavailable_total", cause="failed") == 2
    retry = asyncio.create_task(receiver.handle(signed()))
    await asyncio.sleep(0.05)
    assert len(publisher.submitted) == 2
    publisher.ack()
    assert (await retry).outcome == "accepted"


async def test_disconnected_producer_gets_503_at_once_and_nothing_submitted() -> None:
    """While the producer is disconnected, 503 comes at once and the retry publishes."""
    publisher = FakePublisher()
    publisher.connected = False
    receiver, registry = make(publisher, timeout=5)
    reply = await asyncio.wait_for(receiver.handle(signed()), 0.05)
    assert (reply.status, reply.outcome) == (503, "unavailable")
    assert publisher.submitted == []
    assert (
        sample(registry, "bridge_webhook_unavailable_total", cause="disconnected") == 1
    )
    publisher.connected = True
    retry = asyncio.create_task(receiver.handle(signed()))
    await asyncio.sleep(0.05)
    publisher.ack()
    assert (await retry).outcome == "accepted"
    assert len(publisher.submitted) == 1


async def test_in_flight_records_are_bounded() -> None:
    """Once the in-flight bound is reached, new webhooks get 503 instead of memory."""
    publisher = FakePublisher()
    receiver, registry = make(publisher, timeout=0.05, max_records=2)
    for webhook_id in ("a", "b"):
        assert (await receiver.handle(signed(webhook_id))).status == 503
    third = await receiver.handle(signed("c"))
    assert third.status == 503
    assert len(publisher.submitted) == 2
    assert sample(registry, "bridge_webhook_unavailable_total", cause="full") == 1
    publisher.ack(0)
    await asyncio.sleep(0)
    retry = asyncio.create_task(receiver.handle(signed("c")))
    await asyncio.sleep(0.01)
    publisher.ack()
    assert (await retry).outcome == "accepted"


@pytest.mark.parametrize(
    ("request_", "status", "outcome"),
    [
        (signed(signature=None), 401, "missing_signature"),
        (signed(signature="  "), 401, "missing_signature"),
        (signed(signature="0" * 64), 401, "bad_signature"),
        (
            WebhookRequest("POST", PATH, {"x-sendstack-signature": "ab"}, b"{nope"),
            400,
            "malformed",
        ),
        (
            WebhookRequest("POST", PATH, {"x-sendstack-signature": "ab"}, b"[1]"),
            400,
            "malformed",
        ),
        (WebhookRequest("POST", "/other", {}, b"{}"), 404, "not_found"),
        (WebhookRequest("GET", PATH, {}, b""), 405, "not_found"),
        (
            WebhookRequest("POST", PATH, {}, b"{" + b" " * 10_000 + b"}"),
            413,
            "too_large",
        ),
    ],
)
async def test_refused_requests_publish_nothing(
    request_: WebhookRequest, status: int, outcome: str
) -> None:
    """Each refusal has its status and counter, and nothing reaches the publisher."""
    publisher = FakePublisher()
    receiver, registry = make(publisher)
    reply = await receiver.handle(request_)
    assert (reply.status, reply.outcome) == (status, outcome)
    assert reply.body()["ok"] is False
    assert publisher.submitted == []
    assert sample(registry, "bridge_webhook_requests_total", outcome=outcome) == 1
    assert receiver.statistics().answered == {outcome: 1}


async def test_verified_but_unclassifiable_bodies_are_dead_lettered() -> None:
    """An unknown family goes to the DLQ topic, answered 200 once Kafka has it."""
    publisher = FakePublisher()
    receiver, registry = make(publisher, timeout=5)
    request = signed(event_type="wallet.funded")
    body = orjson.loads(request.body)
    del body["batchId"]
    raw = orjson.dumps(body)
    request = WebhookRequest(
        "POST",
        PATH,
        {"x-sendstack-signature": hmac.new(SECRET, raw, hashlib.sha256).hexdigest()},
        raw,
    )
    answer = asyncio.create_task(receiver.handle(request))
    await asyncio.sleep(0.02)
    record = publisher.submitted[0][0]
    assert record.topic == webhooks.WebhookTopics().dead_letter
    assert dict(record.headers)["bridge_dlq_reason"] == b"unknown_event_type"
    publisher.ack()
    assert (await answer).outcome == "dead_lettered"
    assert (
        sample(
            registry, "bridge_webhook_dead_lettered_total", reason="unknown_event_type"
        )
        == 1
    )
    assert sample(registry, "bridge_webhook_verified_total", scheme="payload") == 1


async def test_dedupe_memory_is_bounded() -> None:
    """Only the last ``capacity`` acknowledged ids are remembered."""
    publisher = FakePublisher()
    receiver, _ = make(publisher, capacity=2, timeout=5)
    for webhook_id in ("a", "b", "c"):
        answer = asyncio.create_task(receiver.handle(signed(webhook_id)))
        await asyncio.sleep(0.01)
        publisher.ack()
        assert (await answer).outcome == "accepted"
    assert receiver.statistics().remembered == 2
    assert (await receiver.handle(signed("c"))).outcome == "duplicate"
    again = asyncio.create_task(receiver.handle(signed("a")))
    await asyncio.sleep(0.01)
    assert len(publisher.submitted) == 4  # "a" was forgotten
    publisher.ack()
    assert (await again).outcome == "accepted"


async def test_a_request_waits_exactly_the_publish_timeout_for_the_ack() -> None:
    """No ack: the answer is 503 after publish_timeout seconds, not before."""
    publisher = FakePublisher()
    receiver, _ = make(publisher, timeout=10.0)
    started = now()
    reply = await receiver.handle(signed())
    assert (reply.status, reply.outcome) == (503, "unavailable")
    assert now() - started == pytest.approx(10.0, abs=0.01)
