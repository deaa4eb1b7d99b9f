"""Shared fixtures: the real Kafka-protocol broker."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator

import pytest

from tests.kafka_broker import Broker, run_broker, supports_transactions


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    """One broker for the whole test session (Tansu, or the external Kafka)."""
    with run_broker() as b:
        yield b


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> object:
    """Close the event loop looptime makes for a plain (sync) test.

    looptime's hook asks the policy for the current loop even for sync tests,
    and on the main thread that creates one; the next async test replaces it
    without closing it, and at exit its ResourceWarnings (with
    ``filterwarnings = error``) fail a run whose tests all passed.
    """
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        return (yield)
    local = getattr(asyncio.get_event_loop_policy(), "_local", None)
    before = getattr(local, "_loop", None)
    try:
        return (yield)
    finally:
        after = getattr(local, "_loop", None)
        if (
            isinstance(after, asyncio.AbstractEventLoop)
            and after is not before
            and not after.is_running()
        ):
            after.close()
            asyncio.set_event_loop(before)


@pytest.fixture(scope="session")
def transactions(broker: Broker) -> bool:
    """Whether the broker has Kafka transactions (Apache Kafka: yes; Tansu: no)."""
    return asyncio.run(supports_transactions(broker.bootstrap))
