"""SIGTERM on the real processes: drain, flush, commit, exit 0; twice: exit now."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from bridgelab.emulator import Emulator, EmulatorConfig
from bridgelab.tansu import free_port
from tests.e2e.commands_harness import (
    booking,
    commands_env,
    fresh_command_topics,
    produce,
)
from tests.e2e.harness import bridge_env, fresh_topics
from tests.e2e.verifier import read_all, wait_for
from tests.kafka_broker import Broker

pytestmark = pytest.mark.e2e


def start(command: str, env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    with log.open("ab") as out:
        return subprocess.Popen(  # noqa: S603 - our own module
            [sys.executable, "-m", "bridge", command],
            env={**clean, **env, "BRIDGE_LOG_FORMAT": "json"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def wait_ready(port: int, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                if (
                    await client.get(f"http://127.0.0.1:{port}/readyz")
                ).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("process never became ready")


async def wait_exit(proc: subprocess.Popen[bytes], within: float) -> tuple[int, float]:
    started = time.monotonic()
    while proc.poll() is None:
        if time.monotonic() - started > within:
            proc.kill()
            raise AssertionError(f"did not exit within {within}s")
        await asyncio.sleep(0.05)
    return proc.returncode, time.monotonic() - started


def events(log: Path) -> list[dict[str, object]]:
    return [
        orjson.loads(line)
        for line in log.read_bytes().splitlines()
        if line.startswith(b"{")
    ]


async def test_stream_sigterm_flushes_everything_it_read_and_exits_0(
    broker: Broker, tmp_path: Path
) -> None:
    """SIGTERM mid-stream: every record the bridge accepted is in Kafka; exit 0 fast."""
    topics = await fresh_topics(broker.bootstrap)
    port = free_port()
    log = tmp_path / "stream.log"
    async with Emulator(EmulatorConfig(devices=200, max_frames_per_second=50.0)) as emu:
        env = bridge_env(emu, broker.bootstrap, topics, BRIDGE_OPS_PORT=str(port))
        proc = start("stream", env, log)
        await wait_ready(port)
        await asyncio.sleep(2.0)
        proc.send_signal(signal.SIGTERM)
        code, took = await wait_exit(proc, 20)
    done = [e for e in events(log) if e.get("event") == "shutdown_complete"]
    consumed = await read_all(broker.bootstrap, topics.all)
    total = sum(consumed.count(t) for t in topics.all)
    assert code == 0
    assert took < 10
    assert done, "no shutdown_complete event"
    assert done[0]["flushed"] is True
    assert total == done[0]["acked"]
    assert total > 100


async def test_a_second_signal_exits_at_once_even_while_flushing(
    broker: Broker, tmp_path: Path
) -> None:
    """With Kafka frozen the first SIGTERM waits to flush; a second one exits now."""
    if broker.external:
        pytest.skip("pausing needs the broker process")
    topics = await fresh_topics(broker.bootstrap)
    port = free_port()
    log = tmp_path / "stream.log"
    async with Emulator(EmulatorConfig(devices=100, max_frames_per_second=20.0)) as emu:
        env = bridge_env(
            emu,
            broker.bootstrap,
            topics,
            BRIDGE_OPS_PORT=str(port),
            BRIDGE_SHUTDOWN_GRACE_SECONDS="30",
        )
        proc = start("stream", env, log)
        await wait_ready(port)
        broker.pause()
        try:
            await asyncio.sleep(1.0)
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(1.0)
            assert proc.poll() is None, "still flushing towards a frozen broker"
            proc.send_signal(signal.SIGTERM)
            code, took = await wait_exit(proc, 5)
        finally:
            broker.resume()
    assert code == 1
    assert took < 2


async def test_commands_sigterm_finishes_running_commands_and_commits(
    broker: Broker, tmp_path: Path
) -> None:
    """SIGTERM: running commands finish with results, offsets are committed, exit 0."""
    topics = await fresh_command_topics(broker.bootstrap, partitions=2)
    port = free_port()
    log = tmp_path / "commands.log"
    commands = [booking() for _ in range(40)]
    async with Emulator(EmulatorConfig(start_paused=True)) as emu:
        emu.deliveries.set_latency(200)
        env = commands_env(
            emu,
            broker.bootstrap,
            topics,
            BRIDGE_OPS_PORT=str(port),
            BRIDGE_COMMANDS_CONCURRENCY="4",
        )
        proc = start("commands", env, log)
        await wait_ready(port)
        await produce(broker.bootstrap, topics.commands, commands)
        await wait_for(lambda: emu.deliveries.stats()["requests"] >= 4, 20)
        proc.send_signal(signal.SIGTERM)
        code, _ = await wait_exit(proc, 20)
        executed = {
            c["commandId"] for c in commands if emu.executions(c["commandId"]) == 1
        }
    consumed = await read_all(broker.bootstrap, [topics.results])
    results = {
        orjson.loads(r.value or b"")["commandId"]
        for r in consumed.records.get(topics.results, [])
    }
    reader = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=env["BRIDGE_COMMANDS_GROUP_ID"],
        enable_auto_commit=False,
    )
    await reader.start()
    try:
        committed_total = 0
        for partition in range(2):
            offset = await reader.committed(TopicPartition(topics.commands, partition))
            committed_total += offset or 0
    finally:
        await reader.stop()
    assert code == 0
    assert executed, "some commands ran before the signal"
    assert executed == results, "every command that ran has its result, and only those"
    assert committed_total == len(results), (
        "the offsets of finished commands are committed"
    )


async def test_sigterm_without_a_session_exits_at_once_and_asks_for_none(
    broker: Broker, tmp_path: Path
) -> None:
    """Wrong secret: SIGTERM exits 0 in under 2 s and no session request follows."""
    topics = await fresh_topics(broker.bootstrap)
    port = free_port()
    log = tmp_path / "stream.log"
    async with Emulator(EmulatorConfig(devices=5)) as emu:
        env = bridge_env(
            emu,
            broker.bootstrap,
            topics,
            BRIDGE_OPS_PORT=str(port),
            BRIDGE_SENDSTACK_APP_SECRET="WRONG0SECRET0WRONG0SECRET0WRONG0",
            BRIDGE_AUTH_BACKOFF_INITIAL_SECONDS="1",
            BRIDGE_AUTH_BACKOFF_MAX_SECONDS="1",
            BRIDGE_SHUTDOWN_GRACE_SECONDS="20",
        )
        proc = start("stream", env, log)
        await wait_for(lambda: emu.limiter.failures_total >= 2, 20)
        await asyncio.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        asked = emu.limiter.failures_total
        code, took = await wait_exit(proc, 20)
        await asyncio.sleep(1.5)  # a request sent on the way out would land by now
        assert emu.limiter.failures_total == asked
    assert code == 0
    assert took < 2
