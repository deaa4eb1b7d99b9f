"""Hot standby end to end: two stream replicas, one leader, takeovers without a gap.

The replicas run as ``python -m bridge stream`` processes with their own
journals, in one coordination group, against the real broker and one
emulator (each replica holds its own session and socket).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from bridgelab.emulator import Emulator, EmulatorConfig
from bridgelab.tansu import create_topics, free_port
from tests.e2e.harness import bridge_env, fresh_topics, journal_dir
from tests.e2e.verifier import read_all
from tests.kafka_broker import Broker, unique_topic

pytestmark = pytest.mark.e2e

KILLS = int(os.environ.get("BRIDGE_TEST_STANDBY_KILLS", "10"))


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


def _env(base: Mapping[str, str], topic: str, group: str) -> dict[str, str]:
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


async def _leader(
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


async def test_the_leader_sigkilled_ten_times_loses_nothing(
    broker: Broker, tmp_path: Path
) -> None:
    """Leader SIGKILLed 10 times at 200 items/s: every item written to a socket is
    in Kafka; duplicates are few and keep their ce_id; takeover times printed."""
    rng = random.Random(20261206)
    topics = await fresh_topics(broker.bootstrap)
    coordination = unique_topic("coord")
    await create_topics(broker.bootstrap, [coordination], partitions=1)
    group = unique_topic("group")
    fleet = EmulatorConfig(
        devices=1000, report_interval_seconds=5.0, max_frames_per_second=4.0
    )
    takeovers: list[float] = []
    async with Emulator(fleet) as emu, httpx.AsyncClient(timeout=1.0) as client:
        base = bridge_env(emu, broker.bootstrap, topics)
        replicas = [
            Replica(n, _env(base, coordination, group), tmp_path / f"{n}.log")
            for n in ("a", "b")
        ]
        for r in replicas:
            r.start()
        try:
            leader = await _leader(replicas, client, 30)
            for _ in range(KILLS):
                await asyncio.sleep(rng.uniform(1.0, 3.0))
                standby = next(r for r in replicas if r is not leader)
                assert leader.proc is not None
                killed_at = time.monotonic()
                leader.proc.send_signal(signal.SIGKILL)
                leader.proc.wait()
                # The standby leads once the group notices (session timeout).
                new = await _leader([standby], client, 30)
                takeovers.append(time.monotonic() - killed_at)
                leader.start()  # back as the standby
                await leader.ready(client, 30)
                leader = new
            await asyncio.sleep(2.0)
            emu.pause()
            await asyncio.sleep(3.0)
        finally:
            for r in replicas:
                if r.proc is not None and r.proc.poll() is None:
                    r.proc.send_signal(signal.SIGTERM)
            for r in replicas:
                if r.proc is not None:
                    try:
                        r.proc.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        r.proc.kill()
        written = emu.written_seqs()
    consumed = await read_all(broker.bootstrap, topics.all)
    seqs = consumed.seqs(topics.data)
    ce_ids: dict[int, set[bytes]] = defaultdict(set)
    for topic in topics.data:
        for record in consumed.records.get(topic, []):
            value = orjson.loads(record.value or b"{}")
            ce_ids[int(value["attributes"]["seq"])].add(dict(record.headers)["ce_id"])
    missing = written - set(seqs)
    duplicates = sum(n - 1 for n in seqs.values() if n > 1)
    q = statistics.quantiles(takeovers, n=100) if len(takeovers) > 1 else takeovers
    print(
        f"{KILLS} leader kills, {len(written)} items written: {len(missing)} lost,"
        f" {duplicates} duplicates; takeover p50 {statistics.median(takeovers):.2f} s,"
        f" p99 {q[-1]:.2f} s"
    )
    assert not missing, f"{len(missing)} items lost, e.g. {sorted(missing)[:10]}"
    assert all(len(ids) == 1 for ids in ce_ids.values()), "a duplicate changed ce_id"
    assert duplicates <= KILLS * 200, "duplicates should be about a progress interval"


async def wait_for_role(
    replica: Replica, client: httpx.AsyncClient, role: float, within: float
) -> None:
    """Wait until ``replica`` reports ``role``."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await replica.role(client) == role:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{replica.name} never reached role {role}")


