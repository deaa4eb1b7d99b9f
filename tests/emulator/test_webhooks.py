"""The emulator's outgoing webhooks: payloads, signatures, retries, admin API.

Webhooks are POSTed over real HTTP to a recording server (our h11 server with
a handler that keeps what it got and answers what the test scripts).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import httpx
import orjson
import pytest

from bridge.adapters.http_server import HttpRequest, HttpResponse, HttpServer
from bridgelab.emulator import Emulator, EmulatorConfig
from bridgelab.emulator.webhooks import (
    WEBHOOK_KINDS,
    PayloadFactory,
    RetryPolicy,
    SignScheme,
    WebhookOutbox,
    load_webhook_kinds,
)

SECRET = "emulator-webhook-secret"
FAST = RetryPolicy(max_attempts=3, initial_seconds=0.01, max_seconds=0.02)


class Recorder:
    """Keeps every request; answers the scripted statuses, then 200."""

    def __init__(self) -> None:
        self.requests: list[HttpRequest] = []
        self.script: list[int] = []

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        self.requests.append(request)
        status = self.script.pop(0) if self.script else 200
        return HttpResponse.json(status, {"ok": status == 200})


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, str]]:
    """A recording HTTP server and its webhook URL."""
    handler = Recorder()
    async with HttpServer(handler, "127.0.0.1", 0) as server:
        yield handler, f"{server.url}/hooks"


def hmac_hex(message: bytes) -> str:
    return hmac.new(SECRET.encode(), message, hashlib.sha256).hexdigest()


def test_every_kind_has_a_template_with_event_type_and_webhook_id() -> None:
    """The fixtures hold the 14 kinds; only order.new is marked documented."""
    kinds = load_webhook_kinds()
    assert set(kinds) == set(WEBHOOK_KINDS)
    assert [k for k in kinds.values() if k.documented] == [kinds["new_delivery"]]
    assert kinds["new_delivery"].event_type == "order.new"
    assert Counter(k.family for k in kinds.values()) == {"delivery": 8, "tracking": 6}


def test_payloads_are_filled_with_fresh_ids_and_reused_bookings() -> None:
    """Each payload gets a new webhookId; bookings and trackers repeat; no {…} left."""
    factory = PayloadFactory(load_webhook_kinds(), seed=3, bookings=2, trackers=2)
    payloads = [factory.build(kind) for kind in WEBHOOK_KINDS * 3]
    ids = [p["webhookId"] for p in payloads]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 24 and int(i, 16) >= 0 for i in ids)
    batch_ids = {p["batchId"] for p in payloads if "batchId" in p}
    tracker_ids = {p["trackerId"] for p in payloads if "trackerId" in p}
    assert len(batch_ids) <= 2
    assert len(tracker_ids) <= 2
    assert re.search(r"\{[A-Za-z]+\}", json.dumps(payloads)) is None
    new = payloads[0]
    assert new["drops"][0]["batchId"] == new["batchId"]
    assert new["trackingUrl"].endswith(f"batchId={new['batchId']}")


def test_the_same_seed_gives_the_same_payloads() -> None:
    """Payloads are repeatable for a seed and a clock."""

    def build() -> list[dict[str, object]]:
        factory = PayloadFactory(load_webhook_kinds(), seed=9, clock=lambda: 1e9)
        return [factory.build(k) for k in WEBHOOK_KINDS]

    assert build() == build()


def test_signatures_follow_both_documented_schemes() -> None:
    """webhook_id signs the quoted id, payload signs the body bytes, none sends none."""
    outbox = WebhookOutbox(SECRET)
    current = outbox.prepare("new_delivery")
    legacy = outbox.prepare("overspeed", scheme="payload")
    unsigned = outbox.prepare("no_signal", scheme="none")
    quoted = f'"{current.webhook_id}"'.encode()
    assert len(quoted) == 26
    assert current.headers["x-sendstack-signature"] == hmac_hex(quoted)
    assert legacy.headers["x-sendstack-signature"] == hmac_hex(legacy.body)
    assert "x-sendstack-signature" not in unsigned.headers
    assert SECRET not in repr(outbox)


def test_bodies_are_compact_json_like_json_stringify() -> None:
    """The body is compact (no spaces after separators) and keeps non-ASCII raw."""
    outbox = WebhookOutbox(SECRET)
    webhook = outbox.prepare("new_delivery")
    assert b'": ' not in webhook.body
    assert json.loads(webhook.body) == webhook.payload
    assert (
        webhook.body
        == json.dumps(
            webhook.payload, separators=(",", ":"), ensure_ascii=False
        ).encode()
    )


@pytest.mark.parametrize("scheme", ["webhook_id", "payload"])
def test_tampered_webhooks_fail_their_own_signature(scheme: SignScheme) -> None:
    """A tampered body no longer matches its signature under either scheme."""
    outbox = WebhookOutbox(SECRET)
    webhook = outbox.prepare("new_delivery", scheme=scheme, tamper=True)
    signature = webhook.headers["x-sendstack-signature"]
    assert webhook.tampered
    assert orjson.loads(webhook.body)["tampered"] is True
    assert signature != hmac_hex(webhook.body)
    assert signature != hmac_hex(json.dumps(webhook.webhook_id).encode())


def test_prepare_refuses_unknown_kinds_and_schemes() -> None:
    """Unknown kinds and schemes are errors, not silent defaults."""
    outbox = WebhookOutbox(SECRET)
    with pytest.raises(ValueError, match="kind"):
        outbox.prepare("order_cancelled")
    with pytest.raises(ValueError, match="scheme"):
        outbox.prepare("new_delivery", scheme=cast(SignScheme, "md5"))


async def test_delivery_retries_non_2xx_with_the_very_same_request(
    recorder: tuple[Recorder, str],
) -> None:
    """503 and 401 are retried with the same body and signature until a 2xx."""
    handler, url = recorder
    handler.script = [503, 401]
    outbox = WebhookOutbox(SECRET)
    try:
        (delivery,) = await outbox.send(url, "pickup_attempt", retry=FAST)
    finally:
        await outbox.close()
    assert delivery.statuses == [503, 401, 200]
    assert delivery.delivered
    assert len(handler.requests) == 3
    assert len({r.body for r in handler.requests}) == 1
    assert {r.headers["x-sendstack-signature"] for r in handler.requests} == {
        delivery.webhook.headers["x-sendstack-signature"]
    }
    assert {r.headers["content-type"] for r in handler.requests} == {"application/json"}
    assert outbox.stats()["statuses"] == {"503": 1, "401": 1, "200": 1}


async def test_delivery_gives_up_after_max_attempts(
    recorder: tuple[Recorder, str],
) -> None:
    """A receiver that keeps failing sees max_attempts tries, then the outbox stops."""
    handler, url = recorder
    handler.script = [500] * 10
    outbox = WebhookOutbox(SECRET)
    try:
        (delivery,) = await outbox.send(url, retry=FAST)
    finally:
        await outbox.close()
    assert delivery.statuses == [500, 500, 500]
    assert not delivery.delivered
    assert outbox.stats()["failed"] == 1
    assert outbox.delivered_ids() == set()


async def test_connection_errors_are_attempts_too() -> None:
    """Nothing listening: each attempt records the error, none raises."""
    outbox = WebhookOutbox(SECRET)
    try:
        (delivery,) = await outbox.send("http://127.0.0.1:9/hooks", retry=FAST)
    finally:
        await outbox.close()
    assert delivery.statuses == [None, None, None]
    assert delivery.info()["errors"] == ["ConnectError"] * 3


async def test_duplicate_sends_the_same_webhook_twice(
    recorder: tuple[Recorder, str],
) -> None:
    """duplicate=True redelivers each webhook once its first delivery ended."""
    handler, url = recorder
    outbox = WebhookOutbox(SECRET)
    try:
        deliveries = await outbox.send(url, "all", duplicate=True, concurrency=4)
    finally:
        await outbox.close()
    assert len(deliveries) == 28
    ids = Counter(orjson.loads(r.body)["webhookId"] for r in handler.requests)
    assert len(ids) == 14
    assert set(ids.values()) == {2}
    assert outbox.delivered_ids() == set(ids)


async def test_admin_api_sends_webhooks_and_reports_them(
    recorder: tuple[Recorder, str],
) -> None:
    """POST /admin/webhooks/send delivers; GET /admin/webhooks shows the log."""
    handler, url = recorder
    async with (
        Emulator(EmulatorConfig(app_secret=SECRET)) as emu,
        httpx.AsyncClient() as http,
    ):
        sent = await http.post(
            f"{emu.admin_url}/webhooks/send",
            json={"url": url, "kind": "geofence_out", "count": 2, "scheme": "payload"},
        )
        shown = await http.get(f"{emu.admin_url}/webhooks", params={"limit": "1"})
        stats = emu.stats()["webhooks"]
    assert sent.status_code == 200
    body = sent.json()
    assert (body["delivered"], body["failed"]) == (2, 0)
    assert {d["eventType"] for d in body["deliveries"]} == {"GEOFENCE_OUT"}
    assert len(handler.requests) == 2
    request = handler.requests[0]
    assert request.headers["x-sendstack-signature"] == hmac_hex(request.body)
    listing = shown.json()
    assert listing["deliveries"] == 2
    assert len(listing["recent"]) == 1
    assert stats["delivered"] == 2


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"url": "ftp://x"},
        {"url": "http://x", "kind": "nope"},
        {"url": "http://x", "count": -1},
        {"url": "http://x", "count": True},
        {"url": "http://x", "scheme": "md5"},
        {"url": "http://x", "tamper": "yes"},
        {"url": "http://x", "max_attempts": 0},
    ],
)
async def test_admin_api_refuses_bad_webhook_requests(body: dict[str, object]) -> None:
    """Bad admin input is a 400 naming the field, and nothing is sent."""
    async with Emulator(EmulatorConfig()) as emu, httpx.AsyncClient() as http:
        reply = await http.post(f"{emu.admin_url}/webhooks/send", json=body)
        sent = emu.stats()["webhooks"]["deliveries"]
    assert reply.status_code == 400
    assert reply.json()["ok"] is False
    assert sent == 0


async def test_ticker_posts_one_webhook_per_interval_until_stopped(
    recorder: tuple[Recorder, str],
) -> None:
    """The admin ticker cycles through the kinds at the given pace, then stops."""
    handler, url = recorder
    async with Emulator(EmulatorConfig()) as emu, httpx.AsyncClient() as http:
        started = await http.post(
            f"{emu.admin_url}/webhooks/ticker", json={"url": url, "every": 0.05}
        )
        again = await http.post(
            f"{emu.admin_url}/webhooks/ticker", json={"url": url, "every": 0.05}
        )
        await asyncio.sleep(0.5)
        stopped = await http.post(
            f"{emu.admin_url}/webhooks/ticker", json={"stop": True}
        )
        count = len(handler.requests)
        await asyncio.sleep(0.2)
    assert started.json() == {"ok": True, "ticker": True}
    assert again.status_code == 400
    assert stopped.json() == {"ok": True, "ticker": False}
    assert 5 <= count <= 12
    assert len(handler.requests) == count
    kinds = [orjson.loads(r.body)["eventType"] for r in handler.requests[:3]]
    assert kinds == ["order.new", "order.status.updated", "order.internal_note.created"]


def test_replacement_fixtures_are_checked(tmp_path: Path) -> None:
    """A fixture file missing kinds, or a template without webhookId, is refused."""
    spec = {"family": "delivery", "eventType": "order.new"}
    partial = tmp_path / "partial.json"
    partial.write_text(
        json.dumps({"kinds": {"new_delivery": {**spec, "template": {}}}})
    )
    with pytest.raises(ValueError, match="lack the kinds"):
        load_webhook_kinds(str(partial))
    kinds = {k: {**spec, "template": {"eventType": "x"}} for k in WEBHOOK_KINDS}
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"kinds": kinds}))
    with pytest.raises(ValueError, match="webhookId"):
        load_webhook_kinds(str(broken))
