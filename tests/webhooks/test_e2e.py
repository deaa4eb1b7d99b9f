"""End to end: the emulator posts signed webhooks, the receiver publishes to Kafka.

Real broker (Tansu, or ``BRIDGE_TEST_KAFKA_BOOTSTRAP``), real emulator, real
HTTP; an independent consumer reads what was written.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson
import pytest

from bridge.logs import configure_logging
from bridgelab.emulator import Emulator, EmulatorConfig
from bridgelab.emulator.webhooks import (
    WEBHOOK_KINDS,
    RetryPolicy,
    SignScheme,
    WebhookDelivery,
)
from tests.core.test_schemas import errors, load
from tests.e2e.verifier import read_all, wait_for
from tests.kafka_broker import Broker
from tests.webhooks.harness import (
    fresh_webhook_topics,
    running_webhooks,
    webhook_env,
)

pytestmark = pytest.mark.e2e

ONCE = RetryPolicy(max_attempts=1)
HEADERS_SCHEMA = load("webhook_headers.v1.json")
VALUE_SCHEMAS = {
    "urn:sendstack-bridge:schema:webhook_delivery:v1": load("webhook_delivery.v1.json"),
    "urn:sendstack-bridge:schema:webhook_tracking:v1": load("webhook_tracking.v1.json"),
}
DLQ_HEADERS = load("dead_letter_headers.v1.json")


def hmac_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def statuses(deliveries: list[WebhookDelivery]) -> Counter[int | None]:
    return Counter(status for d in deliveries for status in d.statuses)


async def test_all_fourteen_kinds_land_once_in_their_topics_under_the_contract(
    broker: Broker,
) -> None:
    """Every kind, each delivered twice, is one record in its family's topic."""
    topics = await fresh_webhook_topics(broker.bootstrap)
    async with Emulator(EmulatorConfig()) as emu:
        env = webhook_env(emu, broker.bootstrap, topics)
        async with running_webhooks(env) as hooks:
            deliveries = await emu.send_webhooks(
                hooks.url, "all", 2, duplicate=True, retry=ONCE
            )
            accepted = hooks.outcome("accepted")
            duplicates = hooks.outcome("duplicate")
            published = {
                family: hooks.sample(
                    "bridge_webhook_records_published_total", {"family": family}
                )
                for family in ("delivery", "tracking", "dead_letter")
            }
    assert len(deliveries) == 56
    assert all(d.delivered for d in deliveries)
    assert (accepted, duplicates) == (28, 28)
    assert published == {"delivery": 16, "tracking": 12, "dead_letter": 0}
    consumed = await read_all(broker.bootstrap, topics.all)
    assert consumed.count(topics.dead_letter) == 0
    sent = {d.webhook.webhook_id: d.webhook for d in deliveries}
    seen: Counter[str] = Counter()
    for topic, family in (
        (topics.deliveries, "delivery"),
        (topics.tracking, "tracking"),
    ):
        for record in consumed.records.get(topic, []):
            headers = {name: value.decode() for name, value in record.headers}
            assert errors(HEADERS_SCHEMA, headers) == []
            webhook = sent[headers["ce_id"]]
            seen[headers["ce_id"]] += 1
            assert webhook.family == family
            assert record.value == webhook.body  # byte for byte
            assert record.value is not None
            value = orjson.loads(record.value)
            assert errors(VALUE_SCHEMAS[headers["ce_dataschema"]], value) == []
            assert (
                headers["ce_type"] == f"com.sendstack.webhook.{webhook.event_type}.v1"
            )
            key = value.get("batchId") or value.get("trackerId")
            assert record.key == key.encode()
    assert set(seen) == set(sent)
    assert max(seen.values()) == 1
    kinds = {w.kind for w in sent.values()}
    assert kinds == set(WEBHOOK_KINDS)


async def test_both_signature_schemes_are_accepted_by_default(broker: Broker) -> None:
    """Current (webhookId) and legacy (whole body) signatures both verify."""
    topics = await fresh_webhook_topics(broker.bootstrap)
    async with Emulator(EmulatorConfig()) as emu:
        env = webhook_env(emu, broker.bootstrap, topics)
        async with running_webhooks(env) as hooks:
            current = await emu.send_webhooks(hooks.url, "overspeed", retry=ONCE)
            legacy = await emu.send_webhooks(
                hooks.url, "new_delivery", scheme="payload"
            )
            verified = {
                scheme: hooks.sample(
                    "bridge_webhook_verified_total", {"scheme": scheme}
                )
                for scheme in ("webhook_id", "payload")
            }
    assert [d.statuses for d in current + legacy] == [[200], [200]]
    assert verified == {"webhook_id": 1, "payload": 1}
    consumed = await read_all(broker.bootstrap, topics.all)
    by = {
        dict(r.headers)["ce_id"].decode(): dict(r.headers)["ce_bridgeverifiedby"]
        for topic in topics.all
        for r in consumed.records.get(topic, [])
    }
    assert by == {
        current[0].webhook.webhook_id: b"webhook_id",
        legacy[0].webhook.webhook_id: b"payload",
    }


