"""End to end: emulator → bridge → Tansu, checked by an independent consumer."""

from __future__ import annotations

import asyncio

import pytest

from bridgelab.emulator import Emulator, EmulatorConfig
from tests.e2e.harness import bridge_env, fresh_topics, running_bridge
from tests.e2e.verifier import read_all, wait_for
from tests.kafka_broker import Broker

pytestmark = pytest.mark.e2e


async def test_every_frame_lands_exactly_once_across_rotations_drops_and_half_open(
    broker: Broker,
) -> None:
    """Every item written lands once across 10 rotations, 3 drops and a half-open."""
    topics = await fresh_topics(broker.bootstrap)
    config = EmulatorConfig(
        session_ttl_seconds=3.0, devices=100, max_frames_per_second=20.0
    )
    async with Emulator(config) as emu:
        env = bridge_env(emu, broker.bootstrap, topics)
        async with running_bridge(env) as bridge:
            await wait_for(lambda: bridge.sample("bridge_ws_open_connections") >= 1, 10)
            for _ in range(3):
                await asyncio.sleep(2.5)
                assert await emu.drop() >= 1
            # Half-open right after a rotation, so keepalive (not the next
            # rotation) is what detects it.
            done = bridge.sample("bridge_session_rotations_total", {"outcome": "ok"})
            await wait_for(
                lambda: (
                    bridge.sample("bridge_session_rotations_total", {"outcome": "ok"})
                    > done
                ),
                10,
            )
            # A drop can land mid-rotation: the rotation still counts while the
            # bridge reconnects, so wait for a socket to make half-open.
            half_opened = 0
            deadline = asyncio.get_running_loop().time() + 10
            while not half_opened and asyncio.get_running_loop().time() < deadline:
                half_opened = await emu.half_open()
                if not half_opened:
                    await asyncio.sleep(0.05)
            assert half_opened >= 1
            await wait_for(
                lambda: (
                    bridge.sample(
                        "bridge_ws_disconnects_total", {"reason": "keepalive_timeout"}
                    )
                    >= 1
                ),
                10,
            )
            await wait_for(
                lambda: (
                    bridge.sample("bridge_session_rotations_total", {"outcome": "ok"})
                    >= 10
                ),
                60,
            )
            emu.pause()
            await asyncio.sleep(1.0)
            await wait_for(
                lambda: bridge.app.sink.statistics().in_flight_records == 0, 10
            )
            rotations = bridge.sample(
                "bridge_session_rotations_total", {"outcome": "ok"}
            )
            abnormal = bridge.sample(
                "bridge_ws_disconnects_total", {"reason": "abnormal"}
            )
            duplicates_dropped = bridge.sample("bridge_stream_duplicates_dropped_total")
        written = emu.written_seqs()
    consumed = await read_all(broker.bootstrap, topics.all)
    seqs = consumed.seqs(topics.data)
    assert rotations >= 10
    assert abnormal >= 3
    assert duplicates_dropped > 0, (
        "the rotation overlap should have produced duplicates"
    )
    assert len(written) > 500
    missing = written - set(seqs)
    duplicated = {s: n for s, n in seqs.items() if n > 1}
    unexpected = set(seqs) - written
    assert not missing, f"{len(missing)} lost, e.g. {sorted(missing)[:10]}"
    assert not duplicated, f"{len(duplicated)} duplicated, e.g. {list(duplicated)[:10]}"
    assert not unexpected
    assert consumed.count(topics.dead_letter) == 0
