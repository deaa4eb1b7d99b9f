"""Exactly once per command id while workers are SIGKILLed and partitions move."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
from collections import Counter
from pathlib import Path

import orjson
import pytest

from bridgelab.emulator import Emulator, EmulatorConfig
from tests.e2e.commands_harness import (
    booking,
    commands_env,
    envelope,
    fresh_command_topics,
    produce,
    start_worker_process,
)
from tests.e2e.verifier import read_all
from tests.kafka_broker import Broker

pytestmark = pytest.mark.e2e

KILLS = 20


async def test_kills_and_rebalances_never_duplicate_a_booking_or_a_result(
    broker: Broker, tmp_path: Path
) -> None:
    """20 SIGKILLs at random moments, two workers: one execution, one result each."""
    rng = random.Random(20261126)
    topics = await fresh_command_topics(broker.bootstrap, partitions=4)
    commands: list[dict[str, object]] = []
    async with Emulator(EmulatorConfig(start_paused=True)) as emu:
        # A booking takes 300 ms, as a real one about does: kills land while
        # calls are in flight (the emulator completes them all the same).
        emu.deliveries.set_latency(300)
        env = commands_env(
            emu,
            broker.bootstrap,
            topics,
            BRIDGE_COMMANDS_SESSION_TIMEOUT_MS="3000",
            BRIDGE_COMMANDS_CONCURRENCY="8",
            BRIDGE_COMMANDS_DEFAULT_DEADLINE_SECONDS="120",
        )
        log = str(tmp_path / "workers.log")
        workers = [start_worker_process(env, log), start_worker_process(env, log)]
        try:
            for kill in range(KILLS):
                batch = [booking() for _ in range(15)] + [envelope("wallet_balance")]
                commands.extend(batch)
                await produce(broker.bootstrap, topics.commands, batch)
                # Kill while a booking is in flight (a slow machine otherwise
                # finishes the batch before the kill), at a random point of it.
                await _booking_in_flight(emu)
                await asyncio.sleep(rng.uniform(0.0, 0.25))
                # Alternate, so partitions keep moving; every fourth kill takes
                # both, so some kills surely hit the worker making the call.
                victims = (0, 1) if kill % 4 == 3 else (kill % 2,)
                for victim in victims:
                    workers[victim].send_signal(signal.SIGKILL)
                for victim in victims:
                    workers[victim].wait()
                    workers[victim] = start_worker_process(env, log)
            expected = {str(c["commandId"]) for c in commands}
            for _ in range(120):
                consumed = await read_all(broker.bootstrap, [topics.results], quiet=0.5)
                done = {
                    orjson.loads(r.value or b"")["commandId"]
                    for r in consumed.records.get(topics.results, [])
                }
                if expected <= done:
                    break
                await asyncio.sleep(0.5)
        finally:
            for w in workers:
                w.send_signal(signal.SIGTERM)
            for w in workers:
                try:
                    w.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    w.kill()
        executions = {
            str(c["commandId"]): emu.executions(str(c["commandId"]))
            for c in commands
            if c["type"] == "book_delivery"
        }
    consumed = await read_all(broker.bootstrap, [topics.results])
    results = [orjson.loads(r.value or b"") for r in consumed.records[topics.results]]
    per_id = Counter(r["commandId"] for r in results)
    missing = expected - set(per_id)
    assert not missing, f"{len(missing)} commands without a result"
    duplicated = {k: n for k, n in per_id.items() if n > 1}
    assert not duplicated, f"results duplicated: {duplicated}"
    twice = {k: n for k, n in executions.items() if n != 1}
    assert not twice, f"bookings not executed exactly once: {twice}"
    outcomes = Counter(r["outcome"] for r in results)
    assert outcomes == Counter({"succeeded": len(commands)}), outcomes
    reconciled = sum(1 for r in results if r.get("reconciled"))
    lines = await asyncio.to_thread(Path(log).read_bytes)
    events = Counter(
        orjson.loads(line).get("event")
        for line in lines.splitlines()
        if line.startswith(b"{")
    )
    print(
        f"{len(commands)} commands, {KILLS} kills, {reconciled} reconciled,"
        f" {events['commands_partitions_assigned']} assignments"
    )
    # Bookings whose worker died mid-call were found, not booked again.
    assert reconciled > 0, "no kill landed while a call was in flight"


async def _booking_in_flight(emu: Emulator) -> None:
    """Wait until the emulator is answering a booking (bounded: fail, don't hang)."""
    async with asyncio.timeout(30):
        while emu.deliveries.in_flight("book_delivery") == 0:  # noqa: ASYNC110 - polls the emulator
            await asyncio.sleep(0.02)
