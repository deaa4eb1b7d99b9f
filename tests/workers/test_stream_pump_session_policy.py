"""The stream pump learns the upstream's session policy (looptime, fakes via ports).

Three single-socket upstreams (``OneSocketUpstream``): a newer socket replaces
the older (4409), a second upgrade is refused (409), a new session revokes the
older ones (4001). Against each, the pump's first rotation shows it, the pump
falls back to close-first once, and every rotation then costs one handshake
of gap, outside the reconnect backoff.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from bridge.core.codec import codec_by_name
from bridge.core.records import Topics
from bridge.core.retry import Backoff, FailureBudget
from bridge.core.session import RotationPolicy
from bridge.errors import UpstreamUnavailable
from bridge.metrics import StreamMetrics
from bridge.ports import UpstreamConnector
from bridge.workers.session_keeper import SessionKeeper
from bridge.workers.stream_pump import PumpOptions, SessionPolicyState, StreamPump
from tests.workers.fakes import (
    FakeConnector,
    FakeHolder,
    FakeSessionSource,
    FakeSink,
    LoopClock,
    OneSocketPolicy,
    OneSocketUpstream,
    TrackedConnection,
    now,
    until,
)

pytestmark = pytest.mark.looptime

TOPICS = Topics(positions="pos", device_status="dev", events="evt", dead_letter="dlq")
HANDSHAKE = 0.05  # virtual seconds per upgrade
ROTATIONS = 5
EVERY = 3.0  # a new session every 3 s: far less than a "healthy" 10 s link
CAUSE: dict[OneSocketPolicy, str] = {
    "replace-4409": "replaced",
    "refuse-409": "refused",
    "revoke-4001": "revoked",
}


def position(seq: int, device: int = 41) -> bytes:
    """A one-position frame in the assumed wire format (docs/wire-format.md)."""
    item: dict[str, Any] = {
        "id": seq,
        "deviceId": device,
        "fixTime": "2025-06-14T09:12:03.000Z",
        "latitude": 6.45,
        "longitude": 3.39,
        "attributes": {"seq": seq},
    }
    return orjson.dumps({"positions": [item]})


@dataclass
class Rig:
    pump: StreamPump
    holder: FakeHolder
    sink: FakeSink
    registry: CollectorRegistry

    def seqs(self) -> list[int]:
        return [
            orjson.loads(r.value)["attributes"]["seq"]
            for r in self.sink.records
            if r.topic == "pos"
        ]

    def sample(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def fallbacks(self) -> dict[str, float]:
        return {
            cause: self.sample(
                "bridge_stream_session_policy_fallbacks_total", cause=cause
            )
            for cause in ("refused", "replaced", "revoked")
        }


@asynccontextmanager
async def running_pump(
    holder: FakeHolder, connector: UpstreamConnector, **options: Any
) -> AsyncIterator[Rig]:
    sink, registry = FakeSink(), CollectorRegistry()
    opts = {"reconnect": Backoff(initial=1.0, maximum=8.0, jitter=0.0), **options}
    pump = StreamPump(
        holder,
        connector,
        codec_by_name("traccar-json", max_frame_bytes=1_048_576),
        sink,
        topics=TOPICS,
        clock=LoopClock(),
        options=PumpOptions(**opts),
        metrics=StreamMetrics(registry),
    )
    task = asyncio.create_task(pump.run())
    try:
        yield Rig(pump, holder, sink, registry)
    finally:
        await pump.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def downtimes(connections: list[TrackedConnection]) -> Iterator[float]:
    """Per rotation: how long no socket was open (0 when the two overlapped)."""
    for old, new in itertools.pairwise(connections):
        assert old.ended_at is not None
        yield max(0.0, new.opened_at - old.ended_at)


@pytest.mark.parametrize("policy", ["replace-4409", "refuse-409", "revoke-4001"])
async def test_each_rotation_costs_one_handshake_and_at_most_one_refusal(
    policy: OneSocketPolicy,
) -> None:
    """Five quick rotations: one fallback, at most one refusal, one-handshake gaps."""
    holder = FakeHolder()
    upstream = OneSocketUpstream(policy, holder, handshake=HANDSHAKE, frame=position)
    async with running_pump(holder, upstream) as rig:
        fleet = asyncio.create_task(upstream.run_fleet(interval=0.1))
        await upstream.issue(1)
        await until(lambda: upstream.connections)
        for generation in range(2, 2 + ROTATIONS):
            await asyncio.sleep(EVERY)
            await upstream.issue(generation)
        await asyncio.sleep(1.0)
        fleet.cancel()
        await asyncio.gather(fleet, return_exceptions=True)
        await until(lambda: rig.seqs()[-1:] == upstream.written[-1:])
        conns = upstream.connections
        assert len(conns) == 1 + ROTATIONS, "one socket per session, no reconnect"
        assert [c.token for c in conns] == [f"token-{g}" for g in range(1, 7)]
        assert max(downtimes(conns)) <= HANDSHAKE + 1e-6
        assert len(upstream.refused) == (1 if policy == "refuse-409" else 0)
        # No upgrade thrown away: each one either served or was refused.
        assert len(upstream.attempts) == len(conns) + len(upstream.refused)
        assert rig.fallbacks() == {
            c: float(c == CAUSE[policy]) for c in ("refused", "replaced", "revoked")
        }
        assert rig.pump.session_policy() == SessionPolicyState(
            policy="single", basis="observed", cause=CAUSE[policy]
        )
        assert rig.sample("bridge_stream_session_policy", policy="single") == 1
        assert rig.sample("bridge_stream_session_policy", policy="multi") == 0
        stats = rig.pump.statistics()
        assert (stats.rotations, stats.reconnects) == (ROTATIONS, 0)
        assert rig.sample("bridge_ws_reconnects_total") == 0
        assert rig.sample("bridge_ws_disconnects_total", reason="session") == 0
        assert rig.sample("bridge_ws_disconnects_total", reason="rotation") == ROTATIONS
        assert holder.rejected == [], "a rotation's close is no refused session"
        expected = [(2, 409)] if policy == "refuse-409" else []
        assert holder.refused_upgrades == expected, "counted toward the budget"
        # Nothing written to a socket is lost, nothing is published twice.
        assert rig.seqs() == sorted(set(upstream.written))
        # After the fallback, the old socket is closed by us before the new opens.
        for old, new in itertools.pairwise(conns[2:]):
            assert old.ended_by == "client" or policy == "revoke-4001"
            assert old.ended_at is not None
            assert old.ended_at <= new.opened_at


async def test_configured_single_session_closes_first_and_never_backs_off() -> None:
    """single_session=True: close-first from the start; planned closes skip backoff."""
    holder, connector = FakeHolder(), FakeConnector()
    async with running_pump(holder, connector, single_session=True) as rig:
        await holder.issue(1)
        await until(lambda: connector.connections)
        assert rig.pump.session_policy() == SessionPolicyState(
            policy="single", basis="configured"
        )
        for generation in range(2, 2 + ROTATIONS):
            await asyncio.sleep(EVERY)
            old, issued = connector.connections[-1], now()
            await holder.issue(generation)
            await until(lambda g=generation: len(connector.connections) == g)
            assert old.closed == (1000, "session rotated")
            # Opened in the same virtual instant: no reconnect backoff (1 s+).
            assert connector.connections[-1].opened_at == pytest.approx(issued)
            connector.connections[-1].push(position(generation))
        await until(lambda: rig.seqs() == list(range(2, 2 + ROTATIONS)))
        assert connector.attempts == pytest.approx(
            [c.opened_at for c in connector.connections]
        )
        assert rig.pump.statistics().rotations == ROTATIONS
        assert rig.sample("bridge_ws_reconnects_total") == 0
        assert rig.sample("bridge_ws_disconnects_total", reason="normal") == 0
        assert rig.sample("bridge_ws_disconnects_total", reason="rotation") == ROTATIONS
        assert sum(rig.fallbacks().values()) == 0
        assert rig.sample("bridge_stream_session_policy", policy="single") == 1


async def test_a_multi_session_upstream_keeps_make_before_break() -> None:
    """A rotation that overlaps two sockets unharmed marks multi as observed."""
    holder, connector = FakeHolder(), FakeConnector()
    async with running_pump(holder, connector) as rig:
        await holder.issue(1)
        await until(lambda: connector.connections)
        assert rig.pump.session_policy().basis == "assumed"
        old = connector.connections[0]
        await holder.issue(2)
        await until(lambda: len(connector.connections) == 2)
        new = connector.connections[1]
        assert old.closed is None
        new.push(position(1))
        old.push(position(1))
        await until(lambda: old.closed is not None)
        await until(lambda: rig.pump.statistics().rotations == 1)
        assert rig.pump.session_policy() == SessionPolicyState(
            policy="multi", basis="observed"
        )
        assert rig.sample("bridge_stream_session_policy", policy="multi") == 1
        assert sum(rig.fallbacks().values()) == 0


async def test_a_revocation_during_the_session_request_is_a_rotation() -> None:
    """A 4001 that beats the new session to the pump: wait for it, connect at once."""
    holder, connector = FakeHolder(), FakeConnector()
    async with running_pump(holder, connector) as rig:
        await holder.issue(1)
        await until(lambda: connector.connections)
        await asyncio.sleep(EVERY)
        holder.requesting = True  # the keeper asks for a session; the server
        connector.connections[0].drop(4001, "session replaced")  # revokes first
        await asyncio.sleep(0.3)
        assert len(connector.connections) == 1, "no reconnect with the old session"
        holder.requesting = False
        await holder.issue(2)
        await until(lambda: len(connector.connections) == 2)
        assert connector.connections[1].token == "token-2"
        assert connector.connections[1].opened_at == pytest.approx(now(), abs=0.02)
        assert holder.rejected == []
        assert rig.sample("bridge_ws_disconnects_total", reason="session") == 0
        assert rig.sample("bridge_ws_disconnects_total", reason="rotation") == 1
        assert rig.fallbacks()["revoked"] == 1
        assert rig.pump.statistics().reconnects == 0


async def test_a_4001_with_no_rotation_under_way_is_still_a_session_end() -> None:
    """An unrelated 4001 is reported as before and does not change the policy."""
    holder, connector = FakeHolder(), FakeConnector()
    async with running_pump(holder, connector) as rig:
        await holder.issue(1)
        await until(lambda: connector.connections)
        await asyncio.sleep(60)
        connector.connections[0].drop(4001, "session expired")
        await until(lambda: holder.rejected == [1])
        assert rig.sample("bridge_ws_disconnects_total", reason="session") == 1
        assert rig.pump.session_policy().policy == "multi"
        assert sum(rig.fallbacks().values()) == 0


async def test_a_refused_upgrade_counts_and_the_budget_holds_off_the_next() -> None:
    """A 409 at connect is reported to the holder; its budget wait delays the retry."""
    holder, connector = FakeHolder(), FakeConnector()
    refused = UpstreamUnavailable(
        "tracking socket upgrade failed (HTTP 409)", status=409
    )
    connector.failures = [refused]
    holder.refusal_wait = 30.0
    async with running_pump(holder, connector) as rig:
        await holder.issue(1)
        await until(lambda: connector.connections, within=120)
        assert holder.refused_upgrades == [(1, 409)]
        gap = connector.attempts[1] - connector.attempts[0]
        assert gap == pytest.approx(30.0, abs=0.1), "not the 1 s backoff"
        assert rig.sample("bridge_ws_connects_total", outcome="refused") == 1
        assert rig.sample("bridge_ws_connects_total", outcome="failed") == 0
        assert rig.pump.session_policy().policy == "multi", "not during a rotation"


async def test_refused_upgrades_fill_the_keepers_session_failure_budget() -> None:
    """Refused upgrades count in the keeper's budget: its next request waits."""
    source = FakeSessionSource(ttl=3_600.0)
    keeper = SessionKeeper(
        source,
        clock=LoopClock(),
        policy=RotationPolicy(margin=900.0, jitter=0.0),
        backoff=Backoff(initial=2.0, maximum=60.0, jitter=0.0),
        budget=FailureBudget(max_failures=2, window=900.0),
        metrics=StreamMetrics(CollectorRegistry()),
    )
    task = asyncio.create_task(keeper.run())
    try:
        first = await keeper.wait_for_session()
        assert keeper.report_refused_upgrade(first.generation, 409) == 0
        assert keeper.report_refused_upgrade(first.generation, 409) == pytest.approx(
            900.0
        )
        keeper.report_rejected(first.generation)  # a new session is wanted now
        await keeper.wait_newer(first.generation)
        assert source.calls[1] - source.calls[0] == pytest.approx(900.0, abs=0.5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
