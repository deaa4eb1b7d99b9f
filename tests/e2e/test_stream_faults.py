"""End to end under faults: bad frames, a paused broker, bad credentials, leaks."""

from __future__ import annotations

import asyncio
import io
import logging

import httpx
import orjson
import psutil
import pytest

from bridge.logs import configure_logging
from bridgelab.emulator import Emulator, EmulatorConfig
from tests.e2e.harness import bridge_env, fresh_topics, running_bridge
from tests.e2e.verifier import read_all, wait_for
from tests.kafka_broker import Broker

pytestmark = pytest.mark.e2e


async def test_bad_frames_are_dead_lettered_and_the_stream_goes_on(
    broker: Broker,
) -> None:
    """Bad frames reach the dead-letter topic with a reason; no item is lost."""
    topics = await fresh_topics(broker.bootstrap)
    async with Emulator(EmulatorConfig(devices=20, max_frames_per_second=10.0)) as emu:
        env = bridge_env(emu, broker.bootstrap, topics)
        async with running_bridge(env) as bridge:
            await wait_for(lambda: bridge.sample("bridge_ws_open_connections") >= 1, 10)
            await asyncio.sleep(0.5)
            assert emu.send_malformed() == 1
            assert emu.send_unknown() == 1
            assert emu.send_oversize(2_097_152) == 1
            await asyncio.sleep(1.5)  # items after the bad frames keep flowing
            emu.pause()
            await asyncio.sleep(0.5)
            await wait_for(
                lambda: bridge.app.sink.statistics().in_flight_records == 0, 10
            )
            dlq_metric = sum(
                bridge.sample(
                    "bridge_records_dead_lettered_total",
                    {"origin": "stream", "reason": r},
                )
                for r in (
                    "malformed_json",
                    "unknown_field",
                    "unknown_event_type",
                    "oversize",
                )
            )
        written = emu.written_seqs()
    consumed = await read_all(broker.bootstrap, topics.all)
    dead = consumed.records.get(topics.dead_letter, [])
    reasons = sorted(dict(r.headers)["bridge_dlq_reason"].decode() for r in dead)
    assert reasons == sorted(
        ["malformed_json", "oversize", "unknown_event_type", "unknown_field"]
    )
    assert dlq_metric == 4
    for record in dead:
        headers = dict(record.headers)
        assert record.value is not None
        if headers["bridge_dlq_reason"] == b"oversize":
            assert headers["bridge_dlq_truncated"] == b"true"
            assert int(headers["bridge_dlq_original_bytes"]) > 2_097_152
        elif headers["bridge_dlq_reason"] != b"malformed_json":
            orjson.loads(record.value)  # verbatim JSON frames stay parseable
    seqs = consumed.seqs(topics.data)
    assert set(seqs) == written
    assert max(seqs.values()) == 1


async def test_broker_pause_beyond_request_timeout_loses_nothing_within_bounds(
    broker: Broker,
) -> None:
    """Journal off: a 10 s broker freeze (2 s request timeout) loses nothing; the
    in-memory buffer holds its bound."""
    if broker.external:
        pytest.skip("pausing needs the broker process")
    topics = await fresh_topics(broker.bootstrap)
    max_records = 300
    async with Emulator(EmulatorConfig(devices=100, max_frames_per_second=20.0)) as emu:
        env = bridge_env(
            emu,
            broker.bootstrap,
            topics,
            BRIDGE_KAFKA_REQUEST_TIMEOUT_MS="2000",
            BRIDGE_BUFFER_MAX_RECORDS=str(max_records),
            BRIDGE_JOURNAL_ENABLED="false",
            BRIDGE_STREAM_PING_INTERVAL_SECONDS="5",
            BRIDGE_STREAM_PING_TIMEOUT_SECONDS="20",
        )
        async with running_bridge(env) as bridge:
            await wait_for(lambda: bridge.app.sink.statistics().acked > 100, 15)
            process = psutil.Process()
            rss_before = process.memory_info().rss
            peak_records = 0
            peak_rss = rss_before
            broker.pause()
            try:
                for _ in range(100):
                    await asyncio.sleep(0.1)
                    stats = bridge.app.sink.statistics()
                    peak_records = max(peak_records, stats.in_flight_records)
                    peak_rss = max(peak_rss, process.memory_info().rss)
            finally:
                broker.resume()
            await asyncio.sleep(3)
            emu.pause()
            await wait_for(
                lambda: bridge.app.sink.statistics().in_flight_records == 0, 60
            )
            retried = bridge.app.sink.statistics().retried
        written = emu.written_seqs()
    consumed = await read_all(broker.bootstrap, topics.all)
    seqs = consumed.seqs(topics.data)
    assert peak_records == max_records, "intake should have hit the buffer bound"
    assert peak_rss - rss_before < 64 * 1024 * 1024
    assert retried > 0, "sends timed out during the pause and were retried"
    missing = written - set(seqs)
    assert not missing, f"{len(missing)} lost"


