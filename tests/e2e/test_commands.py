"""Commands end to end: Kafka → worker → emulator, one result per command."""

from __future__ import annotations

import asyncio
import copy
import itertools
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.structs import ConsumerRecord
from jsonschema import Draft202012Validator

import bridge
from bridgelab.emulator import Emulator, EmulatorConfig
from tests.e2e.commands_harness import (
    RunningWorker,
    booking,
    commands_env,
    envelope,
    fresh_command_topics,
    produce,
    running_worker,
)
from tests.e2e.verifier import read_all, wait_for
from tests.kafka_broker import Broker

pytestmark = pytest.mark.e2e


def finished(worker: RunningWorker, command_type: str, outcome: str) -> float:
    """Commands of a type the worker finished with an outcome (its own counter)."""
    return worker.sample(
        "bridge_commands_total", {"type": command_type, "outcome": outcome}
    )


RESULT_SCHEMA = Draft202012Validator(
    orjson.loads(
        (Path(bridge.__file__).parent / "schemas/commands/result.v1.json").read_bytes()
    )
)


def results_by_id(
    records: list[ConsumerRecord[bytes, bytes]],
) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        assert r.value is not None
        value = orjson.loads(r.value)
        RESULT_SCHEMA.validate(value)  # the documented result contract
        out.setdefault(value["commandId"], []).append(value)
    return out


async def test_every_command_type_runs_end_to_end_with_its_result(
    broker: Broker,
) -> None:
    """Each of the 13 command types reaches Sendstack once and succeeds."""
    topics = await fresh_command_topics(broker.bootstrap)
    async with Emulator(EmulatorConfig(start_paused=True)) as emu:
        env = commands_env(emu, broker.bootstrap, topics)
        async with running_worker(env) as worker:
            book = booking()
            await produce(broker.bootstrap, topics.commands, [book])
            await wait_for(
                lambda: finished(worker, "book_delivery", "succeeded") == 1,
                20,
            )
            first = await read_all(broker.bootstrap, [topics.results], quiet=0.5)
            booked = results_by_id(first.records[topics.results])[book["commandId"]][0]
            delivery = booked["response"]
            drop = delivery["drops"][0]
            ids = {
                "dropId": drop["id"],
                "dropIds": [drop["id"]],
                "deliveryId": delivery["id"],
                "batchId": delivery["batchId"],
            }

            def with_ids(command_type: str) -> dict[str, Any]:
                from bridge.core.commands import EXAMPLES

                payload = copy.deepcopy(dict(EXAMPLES[command_type]))
                for key, value in ids.items():
                    if key in payload:
                        payload[key] = value
                if command_type == "fetch_deliveries":
                    payload["externalOrderId"] = book["payload"]["externalOrderId"]
                return envelope(command_type, payload, replyTopic=topics.replies)

            others = [
                with_ids(t)
                for t in (
                    "price_estimate",
                    "generate_pod_account",
                    "update_delivery",
                    "reschedule_delivery",
                    "update_delivery_window",
                    "assign_drop",
                    "add_private_note",
                    "create_tracker_event",
                    "track_delivery",
                    "fetch_deliveries",
                    "wallet_balance",
                    "cancel_drops",
                )
            ]
            await produce(broker.bootstrap, topics.commands, others)
            await wait_for(
                lambda: (
                    sum(
                        worker.sample(
                            "bridge_commands_total", {"type": m["type"], "outcome": o}
                        )
                        for m in others
                        for o in ("succeeded", "failed", "rejected")
                    )
                    >= len(others)
                ),
                30,
            )
        executions = {
            m["commandId"]: emu.executions(m["commandId"]) for m in [book, *others]
        }
    consumed = await read_all(
        broker.bootstrap, [topics.results, topics.replies, topics.dead_letter]
    )
    results = results_by_id(consumed.records[topics.results])
    replies = results_by_id(consumed.records.get(topics.replies, []))
    for message in [book, *others]:
        got = results[message["commandId"]]
        assert len(got) == 1, message["type"]
        assert got[0]["outcome"] == "succeeded", (message["type"], got[0]["error"])
        assert got[0]["type"] == message["type"]
        assert got[0]["attempts"] == 1
        assert executions[message["commandId"]] == 1, message["type"]
    for message in others:
        assert len(replies[message["commandId"]]) == 1
    assert consumed.count(topics.dead_letter) == 0


