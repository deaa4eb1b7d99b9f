"""Crashes around the stream's durable journal: a killed broker, a killed stream.

What Kafka did not acknowledge stays in the journal and reaches Kafka later,
with the same bytes (the same ``ce_id``): after the broker loses everything it
had not answered (SIGKILL of a frozen, in-memory Tansu), and across SIGKILLs
of the stream itself, the journal read back from disk between the kill and
the restart.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from bridge.adapters.journal_store import JournalStore
from bridge.core.records import OutboundRecord
from bridgelab.emulator import Emulator, EmulatorConfig
from bridgelab.tansu import TansuBroker, create_topics, free_port, start_tansu
from tests.e2e.harness import bridge_env, fresh_topics, running_bridge
from tests.e2e.verifier import Consumed, read_all, wait_for
from tests.kafka_broker import Broker

pytestmark = pytest.mark.e2e

KILLS = 10


# -- helpers -------------------------------------------------------------------


def journaled(directory: Path | str, *, check: bool = True) -> list[OutboundRecord]:
    """Every record in the journal at ``directory``, in sequence order.

    Blocking; ``check=False`` skips SQLite's ``quick_check`` (for a journal a
    live bridge in this process is writing).
    """
    store = JournalStore(directory, check_on_open=check)
    state = store.open()
    try:
        assert state.quarantined is None, f"journal quarantined: {state}"
        records: list[OutboundRecord] = []
        seq = state.first_seq or 0
        while True:
            result = store.read(seq, 1000, 16 * 1024 * 1024)
            assert not result.corrupt, f"corrupt journal entries: {result.corrupt}"
            records.extend(record for _, _, record in result.entries)
            if result.end_seq == seq:
                return records
            seq = result.end_seq
    finally:
        store.close()


def ce_id(headers: Iterable[tuple[str, bytes]]) -> str:
    """The ``ce_id`` header (the test fails if it is missing)."""
    value = dict(headers).get("ce_id")
    assert value, f"no ce_id header in {list(headers)}"
    return value.decode()


def kafka_records(
    consumed: Consumed, topics: Iterable[str]
) -> list[ConsumerRecord[bytes, bytes]]:
    return [r for t in topics for r in consumed.records.get(t, [])]


def values_by_ce_id(
    records: Iterable[ConsumerRecord[bytes, bytes]],
) -> dict[str, set[bytes]]:
    """Each record's ``ce_id`` and the values published under it."""
    out: dict[str, set[bytes]] = defaultdict(set)
    for record in records:
        assert record.value is not None
        out[ce_id(record.headers)].add(record.value)
    return out


def start_stream(
    env: Mapping[str, str], log: Path, port: int
) -> subprocess.Popen[bytes]:
    """``python -m bridge stream`` with ``env``, JSON lines appended to ``log``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bridge", "stream"],
            env={
                **clean,
                **env,
                "BRIDGE_LOG_FORMAT": "json",
                "BRIDGE_OPS_PORT": str(port),
            },
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def wait_ready(
    proc: subprocess.Popen[bytes], port: int, within: float = 20.0
) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"the stream exited with {proc.returncode}"
            try:
                reply = await client.get(f"http://127.0.0.1:{port}/readyz")
                if reply.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("the stream never became ready")


async def journal_entries(port: int) -> float:
    """``bridge_journal_entries`` from the stream's ``/metrics``."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    for line in text.splitlines():
        if line.startswith("bridge_journal_entries "):
            return float(line.split()[1])
    raise AssertionError("no bridge_journal_entries in /metrics")


def log_events(log: Path, name: str) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for line in log.read_bytes().splitlines():
        if line.startswith(b"{"):
            event = orjson.loads(line)
            if event.get("event") == name:
                out.append(event)
    return out


# -- the tests -----------------------------------------------------------------


