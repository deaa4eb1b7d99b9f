"""Stream replicas with the hot standby, run as processes (standby, fencing tests).

Each replica is ``python -m bridge stream`` with its own ops port, log file and
journal, in one coordination group.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bridgelab.emulator import Emulator, EmulatorConfig
from bridgelab.tansu import create_topics, free_port
from tests.e2e.harness import StreamTopics, bridge_env, fresh_topics, journal_dir
from tests.kafka_broker import Broker, unique_topic


@dataclass
class Replica:
    """One stream process, its ops port and its journal."""

    name: str
    env: dict[str, str]
    log: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.port = free_port()
        clean = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bridge", "stream"],
                env={
                    **clean,
                    **self.env,
                    "BRIDGE_OPS_PORT": str(self.port),
                    "BRIDGE_LOG_FORMAT": "json",
                },
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def ready(self, client: httpx.AsyncClient, within: float) -> None:
        """Wait until /readyz answers 200 (in the group, socket open)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                url = f"http://127.0.0.1:{self.port}/readyz"
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.name} not ready within {within} s")

    async def role(self, client: httpx.AsyncClient) -> float | None:
        """``bridge_stream_role`` from /metrics (None: not answering)."""
        try:
            text = (await client.get(f"http://127.0.0.1:{self.port}/metrics")).text
        except httpx.TransportError:
            return None
        for line in text.splitlines():
            if line.startswith("bridge_stream_role{"):
                return float(line.rsplit(" ", 1)[1])
        return None


def ha_env(base: Mapping[str, str], topic: str, group: str) -> dict[str, str]:
    return {
        **base,
        "BRIDGE_HA_ENABLED": "true",
        "BRIDGE_HA_COORDINATION_TOPIC": topic,
        "BRIDGE_HA_GROUP_ID": group,
        "BRIDGE_HA_SESSION_TIMEOUT_MS": "2000",
        "BRIDGE_HA_HEARTBEAT_INTERVAL_MS": "500",
        "BRIDGE_HA_BUFFER_SECONDS": "30",
        "BRIDGE_HA_CATCH_UP_SECONDS": "3",
        "BRIDGE_JOURNAL_DIR": journal_dir(),
    }


async def the_leader(
    replicas: list[Replica], client: httpx.AsyncClient, within: float
) -> Replica:
    """The one replica whose role is 2 (leading), waiting up to ``within``."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        roles = [await r.role(client) for r in replicas]
        leaders = [r for r, role in zip(replicas, roles, strict=True) if role == 2]
        if len(leaders) == 1:
            return leaders[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no single leader within {within} s")


@dataclass
class Pair:
    """Two replicas in one group, the emulator they read and the topics."""

    emu: Emulator
    client: httpx.AsyncClient
    replicas: list[Replica]
    topics: StreamTopics
    bootstrap: str

    async def start_one_after_the_other(self) -> None:
        """Start both, the second once the first leads: Tansu numbers a group's
        first generation 0, and aiokafka sends no LeaveGroup from generation 0,
        so a leader stopped then would be noticed only at its session's end."""
        self.replicas[0].start()
        await the_leader(self.replicas[:1], self.client, 30)
        self.replicas[1].start()
        for r in self.replicas:
            await r.ready(self.client, 30)


@asynccontextmanager
async def two_replicas(
    broker: Broker,
    tmp_path: Path,
    fleet: EmulatorConfig | None = None,
    **overrides: str,
) -> AsyncIterator[Pair]:
    """Two stream processes with the hot standby (each its own journal), on a
    fleet of 1,000 devices at ~200 items/s (or *fleet*); SIGTERMed when the
    block ends."""
    topics = await fresh_topics(broker.bootstrap)
    coordination = unique_topic("coord")
    await create_topics(broker.bootstrap, [coordination], partitions=1)
    group = unique_topic("group")
    fleet = fleet or EmulatorConfig(
        devices=1000, report_interval_seconds=5.0, max_frames_per_second=4.0
    )
    async with Emulator(fleet) as emu, httpx.AsyncClient(timeout=1.0) as client:
        base = {**bridge_env(emu, broker.bootstrap, topics), **overrides}
        replicas = [
            Replica(
                name,
                {**ha_env(base, coordination, group), **overrides},
                tmp_path / f"{name}.log",
            )
            for name in ("a", "b")
        ]
        try:
            yield Pair(emu, client, replicas, topics, broker.bootstrap)
        finally:
            await stop_all(replicas)


async def stop_all(replicas: list[Replica]) -> None:
    """SIGTERM every running replica; SIGKILL one still running after 20 s."""
    for r in replicas:
        if r.proc is not None and r.proc.poll() is None:
            r.proc.send_signal(signal.SIGTERM)
    for r in replicas:
        if r.proc is not None:
            try:
                r.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                r.proc.kill()
