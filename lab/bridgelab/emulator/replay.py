"""Replaying a ``sendstack-bridge capture`` file to every socket, verbatim.

The capture format is ``bridge.core.capture``: a header line
(``{"capture": 1, "started_at", "url", "codec"}``), then one event per line
with ``t`` (seconds since the capture started), ``at`` and ``kind``
(``open``, ``frame``, ``close``, ``rotation``, ``connect_failed``). Only
``frame`` events are replayed: ``text`` is sent as a text message (its UTF-8
bytes), ``base64`` as a binary message (the decoded bytes). The others only
set the clock: frame times count from the first ``open`` (when one comes
before the first frame, so the silence after connecting is kept), else from
the first frame.

Each socket gets its own replay from its opening: frame ``i`` is sent
``(t_i - t_0) / speed`` seconds after the socket opened (``speed`` 0 = as
fast as the socket takes them), then, when looping, the whole capture again
from the last frame on. Replayed frames carry no seq (they are opaque); the
connection counts them (``replayed_frames``).
"""

from __future__ import annotations

import asyncio
import binascii
from dataclasses import dataclass
from pathlib import Path

import orjson

from bridge.core.capture import CAPTURE_VERSION, frame_bytes
from bridge.errors import ConfigError
from bridgelab.emulator.broadcast import OPEN, Frame, Hub, StreamConnection


@dataclass(frozen=True, slots=True)
class CapturedFrame:
    """One frame to replay: when (seconds after the socket opened) and what."""

    offset: float
    data: bytes
    binary: bool


def load_capture(path: str | Path) -> list[CapturedFrame]:
    """The frames of a capture file, with offsets; ConfigError if it is not one."""
    where = Path(path)
    try:
        lines = where.read_bytes().splitlines()
    except OSError as exc:
        raise ConfigError([f"replay_file {str(where)!r}: {exc.strerror}"]) from exc
    events: list[dict[str, object]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ConfigError([f"replay_file line {number}: not JSON"]) from exc
        if not isinstance(value, dict):
            raise ConfigError([f"replay_file line {number}: not a JSON object"])
        events.append(value)
    if not events or "capture" not in events[0]:
        raise ConfigError(["replay_file: no capture header on the first line"])
    if events[0]["capture"] != CAPTURE_VERSION:
        raise ConfigError(
            [f"replay_file: capture version {events[0]['capture']!r} is not supported"]
        )
    base: float | None = None
    frames: list[CapturedFrame] = []
    last = 0.0
    for number, event in enumerate(events[1:], start=2):
        kind = event.get("kind", event.get("type"))
        t = event.get("t")
        if not isinstance(t, int | float):
            raise ConfigError([f"replay_file event {number}: no time 't'"])
        if kind == "open" and base is None and not frames:
            base = float(t)
        if kind != "frame":
            continue
        if base is None:
            base = float(t)
        try:
            data = frame_bytes(event)
        except (KeyError, binascii.Error, ValueError) as exc:
            raise ConfigError(
                [f"replay_file event {number}: a frame needs 'text' or 'base64'"]
            ) from exc
        last = max(last, float(t) - base)  # times never go backwards
        frames.append(CapturedFrame(last, data, "text" not in event))
    return frames


async def replay(
    hub: Hub,
    conn: StreamConnection,
    frames: list[CapturedFrame],
    *,
    speed: float,
    loop: bool,
) -> None:
    """Send ``frames`` to one socket on their schedule until it closes."""
    if not frames:
        return
    clock = asyncio.get_running_loop()
    start = clock.time()
    while True:
        for captured in frames:
            if speed > 0:
                delay = start + captured.offset / speed - clock.time()
                if delay > 0:
                    try:
                        async with asyncio.timeout(delay):
                            await conn.done.wait()
                    except TimeoutError:
                        pass
            else:
                await asyncio.sleep(0)  # as fast as possible, but fair
            if conn.state != OPEN:
                return
            frame = Frame(captured.data, binary=captured.binary, replayed=True)
            if not await hub.send_to(conn, frame):
                return
        if not loop:
            return
        # The next round starts now, as if the socket had just opened.
        start = clock.time()