async def test_wrong_credentials_give_a_clear_error_and_never_trip_the_lockout(
    broker: Broker,
) -> None:
    """Bad credentials: logged clearly, retried within the budget, no 429 lockout."""
    topics = await fresh_topics(broker.bootstrap)
    config = EmulatorConfig(lockout_threshold=20, lockout_window_seconds=900)
    async with Emulator(config) as emu:
        env = bridge_env(
            emu,
            broker.bootstrap,
            topics,
            BRIDGE_SENDSTACK_APP_SECRET="WRONG-SECRET",
            BRIDGE_AUTH_BACKOFF_INITIAL_SECONDS="0.05",
            BRIDGE_AUTH_BACKOFF_MAX_SECONDS="0.1",
            BRIDGE_AUTH_MAX_FAILURES="5",
        )
        async with running_bridge(env) as bridge:
            await wait_for(
                lambda: (
                    bridge.sample("bridge_auth_failures_total", {"reason": "rejected"})
                    >= 5
                ),
                10,
            )
            await asyncio.sleep(2.0)  # with no budget the bridge would make ~20 more
            failures = bridge.sample(
                "bridge_auth_failures_total", {"reason": "rejected"}
            )
            ready = bridge.app.readiness()
            async with httpx.AsyncClient() as client:
                readyz = await client.get(
                    f"http://127.0.0.1:{bridge.app.ops.port}/readyz"
                )
            stats = bridge.app.keeper.statistics()
        auth = emu.stats()["auth"]
    assert failures == 5
    assert auth["failures"] == 5
    assert auth["lockouts"] == 0
    assert auth["rejected_429"] == 0
    assert ready["session_valid"] is False
    assert readyz.status_code == 503
    assert stats.last_error == "rejected"


async def test_no_token_secret_or_session_url_reaches_logs_or_metrics_at_debug(
    broker: Broker,
) -> None:
    """At DEBUG (ours and the libraries'), logs and /metrics hold no token or secret."""
    topics = await fresh_topics(broker.bootstrap)
    out = io.StringIO()
    config = EmulatorConfig(
        session_ttl_seconds=2.0, devices=10, max_frames_per_second=10.0
    )
    async with Emulator(config) as emu:
        env = bridge_env(emu, broker.bootstrap, topics)
        configure_logging("debug", "json", out)
        try:
            async with running_bridge(env) as bridge:
                await wait_for(
                    lambda: (
                        bridge.sample(
                            "bridge_session_rotations_total", {"outcome": "ok"}
                        )
                        >= 2
                    ),
                    20,
                )
                emu.expire_sessions()  # 4001 closes, then refused upgrades (401)
                await emu.drop()
                await asyncio.sleep(1.5)
                async with httpx.AsyncClient() as client:
                    metrics = await client.get(
                        f"http://127.0.0.1:{bridge.app.ops.port}/metrics"
                    )
        finally:
            logging.getLogger().handlers.clear()
        async with httpx.AsyncClient() as client:
            reply = await client.post(
                f"{emu.base_url}/auth/session",
                headers={
                    "app_id": emu.config.app_id,
                    "app_secret": emu.config.app_secret,
                },
            )
        sample_token = reply.json()["data"]["session"]
    text = out.getvalue()
    assert "session_rotated" in text
    assert "upstream_connected" in text
    # The lines that would leak first: the bridge's own websocket client
    # logging its upgrade request, the session query masked.
    ours = [
        line
        for line in text.splitlines()
        if '"logger":"bridge.websocket"' in line and "GET " in line
    ]
    assert ours, "the bridge's websocket client logged no request line at DEBUG"
    assert all("session=***" in line for line in ours), ours[:2]
    assert "aiokafka" in text, "library DEBUG logs were captured"
    for haystack in (text, metrics.text):
        assert emu.config.app_secret not in haystack
        assert "eyJ" not in haystack  # every JWT starts with a base64 '{"'
        assert sample_token[:40] not in haystack
        assert "session=ey" not in haystack