async def test_invalid_commands_are_rejected_and_dead_lettered_without_a_call(
    broker: Broker,
) -> None:
    """Malformed, unknown-type, invalid commands: rejected, dead-lettered, no call."""
    topics = await fresh_command_topics(broker.bootstrap)
    bad_payload = envelope("cancel_drops", {"note": "no drop ids"})
    unknown = envelope("wallet_balance")
    unknown["type"] = "launch_rocket"
    async with Emulator(EmulatorConfig(start_paused=True)) as emu:
        env = commands_env(emu, broker.bootstrap, topics)
        async with running_worker(env) as worker:
            await produce(
                broker.bootstrap, topics.commands, [b"{not json", unknown, bad_payload]
            )
            await wait_for(
                lambda: finished(worker, "invalid", "rejected") == 3,
                20,
            )
        calls = emu.deliveries.stats()
    consumed = await read_all(broker.bootstrap, [topics.results, topics.dead_letter])
    results = [v[0] for v in results_by_id(consumed.records[topics.results]).values()]
    assert sorted(r["outcome"] for r in results) == ["rejected"] * 3
    reasons = sorted(
        dict(r.headers)["bridge_dlq_reason"].decode()
        for r in consumed.records[topics.dead_letter]
    )
    assert reasons == sorted(["malformed_json", "unknown_type", "invalid_payload"])
    assert calls["requests"] == 0


async def test_a_4xx_is_dead_lettered_after_one_attempt(broker: Broker) -> None:
    """Sendstack's 400 is final: one attempt, a rejected result, a dead letter."""
    topics = await fresh_command_topics(broker.bootstrap)
    note = envelope(
        "add_private_note", {"dropIds": ["000000000000000000000000"], "note": "x"}
    )
    async with Emulator(EmulatorConfig(start_paused=True)) as emu:
        env = commands_env(emu, broker.bootstrap, topics)
        async with running_worker(env) as worker:
            await produce(broker.bootstrap, topics.commands, [note])
            await wait_for(
                lambda: finished(worker, "add_private_note", "rejected") == 1,
                20,
            )
        executions = len(emu.deliveries.requests(note["commandId"]))
    consumed = await read_all(broker.bootstrap, [topics.results, topics.dead_letter])
    (result,) = [orjson.loads(r.value or b"") for r in consumed.records[topics.results]]
    assert result["attempts"] == 1
    assert result["error"]["status"] == 400
    assert executions == 1
    (dead,) = consumed.records[topics.dead_letter]
    assert dict(dead.headers)["bridge_dlq_reason"] == b"http_400"


async def test_an_always_503_command_fails_at_its_deadline_while_the_next_one_completes(
    broker: Broker,
) -> None:
    """Retries stay within the deadline, and other deliveries on the partition go on."""
    topics = await fresh_command_topics(broker.bootstrap, partitions=1)
    stuck = envelope("reschedule_delivery", timeoutSeconds=3)
    after = booking()
    async with Emulator(EmulatorConfig(start_paused=True)) as emu:
        emu.deliveries.always(503, kind="reschedule_delivery")
        env = commands_env(
            emu, broker.bootstrap, topics, BRIDGE_COMMANDS_BREAKER_FAILURES="1000"
        )
        async with running_worker(env) as worker:
            await produce(broker.bootstrap, topics.commands, [stuck, after])
            await wait_for(
                lambda: finished(worker, "book_delivery", "succeeded") == 1,
                10,
            )
            assert finished(worker, "reschedule_delivery", "failed") == 0
            await wait_for(
                lambda: finished(worker, "reschedule_delivery", "failed") == 1,
                10,
            )
            retries = worker.sample(
                "bridge_commands_retries_total", {"type": "reschedule_delivery"}
            )
    consumed = await read_all(broker.bootstrap, [topics.results, topics.dead_letter])
    results = {
        r["commandId"]: r
        for r in (
            orjson.loads(x.value or b"") for x in consumed.records[topics.results]
        )
    }
    assert results[stuck["commandId"]]["outcome"] == "failed"
    assert results[stuck["commandId"]]["error"]["reason"] == "deadline"
    assert results[stuck["commandId"]]["durationMs"] < 4000
    assert results[after["commandId"]]["outcome"] == "succeeded"
    assert retries >= 3
    (dead,) = consumed.records[topics.dead_letter]
    assert dict(dead.headers)["bridge_dlq_reason"] == b"deadline"


