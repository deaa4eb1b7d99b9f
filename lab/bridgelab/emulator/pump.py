"""Drives the fleet and feeds the hub: paced (<= N frames/s) or load mode.

Paced mode follows the docs: at most ``max_frames_per_second`` frames, each
batching everything the fleet did since the previous frame; a quiet interval
sends nothing. Load mode makes small frames as fast as the sockets take them
and only runs while someone is connected (no point generating into the void).
The wire (``wire.py``) turns each batch into one frame or, depending on the
shape and transport, several (sent back to back).
"""

from __future__ import annotations

import asyncio
import contextlib

from bridgelab.emulator.broadcast import Hub
from bridgelab.emulator.fleet import Fleet
from bridgelab.emulator.wire import Wire


class FramePump:
    """The one task that generates items; controls are plain attributes."""

    def __init__(
        self,
        fleet: Fleet,
        hub: Hub,
        *,
        max_frames_per_second: float | None,
        frame_items: int,
        report_interval_seconds: float,
        paused: bool = False,
        wire: Wire | None = None,
    ) -> None:
        self._fleet = fleet
        self._hub = hub
        self._wire = wire or Wire(fleet)
        self.max_frames_per_second = max_frames_per_second or None
        self.frame_items = frame_items
        self._report_interval = report_interval_seconds
        self._running = asyncio.Event()
        if not paused:
            self._running.set()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.frames_generated = 0

    @property
    def paused(self) -> bool:
        """True while generation is paused."""
        return not self._running.is_set()

    def pause(self) -> None:
        """Stop generating (open sockets stay open and silent)."""
        self._running.clear()
        self._changed.set()

    def resume(self) -> None:
        """Generate again."""
        self._running.set()
        self._changed.set()

    def set_rate(
        self, max_frames_per_second: float | None, frame_items: int | None = None
    ) -> None:
        """Switch pacing; 0 or None means load mode."""
        self.max_frames_per_second = max_frames_per_second or None
        if frame_items is not None:
            self.frame_items = frame_items
        self._changed.set()

    def start(self) -> None:
        """Start the generating task."""
        self._task = asyncio.create_task(self._run(), name="emulator-frame-pump")

    async def stop(self) -> None:
        """Stop the generating task."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            if not self._running.is_set():
                await self._running.wait()
                last = loop.time()
            fps = self.max_frames_per_second
            if fps:
                # Sleep one frame interval, but wake early on a control change.
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(last + 1.0 / fps):
                        await self._changed.wait()
                now = loop.time()
                if now < last + 1.0 / fps or not self._running.is_set():
                    continue  # woken by a control change, not by the clock
                batch = self._fleet.tick(now - last, self._report_interval)
                last = now
            else:
                if not self._hub.listeners.is_set():
                    # Re-check the controls now and then while nobody listens.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.2):
                            await self._hub.listeners.wait()
                    continue
                batch = self._fleet.burst(self.frame_items)
                last = loop.time()
            for frame in self._wire.batch(batch):
                self.frames_generated += 1
                await self._hub.broadcast(frame)
            if not fps:
                await asyncio.sleep(0)  # let the senders write