async def test_staleness_watchdog_reconnects_a_silent_socket(broker: Broker) -> None:
    """A socket that stays open but silent past the stale limit is replaced."""
    topics = await fresh_topics(broker.bootstrap)
    async with Emulator(EmulatorConfig(devices=5, max_frames_per_second=5.0)) as emu:
        env = bridge_env(
            emu, broker.bootstrap, topics, BRIDGE_STREAM_STALE_AFTER_SECONDS="1.0"
        )
        async with running_bridge(env) as bridge:
            await wait_for(lambda: bridge.sample("bridge_ws_open_connections") >= 1, 10)
            emu.pause()  # pings are still answered: only the watchdog can notice
            await wait_for(
                lambda: bridge.sample("bridge_stream_watchdog_triggers_total") >= 1, 10
            )
            await wait_for(
                lambda: (
                    bridge.sample("bridge_ws_connects_total", {"outcome": "ok"}) >= 2
                ),
                10,
            )
            assert (
                bridge.sample("bridge_ws_disconnects_total", {"reason": "stale"}) >= 1
            )


async def test_single_session_upstream_rotates_close_first_without_loss(
    broker: Broker,
) -> None:
    """If a new session ends the old one, the bridge closes first and loses nothing."""
    topics = await fresh_topics(broker.bootstrap)
    config = EmulatorConfig(
        session_ttl_seconds=3.0,
        single_session=True,
        devices=30,
        max_frames_per_second=10.0,
    )
    async with Emulator(config) as emu:
        env = bridge_env(
            emu, broker.bootstrap, topics, BRIDGE_STREAM_SINGLE_SESSION="true"
        )
        async with running_bridge(env) as bridge:
            await wait_for(
                lambda: (
                    bridge.sample(
                        "bridge_session_rotations_total", {"outcome": "closed_first"}
                    )
                    >= 3
                ),
                30,
            )
            emu.pause()
            await asyncio.sleep(1.0)
            await wait_for(
                lambda: bridge.app.sink.statistics().in_flight_records == 0, 10
            )
        written = emu.written_seqs()
    consumed = await read_all(broker.bootstrap, topics.all)
    seqs = consumed.seqs(topics.data)
    assert written
    assert set(seqs) == written
    assert max(seqs.values()) == 1


async def test_bridge_started_before_kafka_waits_for_it_then_delivers(
    broker: Broker,
) -> None:
    """Kafka unreachable at start: the bridge retries, then delivers everything."""
    if broker.external:
        pytest.skip("pausing needs the broker process")
    topics = await fresh_topics(broker.bootstrap)
    async with Emulator(EmulatorConfig(devices=10, max_frames_per_second=10.0)) as emu:
        env = bridge_env(
            emu, broker.bootstrap, topics, BRIDGE_KAFKA_REQUEST_TIMEOUT_MS="1000"
        )
        broker.pause()
        try:
            async with running_bridge(env) as bridge:
                await asyncio.sleep(3.0)
                assert bridge.app.sink.statistics().acked == 0
                broker.resume()
                await wait_for(lambda: bridge.app.sink.statistics().acked > 20, 30)
                emu.pause()
                await asyncio.sleep(0.5)
                await wait_for(
                    lambda: bridge.app.sink.statistics().in_flight_records == 0, 10
                )
        finally:
            broker.resume()
        written = emu.written_seqs()
    consumed = await read_all(broker.bootstrap, topics.all)
    assert written
    assert set(consumed.seqs(topics.data)) == written
