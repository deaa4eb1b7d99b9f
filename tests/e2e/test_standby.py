"""Hot standby end to end: two stream replicas, one leader, takeovers without a gap.

The replicas run as ``python -m bridge stream`` processes with their own
journals, in one coordination group, against the real broker and one
emulator (each replica holds its own session and socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import orjson
import pytest

from bridgelab.emulator import Emulator, EmulatorConfig
from bridgelab.emulator.config import SessionPolicy
from bridgelab.tansu import create_topics
from tests.e2e.harness import bridge_env, fresh_topics
from tests.e2e.standby_harness import (
    Pair,
    Replica,
    ha_env,
    stop_all,
    the_leader,
    two_replicas,
)
from tests.e2e.verifier import Consumed, read_all
from tests.kafka_broker import Broker, unique_topic

pytestmark = pytest.mark.e2e

KILLS = int(os.environ.get("BRIDGE_TEST_STANDBY_KILLS", "10"))


async def _drain(pair: Pair, settle: float) -> tuple[set[int], Counter[int], Consumed]:
    """Let the leader publish, stop the fleet, and read everything back."""
    await asyncio.sleep(settle)
    pair.emu.pause()
    await asyncio.sleep(3.0)
    written = pair.emu.written_seqs()
    consumed = await read_all(pair.bootstrap, pair.topics.all)
    return written, consumed.seqs(pair.topics.data), consumed


async def test_the_leader_sigkilled_ten_times_loses_nothing(
    broker: Broker, tmp_path: Path
) -> None:
    """Leader SIGKILLed 10 times at 200 items/s: every item written to a socket is
    in Kafka; duplicates are few and keep their ce_id; takeover times printed."""
    rng = random.Random(20261206)
    takeovers: list[float] = []
    async with two_replicas(broker, tmp_path) as pair:
        for r in pair.replicas:
            r.start()
        leader = await the_leader(pair.replicas, pair.client, 30)
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(1.0, 3.0))
            standby = next(r for r in pair.replicas if r is not leader)
            assert leader.proc is not None
            killed_at = time.monotonic()
            leader.proc.send_signal(signal.SIGKILL)
            leader.proc.wait()
            # The standby leads once the group notices (session timeout).
            new = await the_leader([standby], pair.client, 30)
            takeovers.append(time.monotonic() - killed_at)
            leader.start()  # back as the standby
            await leader.ready(pair.client, 30)
            leader = new
        written, seqs, consumed = await _drain(pair, 2.0)
    ce_ids: dict[int, set[bytes]] = defaultdict(set)
    for topic in pair.topics.data:
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


async def test_sigterm_of_the_leader_hands_over_without_a_gap(
    broker: Broker, tmp_path: Path
) -> None:
    """A leader stopped with SIGTERM leaves the group at once: the standby leads
    sooner than a dead leader's session timeout, and nothing is lost."""
    handovers: list[float] = []
    # A session long enough that a hand-over by its expiry would show.
    slow = {
        "BRIDGE_HA_SESSION_TIMEOUT_MS": "6000",
        "BRIDGE_HA_HEARTBEAT_INTERVAL_MS": "500",
    }
    async with two_replicas(broker, tmp_path, **slow) as pair:
        await pair.start_one_after_the_other()
        for _ in range(3):
            await asyncio.sleep(1.0)
            leader = await the_leader(pair.replicas, pair.client, 10)
            standby = next(r for r in pair.replicas if r is not leader)
            assert leader.proc is not None
            stopped_at = time.monotonic()
            leader.proc.send_signal(signal.SIGTERM)
            new = await the_leader([standby], pair.client, 30)
            handovers.append(time.monotonic() - stopped_at)
            assert leader.proc.wait(timeout=20) == 0
            leader.start()
            await leader.ready(pair.client, 30)
            # The returning replica joins as a standby: the leader stays.
            assert await the_leader(pair.replicas, pair.client, 10) is new
        written, seqs, _ = await _drain(pair, 1.0)
    missing = written - set(seqs)
    print(f"SIGTERM hand-overs took {', '.join(f'{h:.2f}' for h in handovers)} s")
    assert not missing, f"{len(missing)} items lost"
    assert max(handovers) < 6.0, "a hand-over waited for the session to expire"