async def test_a_429_is_waited_out_per_retry_after_then_succeeds(
    broker: Broker,
) -> None:
    """A 429 with Retry-After delays the retry by at least that long, then succeeds."""
    topics = await fresh_command_topics(broker.bootstrap)
    balance = envelope("wallet_balance")
    async with Emulator(EmulatorConfig(start_paused=True)) as emu:
        emu.deliveries.fail_next(1, status=429, retry_after=1.0, kind="wallet_balance")
        env = commands_env(emu, broker.bootstrap, topics)
        async with running_worker(env) as worker:
            await produce(broker.bootstrap, topics.commands, [balance])
            await wait_for(
                lambda: finished(worker, "wallet_balance", "succeeded") == 1,
                20,
            )
    consumed = await read_all(broker.bootstrap, [topics.results])
    (result,) = [orjson.loads(r.value or b"") for r in consumed.records[topics.results]]
    assert result["attempts"] == 2
    assert result["durationMs"] >= 1000


async def test_a_401_stops_calls_and_marks_the_worker_not_ready(broker: Broker) -> None:
    """After a 401 no new call goes out (no lockout) and /readyz says not ready."""
    topics = await fresh_command_topics(broker.bootstrap)
    first = [envelope("wallet_balance") for _ in range(3)]
    later = [envelope("wallet_balance") for _ in range(5)]
    async with Emulator(EmulatorConfig(start_paused=True)) as emu:
        emu.deliveries.reject_credentials(True)
        env = commands_env(
            emu, broker.bootstrap, topics, BRIDGE_AUTH_BACKOFF_INITIAL_SECONDS="60"
        )
        async with running_worker(env) as worker:
            await produce(broker.bootstrap, topics.commands, first)
            await wait_for(
                lambda: worker.sample("bridge_commands_auth_blocked") == 1, 20
            )
            await asyncio.sleep(0.5)
            calls_when_blocked = emu.deliveries.stats()["requests"]
            await produce(broker.bootstrap, topics.commands, later)
            await asyncio.sleep(1.5)
            calls_after = emu.deliveries.stats()["requests"]
            ready = worker.sample("bridge_ready")
            readiness = worker.app.readiness()
        auth = emu.stats()["auth"]
    # Calls already in flight when the first 401 came back finish; no new one starts.
    assert 1 <= calls_when_blocked <= len(first)
    assert calls_after == calls_when_blocked
    assert auth["lockouts"] == 0
    assert ready == 0.0
    assert readiness["sendstack_authorised"] is False


async def test_a_booking_executed_then_dropped_is_reconciled_not_repeated(
    broker: Broker,
) -> None:
    """Booked but the reply was lost: the worker finds the booking, books nothing."""
    topics = await fresh_command_topics(broker.bootstrap)
    book = booking()
    async with Emulator(EmulatorConfig(start_paused=True)) as emu:
        emu.deliveries.execute_then_drop(1, kind="book_delivery")
        env = commands_env(emu, broker.bootstrap, topics)
        async with running_worker(env) as worker:
            await produce(broker.bootstrap, topics.commands, [book])
            await wait_for(
                lambda: finished(worker, "book_delivery", "succeeded") == 1,
                20,
            )
            found = worker.sample("bridge_commands_reconciled_total", {"found": "yes"})
        executions = emu.executions(book["commandId"])
    consumed = await read_all(broker.bootstrap, [topics.results])
    (result,) = [orjson.loads(r.value or b"") for r in consumed.records[topics.results]]
    assert executions == 1
    assert found == 1
    assert result["reconciled"] is True
    assert result["response"]["batchId"]