async def test_a_killed_and_restarted_broker_gets_every_unacknowledged_record(
    broker: Broker,
) -> None:
    """Records journaled while the broker was frozen, then SIGKILLed with all it
    had not acknowledged, all reach the restarted broker with the same ce_ids."""
    if broker.external:
        pytest.skip("killing a broker needs our own Tansu")
    port = free_port()
    tansu: TansuBroker = start_tansu(port=port)
    try:
        topics = await fresh_topics(tansu.bootstrap)
        config = EmulatorConfig(devices=200, max_frames_per_second=20.0)
        async with Emulator(config) as emu:
            env = bridge_env(
                emu,
                tansu.bootstrap,
                topics,
                BRIDGE_KAFKA_REQUEST_TIMEOUT_MS="2000",
            )
            async with running_bridge(env) as bridge:
                sink = bridge.app.sink
                await wait_for(lambda: sink.statistics().acked > 300, 20)
                emu.pause()
                await asyncio.sleep(0.5)  # frames on the wire are read
                await wait_for(lambda: sink.statistics().in_flight_records == 0, 20)
                before = await read_all(tansu.bootstrap, topics.all)

                tansu.pause()
                emu.resume()
                await asyncio.sleep(3.0)
                backlog = bridge.sample("bridge_journal_entries")
                assert backlog > 300, f"only {backlog} journaled while frozen"
                tansu.process.kill()  # all it held in memory is gone
                await asyncio.to_thread(tansu.process.wait)
                at_kill = await asyncio.to_thread(
                    journaled, env["BRIDGE_JOURNAL_DIR"], check=False
                )
                killed_at = time.monotonic()

                tansu = start_tansu(port=port)
                existing = await create_topics(tansu.bootstrap, topics.all)
                await asyncio.sleep(1.0)  # items keep flowing to the new broker
                emu.pause()
                await asyncio.sleep(0.5)
                await wait_for(lambda: sink.statistics().in_flight_records == 0, 60)
                drained_in = time.monotonic() - killed_at
            written = emu.written_seqs()
        after = await read_all(tansu.bootstrap, topics.all)
    finally:
        tansu.stop()

    a = kafka_records(before, topics.all)
    b = kafka_records(after, topics.all)
    lost = written - set(before.seqs(topics.data)) - set(after.seqs(topics.data))
    in_b = values_by_ce_id(b)  # every record in B has a ce_id
    journal_ids = {ce_id(r.headers) for r in at_kill}
    not_resent = journal_ids - set(in_b)
    print(
        f"\n{len(written)} items written; A: {len(a)} records before the freeze,"
        f" B: {len(b)} after the restart; {int(backlog)} journaled while frozen,"
        f" {len(at_kill)} journaled unacknowledged at the kill,"
        f" {len(journal_ids) - len(not_resent)} re-sent, {len(not_resent)} not"
        f" re-sent; {len(lost)} lost; drained {drained_in:.1f} s after the kill;"
        f" topics that existed at re-creation: {existing}"
    )
    assert not lost, f"{len(lost)} items lost: {sorted(lost)[:20]}"
    assert len(at_kill) > 300
    assert not not_resent, f"{len(not_resent)} journaled records never re-sent"
    values = values_by_ce_id([*a, *b])
    for record in at_kill:
        values[ce_id(record.headers)].add(record.value)
    clashes = {k: v for k, v in values.items() if len(v) > 1}
    assert not clashes, f"ce_ids with different values: {list(clashes.items())[:3]}"


async def test_ten_sigkills_of_the_stream_lose_nothing_it_journaled(
    broker: Broker, tmp_path: Path
) -> None:
    """Every record in the journal at any of 10 SIGKILLs (Kafka frozen at each)
    reaches Kafka once the stream is restarted on the same journal."""
    if broker.external:
        pytest.skip("pausing needs the broker process")
    rng = random.Random(20261127)
    started = time.monotonic()
    topics = await fresh_topics(broker.bootstrap)
    directory = tmp_path / "journal"
    log = tmp_path / "stream.log"
    journal_ids: set[str] = set()
    journal_values: dict[str, set[bytes]] = defaultdict(set)
    per_kill: list[int] = []
    config = EmulatorConfig(devices=200, max_frames_per_second=20.0)
    async with Emulator(config) as emu:
        env = bridge_env(
            emu,
            broker.bootstrap,
            topics,
            BRIDGE_JOURNAL_DIR=str(directory),
            BRIDGE_JOURNAL_DURABILITY="interval",
        )
        proc: subprocess.Popen[bytes] | None = None
        try:
            for _ in range(KILLS):
                port = free_port()
                proc = start_stream(env, log, port)
                await wait_ready(proc, port)
                run = rng.uniform(0.5, 3.0)
                frozen = rng.uniform(0.3, run)  # Kafka frozen for the end of it
                await asyncio.sleep(run - frozen)
                broker.pause()
                await asyncio.sleep(frozen)
                proc.send_signal(signal.SIGKILL)
                await asyncio.to_thread(proc.wait)
                proc = None
                records = await asyncio.to_thread(journaled, directory)
                per_kill.append(len(records))
                for record in records:
                    journal_ids.add(ce_id(record.headers))
                    journal_values[ce_id(record.headers)].add(record.value)
                broker.resume()
            port = free_port()
            proc = start_stream(env, log, port)
            await wait_ready(proc, port)
            await asyncio.sleep(1.0)
            emu.pause()
            await asyncio.sleep(0.5)
            deadline = time.monotonic() + 30
            while await journal_entries(port) > 0:
                assert time.monotonic() < deadline, "the journal never drained"
                await asyncio.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 20)
            proc = None
        finally:
            broker.resume()
            if proc is not None:
                proc.kill()
                proc.wait()
        written = emu.written_seqs()
    consumed = await read_all(broker.bootstrap, topics.all)
    took = time.monotonic() - started

    in_kafka = values_by_ce_id(kafka_records(consumed, topics.all))
    lost = journal_ids - set(in_kafka)
    never = written - set(consumed.seqs(topics.data))
    opened = [int(str(e["entries"])) for e in log_events(log, "journal_opened")]
    print(
        f"\n{KILLS} SIGKILLs in {took:.1f} s; journal entries at each kill:"
        f" {per_kill}; at each start: {opened}; {len(journal_ids)} journaled ce_ids,"
        f" {len(lost)} not in Kafka; {len(written)} items written,"
        f" {len(never)} never reached Kafka (unread at a kill)"
    )
    assert code == 0
    assert sum(1 for n in per_kill if n > 0) >= 7, per_kill
    assert opened[1:] == per_kill, "each restart opened what the kill left"
    assert not lost, f"{len(lost)} journaled records lost: {sorted(lost)[:10]}"
    for key, values in journal_values.items():
        in_kafka[key] |= values
    clashes = {k: v for k, v in in_kafka.items() if len(v) > 1}
    assert not clashes, f"ce_ids with different values: {list(clashes.items())[:3]}"