@pytest.mark.parametrize(
    ("setting", "refused"), [("webhook_id", "payload"), ("payload", "webhook_id")]
)
async def test_a_scheme_setting_refuses_the_other_scheme(
    broker: Broker, setting: SignScheme, refused: SignScheme
) -> None:
    """With one scheme configured, the other scheme's valid signature gets 401."""
    topics = await fresh_webhook_topics(broker.bootstrap)
    async with Emulator(EmulatorConfig()) as emu:
        env = webhook_env(
            emu, broker.bootstrap, topics, BRIDGE_WEBHOOK_SIGNATURE_SCHEME=setting
        )
        async with running_webhooks(env) as hooks:
            bad = await emu.send_webhooks(hooks.url, scheme=refused, retry=ONCE)
            good = await emu.send_webhooks(hooks.url, scheme=setting, retry=ONCE)
            refusals = hooks.outcome("bad_signature")
    assert [bad[0].statuses, good[0].statuses] == [[401], [200]]
    assert refusals == 1
    consumed = await read_all(broker.bootstrap, topics.all)
    assert consumed.count(topics.deliveries) == 1


async def test_tampered_bodies_and_missing_signatures_get_401_and_publish_nothing(
    broker: Broker,
) -> None:
    """A body altered after signing (either scheme) or unsigned is refused, counted."""
    topics = await fresh_webhook_topics(broker.bootstrap)
    async with Emulator(EmulatorConfig()) as emu:
        env = webhook_env(emu, broker.bootstrap, topics)
        async with running_webhooks(env) as hooks:
            twice = RetryPolicy(max_attempts=2, initial_seconds=0.01)
            tampered = await emu.send_webhooks(
                hooks.url, "all", tamper=True, retry=twice
            )
            legacy = await emu.send_webhooks(
                hooks.url, scheme="payload", tamper=True, retry=twice
            )
            unsigned = await emu.send_webhooks(hooks.url, scheme="none", retry=twice)
            bad = hooks.outcome("bad_signature")
            missing = hooks.outcome("missing_signature")
            in_flight = hooks.app.receiver.statistics().in_flight
    assert statuses(tampered + legacy) == Counter({401: 30})
    assert statuses(unsigned) == Counter({401: 2})
    assert (bad, missing) == (30, 2)
    assert in_flight == 0
    consumed = await read_all(broker.bootstrap, topics.all, quiet=0.5)
    assert sum(consumed.count(t) for t in topics.all) == 0


async def test_concurrent_and_repeated_deliveries_of_one_webhook_make_one_record(
    broker: Broker,
) -> None:
    """Eight deliveries of one webhookId, five at once, give exactly one record."""
    topics = await fresh_webhook_topics(broker.bootstrap)
    async with Emulator(EmulatorConfig()) as emu:
        env = webhook_env(emu, broker.bootstrap, topics)
        async with running_webhooks(env) as hooks:
            webhook = emu.webhooks.prepare("delivery_status_updated")
            together = await asyncio.gather(
                *(
                    emu.webhooks.deliver(hooks.url, webhook, retry=ONCE)
                    for _ in range(5)
                )
            )
            later = [
                await emu.webhooks.deliver(hooks.url, webhook, retry=ONCE)
                for _ in range(3)
            ]
            answered = hooks.app.receiver.statistics().answered
    assert all(d.statuses == [200] for d in [*together, *later])
    assert answered == {"accepted": 1, "duplicate": 7}
    consumed = await read_all(broker.bootstrap, topics.all)
    assert consumed.count(topics.deliveries) == 1


