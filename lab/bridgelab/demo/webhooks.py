"""The demo's webhook leg: the emulator posts signed webhooks, the app publishes.

Kept apart from ``bridgelab/demo/flow.py`` so the stream demo reads on its own. The
receiver runs in-process on a free loopback port; the emulator posts one
webhook a second, cycling through all 14 kinds; at the end every webhookId
that got a 2xx must be in Kafka exactly once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer

from bridge.app_webhooks import WebhookApp
from bridge.config import REQUIREMENTS, Settings
from bridge.core.webhooks import WebhookTopics
from bridgelab.emulator import Emulator
from bridgelab.tansu import create_topics


@dataclass
class WebhookLeg:
    app: WebhookApp
    task: asyncio.Task[int]
    topics: WebhookTopics

    def line(self) -> str:
        """One line for the live view: what the receiver answered and published."""
        sample = self.app.registry.get_sample_value

        def n(name: str, labels: dict[str, str]) -> int:
            return int(sample(name, labels) or 0)

        accepted = n("bridge_webhook_requests_total", {"outcome": "accepted"})
        duplicate = n("bridge_webhook_requests_total", {"outcome": "duplicate"})
        unavailable = n("bridge_webhook_requests_total", {"outcome": "unavailable"})
        deliveries = n("bridge_webhook_records_published_total", {"family": "delivery"})
        tracking = n("bridge_webhook_records_published_total", {"family": "tracking"})
        return (
            f"webhooks: accepted {accepted} · duplicates {duplicate}"
            f" · 503 {unavailable} | published delivery {deliveries}"
            f" · tracking {tracking}"
        )


async def start_webhooks(
    emu: Emulator, bootstrap: str, suffix: str, stack: AsyncExitStack
) -> WebhookLeg:
    """Create the topics, start the receiver and the emulator's webhook ticker."""
    defaults = WebhookTopics()
    topics = WebhookTopics(
        deliveries=defaults.deliveries + suffix,
        tracking=defaults.tracking + suffix,
        dead_letter=defaults.dead_letter + suffix,
    )
    await create_topics(
        bootstrap, [topics.deliveries, topics.tracking, topics.dead_letter]
    )
    env = {
        "BRIDGE_SENDSTACK_BASE_URL": emu.base_url,
        "BRIDGE_SENDSTACK_APP_ID": emu.config.app_id,
        "BRIDGE_SENDSTACK_APP_SECRET": emu.config.app_secret,
        "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "BRIDGE_KAFKA_ENABLE_IDEMPOTENCE": "false",  # Tansu has no idempotent producer
        "BRIDGE_KAFKA_LINGER_MS": "0",
        "BRIDGE_WEBHOOK_HOST": "127.0.0.1",
        "BRIDGE_WEBHOOK_PORT": "0",
        "BRIDGE_WEBHOOK_TOPIC_DELIVERIES": topics.deliveries,
        "BRIDGE_WEBHOOK_TOPIC_TRACKING": topics.tracking,
        "BRIDGE_WEBHOOK_TOPIC_DEAD_LETTER": topics.dead_letter,
        "BRIDGE_OPS_HOST": "127.0.0.1",
        "BRIDGE_OPS_PORT": "0",
        "BRIDGE_SHUTDOWN_GRACE_SECONDS": "10",
    }
    app = WebhookApp(Settings.from_env(env, require=REQUIREMENTS["webhooks"]))
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop), name="webhooks")

    async def shutdown() -> None:
        stop.set()
        await asyncio.wait_for(task, timeout=20)

    stack.push_async_callback(shutdown)
    while not app.http.sockets_names:
        if task.done():
            raise RuntimeError("the webhook receiver did not start")
        await asyncio.sleep(0.05)
    emu.webhooks.start_ticker(app.webhook_url, every=1.0)
    stack.push_async_callback(emu.webhooks.stop_ticker)
    return WebhookLeg(app=app, task=task, topics=topics)


async def verify_webhooks(leg: WebhookLeg, emu: Emulator, bootstrap: str) -> str:
    """Stop posting, then compare acknowledged webhookIds with what Kafka holds."""
    await emu.webhooks.stop_ticker()
    acknowledged = emu.webhooks.delivered_ids()
    in_kafka = await _ce_ids(bootstrap, [leg.topics.deliveries, leg.topics.tracking])
    missing = acknowledged - set(in_kafka)
    duplicated = sum(1 for n in in_kafka.values() if n > 1)
    verdict = "verified" if not missing and not duplicated else "NOT verified"
    return (
        f"webhooks {verdict}: {len(acknowledged)} acknowledged, "
        f"{len(in_kafka)} in Kafka, {len(missing)} missing, {duplicated} duplicated"
    )


async def _ce_ids(
    bootstrap: str, topics: list[str], quiet: float = 1.0
) -> Counter[str]:
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    ids: Counter[str] = Counter()
    try:
        last_new = time.monotonic()
        while time.monotonic() - last_new < quiet:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    last_new = time.monotonic()
                    ce_id = dict(r.headers).get("ce_id")
                    if ce_id is not None:
                        ids[ce_id.decode()] += 1
    finally:
        await consumer.stop()
    return ids
