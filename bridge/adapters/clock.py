"""The real clock behind the ``Clock`` port."""

from __future__ import annotations

import asyncio
import time


class SystemClock:
    """Wall time, monotonic time and ``asyncio.sleep``."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