async def test_oversize_and_malformed_bodies_are_refused_and_counted(
    broker: Broker,
) -> None:
    """413 for a body over the limit (declared or chunked), 400 for bad JSON."""
    topics = await fresh_webhook_topics(broker.bootstrap)
    async with Emulator(EmulatorConfig()) as emu:
        env = webhook_env(
            emu, broker.bootstrap, topics, BRIDGE_WEBHOOK_MAX_BODY_BYTES="65536"
        )
        secret = emu.config.app_secret
        async with running_webhooks(env) as hooks, httpx.AsyncClient() as http:
            big = orjson.dumps(
                {"eventType": "order.new", "webhookId": "w-big", "x": "y" * 70_000}
            )
            signature = {"x-sendstack-signature": hmac_hex(secret, big)}
            declared = await http.post(hooks.url, content=big, headers=signature)

            async def chunks() -> object:
                for start in range(0, len(big), 8_192):
                    yield big[start : start + 8_192]

            chunked = await http.post(hooks.url, content=chunks(), headers=signature)
            bad = b'{"eventType": "order.new", "webhookId": "w-bad",'
            malformed = await http.post(
                hooks.url,
                content=bad,
                headers={"x-sendstack-signature": hmac_hex(secret, bad)},
            )
            array = await http.post(
                hooks.url, content=b"[]", headers={"x-sendstack-signature": "00"}
            )
            ok = await emu.send_webhooks(hooks.url, retry=ONCE)  # still serving
            too_large = hooks.outcome("too_large")
            bad_json = hooks.outcome("malformed")
    assert (declared.status_code, chunked.status_code) == (413, 413)
    assert (malformed.status_code, array.status_code) == (400, 400)
    assert malformed.json() == {
        "ok": False,
        "outcome": "malformed",
        "detail": "body is not valid JSON",
    }
    assert (too_large, bad_json) == (2, 2)
    assert ok[0].statuses == [200]
    consumed = await read_all(broker.bootstrap, topics.all)
    assert consumed.count(topics.deliveries) == 1
    assert consumed.count(topics.dead_letter) == 0


async def test_verified_bodies_that_cannot_be_published_go_to_the_dead_letter_topic(
    broker: Broker,
) -> None:
    """Unknown family, missing eventType and a too-large record: DLQ, verbatim, 200."""
    topics = await fresh_webhook_topics(broker.bootstrap)
    async with Emulator(EmulatorConfig()) as emu:
        env = webhook_env(emu, broker.bootstrap, topics)
        secret = emu.config.app_secret
        bodies = [
            orjson.dumps({"eventType": "wallet.funded", "webhookId": "w-1", "n": 1}),
            orjson.dumps({"webhookId": "w-2", "batchId": "B"}),
            orjson.dumps(
                {"eventType": "order.new", "webhookId": "w-3", "x": "y" * 950_000}
            ),
        ]
        async with running_webhooks(env) as hooks, httpx.AsyncClient() as http:
            replies = []
            for body in bodies:
                webhook_id = orjson.loads(body)["webhookId"]
                signature = hmac_hex(secret, orjson.dumps(webhook_id))
                replies.append(
                    await http.post(
                        hooks.url,
                        content=body,
                        headers={"x-sendstack-signature": signature},
                    )
                )
            retried = await http.post(
                hooks.url,
                content=bodies[0],
                headers={"x-sendstack-signature": hmac_hex(secret, bodies[0])},
            )
            reasons = {
                reason: hooks.sample(
                    "bridge_webhook_dead_lettered_total", {"reason": reason}
                )
                for reason in ("unknown_event_type", "missing_event_type", "oversize")
            }
    assert [r.status_code for r in replies] == [200, 200, 200]
    assert {r.json()["outcome"] for r in replies} == {"dead_lettered"}
    assert retried.json()["outcome"] == "duplicate"
    assert reasons == {"unknown_event_type": 1, "missing_event_type": 1, "oversize": 1}
    consumed = await read_all(broker.bootstrap, topics.all)
    dead = consumed.records.get(topics.dead_letter, [])
    assert len(dead) == 3
    by_reason = {dict(r.headers)["bridge_dlq_reason"].decode(): r for r in dead}
    assert by_reason["unknown_event_type"].value == bodies[0]
    assert by_reason["missing_event_type"].value == bodies[1]
    oversize = by_reason["oversize"]
    assert oversize.value == bodies[2][:900_000]
    assert dict(oversize.headers)["bridge_dlq_sha256"].decode() == (
        hashlib.sha256(bodies[2]).hexdigest()
    )
    for record in dead:
        headers = {name: value.decode() for name, value in record.headers}
        assert headers["bridge_dlq_origin"] == "webhook"
        assert errors(DLQ_HEADERS, headers) == []


async def test_ops_endpoints_show_readiness_and_only_this_paths_metrics(
    broker: Broker,
) -> None:
    """/readyz names its checks; /metrics has webhook and Kafka series, not stream's."""
    topics = await fresh_webhook_topics(broker.bootstrap)
    async with Emulator(EmulatorConfig()) as emu:
        env = webhook_env(emu, broker.bootstrap, topics)
        async with running_webhooks(env) as hooks, httpx.AsyncClient() as http:
            await emu.send_webhooks(hooks.url, "geofence_in", retry=ONCE)
            livez = await http.get(f"{hooks.ops_url}/livez")
            readyz = await http.get(f"{hooks.ops_url}/readyz")
            metrics = (await http.get(f"{hooks.ops_url}/metrics")).text
            wrong_method = await http.get(hooks.url)
            wrong_path = await http.post(hooks.url + "/x", content=b"{}")
    assert livez.status_code == 200
    assert readyz.status_code == 200
    assert readyz.json() == {
        "ready": True,
        "checks": {"producer_connected": True, "receiver_listening": True},
    }
    assert 'bridge_webhook_requests_total{outcome="accepted"} 1.0' in metrics
    assert 'bridge_webhook_records_published_total{family="tracking"} 1.0' in metrics
    assert "bridge_webhook_publish_seconds_count 1.0" in metrics
    assert "bridge_kafka_send_seconds_count 1.0" in metrics
    assert "bridge_ready 1.0" in metrics
    assert "bridge_ws_state" not in metrics
    assert "bridge_session_expires_in_seconds" not in metrics
    assert (wrong_method.status_code, wrong_method.headers["allow"]) == (405, "POST")
    assert wrong_path.status_code == 404


