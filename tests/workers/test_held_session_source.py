"""A cold standby's session source, in virtual time (looptime)."""

from __future__ import annotations

import asyncio

import pytest

from bridge.app import HeldSessionSource
from tests.workers.fakes import FakeSessionSource, LoopClock, now

pytestmark = pytest.mark.looptime


async def test_a_cold_standby_asks_for_a_session_only_while_it_leads() -> None:
    """No request reaches Sendstack while the replica does not lead; the first
    goes out as soon as it does, and none after it stops leading."""
    inner = FakeSessionSource()
    leading = False
    held = HeldSessionSource(inner, lambda: leading, LoopClock())
    waiting = asyncio.create_task(held.obtain())
    await asyncio.sleep(600)
    assert inner.calls == [], "a standby asked for a session"
    leading = True
    await waiting
    assert inner.calls == [pytest.approx(600, abs=0.1)]
    leading = False
    again = asyncio.create_task(held.obtain())
    await asyncio.sleep(60)
    assert len(inner.calls) == 1, "a deposed leader logged in again"
    again.cancel()
    assert now() == pytest.approx(660, abs=0.1)
