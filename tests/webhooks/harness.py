"""Runs the real webhook receiver (in-process) against the real broker and emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from bridge.app_webhooks import WebhookApp
from bridge.config import REQUIREMENTS, Settings
from bridgelab.emulator import Emulator
from bridgelab.tansu import create_topics
from tests.e2e.harness import Running, running
from tests.e2e.verifier import wait_for
from tests.kafka_broker import unique_topic


@dataclass(frozen=True)
class WebhookTopicNames:
    deliveries: str
    tracking: str
    dead_letter: str

    @property
    def all(self) -> list[str]:
        return [self.deliveries, self.tracking, self.dead_letter]


async def fresh_webhook_topics(bootstrap: str) -> WebhookTopicNames:
    """Three new topics, created explicitly with 3 partitions each."""
    topics = WebhookTopicNames(
        deliveries=unique_topic("whd"),
        tracking=unique_topic("wht"),
        dead_letter=unique_topic("whq"),
    )
    await create_topics(bootstrap, topics.all)
    return topics


def webhook_env(
    emu: Emulator, bootstrap: str, topics: WebhookTopicNames, **overrides: str
) -> dict[str, str]:
    """Receiver settings for a fast test run: free ports, idempotence off (Tansu)."""
    env = {
        "BRIDGE_SENDSTACK_BASE_URL": emu.base_url,
        "BRIDGE_SENDSTACK_APP_ID": emu.config.app_id,
        "BRIDGE_SENDSTACK_APP_SECRET": emu.config.app_secret,
        "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "BRIDGE_KAFKA_ENABLE_IDEMPOTENCE": "false",
        "BRIDGE_WEBHOOK_HOST": "127.0.0.1",
        "BRIDGE_WEBHOOK_PORT": "0",
        "BRIDGE_WEBHOOK_TOPIC_DELIVERIES": topics.deliveries,
        "BRIDGE_WEBHOOK_TOPIC_TRACKING": topics.tracking,
        "BRIDGE_WEBHOOK_TOPIC_DEAD_LETTER": topics.dead_letter,
        "BRIDGE_OPS_HOST": "127.0.0.1",
        "BRIDGE_OPS_PORT": "0",
        "BRIDGE_PUBLISH_RETRY_INITIAL_SECONDS": "0.1",
        "BRIDGE_PUBLISH_RETRY_MAX_SECONDS": "0.5",
        "BRIDGE_SHUTDOWN_GRACE_SECONDS": "10",
    }
    env.update(overrides)
    return env


class RunningWebhooks(Running[WebhookApp]):
    """A running ``WebhookApp`` with shortcuts for its URLs and outcomes."""

    @property
    def url(self) -> str:
        return self.app.webhook_url

    @property
    def ops_url(self) -> str:
        return f"http://127.0.0.1:{self.app.ops.port}"

    def outcome(self, outcome: str) -> float:
        return self.sample("bridge_webhook_requests_total", {"outcome": outcome})


def settings_of(env: Mapping[str, str]) -> Settings:
    """Settings as ``sendstack-bridge webhooks`` reads them."""
    return Settings.from_env(env, require=REQUIREMENTS["webhooks"])


@asynccontextmanager
async def running_webhooks(
    env: Mapping[str, str], *, wait_connected: bool = True
) -> AsyncIterator[RunningWebhooks]:
    """Run ``WebhookApp`` until the block ends, then shut it down gracefully."""
    app = WebhookApp(settings_of(env), registry=CollectorRegistry())
    async with running(app) as run:
        await wait_for(lambda: bool(app.http.sockets_names) or run.task.done(), 10)
        if run.task.done():
            await run.task  # surfaces the startup error
        if wait_connected:
            await wait_for(app.sink.is_connected, 20)
        yield RunningWebhooks(app=app, stop=run.stop, task=run.task)
