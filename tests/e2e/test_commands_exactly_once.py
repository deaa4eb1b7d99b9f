"""Never book a delivery twice: rebalances under a backlog, lost replies, late bookings.

Real broker, real worker processes or in-process apps, and the emulator
answering in Sendstack's documented shapes (no ``externalOrderId`` echoed by
default; both plausible answers where the docs are silent).
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from bridgelab.emulator import Emulator, EmulatorConfig
from tests.e2e.commands_harness import (
    RunningWorker,
    booking,
    commands_env,
    fresh_command_topics,
    holdings,
    overlapping,
    produce,
    running_worker,
    start_worker_process,
)
from tests.e2e.verifier import read_all, wait_for
from tests.kafka_broker import Broker

pytestmark = pytest.mark.e2e

# The production defaults the rebalance test runs at (bridge.config).
PRODUCTION = {
    "BRIDGE_COMMANDS_RATE_PER_SECOND": "10",
    "BRIDGE_COMMANDS_RATE_BURST": "20",
    "BRIDGE_COMMANDS_CONCURRENCY": "8",
    "BRIDGE_COMMANDS_REQUEST_TIMEOUT_SECONDS": "15",
    "BRIDGE_COMMANDS_SESSION_TIMEOUT_MS": "10000",
    "BRIDGE_COMMANDS_LEASE_SECONDS": "40",
    "BRIDGE_COMMANDS_SETTLE_SECONDS": "60",
    "BRIDGE_COMMANDS_REVOKE_GRACE_SECONDS": "5",
    "BRIDGE_COMMANDS_RETRY_INITIAL_SECONDS": "0.5",
    "BRIDGE_COMMANDS_RETRY_MAX_SECONDS": "30",
    "BRIDGE_COMMANDS_DEFAULT_DEADLINE_SECONDS": "120",
}
BOOKINGS = 1200


def bookings(worker: RunningWorker, outcome: str) -> float:
    """Bookings the worker finished with ``outcome`` (its own counter)."""
    return worker.sample(
        "bridge_commands_total", {"type": "book_delivery", "outcome": outcome}
    )


async def results_of(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every result record on ``topic``, decoded."""
    return _results((await read_all(bootstrap, [topic])).records[topic])


def _results(records: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value or b"") for r in records]


