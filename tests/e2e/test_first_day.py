"""A new user's first day with a wire unlike our guess, end to end.

The emulator speaks the ``typed-object`` shape over Socket.IO. As a user
would: the bridge on the defaults, ``probe`` names the mismatch; with the
transport switched, everything goes to the dead-letter topic and nothing is
lost; a capture; the example mapping gives 0 dead letters in ``mapping try``;
the stream restarts with it; ``redrive`` runs twice. Then the topics hold
every item the emulator wrote to the bridge's sockets exactly once (by its
ledger), live records in per-device order, redriven ones with the ce_ids
they would have had live. (The capture lasts 3 s here instead of 30 s: the
same steps, shorter.)
"""

from __future__ import annotations

import asyncio
import io
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from bridge.app_capture import capture
from bridge.app_mapping import trial
from bridge.app_probe import probe
from bridge.app_redrive import RedriveOptions, redrive
from bridge.config import REQUIREMENTS, Settings
from bridge.core.records import Topics
from bridge.core.redrive import RedriveFilter
from bridgelab.emulator import Emulator, EmulatorConfig
from tests.e2e.harness import bridge_env, fresh_topics, running_bridge
from tests.e2e.verifier import read_all, wait_for
from tests.kafka_broker import Broker

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "typed-object-socketio.yaml"


def seq_of(value: dict[str, Any]) -> int:
    """The emulator's sequence number, wherever the mapping kept it."""
    return int(value["extra"]["meta"]["seq"])


async def test_a_socketio_wire_of_another_shape_becomes_a_working_stream(
    broker: Broker, tmp_path: Path
) -> None:
    """probe, DLQ, capture, mapping try, restart, redrive x2: every item once."""
    topics = await fresh_topics(broker.bootstrap)
    config = EmulatorConfig(
        wire_shape="typed-object",
        transport="socketio",
        devices=20,
        max_frames_per_second=20.0,
        events_ratio=0.2,
        status_ratio=0.1,
    )
    async with Emulator(config) as emu:
        plain_url = emu.ws_url.split("/socket.io/")[0] + config.ws_path
        env = bridge_env(emu, broker.bootstrap, topics, BRIDGE_STREAM_URL=plain_url)

        # 1. probe on the defaults: the path is wrong; at the Socket.IO
        # endpoint, a plain socket sees Engine.IO packets.
        report = await probe(
            Settings.from_env(env, require=REQUIREMENTS["probe"]),
            seconds=2,
            max_frames=3,
        )
        assert not report.usable
        assert any("the path is wrong" in s for s in report.suggestions)
        env["BRIDGE_STREAM_URL"] = emu.ws_url
        report = await probe(
            Settings.from_env(env, require=REQUIREMENTS["probe"]),
            seconds=2,
            max_frames=3,
        )
        assert any("BRIDGE_STREAM_TRANSPORT=socketio" in s for s in report.suggestions)

        # 2. transport switched: events arrive, the shipped mapping does not
        # understand them, so they all go to the dead-letter topic.
        env["BRIDGE_STREAM_TRANSPORT"] = "socketio"
        report = await probe(
            Settings.from_env(env, require=REQUIREMENTS["probe"]),
            seconds=3,
            max_frames=3,
        )
        assert any("mapping try" in s for s in report.suggestions), report.text()
        before = {c["id"] for c in emu.connections()}
        out = tmp_path / "wire.jsonl"
        async with running_bridge(env) as bridge:
            await wait_for(lambda: bridge.sample("bridge_ws_open_connections") >= 1, 10)
            stream_connections = {c["id"] for c in emu.connections()} - before
            # 3. meanwhile, in another terminal: a capture.
            summary = await capture(
                Settings.from_env(env, require=REQUIREMENTS["capture"]),
                duration=3.0,
                max_frames=10_000,
                out=out,
            )
            assert summary.frames > 20
            captured = (
                {c["id"] for c in emu.connections()} - before - stream_connections
            )
            await asyncio.sleep(1.0)
            # Quiet before the stop: what is written to a socket the bridge is
            # closing is lost by any client, and not what this test is about.
            emu.pause()
            await asyncio.sleep(0.5)
        first_run = await read_all(broker.bootstrap, topics.all)
        assert sum(first_run.count(t) for t in topics.data) == 0
        assert first_run.count(topics.dead_letter) > 50

        # 4. the example mapping on the capture: 0 dead letters.
        printed = io.StringIO()
        code = trial(
            str(EXAMPLE),
            out,
            printed,
            printed,
            topics=Topics(),
            max_frame_bytes=1_048_576,
            quiet=True,
        )
        assert code == 0, printed.getvalue()
        assert "0 dead letter(s)" in printed.getvalue()

        # 5. the stream restarts with the mapping.
        env["BRIDGE_STREAM_MAPPING_FILE"] = str(EXAMPLE)
        restarted_at = len(emu.connections())
        emu.resume()
        async with running_bridge(env) as bridge:
            await wait_for(lambda: bridge.sample("bridge_ws_open_connections") >= 1, 10)
            await asyncio.sleep(3.0)
            emu.pause()
            await asyncio.sleep(0.5)
        bridge_connections = {c["id"] for c in emu.connections()} - captured - before
        assert len(emu.connections()) > restarted_at
        written: set[int] = set()
        per_connection = {c: emu.written_seqs(c) for c in bridge_connections}
        for seqs_of_connection in per_connection.values():
            written |= seqs_of_connection
        phases = (sorted(stream_connections), sorted(captured), emu.connections())

    # 6. redrive, twice.
    options = RedriveOptions(RedriveFilter(), group=None, reset=False, dry_run=False)
    first = await redrive(Settings.from_env(env), options, io.StringIO())
    second = await redrive(Settings.from_env(env), options, io.StringIO())
    assert first.published > 50
    assert first.still_failing == []
    assert second.published == 0

    consumed = await read_all(broker.bootstrap, topics.all)
    seqs: dict[int, int] = defaultdict(int)
    live: dict[bytes, list[int]] = defaultdict(list)
    for topic in topics.data:
        for record in consumed.records.get(topic, []):
            value = orjson.loads(record.value or b"")
            seq = seq_of(value)
            seqs[seq] += 1
            ce_id = dict(record.headers)["ce_id"]
            if topic == topics.positions:
                assert ce_id == f"position:{value['positionId']}".encode()
                live[record.key or b""].append(seq)
            elif topic == topics.events:
                assert ce_id == f"event:{value['eventId']}".encode()
    missing = written - set(seqs)
    where = {s: [c for c in per_connection if s in per_connection[c]] for s in missing}
    assert not missing, (sorted(missing), where, phases)
    assert set(seqs) == written
    assert [s for s, n in seqs.items() if n != 1] == []
    # Per device, positions come in the emulator's order: live first, then
    # the redriven ones (each group in order, and the redriven are older).
    for device_seqs in live.values():
        runs = [device_seqs]
        drops = [
            i for i in range(1, len(device_seqs)) if device_seqs[i] < device_seqs[i - 1]
        ]
        assert len(drops) <= 1
        if drops:
            runs = [device_seqs[: drops[0]], device_seqs[drops[0] :]]
        assert all(run == sorted(run) for run in runs)
