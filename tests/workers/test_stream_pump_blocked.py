"""The pump reports a socket's end at once, even while the sink holds it up."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from bridge.core.codec import codec_by_name
from bridge.core.retry import Backoff
from bridge.metrics import StreamMetrics
from bridge.workers.stream_pump import PumpOptions, StreamPump
from tests.workers.fakes import (
    FakeConnector,
    FakeHolder,
    GatedSink,
    LoopClock,
    now,
    until,
)
from tests.workers.test_stream_pump import TOPICS, position

pytestmark = pytest.mark.looptime


async def test_a_socket_that_ends_while_the_sink_is_full_is_reported_at_once() -> None:
    """Sink blocked for 200 s, socket dropped at 5 s: state and gauge follow in 1 s."""
    registry = CollectorRegistry()
    holder, connector, sink = FakeHolder(), FakeConnector(), GatedSink()
    pump = StreamPump(
        holder,
        connector,
        codec_by_name("traccar-json", max_frame_bytes=1_048_576),
        sink,
        topics=TOPICS,
        clock=LoopClock(),
        options=PumpOptions(reconnect=Backoff(initial=1.0, maximum=8.0, jitter=0.0)),
        metrics=StreamMetrics(registry),
    )
    task = asyncio.create_task(pump.run())
    try:
        await holder.issue(1)
        await until(lambda: connector.connections)
        conn = connector.connections[0]
        sink.open.clear()  # Kafka is down: the next send waits
        for seq in range(1, 6):
            conn.push(position(seq))
        await asyncio.sleep(5)
        assert pump.statistics().connected
        conn.drop(1011, "keepalive ping timeout")
        dropped = now()
        await until(lambda: not pump.statistics().connected, within=1)
        assert now() - dropped < 1
        assert registry.get_sample_value("bridge_ws_open_connections") == 0
        assert registry.get_sample_value("bridge_ws_state") == 0
        assert len(sink.records) == 0  # still held up by the sink
        await asyncio.sleep(195)
        sink.open.set()  # Kafka is back: the frames read before the close land
        await until(lambda: len(sink.records) == 5, within=5)
        await until(lambda: len(connector.connections) == 2, within=30)
    finally:
        await pump.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