async def test_same_delivery_runs_in_order_while_other_deliveries_run_concurrently(
    broker: Broker,
) -> None:
    """Commands for one delivery never overlap and keep their order; others overlap."""
    topics = await fresh_command_topics(broker.bootstrap, partitions=1)
    async with Emulator(EmulatorConfig(start_paused=True)) as emu:
        env = commands_env(emu, broker.bootstrap, topics)
        async with running_worker(env) as worker:
            book = booking()
            await produce(broker.bootstrap, topics.commands, [book])
            await wait_for(lambda: emu.executions(book["commandId"]) == 1, 20)
            await wait_for(
                lambda: finished(worker, "book_delivery", "succeeded") == 1,
                10,
            )
            first = await read_all(broker.bootstrap, [topics.results], quiet=0.5)
            batch_id = orjson.loads(first.records[topics.results][0].value or b"")[
                "response"
            ]["batchId"]
            emu.deliveries.set_latency(100)
            same = [envelope("track_delivery", {"batchId": batch_id}) for _ in range(5)]
            independent = [envelope("wallet_balance") for _ in range(5)]
            interleaved = [
                c for pair in zip(same, independent, strict=True) for c in pair
            ]
            await produce(broker.bootstrap, topics.commands, interleaved)
            await wait_for(
                lambda: finished(worker, "track_delivery", "succeeded") == 5,
                20,
            )
        same_calls = [emu.deliveries.requests(c["commandId"])[0] for c in same]
        other_calls = [emu.deliveries.requests(c["commandId"])[0] for c in independent]
    assert [r.seq for r in same_calls] == sorted(r.seq for r in same_calls)
    gaps = [b.at - a.at for a, b in itertools.pairwise(same_calls)]
    assert min(gaps) >= 0.09, f"same-delivery calls overlapped: {gaps}"
    spread = max(r.at for r in other_calls) - min(r.at for r in other_calls)
    assert spread < 0.09, f"independent calls were serialised: {spread:.3f}s"


async def test_repeated_5xx_open_the_circuit_breaker_and_calls_pause(
    broker: Broker,
) -> None:
    """After N consecutive 5xx no call goes out until the breaker's reset time."""
    topics = await fresh_command_topics(broker.bootstrap)
    balances = [envelope("wallet_balance", timeoutSeconds=30) for _ in range(3)]
    async with Emulator(EmulatorConfig(start_paused=True)) as emu:
        emu.deliveries.always(503, kind="wallet_balance")
        env = commands_env(
            emu,
            broker.bootstrap,
            topics,
            BRIDGE_COMMANDS_BREAKER_FAILURES="3",
            BRIDGE_COMMANDS_BREAKER_RESET_SECONDS="3",
            BRIDGE_COMMANDS_CONCURRENCY="1",
        )
        async with running_worker(env) as worker:
            await produce(broker.bootstrap, topics.commands, balances)
            await wait_for(lambda: emu.deliveries.stats()["requests"] >= 3, 20)
            await asyncio.sleep(0.3)
            opened_at = emu.deliveries.stats()["requests"]
            readiness = worker.app.readiness()
            await asyncio.sleep(1.5)
            still = emu.deliveries.stats()["requests"]
            emu.deliveries.always(None, kind="wallet_balance")
            await wait_for(
                lambda: finished(worker, "wallet_balance", "succeeded") == 3,
                20,
            )
    assert opened_at == 3
    assert still == 3, "no call while the breaker is open"
    assert readiness["sendstack_circuit_closed"] is False


async def test_one_rate_limiter_paces_every_call(broker: Broker) -> None:
    """At 5 calls/s with a burst of 1, ten calls take at least 1.8 s in all."""
    topics = await fresh_command_topics(broker.bootstrap)
    balances = [envelope("wallet_balance") for _ in range(10)]
    async with Emulator(EmulatorConfig(start_paused=True)) as emu:
        env = commands_env(
            emu,
            broker.bootstrap,
            topics,
            BRIDGE_COMMANDS_RATE_PER_SECOND="5",
            BRIDGE_COMMANDS_RATE_BURST="1",
        )
        async with running_worker(env) as worker:
            await produce(broker.bootstrap, topics.commands, balances)
            await wait_for(
                lambda: finished(worker, "wallet_balance", "succeeded") == 10,
                20,
            )
            waited = worker.sample("bridge_commands_rate_limiter_wait_seconds_total")
        calls = sorted(emu.deliveries.requests(c["commandId"])[0].at for c in balances)
    assert calls[-1] - calls[0] >= 1.8 - 0.05
    assert waited > 0