async def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.to_thread(process.wait, 30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_workers_joining_and_leaving_under_a_backlog_book_each_delivery_once(
    broker: Broker, tmp_path: Path, seed: int
) -> None:
    """Two joins, two leaves, hundreds waiting: one booking and one result each."""
    rng = random.Random(seed)
    topics = await fresh_command_topics(broker.bootstrap, partitions=6)
    commands = [booking() for _ in range(BOOKINGS)]
    log = str(tmp_path / "workers.log")
    pending_at_moves: list[int] = []
    async with Emulator(EmulatorConfig(start_paused=True, wallet_balance=1e12)) as emu:
        emu.deliveries.set_latency(300)  # about what a real booking takes
        env = commands_env(emu, broker.bootstrap, topics, **PRODUCTION)
        workers = [start_worker_process(env, log), start_worker_process(env, log)]
        try:
            await produce(broker.bootstrap, topics.commands, list(commands))
            for move in range(4):
                await asyncio.sleep(rng.uniform(4.0, 8.0))
                pending_at_moves.append(BOOKINGS - emu.deliveries.stats()["executed"])
                if move % 2 == 0:
                    workers.append(start_worker_process(env, log))
                else:
                    await _stop(workers.pop(rng.randrange(len(workers))))
            await wait_for(
                lambda: emu.deliveries.stats()["executed"] >= BOOKINGS, 240, 0.5
            )
            expected = {str(c["commandId"]) for c in commands}
            for _ in range(60):
                consumed = await read_all(broker.bootstrap, [topics.results], quiet=0.5)
                if expected <= {
                    r["commandId"]
                    for r in _results(consumed.records.get(topics.results, []))
                }:
                    break
                await asyncio.sleep(0.5)
        finally:
            for w in workers:
                await _stop(w)
        executions = Counter(
            {str(c["commandId"]): emu.executions(str(c["commandId"])) for c in commands}
        )
    results = _results(consumed.records[topics.results])
    per_id = Counter(r["commandId"] for r in results)
    lines = (await asyncio.to_thread(Path(log).read_bytes)).splitlines()
    held = holdings(lines)
    print(
        f"seed {seed}: pending at the four moves {pending_at_moves}, "
        f"{len(held)} partition holdings by "
        f"{len({h.owner for h in held})} workers"
    )
    assert all(p >= 100 for p in pending_at_moves), pending_at_moves
    assert {k: n for k, n in executions.items() if n != 1} == {}
    assert set(per_id) == {str(c["commandId"]) for c in commands}
    assert {k: n for k, n in per_id.items() if n > 1} == {}
    assert Counter(r["outcome"] for r in results) == Counter({"succeeded": BOOKINGS})
    assert overlapping(held) == []
    moved = {
        h.partition for h in held if sum(x.partition == h.partition for x in held) > 1
    }
    assert moved, "no partition changed hands: the test moved nothing"


@pytest.mark.parametrize("echo", [False, True], ids=["documented-shape", "echoed"])
async def test_dropped_connections_after_booking_are_reconciled_never_rebooked(
    broker: Broker, echo: bool
) -> None:
    """11 bookings whose reply is lost: each found by the read, none rebooked."""
    topics = await fresh_command_topics(broker.bootstrap)
    commands = [booking() for _ in range(11)]
    async with Emulator(
        EmulatorConfig(start_paused=True, echo_external_order_id=echo)
    ) as emu:
        emu.deliveries.execute_then_drop(11, kind="book_delivery")
        # 11 drops in a row would open the breaker past the 20 s deadline.
        env = commands_env(
            emu, broker.bootstrap, topics, BRIDGE_COMMANDS_BREAKER_FAILURES="100"
        )
        async with running_worker(env) as worker:
            await produce(broker.bootstrap, topics.commands, list(commands))
            await wait_for(
                lambda: (
                    bookings(worker, "succeeded") + bookings(worker, "ambiguous") == 11
                ),
                30,
            )
        executions = [emu.executions(str(c["commandId"])) for c in commands]
    results = await results_of(broker.bootstrap, topics.results)
    assert executions == [1] * 11
    assert len(results) == 11
    assert all(r["outcome"] == "succeeded" and r["reconciled"] for r in results)
    assert all(r["response"]["drops"] and r["response"]["batchId"] for r in results)


async def test_a_server_ignoring_the_filter_never_leads_to_a_second_booking(
    broker: Broker,
) -> None:
    """Filter ignored, reply lost: each booking ends ambiguous, executed once."""
    topics = await fresh_command_topics(broker.bootstrap)
    earlier = [booking() for _ in range(3)]
    lost = [booking() for _ in range(4)]
    config = EmulatorConfig(start_paused=True, ignore_external_order_id_filter=True)
    async with Emulator(config) as emu:
        env = commands_env(
            emu, broker.bootstrap, topics, BRIDGE_COMMANDS_BREAKER_FAILURES="100"
        )
        async with running_worker(env) as worker:
            await produce(broker.bootstrap, topics.commands, list(earlier))
            await wait_for(lambda: bookings(worker, "succeeded") == 3, 30)
            emu.deliveries.execute_then_drop(4, kind="book_delivery")
            await produce(broker.bootstrap, topics.commands, list(lost))
            await wait_for(lambda: bookings(worker, "ambiguous") == 4, 30)
        executions = [emu.executions(str(c["commandId"])) for c in earlier + lost]
    results = {
        r["commandId"]: r for r in await results_of(broker.bootstrap, topics.results)
    }
    assert executions == [1] * 7
    assert {results[str(c["commandId"])]["outcome"] for c in lost} == {"ambiguous"}
    assert all(
        "filter_unproven" in results[str(c["commandId"])]["error"]["message"]
        for c in lost
    )


async def test_a_5xx_before_booking_is_sent_again_only_after_the_settle_window(
    broker: Broker,
) -> None:
    """A 503 proves nothing: two empty reads around the settle window, then booked."""
    topics = await fresh_command_topics(broker.bootstrap)
    book = booking()
    async with Emulator(EmulatorConfig(start_paused=True)) as emu:
        emu.deliveries.fail_next(1, status=503, kind="book_delivery")
        env = commands_env(emu, broker.bootstrap, topics)
        async with running_worker(env) as worker:
            await produce(broker.bootstrap, topics.commands, [book])
            await wait_for(
                lambda: bookings(worker, "succeeded") == 1,
                20,
            )
            absent = worker.sample("bridge_commands_reconciled_total", {"found": "no"})
        reads = emu.deliveries.requests(f"{book['commandId']}#reconcile")
        executions = emu.executions(str(book["commandId"]))
    (result,) = await results_of(broker.bootstrap, topics.results)
    assert executions == 1
    assert (result["attempts"], result["reconciled"]) == (2, False)
    assert len(reads) == 2
    assert reads[1].at - reads[0].at >= 2.5  # the 3 s window counts from the send
    assert absent == 1


async def test_a_booking_completed_after_the_client_timeout_is_found_not_repeated(
    broker: Broker,
) -> None:
    """Sendstack answers after the 1.5 s timeout: the read after the window finds it."""
    topics = await fresh_command_topics(broker.bootstrap)
    commands = [booking() for _ in range(3)]
    async with Emulator(EmulatorConfig(start_paused=True)) as emu:
        emu.deliveries.complete_late(3, 2.5, kind="book_delivery")
        env = commands_env(
            emu,
            broker.bootstrap,
            topics,
            BRIDGE_COMMANDS_REQUEST_TIMEOUT_SECONDS="1.5",
            BRIDGE_COMMANDS_SETTLE_SECONDS="4",
        )
        async with running_worker(env) as worker:
            await produce(broker.bootstrap, topics.commands, list(commands))
            await wait_for(
                lambda: bookings(worker, "succeeded") == 3,
                30,
            )
        executions = [emu.executions(str(c["commandId"])) for c in commands]
    results = await results_of(broker.bootstrap, topics.results)
    assert executions == [1, 1, 1]
    assert sorted(r["reconciled"] for r in results) == [True, True, True]


async def test_a_deadline_too_short_to_settle_ends_ambiguous_not_rebooked(
    broker: Broker,
) -> None:
    """No time to prove absence: one ambiguous result, a dead letter, no resend."""
    topics = await fresh_command_topics(broker.bootstrap)
    book = booking()
    book["timeoutSeconds"] = 4
    async with Emulator(EmulatorConfig(start_paused=True)) as emu:
        emu.deliveries.complete_late(1, 3.0, kind="book_delivery")
        env = commands_env(
            emu,
            broker.bootstrap,
            topics,
            BRIDGE_COMMANDS_REQUEST_TIMEOUT_SECONDS="1.5",
            BRIDGE_COMMANDS_SETTLE_SECONDS="4",
        )
        async with running_worker(env) as worker:
            await produce(broker.bootstrap, topics.commands, [book])
            await wait_for(
                lambda: bookings(worker, "ambiguous") == 1,
                20,
            )
            await asyncio.sleep(2.0)  # the late booking lands meanwhile
        executions = emu.executions(str(book["commandId"]))
        sends = [
            r
            for r in emu.deliveries.requests(str(book["commandId"]))
            if r.method == "POST"
        ]
    consumed = await read_all(broker.bootstrap, [topics.results, topics.dead_letter])
    (result,) = _results(consumed.records[topics.results])
    (dead,) = consumed.records[topics.dead_letter]
    assert (executions, len(sends)) == (1, 1)
    assert result["outcome"] == "ambiguous"
    assert result["error"]["reason"] == "ambiguous"
    assert dict(dead.headers)["bridge_dlq_reason"] == b"ambiguous"
