"""The real clock behind the ``Clock`` port."""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractAsyncContextManager


class SystemClock:
    """Wall time, monotonic time, ``asyncio.sleep`` and ``asyncio.timeout``."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def timeout(self, seconds: float | None) -> AbstractAsyncContextManager[object]:
        return asyncio.timeout(None if seconds is None else max(0.0, seconds))
