"""Runs the command worker (in-process or as processes) against emulator and broker."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import uuid
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from bridge.app_commands import CommandApp
from bridge.config import Settings
from bridge.core.commands import EXAMPLES
from bridgelab.emulator import Emulator
from bridgelab.tansu import create_topics
from tests.e2e.harness import Running, running
from tests.kafka_broker import unique_topic


@dataclass(frozen=True)
class CommandTopics:
    commands: str
    results: str
    dead_letter: str
    state: str
    replies: str

    @property
    def all(self) -> list[str]:
        return [self.commands, self.results, self.dead_letter, self.state, self.replies]


async def fresh_command_topics(bootstrap: str, partitions: int = 3) -> CommandTopics:
    topics = CommandTopics(
        commands=unique_topic("cmd"),
        results=unique_topic("res"),
        dead_letter=unique_topic("cdlq"),
        state=unique_topic("cstate"),
        replies=unique_topic("reply"),
    )
    await create_topics(bootstrap, topics.all, partitions=partitions)
    return topics


def commands_env(
    emu: Emulator, bootstrap: str, topics: CommandTopics, **overrides: str
) -> dict[str, str]:
    """Worker settings for tests: fast retries, a generous rate, idempotence off."""
    env = {
        "BRIDGE_SENDSTACK_BASE_URL": emu.base_url,
        "BRIDGE_SENDSTACK_APP_ID": emu.config.app_id,
        "BRIDGE_SENDSTACK_APP_SECRET": emu.config.app_secret,
        "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "BRIDGE_KAFKA_ENABLE_IDEMPOTENCE": "false",
        "BRIDGE_KAFKA_LINGER_MS": "0",
        "BRIDGE_COMMANDS_TOPIC": topics.commands,
        "BRIDGE_COMMANDS_RESULTS_TOPIC": topics.results,
        "BRIDGE_COMMANDS_DEAD_LETTER_TOPIC": topics.dead_letter,
        "BRIDGE_COMMANDS_STATE_TOPIC": topics.state,
        "BRIDGE_COMMANDS_GROUP_ID": f"g-{uuid.uuid4().hex[:8]}",
        "BRIDGE_COMMANDS_RATE_PER_SECOND": "500",
        "BRIDGE_COMMANDS_RATE_BURST": "100",
        "BRIDGE_COMMANDS_RETRY_INITIAL_SECONDS": "0.05",
        "BRIDGE_COMMANDS_RETRY_MAX_SECONDS": "0.5",
        "BRIDGE_COMMANDS_DEFAULT_DEADLINE_SECONDS": "20",
        # Short leases and windows, so a crash or an ambiguity costs seconds.
        "BRIDGE_COMMANDS_REQUEST_TIMEOUT_SECONDS": "2",
        "BRIDGE_COMMANDS_LEASE_SECONDS": "5",
        "BRIDGE_COMMANDS_SETTLE_SECONDS": "3",
        "BRIDGE_COMMANDS_REVOKE_GRACE_SECONDS": "2",
        "BRIDGE_OPS_HOST": "127.0.0.1",
        "BRIDGE_OPS_PORT": "0",
        "BRIDGE_SHUTDOWN_GRACE_SECONDS": "10",
    }
    env.update(overrides)
    return env


def envelope(
    command_type: str, payload: Mapping[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "commandId": f"{command_type}-{uuid.uuid4().hex[:12]}",
        "type": command_type,
        "payload": copy.deepcopy(
            dict(EXAMPLES[command_type] if payload is None else payload)
        ),
    }
    message.update(extra)
    return message


def booking(external_order_id: str | None = None) -> dict[str, Any]:
    payload = copy.deepcopy(dict(EXAMPLES["book_delivery"]))
    payload["externalOrderId"] = external_order_id or f"ORD-{uuid.uuid4().hex[:10]}"
    return envelope("book_delivery", payload)


async def produce(
    bootstrap: str, topic: str, messages: list[dict[str, Any] | bytes]
) -> None:
    """Send command messages keyed by their ordering-relevant id (the command id)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for m in messages:
            if isinstance(m, bytes):
                await producer.send_and_wait(topic, m)
            else:
                await producer.send_and_wait(
                    topic, orjson.dumps(m), key=str(m.get("commandId", "")).encode()
                )
    finally:
        await producer.stop()


RunningWorker = Running[CommandApp]


def running_worker(
    env: Mapping[str, str],
) -> AbstractAsyncContextManager[RunningWorker]:
    """Run ``CommandApp`` in-process until the block ends, then shut it down."""
    settings = Settings.from_env(env, require=frozenset({"sendstack", "kafka"}))
    return running(CommandApp(settings, registry=CollectorRegistry()))


def start_worker_process(
    env: Mapping[str, str], log_path: str
) -> subprocess.Popen[bytes]:
    """``python -m bridge commands`` as a real process (for SIGKILL tests)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "bridge", "commands"],
            env={**clean, **env, "BRIDGE_LOG_FORMAT": "json"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@dataclass(frozen=True)
class Holding:
    """One worker's hold on one partition, from its own log lines."""

    partition: int
    owner: str
    start: float
    end: float  # when it released or lost the partition (inf: never said)


def holdings(log_lines: list[bytes]) -> list[Holding]:
    """Pair ``commands_partition_acquired`` with the owner's release or loss."""
    open_: dict[tuple[int, str], float] = {}
    out: list[Holding] = []
    for line in log_lines:
        if not line.startswith(b"{"):
            continue
        entry = orjson.loads(line)
        event = entry.get("event")
        if event not in (
            "commands_partition_acquired",
            "commands_partition_released",
            "commands_partition_lost",
        ):
            continue
        key = (int(entry["partition"]), str(entry["owner"]))
        if event == "commands_partition_acquired":
            open_[key] = float(entry["at"])
        elif key in open_:
            out.append(Holding(key[0], key[1], open_.pop(key), float(entry["at"])))
    out.extend(Holding(p, o, start, float("inf")) for (p, o), start in open_.items())
    return out


def overlapping(held: list[Holding]) -> list[tuple[Holding, Holding]]:
    """Pairs of different workers holding the same partition at the same time."""
    clashes = []
    for i, a in enumerate(held):
        for b in held[i + 1 :]:
            same = a.partition == b.partition and a.owner != b.owner
            if same and a.start < b.end and b.start < a.end:
                clashes.append((a, b))
    return clashes
