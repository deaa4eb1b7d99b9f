"""The session keeper, driven through its ports in virtual time (looptime)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from prometheus_client import CollectorRegistry

from bridge.core.retry import Backoff, FailureBudget
from bridge.core.session import RotationPolicy
from bridge.errors import SessionRejected
from bridge.metrics import StreamMetrics
from bridge.workers.session_keeper import SessionKeeper
from tests.workers.fakes import FakeSessionSource, LoopClock, until

pytestmark = pytest.mark.looptime


@asynccontextmanager
async def running_keeper(
    source: FakeSessionSource, *, budget: FailureBudget | None = None
) -> AsyncIterator[SessionKeeper]:
    keeper = SessionKeeper(
        source,
        clock=LoopClock(),
        policy=RotationPolicy(margin=900.0, jitter=0.0),
        backoff=Backoff(initial=2.0, maximum=60.0, jitter=0.0),
        budget=budget or FailureBudget(max_failures=5, window=900.0),
        metrics=StreamMetrics(CollectorRegistry()),
    )
    task = asyncio.create_task(keeper.run())
    try:
        yield keeper
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_rotates_margin_seconds_before_expiry_every_lifetime() -> None:
    """One-hour sessions are replaced 15 minutes before they expire, again and again."""
    source = FakeSessionSource(ttl=3_600.0)
    async with running_keeper(source) as keeper:
        await until(lambda: len(source.calls) == 3, within=3 * 3_600, every=5.0)
        assert (await keeper.wait_for_session()).generation == 3
    gaps = [b - a for a, b in itertools.pairwise(source.calls)]
    assert gaps == pytest.approx([2_700.0, 2_700.0], abs=0.5)


async def test_refused_credentials_back_off_and_stay_within_the_failure_budget() -> (
    None
):
    """Failures wait 2 then 4 s; once three fill the budget, the next waits it out."""
    source = FakeSessionSource(script=[SessionRejected("wrong secret")] * 4)
    budget = FailureBudget(max_failures=3, window=600.0)
    async with running_keeper(source, budget=budget) as keeper:
        await keeper.wait_for_session()
    calls = source.calls
    assert [b - a for a, b in itertools.pairwise(calls[:3])] == pytest.approx(
        [2.0, 4.0], abs=0.05
    )
    # Three failures fill the budget: the fourth request waits until the first
    # failure is 600 s old, although the backoff said 8 s.
    assert calls[3] - calls[0] == pytest.approx(600.0, abs=0.5)
    # It fails too; the next waits its 16 s backoff (the window has room again).
    assert calls[4] - calls[3] == pytest.approx(16.0, abs=0.5)
    assert len(calls) == 5


async def test_a_refusal_by_the_socket_fetches_a_new_session_at_once() -> None:
    """report_rejected for the current generation triggers a request now."""
    source = FakeSessionSource(ttl=3_600.0)
    async with running_keeper(source) as keeper:
        first = await keeper.wait_for_session()
        await asyncio.sleep(10)
        keeper.report_rejected(first.generation)
        second = await keeper.wait_newer(first.generation)
        keeper.report_rejected(first.generation)  # a stale report changes nothing
        await asyncio.sleep(10)
    assert second.generation == 2
    assert source.calls[1] - source.calls[0] == pytest.approx(10.0, abs=0.1)
    assert len(source.calls) == 2
