"""The command worker and executor, driven through their ports in virtual time."""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from bridge.core.breaker import CircuitBreaker
from bridge.core.command_ledger import Claim, claim_key, claim_value
from bridge.core.commands import COMMAND_TYPES, EXAMPLES, RestRequest
from bridge.core.ratelimit import TokenBucket
from bridge.core.records import OutboundRecord
from bridge.core.retry import Backoff, FailureBudget
from bridge.errors import RestUnavailable
from bridge.metrics import CommandMetrics
from bridge.workers.command_executor import CommandExecutor
from bridge.workers.command_worker import CommandWorker, WorkerOptions
from tests.workers.fakes import (
    EPOCH,
    FakeGateway,
    FakePublisher,
    FakeSource,
    FakeStateLog,
    LoopClock,
    now,
    until,
)

pytestmark = pytest.mark.looptime

TOPICS = {"command": "cmd", "results": "res", "dead_letter": "dlq", "state": "state"}
OK = (200, b'{"status":true,"message":"ok","data":{"id":"d1"}}', {})
EMPTY = (200, b'{"status":true,"message":"ok","data":{"drops":[]}}', {})
FOUND = (200, b'{"status":true,"message":"ok","data":{"drops":[{"id":"x"}]}}', {})
DOWN = (503, b'{"status":false,"message":"down"}', {})


@dataclass
class Rig:
    worker: CommandWorker
    gateway: FakeGateway
    publisher: FakePublisher
    source: FakeSource

    def results(self) -> dict[str, dict[str, Any]]:
        return {
            (r.key or b"").decode(): orjson.loads(r.value)
            for r in self.publisher.on("res")
        }

    def send(self, command_type: str, command_id: str, **extra: Any) -> None:
        message = {
            "commandId": command_id,
            "type": command_type,
            "payload": copy.deepcopy(dict(EXAMPLES[command_type])),
            **extra,
        }
        self.source.put(orjson.dumps(message))


