"""The stream's hot standby part (``HotStandby``) with fencing, on the real
broker's group protocol, with a fake ``Fencing`` and fake sinks through ports."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from bridge.adapters.clock import SystemClock
from bridge.config import Settings
from bridge.stream_standby import HotStandby
from bridgelab.tansu import create_topics
from tests.e2e.verifier import wait_for
from tests.kafka_broker import Broker, unique_topic
from tests.workers.fakes import FakeSink

ACCOUNTS = ("alpha", "beta")


class RecordedFencing:
    """``Fencing``: what was claimed and disowned, in order."""

    def __init__(self) -> None:
        self.claimed: list[str] = []
        self.disowned: list[str] = []

    async def claim(self, account: str, within: float) -> bool:
        self.claimed.append(account)
        return True

    def disown(self, account: str) -> None:
        self.disowned.append(account)


def _standby(broker: Broker, topic: str, group: str) -> HotStandby:
    settings = Settings.from_env(
        {
            "BRIDGE_SENDSTACK_APP_ID": "1",
            "BRIDGE_SENDSTACK_APP_SECRET": "s",
            "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "BRIDGE_KAFKA_ENABLE_IDEMPOTENCE": "false",
            "BRIDGE_HA_ENABLED": "true",
            "BRIDGE_HA_COORDINATION_TOPIC": topic,
            "BRIDGE_HA_GROUP_ID": group,
            "BRIDGE_HA_SESSION_TIMEOUT_MS": "6000" if broker.external else "3000",
            "BRIDGE_HA_HEARTBEAT_INTERVAL_MS": "500",
            "BRIDGE_HA_BUFFER_SECONDS": "30",
            "BRIDGE_HA_TRANSACTIONAL_ID": "bridge",
        }
    )
    assert settings.kafka is not None
    return HotStandby(
        settings.ha,
        settings.kafka,
        ACCOUNTS,
        FakeSink(),
        CollectorRegistry(),
        SystemClock(),
        socket_open=lambda _account: True,
        fencing=RecordedFencing(),
    )


@contextlib.asynccontextmanager
async def _running(standby: HotStandby) -> AsyncIterator[None]:
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(worker(), name=name)
        for name, worker in standby.workers(stop).items()
    ]
    try:
        yield
    finally:
        stop.set()
        await standby.hand_over(5.0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await standby.close()


def _fencing(standby: HotStandby) -> RecordedFencing:
    assert isinstance(standby.fencing, RecordedFencing)
    return standby.fencing


def _leads(standby: HotStandby) -> set[str]:
    return {a for a, role in standby.roles_now().items() if role == "leading"}


@pytest.mark.e2e
async def test_takeovers_claim_and_an_account_led_elsewhere_is_disowned(
    broker: Broker,
) -> None:
    """The first replica claims both accounts as it takes them over and the
    group confirms it leads them; once a second replica takes its share, that
    account is claimed there, disowned here, and no longer confirmed here."""
    topic, group = unique_topic("coord"), unique_topic("group")
    await create_topics(broker.bootstrap, [topic], partitions=len(ACCOUNTS))
    first, second = _standby(broker, topic, group), _standby(broker, topic, group)
    async with _running(first):
        await wait_for(lambda: _leads(first) == set(ACCOUNTS), 30)
        assert sorted(_fencing(first).claimed) == sorted(ACCOUNTS)
        assert all(first.confirmed(a) for a in ACCOUNTS)
        assert _fencing(first).disowned == []
        async with _running(second):
            await wait_for(lambda: len(_leads(second)) == 1, 60)
            await wait_for(lambda: len(_leads(first)) == 1, 30)
            (moved,) = _leads(second)
            assert _fencing(second).claimed == [moved]
            await wait_for(lambda: moved in _fencing(first).disowned, 10)
            assert not first.confirmed(moved)
            assert second.confirmed(moved)
            (kept,) = _leads(first)
            # Never disowned: not in the rebalances, where both came back.
            assert kept not in _fencing(first).disowned
            assert _fencing(first).disowned.count(moved) == 1
