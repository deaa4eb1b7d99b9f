"""Shared helpers for the emulator tests: real servers, real clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest

from bridgelab.emulator import Emulator, EmulatorConfig

EmulatorFactory = Callable[..., AbstractAsyncContextManager[Emulator]]


@pytest.fixture
def make_emulator() -> EmulatorFactory:
    """``async with make_emulator(session_ttl_seconds=2) as emu`` with test defaults."""

    def factory(**overrides: Any) -> AbstractAsyncContextManager[Emulator]:
        return Emulator(EmulatorConfig(**overrides))

    return factory


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    """A default emulator (paced, 10 devices, 6 h sessions)."""
    async with Emulator(EmulatorConfig()) as emulator:
        yield emulator


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A plain httpx client."""
    async with httpx.AsyncClient(timeout=10) as client:
        yield client