async def test_no_secret_or_signature_reaches_logs_or_metrics(broker: Broker) -> None:
    """At DEBUG, logs and /metrics hold neither the app secret nor a signature."""
    topics = await fresh_webhook_topics(broker.bootstrap)
    out = io.StringIO()
    async with Emulator(EmulatorConfig(app_secret="TOPSECRET-webhook-key-0001")) as emu:
        env = webhook_env(emu, broker.bootstrap, topics)
        configure_logging("debug", "json", out)
        try:
            async with running_webhooks(env) as hooks, httpx.AsyncClient() as http:
                sent = await emu.send_webhooks(hooks.url, "all", retry=ONCE)
                sent += await emu.send_webhooks(
                    hooks.url, tamper=True, scheme="payload", retry=ONCE
                )
                sent += await emu.send_webhooks(
                    hooks.url, "new_delivery", duplicate=True, retry=ONCE
                )
                metrics = (await http.get(f"{hooks.ops_url}/metrics")).text
        finally:
            logging.getLogger().handlers.clear()
    logs = out.getvalue()
    assert "webhook_rejected" in logs  # the logs did capture the run
    for text in (logs, metrics):
        assert "TOPSECRET" not in text
        for delivery in sent:
            signature = delivery.webhook.headers["x-sendstack-signature"]
            assert signature not in text


@pytest.mark.timeout(90)
async def test_the_cli_subcommand_serves_webhooks_and_exits_0_on_sigterm(
    broker: Broker, tmp_path: Path
) -> None:
    """``python -m bridge webhooks`` publishes a webhook and exits 0 on SIGTERM."""
    topics = await fresh_webhook_topics(broker.bootstrap)
    log_path = tmp_path / "webhooks.log"
    async with Emulator(EmulatorConfig()) as emu:
        port = _free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")},
            **webhook_env(
                emu,
                broker.bootstrap,
                topics,
                BRIDGE_WEBHOOK_PORT=str(port),
                BRIDGE_LOG_FORMAT="json",
            ),
        }
        with log_path.open("wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bridge",
                "webhooks",
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
            try:
                url = f"http://127.0.0.1:{port}/webhooks/sendstack"
                retry = RetryPolicy(
                    max_attempts=40, initial_seconds=0.25, max_seconds=0.25
                )
                delivered = await emu.send_webhooks(url, "low_battery", retry=retry)
                process.send_signal(signal.SIGTERM)
                started = time.monotonic()
                code = await asyncio.wait_for(process.wait(), 30)
                took = time.monotonic() - started
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
    output = log_path.read_text()
    assert delivered[0].delivered, output
    assert code == 0, output
    assert took < 10
    assert "shutdown_complete" in output
    assert emu.config.app_secret not in output
    consumed = await read_all(broker.bootstrap, topics.all)
    assert consumed.count(topics.tracking) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_a_receiver_started_before_kafka_answers_503_then_publishes(
    broker: Broker,
) -> None:
    """While Kafka is unreachable webhooks get 503; once it is, the retry lands."""
    if broker.external:
        pytest.skip("pausing needs the broker process")
    topics = await fresh_webhook_topics(broker.bootstrap)
    async with Emulator(EmulatorConfig()) as emu:
        env = webhook_env(
            emu, broker.bootstrap, topics, BRIDGE_KAFKA_REQUEST_TIMEOUT_MS="1000"
        )
        broker.pause()
        try:
            async with running_webhooks(env, wait_connected=False) as hooks:
                early = await emu.send_webhooks(hooks.url, retry=ONCE)
                ready_before = dict(hooks.app.readiness())
                broker.resume()
                await wait_for(hooks.app.sink.is_connected, 30)
                retried = await emu.webhooks.deliver(
                    hooks.url, early[0].webhook, retry=ONCE
                )
                ready_after = dict(hooks.app.readiness())
        finally:
            broker.resume()
    assert early[0].statuses == [503]
    assert ready_before == {"producer_connected": False, "receiver_listening": True}
    assert retried.statuses == [200]
    assert all(ready_after.values())
    consumed = await read_all(broker.bootstrap, topics.all)
    assert consumed.count(topics.deliveries) == 1