async def test_sigterm_of_the_leader_hands_over_without_a_gap(
    broker: Broker, tmp_path: Path
) -> None:
    """A leader stopped with SIGTERM leaves the group at once: the standby leads
    sooner than a dead leader's session timeout, and nothing is lost."""
    topics = await fresh_topics(broker.bootstrap)
    coordination = unique_topic("coord")
    await create_topics(broker.bootstrap, [coordination], partitions=1)
    group = unique_topic("group")
    fleet = EmulatorConfig(
        devices=1000, report_interval_seconds=5.0, max_frames_per_second=4.0
    )
    handovers: list[float] = []
    async with Emulator(fleet) as emu, httpx.AsyncClient(timeout=1.0) as client:
        base = {
            **bridge_env(emu, broker.bootstrap, topics),
            # Long enough that a hand-over by session expiry would show.
            "BRIDGE_HA_SESSION_TIMEOUT_MS": "6000",
            "BRIDGE_HA_HEARTBEAT_INTERVAL_MS": "500",
        }
        replicas = [
            Replica(
                n,
                {**_env(base, coordination, group), **_slow(base)},
                tmp_path / f"{n}.log",
            )
            for n in ("a", "b")
        ]
        try:
            # One after the other: Tansu numbers a group's first generation 0,
            # and aiokafka sends no LeaveGroup from generation 0, so a leader
            # stopped then would be noticed only at its session's expiry.
            replicas[0].start()
            await _leader(replicas[:1], client, 30)
            replicas[1].start()
            for r in replicas:
                await r.ready(client, 30)
            for _ in range(3):
                await asyncio.sleep(1.0)
                leader = await _leader(replicas, client, 10)
                standby = next(r for r in replicas if r is not leader)
                assert leader.proc is not None
                stopped_at = time.monotonic()
                leader.proc.send_signal(signal.SIGTERM)
                new = await _leader([standby], client, 30)
                handovers.append(time.monotonic() - stopped_at)
                assert leader.proc.wait(timeout=20) == 0
                leader.start()
                await leader.ready(client, 30)
                # The returning replica joins as a standby: the leader stays.
                assert await _leader(replicas, client, 10) is new
            await asyncio.sleep(1.0)
            emu.pause()
            await asyncio.sleep(3.0)
        finally:
            for r in replicas:
                if r.proc is not None and r.proc.poll() is None:
                    r.proc.send_signal(signal.SIGTERM)
            for r in replicas:
                if r.proc is not None:
                    try:
                        r.proc.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        r.proc.kill()
        written = emu.written_seqs()
    consumed = await read_all(broker.bootstrap, topics.all)
    missing = written - set(consumed.seqs(topics.data))
    print(f"SIGTERM hand-overs took {', '.join(f'{h:.2f}' for h in handovers)} s")
    assert not missing, f"{len(missing)} items lost"
    assert max(handovers) < 6.0, "a hand-over waited for the session to expire"


def _slow(base: Mapping[str, str]) -> dict[str, str]:
    return {
        "BRIDGE_HA_SESSION_TIMEOUT_MS": base["BRIDGE_HA_SESSION_TIMEOUT_MS"],
        "BRIDGE_HA_HEARTBEAT_INTERVAL_MS": base["BRIDGE_HA_HEARTBEAT_INTERVAL_MS"],
    }


async def test_kafka_frozen_past_the_buffer_loses_nothing_with_two_replicas(
    broker: Broker, tmp_path: Path
) -> None:
    """Kafka frozen three times longer than the standby's buffer: the fenced
    leader keeps journaling, and after the thaw nothing is lost."""
    if broker.external:
        pytest.skip("pausing needs the broker process")
    topics = await fresh_topics(broker.bootstrap)
    coordination = unique_topic("coord")
    await create_topics(broker.bootstrap, [coordination], partitions=1)
    group = unique_topic("group")
    fleet = EmulatorConfig(
        devices=1000, report_interval_seconds=5.0, max_frames_per_second=4.0
    )
    frozen_for = 15.0
    async with Emulator(fleet) as emu, httpx.AsyncClient(timeout=1.0) as client:
        base = bridge_env(emu, broker.bootstrap, topics)
        env = {
            **_env(base, coordination, group),
            "BRIDGE_HA_BUFFER_SECONDS": "5",
            "BRIDGE_KAFKA_REQUEST_TIMEOUT_MS": "5000",
        }
        replicas = [
            Replica(
                n, {**env, "BRIDGE_JOURNAL_DIR": journal_dir()}, tmp_path / f"{n}.log"
            )
            for n in ("a", "b")
        ]
        try:
            replicas[0].start()
            await _leader(replicas[:1], client, 30)
            replicas[1].start()
            for r in replicas:
                await r.ready(client, 30)
            await asyncio.sleep(1.0)
            broker.pause()
            try:
                await asyncio.sleep(frozen_for)
            finally:
                broker.resume()
            await _leader(replicas, client, 60)
            await asyncio.sleep(3.0)
            emu.pause()
            await asyncio.sleep(5.0)
        finally:
            for r in replicas:
                if r.proc is not None and r.proc.poll() is None:
                    r.proc.send_signal(signal.SIGTERM)
            for r in replicas:
                if r.proc is not None:
                    try:
                        r.proc.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        r.proc.kill()
        written = emu.written_seqs()
    consumed = await read_all(broker.bootstrap, topics.all)
    seqs = consumed.seqs(topics.data)
    missing = written - set(seqs)
    fenced = sum(
        r.log.read_text().count('"stream_fenced_journaling"') for r in replicas
    )
    duplicates = sum(n - 1 for n in seqs.values() if n > 1)
    print(
        f"Kafka frozen {frozen_for:.0f} s (buffer 5 s): {len(written)} items,"
        f" {len(missing)} lost, {duplicates} duplicates, {fenced} fence(s)"
    )
    assert fenced >= 1, "the leader should have fenced itself"
    assert not missing, f"{len(missing)} items lost"