@asynccontextmanager
async def running_worker(
    gateway: FakeGateway,
    publisher: FakePublisher | None = None,
    *,
    breaker: CircuitBreaker | None = None,
    settle: float = 60.0,
    lease: float = 40.0,
) -> AsyncIterator[Rig]:
    clock = LoopClock()
    metrics = CommandMetrics(CollectorRegistry(), (*COMMAND_TYPES, "invalid"))
    publisher = publisher or FakePublisher()
    executor = CommandExecutor(
        gateway,
        clock=clock,
        bucket=TokenBucket(rate=1000, burst=1000, now=clock.time()),
        breaker=breaker or CircuitBreaker(threshold=1000, reset_after=30),
        retry=Backoff(initial=1.0, maximum=8.0, jitter=0.0),
        auth_backoff=Backoff(initial=5.0, maximum=60.0, jitter=0.0),
        auth_budget=FailureBudget(max_failures=5, window=900),
        probe=RestRequest(method="GET", path="/wallet/balance", idempotency_key="p"),
        metrics=metrics,
        settle_seconds=settle,
    )
    source = FakeSource("cmd")
    worker = CommandWorker(
        executor,
        publisher,
        FakeStateLog(publisher, ("state", "res")),
        clock=clock,
        options=WorkerOptions(
            command_topic="cmd",
            results_topic="res",
            dead_letter_topic="dlq",
            state_topic="state",
            owner="me",
            lease_seconds=lease,
            call_budget=16.0,
            revoke_grace=5.0,
        ),
        metrics=metrics,
    )
    worker.attach(source)
    await worker.on_assigned({0})
    task = asyncio.create_task(worker.run())
    try:
        yield Rig(worker, gateway, publisher, source)
    finally:
        await worker.stop(grace=5.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await executor.stop()


async def test_a_repeatable_command_is_retried_until_its_deadline_then_fails() -> None:
    """503s are retried with backoff (1, 2, 4, 8 s) and stop at the 20 s deadline."""
    gateway = FakeGateway(default=DOWN)
    async with running_worker(gateway) as rig:
        rig.send("reschedule_delivery", "r1", timeoutSeconds=20)
        await until(lambda: "r1" in rig.results(), within=60)
    result = rig.results()["r1"]
    assert (result["outcome"], result["error"]["reason"]) == ("failed", "deadline")
    times = [t for t, _, _ in gateway.calls]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == pytest.approx([1.0, 2.0, 4.0, 8.0], abs=0.05)
    assert len(gateway.calls) == 5


async def test_an_open_breaker_holds_every_call_until_its_reset_time() -> None:
    """After 3 failures no call goes out for 30 s, then one trial decides."""
    gateway = FakeGateway(by_path={"/wallet/balance": [DOWN, DOWN, DOWN]})
    breaker = CircuitBreaker(threshold=3, reset_after=30.0)
    async with running_worker(gateway, breaker=breaker) as rig:
        rig.send("wallet_balance", "w1", timeoutSeconds=600)
        await until(lambda: "w1" in rig.results(), within=120)
    times = [t for t, _, _ in gateway.calls]
    assert len(times) == 4
    assert times[3] - times[2] == pytest.approx(30.0, abs=0.1)
    assert rig.results()["w1"]["outcome"] == "succeeded"


async def test_a_timed_out_booking_is_read_twice_across_the_window_then_sent() -> None:
    """Read at once, read again 60 s after the send, both empty: booked once more."""
    gateway = FakeGateway(
        by_path={
            "/deliveries": [RestUnavailable("read timeout", ambiguous=True), OK],
        },
    )
    reads: list[float] = []

    async def execute(request: RestRequest) -> Any:
        if request.method == "GET":
            reads.append(now())
            return EMPTY
        return await FakeGateway.execute(gateway, request)

    gateway.execute = execute  # type: ignore[method-assign]
    async with running_worker(gateway) as rig:
        rig.send("book_delivery", "b1", timeoutSeconds=300)
        await until(lambda: "b1" in rig.results(), within=200)
    sent = [t for t, method, path in gateway.calls if method == "POST"]
    assert len(sent) == 2
    assert reads[0] - sent[0] < 0.1
    assert reads[1] - sent[0] == pytest.approx(60.0, abs=0.1)
    assert sent[1] >= reads[1]
    result = rig.results()["b1"]
    assert (result["outcome"], result["reconciled"]) == ("succeeded", False)


async def test_a_booking_found_by_the_filtered_read_is_not_sent_again() -> None:
    """A dropped reply, then a non-empty filtered list: reconciled, one POST."""
    gateway = FakeGateway(
        by_path={"/deliveries": [RestUnavailable("dropped", ambiguous=True)]},
    )

    async def execute(request: RestRequest) -> Any:
        if request.method == "GET":
            gateway.calls.append((now(), "GET", request.path))
            return FOUND
        return await FakeGateway.execute(gateway, request)

    gateway.execute = execute  # type: ignore[method-assign]
    async with running_worker(gateway) as rig:
        rig.send("book_delivery", "b2")
        await until(lambda: "b2" in rig.results())
    assert [m for _, m, _ in gateway.calls] == ["POST", "GET"]
    assert rig.results()["b2"]["reconciled"] is True


async def test_a_partition_held_by_another_live_lease_waits_for_it_to_expire() -> None:
    """Another worker's lease runs 25 s more: no call before it expires."""
    publisher = FakePublisher()
    holder = Claim("hold", "other", EPOCH + now(), EPOCH + now() + 25.0)
    publisher.records.append(
        OutboundRecord(
            topic="state",
            key=claim_key(0).encode(),
            value=claim_value(holder),
            headers=(),
            dedupe_id=None,
            event_time_ms=None,
        )
    )
    gateway = FakeGateway(default=OK)
    started = now()
    async with running_worker(gateway, publisher) as rig:
        rig.send("wallet_balance", "w2")
        await until(lambda: "w2" in rig.results(), within=60)
    (first_call, _, _) = gateway.calls[0]
    assert first_call - started >= 25.0
    assert first_call - started <= 25.5


async def test_revoking_cancels_waiting_commands_and_releases_the_lease() -> None:
    """On revoke: no new call starts, the lease is released for the next owner."""
    gateway = FakeGateway(default=DOWN)
    async with running_worker(gateway) as rig:
        rig.send("reschedule_delivery", "r2", timeoutSeconds=600)
        await until(lambda: len(gateway.calls) >= 2)
        await rig.worker.on_revoked({0})
        calls = len(gateway.calls)
        await asyncio.sleep(60)
        assert len(gateway.calls) == calls, "a call started after the revoke"
    releases = [
        orjson.loads(r.value)
        for r in rig.publisher.on("state")
        if r.key == claim_key(0).encode()
    ]
    assert releases[-1]["lease"] == "release"
    assert "r2" not in rig.results(), "an unfinished command leaves no result"


class SlowKafka(FakePublisher):
    """Kafka acking a started marker in 8 s and a lease renewal in 12 s."""

    async def publish(self, record: OutboundRecord) -> None:
        if record.topic == "state":
            lease = (record.key or b"").startswith(b"#")
            await asyncio.sleep(12.0 if lease else 8.0)
        await super().publish(record)


async def test_a_late_renewal_delays_commands_but_never_strands_them() -> None:
    """Renewals late and markers slow: commands wait for the lease, and all finish."""
    gateway = FakeGateway(default=OK)
    async with running_worker(gateway, SlowKafka(), lease=33.0) as rig:
        for n in range(12):
            rig.send("cancel_drops", f"c{n}")
        await until(lambda: len(rig.results()) == 12, within=600)
    assert {r["outcome"] for r in rig.results().values()} == {"succeeded"}
    assert len(gateway.calls) == 12
