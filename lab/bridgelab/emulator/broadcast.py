"""Fan-out of encoded frames to every open socket, with per-socket backpressure.

Each socket has its own bounded queue and sender task. A frame is encoded once
and the same bytes go to every queue. When a queue is full the producer waits
(a slow client slows the emulator) but only for a grace period; after that the
socket is closed with 1013 and its queued frames are discarded, so one stuck
client cannot stall the others forever.

The ledger records a frame's seqs for a socket only once ``ws.send`` returned
for it, i.e. the bytes were handed to the transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Final

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from bridgelab.emulator.fleet import iso_ms
from bridgelab.emulator.ledger import SeqLedger, merge_ranges
from bridgelab.emulator.sessions import Session

_log = logging.getLogger(__name__)

OPEN: Final = "open"
HALF_OPEN: Final = "half_open"
CLOSING: Final = "closing"
CLOSED: Final = "closed"

CLOSE_SESSION: Final = 4001  # assumed: see docs/wire-format.md
CLOSE_TRY_AGAIN_LATER: Final = 1013
CLOSE_ABNORMAL: Final = 1006  # recorded for drops; never sent on the wire


@dataclass(frozen=True, slots=True)
class Frame:
    """Encoded bytes plus the seqs they carry (none for fault frames)."""

    payload: bytes
    first_seq: int = 0
    last_seq: int = -1
    fault: str | None = None  # "malformed", "unknown", "oversize"


class _Stop:
    """Queue marker: the sender stops after what it is sending now."""


_STOP: Final = _Stop()


@dataclass(slots=True, eq=False)
class StreamConnection:
    """One accepted websocket and everything we know about it."""

    id: int
    ws: ServerConnection
    session: Session
    remote: str
    opened_at: float = field(default_factory=time.time)
    state: str = OPEN
    closed_at: float | None = None
    close_code: int | None = None
    close_reason: str | None = None
    overflowed: bool = False
    frames_written: int = 0
    faults_written: Counter[str] = field(default_factory=Counter)
    ledger: SeqLedger = field(default_factory=SeqLedger)
    queue: deque[Frame | _Stop] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    room: asyncio.Event = field(default_factory=asyncio.Event)
    sender: asyncio.Task[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)  # set when closed
    intended_close: tuple[int, str] | None = None

    def info(self) -> dict[str, Any]:
        """A JSON-ready snapshot (the session appears only as its hash id)."""
        return {
            "id": self.id,
            "session_id": self.session.session_id,
            "remote": self.remote,
            "state": self.state,
            "opened_at": iso_ms(int(self.opened_at * 1000)),
            "closed_at": (
                iso_ms(int(self.closed_at * 1000)) if self.closed_at else None
            ),
            "close_code": self.close_code,
            "close_reason": self.close_reason,
            "written_items": self.ledger.count,
            "written_frames": self.frames_written,
            "faults_written": dict(self.faults_written),
            "queue_depth": sum(1 for f in self.queue if isinstance(f, Frame)),
            "overflowed": self.overflowed,
        }


class Hub:
    """Every stream connection ever accepted, and the broadcast to the open ones."""

    def __init__(
        self,
        *,
        queue_frames: int,
        grace_seconds: float,
        close_timeout: float = 2.0,
    ) -> None:
        self._cap = queue_frames
        self._grace = grace_seconds
        # Bounds every way of ending a socket: a peer that does not read
        # must not keep a close (or a flush before a drop) pending forever.
        self._close_timeout = close_timeout
        self._conns: dict[int, StreamConnection] = {}
        self._open: dict[int, StreamConnection] = {}
        self._next_id = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.listeners = asyncio.Event()  # set while any socket is open
        self.opened = asyncio.Event()  # set whenever a socket is accepted
        self.overflows = 0
        self.faults_requested: Counter[str] = Counter()
        self._shutting_down = False

    # -- lifecycle ------------------------------------------------------------

    def register(self, ws: ServerConnection, session: Session) -> StreamConnection:
        """Track a freshly accepted socket and start its sender."""
        self._next_id += 1
        remote = ws.remote_address
        conn = StreamConnection(
            id=self._next_id,
            ws=ws,
            session=session,
            remote=f"{remote[0]}:{remote[1]}" if remote else "",
        )
        conn.sender = asyncio.create_task(
            self._send_loop(conn), name=f"emulator-ws-send-{conn.id}"
        )
        self._conns[conn.id] = conn
        self._open[conn.id] = conn
        self.listeners.set()
        self.opened.set()
        if self._shutting_down:  # accepted just as we stopped: close it too
            self.close(conn, 1001, "emulator stopped")
        return conn

    async def finished(self, conn: StreamConnection) -> None:
        """The socket is gone: stop its sender and record how it ended."""
        self._stop_sending(conn)
        if conn.sender is not None and not conn.sender.done():
            await asyncio.wait({conn.sender}, timeout=1.0)
            conn.sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await conn.sender
        conn.state = CLOSED
        conn.closed_at = time.time()
        if conn.intended_close is not None:
            conn.close_code, conn.close_reason = conn.intended_close
        else:
            conn.close_code = conn.ws.close_code
            conn.close_reason = conn.ws.close_reason
        self._forget_open(conn)
        conn.done.set()

    async def shutdown(self) -> None:
        """Close every socket: half-open ones are aborted, others get 1001."""
        self._shutting_down = True
        for conn in list(self._conns.values()):
            if conn.state == HALF_OPEN:
                conn.intended_close = (CLOSE_ABNORMAL, "emulator stopped")
                conn.ws.transport.abort()
            elif conn.state == OPEN:
                self.close(conn, 1001, "emulator stopped")
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- queries --------------------------------------------------------------

    def get(self, conn_id: int) -> StreamConnection | None:
        """The connection with this id (open or not)."""
        return self._conns.get(conn_id)

    def all(self) -> list[StreamConnection]:
        """Every connection ever accepted, oldest first."""
        return list(self._conns.values())

    def open_connections(self) -> list[StreamConnection]:
        """Connections that currently receive frames."""
        return list(self._open.values())

    def select(self, conn_id: int | None) -> list[StreamConnection]:
        """One open or half-open connection by id, or all of them."""
        live = [c for c in self._conns.values() if c.state in (OPEN, HALF_OPEN)]
        return live if conn_id is None else [c for c in live if c.id == conn_id]

    def written_ranges(self, conn_id: int | None = None) -> list[tuple[int, int]]:
        """Seq runs written to one connection, or the union over all of them."""
        if conn_id is not None:
            conn = self._conns.get(conn_id)
            return conn.ledger.ranges() if conn else []
        return merge_ranges(r for c in self._conns.values() for r in c.ledger.ranges())

    # -- sending --------------------------------------------------------------

    async def broadcast(self, frame: Frame) -> None:
        """Queue ``frame`` on every open socket, waiting (bounded) for room."""
        full: list[StreamConnection] = []
        for conn in self._open.values():
            if len(conn.queue) < self._cap:
                conn.queue.append(frame)
                conn.wake.set()
            else:
                full.append(conn)
        if full:
            await self._wait_for_room(full, frame)

    def enqueue(self, frame: Frame, conn_id: int | None = None) -> int:
        """Queue an out-of-band frame (faults) without waiting; returns targets."""
        targets = [c for c in self._open.values() if conn_id in (None, c.id)]
        for conn in targets:
            conn.queue.append(frame)  # may exceed the cap by a few fault frames
            conn.wake.set()
        return len(targets)

    async def _wait_for_room(self, full: list[StreamConnection], frame: Frame) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._grace
        for conn in full:
            while conn.state == OPEN and len(conn.queue) >= self._cap:
                conn.room.clear()
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        await conn.room.wait()
                except TimeoutError:
                    break
            if conn.state != OPEN:
                continue
            if len(conn.queue) >= self._cap:
                self.overflows += 1
                conn.overflowed = True
                _log.warning(
                    "stream connection %d too slow, closing with 1013", conn.id
                )
                self.close(conn, CLOSE_TRY_AGAIN_LATER, "slow consumer")
            else:
                conn.queue.append(frame)
                conn.wake.set()

    async def _send_loop(self, conn: StreamConnection) -> None:
        ws, queue = conn.ws, conn.queue
        while True:
            if not queue:
                conn.wake.clear()
                await conn.wake.wait()
                continue
            item = queue.popleft()
            conn.room.set()
            if isinstance(item, _Stop):
                return
            try:
                await ws.send(item.payload, text=True)
            except ConnectionClosed:
                return
            conn.frames_written += 1
            if item.fault is not None:
                conn.faults_written[item.fault] += 1
            else:
                conn.ledger.add(item.first_seq, item.last_seq)

    # -- ending connections ----------------------------------------------------

    def _stop_sending(self, conn: StreamConnection) -> None:
        # Discard the backlog: frames never handed to ws.send are not written.
        conn.queue.clear()
        conn.queue.append(_STOP)
        conn.wake.set()
        conn.room.set()

    def _forget_open(self, conn: StreamConnection) -> None:
        self._open.pop(conn.id, None)
        if not self._open:
            self.listeners.clear()

    def close(self, conn: StreamConnection, code: int, reason: str) -> None:
        """Close with a close frame (e.g. 4001, 1013); returns at once."""
        if conn.state != OPEN:
            return
        conn.state = CLOSING
        conn.intended_close = (code, reason)
        self._forget_open(conn)
        self._stop_sending(conn)
        self._spawn(self._close_ws(conn, code, reason))

    async def _close_ws(self, conn: StreamConnection, code: int, reason: str) -> None:
        # websockets bounds the closing handshake but not the wait to write
        # the close frame behind a full buffer; bound both.
        try:
            async with asyncio.timeout(2 * self._close_timeout + 0.1):
                await conn.ws.close(code, reason)
        except TimeoutError:
            conn.ws.transport.abort()

    async def drop(self, conn: StreamConnection) -> None:
        """Flush what was written, then end TCP with no close frame (client: 1006)."""
        if conn.state not in (OPEN, HALF_OPEN):
            return
        conn.state = CLOSING
        conn.intended_close = (CLOSE_ABNORMAL, "dropped")
        self._forget_open(conn)
        self._stop_sending(conn)
        if conn.sender is not None and not conn.sender.done():
            # Let an in-flight send finish so no frame is cut in half.
            await asyncio.wait({conn.sender}, timeout=self._close_timeout)
        # transport.close() (unlike abort()) sends what is buffered, then FIN.
        conn.ws.transport.close()
        self._spawn(self._abort_later(conn, self._close_timeout, CLOSING))

    async def half_open(
        self, conn: StreamConnection, hold_seconds: float | None
    ) -> None:
        """Stop sending and stop reading (so pings go unanswered)."""
        if conn.state != OPEN:
            return
        conn.state = HALF_OPEN
        self._forget_open(conn)
        self._stop_sending(conn)
        if conn.sender is not None and not conn.sender.done():
            await asyncio.wait({conn.sender}, timeout=self._close_timeout)
        # Unread bytes (the client's pings) stay in the kernel; websockets
        # never sees them, so it never answers them.
        conn.ws.transport.pause_reading()
        if hold_seconds is not None:
            self._spawn(self._abort_later(conn, hold_seconds, HALF_OPEN))

    async def _abort_later(
        self, conn: StreamConnection, delay: float, state: str
    ) -> None:
        """Abort the transport if ``conn`` is still in ``state`` after ``delay``."""
        try:
            async with asyncio.timeout(delay):
                await conn.done.wait()
        except TimeoutError:
            pass
        if conn.state == state:
            if state == HALF_OPEN:
                conn.intended_close = (CLOSE_ABNORMAL, "half-open hold expired")
            conn.ws.transport.abort()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
