"""Runs the real bridge (in-process) against the real emulator and broker."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from prometheus_client import CollectorRegistry

from bridge.app import StreamApp
from bridge.config import Settings
from bridgelab.emulator import Emulator
from bridgelab.tansu import create_topics
from tests.kafka_broker import unique_topic

A = TypeVar("A", bound="App")


@dataclass(frozen=True)
class StreamTopics:
    positions: str
    device_status: str
    events: str
    dead_letter: str

    @property
    def data(self) -> list[str]:
        return [self.positions, self.device_status, self.events]

    @property
    def all(self) -> list[str]:
        return [*self.data, self.dead_letter]


async def fresh_topics(bootstrap: str) -> StreamTopics:
    """Four new topics, created explicitly with 3 partitions each."""
    topics = StreamTopics(
        positions=unique_topic("pos"),
        device_status=unique_topic("dev"),
        events=unique_topic("evt"),
        dead_letter=unique_topic("dlq"),
    )
    await create_topics(bootstrap, topics.all)
    return topics


# One base for the run's journals, removed when the test process exits.
_JOURNALS = tempfile.TemporaryDirectory(prefix="bridge-journals-")


def journal_dir() -> str:
    """A fresh journal directory: each bridge its own, as each pod has."""
    return tempfile.mkdtemp(prefix="j-", dir=_JOURNALS.name)


def bridge_env(
    emu: Emulator, bootstrap: str, topics: StreamTopics, **overrides: str
) -> dict[str, str]:
    """Bridge settings for a fast test run: short timers, idempotence off (Tansu)."""
    env = {
        "BRIDGE_SENDSTACK_BASE_URL": emu.base_url,
        "BRIDGE_SENDSTACK_APP_ID": emu.config.app_id,
        "BRIDGE_SENDSTACK_APP_SECRET": emu.config.app_secret,
        "BRIDGE_STREAM_URL": emu.ws_url,
        "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "BRIDGE_KAFKA_ENABLE_IDEMPOTENCE": "false",
        "BRIDGE_KAFKA_TOPIC_POSITIONS": topics.positions,
        "BRIDGE_KAFKA_TOPIC_DEVICE_STATUS": topics.device_status,
        "BRIDGE_KAFKA_TOPIC_EVENTS": topics.events,
        "BRIDGE_KAFKA_TOPIC_DEAD_LETTER": topics.dead_letter,
        "BRIDGE_OPS_HOST": "127.0.0.1",
        "BRIDGE_OPS_PORT": "0",
        "BRIDGE_SESSION_REFRESH_BEFORE_SECONDS": "1.0",
        "BRIDGE_SESSION_REFRESH_JITTER_SECONDS": "0.2",
        "BRIDGE_AUTH_BACKOFF_INITIAL_SECONDS": "0.2",
        "BRIDGE_AUTH_BACKOFF_MAX_SECONDS": "1",
        "BRIDGE_STREAM_PING_INTERVAL_SECONDS": "0.5",
        "BRIDGE_STREAM_PING_TIMEOUT_SECONDS": "0.5",
        "BRIDGE_STREAM_ROTATION_OVERLAP_MAX_SECONDS": "1.0",
        "BRIDGE_STREAM_RECONNECT_INITIAL_SECONDS": "0.1",
        "BRIDGE_STREAM_RECONNECT_MAX_SECONDS": "1",
        "BRIDGE_PUBLISH_RETRY_INITIAL_SECONDS": "0.1",
        "BRIDGE_PUBLISH_RETRY_MAX_SECONDS": "1",
        "BRIDGE_SHUTDOWN_GRACE_SECONDS": "10",
        "BRIDGE_JOURNAL_DIR": journal_dir(),
    }
    env.update(overrides)
    return env


class App(Protocol):
    """What each subcommand's app offers tests: a registry and a run loop."""

    registry: CollectorRegistry

    async def run(self, stop: asyncio.Event) -> int: ...


@dataclass
class Running(Generic[A]):
    """An app running in this event loop, and its metrics."""

    app: A
    stop: asyncio.Event
    task: asyncio.Task[int]

    def sample(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        value = self.app.registry.get_sample_value(name, dict(labels or {}))
        return 0.0 if value is None else value


@asynccontextmanager
async def running(app: A) -> AsyncIterator[Running[A]]:
    """Run ``app`` until the block ends, then stop it and expect exit code 0."""
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop))
    try:
        yield Running(app=app, stop=stop, task=task)
    finally:
        stop.set()
        code = await asyncio.wait_for(task, timeout=30)
        assert code == 0


RunningBridge = Running[StreamApp]


def running_bridge(
    env: Mapping[str, str],
) -> AbstractAsyncContextManager[RunningBridge]:
    """Run ``StreamApp`` until the block ends, then shut it down gracefully."""
    return running(StreamApp(Settings.from_env(env), registry=CollectorRegistry()))
