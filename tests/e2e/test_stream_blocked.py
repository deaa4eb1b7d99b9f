"""Kafka frozen, sink full: the socket's end is reported when it happens.

The journal (on by default) keeps the pump reading through a Kafka outage;
with it off, or full with ``when_full=block``, the pump stops reading, and
that is the case here.
"""

from __future__ import annotations

import time

import pytest

from bridgelab.emulator import Emulator, EmulatorConfig
from tests.e2e.harness import bridge_env, fresh_topics, running_bridge
from tests.e2e.verifier import wait_for
from tests.kafka_broker import Broker

pytestmark = pytest.mark.e2e


async def test_ws_state_follows_a_socket_closed_while_kafka_is_paused(
    broker: Broker,
) -> None:
    """Journal off, buffer full, keepalive gives up: bridge_ws_state says so within
    the timeout."""
    if broker.external:
        pytest.skip("pausing needs the broker process")
    topics = await fresh_topics(broker.bootstrap)
    config = EmulatorConfig(devices=200, max_frames_per_second=50.0)
    async with Emulator(config) as emu:
        env = bridge_env(
            emu,
            broker.bootstrap,
            topics,
            BRIDGE_BUFFER_MAX_RECORDS="200",
            BRIDGE_JOURNAL_ENABLED="false",
            BRIDGE_KAFKA_REQUEST_TIMEOUT_MS="2000",
        )
        async with running_bridge(env) as bridge:
            await wait_for(lambda: bridge.sample("bridge_ws_open_connections") >= 1, 10)
            broker.pause()
            try:
                # The buffer fills, the pump stops reading, pongs queue unread
                # and websockets' keepalive (0.5 s + 0.5 s here) closes the socket.
                await wait_for(
                    lambda: bridge.sample("bridge_buffer_records") >= 200, 10
                )
                full_at = time.monotonic()
                await wait_for(lambda: bridge.sample("bridge_ws_state") == 0, 10)
                noticed = time.monotonic() - full_at
            finally:
                broker.resume()
            # Ping interval + timeout + close timeout (0.5 s each) + slack.
            assert noticed < 3.0
            await wait_for(lambda: bridge.sample("bridge_ws_open_connections") >= 1, 20)
