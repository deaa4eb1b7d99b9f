"""``sendstack-bridge capture``: record the tracking wire verbatim, publish nothing.

With the normal configuration (Kafka is not needed) it keeps its own
session through the session keeper, so the lockout's failure budget holds
(``BRIDGE_AUTH_MAX_FAILURES`` per window), opens the configured URL (through the
Socket.IO transport when ``BRIDGE_STREAM_TRANSPORT=socketio``), and
writes every frame with its receive time, plus opens, closes, rotations and
failed connects, to a JSON-lines file (``bridge.core.capture``). A newer
session closes the socket and opens one with it (close-first: a capture
needs no make-before-break). Secrets are masked wherever they appear.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import structlog
from prometheus_client import CollectorRegistry

from bridge.adapters.auth_api import HttpSessionSource
from bridge.adapters.clock import SystemClock
from bridge.adapters.upstream_connectors import stream_connector
from bridge.adapters.upstream_ws import session_url
from bridge.adapters.wire_probe import CaptureSocket, ConnectionCapture, error_kind
from bridge.config import SendstackSettings, Settings
from bridge.core.capture import event_line, frame_field, header_line
from bridge.core.retry import Backoff, FailureBudget
from bridge.core.session import RotationPolicy
from bridge.metrics import StreamMetrics
from bridge.secrets import Secret, TextRedactor
from bridge.workers.session_keeper import SessionKeeper

log = structlog.get_logger("bridge.capture")


@dataclass
class CaptureSummary:
    frames: int = 0
    opens: int = 0
    closes: int = 0
    rotations: int = 0
    failed_connects: int = 0


async def capture(
    settings: Settings, *, duration: float, max_frames: int, out: Path
) -> CaptureSummary:
    """Record until ``duration`` seconds or ``max_frames`` frames."""
    sendstack = settings.require(SendstackSettings)
    stream, s = settings.stream, settings.session
    clock = SystemClock()
    redactor = TextRedactor([sendstack.app_secret], [stream.session_query_key])
    summary = CaptureSummary()
    started, started_at = time.monotonic(), time.time()
    shown = redactor.text(
        session_url(stream.url, stream.session_query_key, Secret("masked"))
    )
    backoff = Backoff(
        initial=stream.reconnect_initial_seconds,
        maximum=stream.reconnect_max_seconds,
    )
    # Socket.IO: capture the event arrays the transport hands the codec (a
    # raw socket would never join the namespace, so it would see no event).
    connector = stream_connector(stream) if stream.transport == "socketio" else None
    async with httpx.AsyncClient(timeout=sendstack.http_timeout_seconds) as client:
        keeper = SessionKeeper(
            HttpSessionSource(
                client,
                base_url=sendstack.base_url,
                app_id=sendstack.app_id,
                app_secret=sendstack.app_secret,
                header_style=sendstack.session_header_style,
                send_source=sendstack.send_source_header,
            ),
            clock=clock,
            policy=RotationPolicy(
                margin=s.refresh_before_seconds, jitter=s.refresh_jitter_seconds
            ),
            backoff=Backoff(
                initial=s.auth_backoff_initial_seconds,
                maximum=s.auth_backoff_max_seconds,
            ),
            budget=FailureBudget(
                max_failures=s.auth_max_failures, window=s.auth_failure_window_seconds
            ),
            metrics=StreamMetrics(CollectorRegistry()),
        )
        keeping = asyncio.create_task(keeper.run(), name="capture-session")
        with out.open("wb") as sink:
            sink.write(
                header_line(started_at=started_at, url=shown, codec=stream.codec)
                + b"\n"
            )

            def write(kind: str, **fields: object) -> None:
                t = time.monotonic() - started
                sink.write(event_line(kind, t=t, at=time.time(), **fields) + b"\n")

            def left() -> float:
                return duration - (time.monotonic() - started)

            attempt = 0
            try:
                while left() > 0 and summary.frames < max_frames:
                    try:
                        async with asyncio.timeout(left()):
                            session = await keeper.wait_for_session()
                    except TimeoutError:
                        break
                    redactor.add(session.token)
                    socket: CaptureSocket | ConnectionCapture
                    try:
                        if connector is not None:
                            socket = ConnectionCapture(
                                await connector.open(session.token)
                            )
                        else:
                            socket = await CaptureSocket.open(
                                session_url(
                                    stream.url, stream.session_query_key, session.token
                                ),
                                open_timeout=stream.open_timeout_seconds,
                            )
                    except Exception as exc:  # noqa: BLE001 - recorded by kind
                        summary.failed_connects += 1
                        write(
                            "connect_failed",
                            error=error_kind(exc),
                            detail=redactor.text(str(exc))[:200],
                        )
                        await asyncio.sleep(
                            min(left(), backoff.delay(attempt, random.random()))
                        )
                        attempt += 1
                        continue
                    attempt = 0
                    summary.opens += 1
                    write("open", url=shown, generation=session.generation)
                    newer = asyncio.create_task(keeper.wait_newer(session.generation))
                    try:
                        while left() > 0 and summary.frames < max_frames:
                            got = await socket.next_frame(left(), newer)
                            if got is None:
                                break
                            data, is_text = got
                            summary.frames += 1
                            write("frame", **frame_field(redactor, data, text=is_text))
                        if newer.done() and not newer.cancelled():
                            summary.rotations += 1
                            write("rotation", generation=newer.result().generation)
                    finally:
                        newer.cancel()
                        closed = await socket.close()
                    if closed is not None:
                        summary.closes += 1
                        write("close", code=closed[0], reason=redactor.text(closed[1]))
            finally:
                keeping.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeping
    log.info("capture_done", frames=summary.frames, opens=summary.opens)
    return summary
