"""End to end: the bridge learns a single-session upstream and loses nothing.

The real emulator with each single-session behaviour (``replace-4409``,
``refuse-409``, ``revoke-4001``), four-second sessions, the real bridge and
the real broker, checked by an independent consumer.
"""

from __future__ import annotations

import asyncio
import math

import httpx
import pytest

from bridgelab.emulator import Emulator, EmulatorConfig
from bridgelab.emulator.config import SessionPolicy
from tests.e2e.harness import RunningBridge, bridge_env, fresh_topics, running_bridge
from tests.e2e.verifier import read_all, wait_for
from tests.kafka_broker import Broker

pytestmark = pytest.mark.e2e

RUN_SECONDS = 20.0
CAUSE = {"replace-4409": "replaced", "refuse-409": "refused", "revoke-4001": "revoked"}
GAP_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def rotations(bridge: RunningBridge) -> float:
    return sum(
        bridge.sample("bridge_session_rotations_total", {"outcome": outcome})
        for outcome in ("ok", "closed_first")
    )


def largest_gap_bound(bridge: RunningBridge) -> float:
    """The smallest histogram bound that every rotation gap stayed under."""
    name = "bridge_session_rotation_gap_seconds"
    total = bridge.sample(f"{name}_count")
    for bound in GAP_BUCKETS:
        if bridge.sample(f"{name}_bucket", {"le": str(float(bound))}) >= total:
            return bound
    return math.inf


@pytest.mark.parametrize("policy", ["replace-4409", "refuse-409", "revoke-4001"])
async def test_a_single_session_upstream_is_learnt_and_nothing_is_lost(
    broker: Broker, policy: SessionPolicy
) -> None:
    """Each single-session upstream: one fallback, ≤1 refusal a rotation, no loss."""
    topics = await fresh_topics(broker.bootstrap)
    config = EmulatorConfig(
        session_policy=policy,
        session_ttl_seconds=4.0,
        devices=100,
        max_frames_per_second=20.0,
    )
    async with Emulator(config) as emu:
        env = bridge_env(emu, broker.bootstrap, topics)
        async with running_bridge(env) as bridge:
            await wait_for(lambda: bridge.sample("bridge_ws_open_connections") >= 1, 10)
            await asyncio.sleep(RUN_SECONDS)
            emu.pause()
            await asyncio.sleep(1.0)
            await wait_for(
                lambda: bridge.app.sink.statistics().in_flight_records == 0, 10
            )
            async with httpx.AsyncClient() as client:
                readyz = (
                    await client.get(f"http://127.0.0.1:{bridge.app.ops.port}/readyz")
                ).json()
            rotated = rotations(bridge)
            single = bridge.sample("bridge_stream_session_policy", {"policy": "single"})
            fallbacks = {
                cause: bridge.sample(
                    "bridge_stream_session_policy_fallbacks_total", {"cause": cause}
                )
                for cause in CAUSE.values()
            }
            reconnects = bridge.sample("bridge_ws_reconnects_total")
            session_closes = bridge.sample(
                "bridge_ws_disconnects_total", {"reason": "session"}
            )
            gap_count = bridge.sample("bridge_session_rotation_gap_seconds_count")
            gap_sum = bridge.sample("bridge_session_rotation_gap_seconds_sum")
            gap_bound = largest_gap_bound(bridge)
        written = emu.written_seqs()
        generated = emu.generated_count
        refused = emu.refused_upgrade_reasons
    consumed = await read_all(broker.bootstrap, topics.all)
    seqs = consumed.seqs(topics.data)
    conflicts = refused.get("conflict", 0)
    print(  # the figures the report quotes (pytest -s shows them)
        f"\n{policy}: rotations={rotated:.0f} refused_upgrades={refused}"
        f" reconnects={reconnects:.0f} gaps: n={gap_count:.0f}"
        f" mean={gap_sum / max(gap_count, 1):.3f}s max<={gap_bound}s"
        f" generated={generated} written={len(written)}"
        f" consumed={len(seqs)} readyz.details={readyz.get('details')}"
    )
    assert rotated >= 4, "four-second sessions over 20 s"
    assert single == 1
    assert fallbacks == {c: float(c == CAUSE[policy]) for c in CAUSE.values()}
    assert readyz["details"]["session_policy"] == "single"
    assert readyz["details"]["session_policy_cause"] == CAUSE[policy]
    assert conflicts <= rotated, "at most one refused upgrade per rotation"
    if policy == "refuse-409":
        assert conflicts >= 1, "the first rotation's second socket was refused"
    else:
        assert conflicts == 0
    assert sum(refused.values()) == conflicts, f"no other refusal: {refused}"
    assert reconnects == 0, "every planned close skipped the reconnect path"
    assert session_closes == 0, "no rotation's close was read as a lost session"
    assert len(written) > 500
    missing = written - set(seqs)
    duplicated = {s: n for s, n in seqs.items() if n > 1}
    assert not missing, f"{len(missing)} lost, e.g. {sorted(missing)[:10]}"
    assert not duplicated, f"{len(duplicated)} duplicated"
    assert set(seqs) <= written
    assert consumed.count(topics.dead_letter) == 0