async def test_kafka_frozen_past_the_buffer_loses_nothing_with_two_replicas(
    broker: Broker, tmp_path: Path
) -> None:
    """Kafka frozen three times longer than the standby's buffer: the fenced
    leader keeps journaling, and after the thaw nothing is lost."""
    if broker.external:
        pytest.skip("pausing needs the broker process")
    frozen_for = 15.0
    short = {
        "BRIDGE_HA_BUFFER_SECONDS": "5",
        "BRIDGE_KAFKA_REQUEST_TIMEOUT_MS": "5000",
    }
    async with two_replicas(broker, tmp_path, **short) as pair:
        await pair.start_one_after_the_other()
        await asyncio.sleep(1.0)
        broker.pause()
        try:
            await asyncio.sleep(frozen_for)
        finally:
            broker.resume()
        await the_leader(pair.replicas, pair.client, 60)
        written, seqs, _ = await _drain(pair, 3.0)
    missing = written - set(seqs)
    fenced = sum(
        r.log.read_text().count('"stream_fenced_journaling"') for r in pair.replicas
    )
    duplicates = sum(n - 1 for n in seqs.values() if n > 1)
    print(
        f"Kafka frozen {frozen_for:.0f} s (buffer 5 s): {len(written)} items,"
        f" {len(missing)} lost, {duplicates} duplicates, {fenced} fence(s)"
    )
    assert fenced >= 1, "the leader should have fenced itself"
    assert not missing, f"{len(missing)} items lost"


@pytest.mark.parametrize(
    ("policy", "stop"),
    [("revoke-4001", signal.SIGKILL), ("refuse-409", signal.SIGTERM)],
    ids=["new-session-ends-old-leader-killed", "second-socket-refused-leader-stopped"],
)
async def test_a_cold_standby_connects_only_when_it_takes_over(
    broker: Broker, tmp_path: Path, policy: SessionPolicy, stop: signal.Signals
) -> None:
    """With a single-session upstream (either way it enforces it) the standby
    holds no session or socket; when the leader is killed or stopped it
    connects on takeover: what the upstream sent meanwhile reached no socket
    (the gap, printed), and nothing written to the new leader's socket is lost."""
    fleet = EmulatorConfig(
        devices=1000,
        report_interval_seconds=5.0,
        max_frames_per_second=4.0,
        session_policy=policy,
    )
    async with two_replicas(
        broker, tmp_path, fleet, BRIDGE_STREAM_SINGLE_SESSION="true"
    ) as pair:
        await pair.start_one_after_the_other()
        await asyncio.sleep(2.0)
        emu = pair.emu
        opened = [c for c in emu.connections() if c["state"] == "open"]
        assert len(opened) == 1, "the cold standby must hold no socket"
        sessions_before = len({c["session_id"] for c in emu.connections()})
        leader = await the_leader(pair.replicas, pair.client, 10)
        standby = next(r for r in pair.replicas if r is not leader)
        before = {c["id"] for c in emu.connections()}
        old_written = emu.written_seqs()
        assert leader.proc is not None
        killed_at = time.monotonic()
        leader.proc.send_signal(stop)
        assert leader.proc.wait(timeout=30) in (0, -signal.SIGKILL)
        await the_leader([standby], pair.client, 30)
        for _ in range(1500):  # 30 s
            if any(
                c["id"] not in before and c["written_items"] for c in emu.connections()
            ):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the new leader never received a frame")
        gap = time.monotonic() - killed_at
        await asyncio.sleep(3.0)
        new_ids = [c["id"] for c in emu.connections() if c["id"] not in before]
        new_written = set().union(*(emu.written_seqs(i) for i in new_ids))
        written, seqs, _ = await _drain(pair, 0.0)
    lost_after = new_written - set(seqs)
    unsent = set(range(max(old_written) + 1, min(new_written))) - written
    print(
        f"cold takeover ({policy}, {stop.name}): first frame on the new leader's"
        f" socket {gap:.2f} s after the signal; {len(unsent)} items sent to no"
        " socket meanwhile;"
        f" {len(new_written)} written to the new socket, {len(lost_after)} lost"
    )
    assert sessions_before == 1, "a second session held a socket before the takeover"
    assert not lost_after, f"{len(lost_after)} items lost after the takeover"
    assert unsent, "a cold takeover leaves a gap; the test should see it"


ACCOUNTS = ("alpha", "beta", "gamma")


async def _roles(replica: Replica, client: httpx.AsyncClient) -> dict[str, float]:
    """``bridge_stream_role`` per account from /metrics ({} if not answering)."""
    try:
        text = (await client.get(f"http://127.0.0.1:{replica.port}/metrics")).text
    except httpx.TransportError:
        return {}
    roles: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith('bridge_stream_role{account="'):
            account = line.split('"', 2)[1]
            roles[account] = float(line.rsplit(" ", 1)[1])
    return roles


