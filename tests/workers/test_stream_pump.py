"""The stream pump, driven through its ports in virtual time (looptime)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from bridge.core.codec import codec_by_name
from bridge.core.records import Topics
from bridge.core.retry import Backoff
from bridge.errors import UpstreamUnavailable
from bridge.metrics import StreamMetrics
from bridge.workers.stream_pump import PumpOptions, StreamPump
from tests.workers.fakes import (
    FakeConnector,
    FakeHolder,
    FakeSink,
    LoopClock,
    now,
    until,
)

pytestmark = pytest.mark.looptime

TOPICS = Topics(positions="pos", device_status="dev", events="evt", dead_letter="dlq")


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
    connector: FakeConnector
    sink: FakeSink

    def seqs(self) -> list[int]:
        return [
            orjson.loads(r.value)["attributes"]["seq"]
            for r in self.sink.records
            if r.topic == "pos"
        ]


@asynccontextmanager
async def running_pump(**options: Any) -> AsyncIterator[Rig]:
    holder, connector, sink = FakeHolder(), FakeConnector(), FakeSink()
    opts = {"reconnect": Backoff(initial=1.0, maximum=8.0, jitter=0.0), **options}
    pump = StreamPump(
        holder,
        connector,
        codec_by_name("traccar-json", max_frame_bytes=1_048_576),
        sink,
        topics=TOPICS,
        clock=LoopClock(),
        options=PumpOptions(**opts),
        metrics=StreamMetrics(CollectorRegistry()),
    )
    task = asyncio.create_task(pump.run())
    try:
        yield Rig(pump, holder, connector, sink)
    finally:
        await pump.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_reconnects_follow_the_backoff_and_restart_after_a_healthy_link() -> None:
    """Failed opens wait 1, 2, 4, 8, 8 s; a link that lived 10 s restarts at 1 s."""
    async with running_pump() as rig:
        rig.connector.failures = [UpstreamUnavailable("refused")] * 5
        await rig.holder.issue(1)
        await until(lambda: len(rig.connector.connections) == 1)
        at = rig.connector.attempts
        gaps = [b - a for a, b in itertools.pairwise(at)]
        assert gaps == pytest.approx([1.0, 2.0, 4.0, 8.0, 8.0], abs=0.05)
        await asyncio.sleep(12)  # healthy for longer than 10 s
        rig.connector.connections[0].drop()
        await until(lambda: len(rig.connector.connections) == 2)
        assert rig.connector.attempts[-1] - rig.connector.attempts[-2] >= 12
        assert now() - rig.connector.connections[1].opened_at < 0.1
        last_gap = rig.connector.connections[1].opened_at - (
            rig.connector.attempts[-2] + 12
        )
        assert last_gap == pytest.approx(1.0, abs=0.1)


async def test_a_silent_socket_is_closed_as_stale_and_replaced() -> None:
    """No frame for stale_after seconds: closed with 4000, then a new socket."""
    async with running_pump(stale_after=30.0) as rig:
        await rig.holder.issue(1)
        await until(lambda: rig.connector.connections)
        first = rig.connector.connections[0]
        first.push(position(1))
        await asyncio.sleep(20)
        assert first.closed is None, "20 s of silence is not yet stale"
        await until(lambda: first.closed is not None, within=30)
        assert first.closed == (4000, "stale")
        assert 30 <= now() - first.opened_at <= 30 + 30 / 4 + 0.5
        await until(lambda: len(rig.connector.connections) == 2)
        assert rig.seqs() == [1]


async def test_rotation_opens_the_new_socket_first_and_loses_nothing() -> None:
    """A newer session: the new socket opens before the old closes; each item once."""
    async with running_pump() as rig:
        await rig.holder.issue(1)
        await until(lambda: rig.connector.connections)
        old = rig.connector.connections[0]
        for seq in (1, 2, 3):
            old.push(position(seq))
        await until(lambda: rig.seqs() == [1, 2, 3])
        await rig.holder.issue(2)
        await until(lambda: len(rig.connector.connections) == 2)
        new = rig.connector.connections[1]
        assert old.closed is None, "make-before-break: the old socket is still open"
        assert new.token == "token-2"
        # Both sockets carry 4 and 5 (the overlap); the new one goes on alone.
        new.push(position(4))
        old.push(position(4))
        old.push(position(5))
        new.push(position(5))
        new.push(position(6))
        await until(lambda: old.closed is not None)
        await until(lambda: rig.seqs()[-1:] == [6])
        assert rig.seqs() == [1, 2, 3, 4, 5, 6]
        assert old.closed == (1000, "session rotated")


async def test_a_close_that_says_the_session_is_bad_reports_it_to_the_holder() -> None:
    """A 4001 close tells the session holder, which fetches a new session."""
    async with running_pump() as rig:
        await rig.holder.issue(1)
        await until(lambda: rig.connector.connections)
        rig.connector.connections[0].drop(4001, "session expired")
        await until(lambda: rig.holder.rejected == [1])


async def test_an_accounts_records_and_dead_letters_say_whose_they_are() -> None:
    """With an account set, every record the pump makes, a dead letter
    included, carries the bridge_account header and the given ce_source."""
    source = "/sendstack/accounts/beta/tracking"
    async with running_pump(account="beta", source=source) as rig:
        await rig.holder.issue(1)
        await until(lambda: rig.connector.connections)
        socket = rig.connector.connections[0]
        socket.push(position(1))
        socket.push(b"{not json")
        await until(lambda: len(rig.sink.records) == 2)
    data, letter = rig.sink.records
    assert letter.topic == "dlq"
    assert dict(data.headers)["ce_source"] == source.encode()
    assert dict(data.headers)["bridge_account"] == b"beta"
    assert dict(letter.headers)["bridge_account"] == b"beta"