async def _leaders(
    replicas: list[Replica], client: httpx.AsyncClient, within: float
) -> dict[str, str]:
    """Each account's one leading replica (by name), once every account has one."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        led: dict[str, list[str]] = defaultdict(list)
        for r in replicas:
            for account, role in (await _roles(r, client)).items():
                if role == 2:
                    led[account].append(r.name)
        if all(len(led[a]) == 1 for a in ACCOUNTS):
            return {a: led[a][0] for a in ACCOUNTS}
        await asyncio.sleep(0.05)
    raise AssertionError(f"not every account had one leader within {within} s")


def _account_dir(root: Path, name: str, emu: Emulator) -> None:
    """An account's directory as a mounted Secret would look."""
    path = root / name
    path.mkdir(parents=True)
    for key, value in {
        "app_id": emu.config.app_id,
        "app_secret": emu.config.app_secret,
        "base_url": emu.base_url,
        "stream_url": emu.ws_url,
    }.items():
        (path / key).write_text(value + "\n")


async def test_three_accounts_over_two_replicas_survive_a_replica_kill(
    broker: Broker, tmp_path: Path
) -> None:
    """Three accounts over two replicas: the group spreads their leaders, and
    when the replica leading two is SIGKILLed, all three keep flowing with no
    gap; every record says its account in ce_source and bridge_account."""
    topics = await fresh_topics(broker.bootstrap)
    coordination = unique_topic("coord")
    await create_topics(broker.bootstrap, [coordination], partitions=len(ACCOUNTS))
    group = unique_topic("group")
    async with contextlib.AsyncExitStack() as stack:
        # One emulator per account (an emulator serves one app), ~70 items/s each.
        emus = {
            name: await stack.enter_async_context(
                Emulator(
                    EmulatorConfig(
                        devices=350,
                        report_interval_seconds=5.0,
                        max_frames_per_second=4.0,
                        app_id=f"app-{name}",
                        app_secret=f"secret-of-{name}-0123456789",
                    )
                )
            )
            for name in ACCOUNTS
        }
        client = await stack.enter_async_context(httpx.AsyncClient(timeout=1.0))
        accounts_dir = tmp_path / "accounts"
        for name in ACCOUNTS[1:]:
            _account_dir(accounts_dir, name, emus[name])
        base = {
            **bridge_env(emus["alpha"], broker.bootstrap, topics),
            "BRIDGE_HA_ACCOUNT": "alpha",
            "BRIDGE_STREAM_ACCOUNTS_DIR": str(accounts_dir),
        }
        replicas = [
            Replica(n, ha_env(base, coordination, group), tmp_path / f"{n}.log")
            for n in ("a", "b")
        ]
        stack.push_async_callback(stop_all, replicas)
        replicas[0].start()
        first = await _leaders(replicas[:1], client, 30)
        assert set(first.values()) == {"a"}
        replicas[1].start()
        await replicas[1].ready(client, 30)
        spread = await _leaders(replicas, client, 30)
        while sorted(Counter(spread.values()).values()) != [1, 2]:
            spread = await _leaders(replicas, client, 30)  # the rebalance
        busiest = max(replicas, key=lambda r: list(spread.values()).count(r.name))
        other = next(r for r in replicas if r is not busiest)
        await asyncio.sleep(2.0)
        assert busiest.proc is not None
        busiest.proc.send_signal(signal.SIGKILL)
        busiest.proc.wait()
        after = await _leaders([other], client, 30)
        await asyncio.sleep(2.0)
        busiest.start()  # back, as the standby of all three, then its share
        await busiest.ready(client, 30)
        await asyncio.sleep(3.0)
        for emu in emus.values():
            emu.pause()
        await asyncio.sleep(3.0)
        written = {name: emu.written_seqs() for name, emu in emus.items()}
        consumed = await read_all(broker.bootstrap, topics.all)
    by_account: dict[str, Counter[int]] = defaultdict(Counter)
    sources: dict[str, set[bytes]] = defaultdict(set)
    for topic in topics.data:
        for record in consumed.records.get(topic, []):
            headers = dict(record.headers)
            account = headers["bridge_account"].decode()
            sources[account].add(headers["ce_source"])
            value = orjson.loads(record.value or b"{}")
            by_account[account][int(value["attributes"]["seq"])] += 1
    lines = []
    for name in ACCOUNTS:
        missing = written[name] - set(by_account[name])
        duplicates = sum(n - 1 for n in by_account[name].values() if n > 1)
        lines.append(
            f"{name}: {len(written[name])} written, {len(missing)} lost,"
            f" {duplicates} duplicates"
        )
        assert not missing, f"{name}: {len(missing)} lost, e.g. {sorted(missing)[:5]}"
        assert sources[name] == {f"/sendstack/accounts/{name}/tracking".encode()}
    print(f"leaders {spread} → after the kill {after}; " + "; ".join(lines))
    assert set(after.values()) == {other.name}
