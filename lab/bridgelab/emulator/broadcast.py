"""Fan-out of encoded frames to every open socket, with per-socket backpressure.

Each socket has its own bounded queue and sender task. A frame is encoded once
and the same bytes go to every queue. When a queue is full the producer waits
(a slow client slows the emulator) but only for a grace period; after that the
socket is closed with 1013 and its queued frames are discarded, so one stuck
client cannot stall the others forever.

The ledger records a frame's seqs for a socket only once its bytes were
handed to the transport: on a websocket once ``ws.send`` returned; on
Socket.IO once Engine.IO's writer handed the packet to the websocket (or the
long-polling response carrying it was written), see ``socketio_server.py``.

The hub does not know the transport: each socket is a ``Channel`` (a plain
websocket here, a Socket.IO client in ``socketio_server.py``). It also runs
the session rules every transport shares: expiry closes (4001) and the
session policy (``replace-4409`` evicts older sockets when a new one opens).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from bridgelab.emulator.config import SessionPolicy
from bridgelab.emulator.fleet import iso_ms
from bridgelab.emulator.ledger import SeqLedger, merge_ranges
from bridgelab.emulator.sessions import Session

_log = logging.getLogger(__name__)

OPEN: Final = "open"
HALF_OPEN: Final = "half_open"
CLOSING: Final = "closing"
CLOSED: Final = "closed"

CLOSE_SESSION: Final = 4001  # assumed: see docs/wire-format.md
CLOSE_REPLACED: Final = 4409  # session_policy="replace-4409"
CLOSE_TRY_AGAIN_LATER: Final = 1013
CLOSE_ABNORMAL: Final = 1006  # recorded for drops; never sent on the wire

Runs = tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class Frame:
    """One message plus the seqs it carries (none for fault and replay frames).

    On a websocket, ``payload`` is the message (text, or binary when
    ``binary``). On Socket.IO, ``event`` and ``data`` are what is emitted;
    with ``event`` None, ``payload`` is a raw Socket.IO packet (a fault).
    """

    payload: bytes
    first_seq: int = 0
    last_seq: int = -1
    fault: str | None = None  # "malformed", "unknown", "oversize"
    runs: Runs = ()  # the seqs when they are not the one run first..last
    event: str | None = None  # Socket.IO event name
    data: Any = None  # Socket.IO event argument (JSON-ready)
    binary: bool = False  # websocket: send as a binary message
    replayed: bool = False  # a frame of a replayed capture

    def seq_runs(self) -> Runs:
        """The seqs this frame carries, as ``(first, last)`` runs."""
        if self.runs:
            return self.runs
        if self.last_seq >= self.first_seq:
            return ((self.first_seq, self.last_seq),)
        return ()


def runs_of(seqs: Iterable[int]) -> Runs:
    """Sorted seqs as ``(first, last)`` runs."""
    runs: list[list[int]] = []
    for seq in sorted(seqs):
        if runs and runs[-1][1] + 1 == seq:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    return tuple((a, b) for a, b in runs)


class Channel(Protocol):
    """One accepted socket, whatever its transport."""

    @property
    def remote(self) -> str:
        """``host:port`` of the peer ("" when unknown)."""
        ...

    async def send(self, frame: Frame, written: Callable[[Frame], None]) -> bool:
        """Send ``frame``; call ``written`` once its bytes reached the transport.

        Returns False when the socket is gone (the sender then stops).
        """
        ...

    def interrupt(self) -> None:
        """Make a ``send`` that is waiting return now (the sender is stopping)."""
        ...

    async def close(self, code: int, reason: str, within: float) -> None:
        """End the socket the transport's orderly way, bounded by ``within`` s."""
        ...

    def cut(self) -> None:
        """End TCP after what is buffered, with no close handshake (drop)."""
        ...

    def abort(self) -> None:
        """End TCP now."""
        ...

    def stall(self) -> None:
        """Half-open: write nothing more and stop reading (pings go unanswered)."""
        ...

    def close_info(self) -> tuple[int | None, str | None]:
        """The close code and reason the transport saw, if any."""
        ...


class WsChannel:
    """A plain websocket (``websockets``) as a ``Channel``."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws

    @property
    def remote(self) -> str:
        """``host:port`` of the peer."""
        address = self.ws.remote_address
        return f"{address[0]}:{address[1]}" if address else ""

    async def send(self, frame: Frame, written: Callable[[Frame], None]) -> bool:
        """``ws.send``; the frame counts as written once it returned."""
        try:
            await self.ws.send(frame.payload, text=not frame.binary)
        except ConnectionClosed:
            return False
        written(frame)
        return True

    def interrupt(self) -> None:
        """Nothing waits beyond ``ws.send`` itself."""

    async def close(self, code: int, reason: str, within: float) -> None:
        """A close frame; the transport is aborted if that takes too long."""
        # websockets bounds the closing handshake but not the wait to write
        # the close frame behind a full buffer; bound both.
        try:
            async with asyncio.timeout(within):
                await self.ws.close(code, reason)
        except TimeoutError:
            self.ws.transport.abort()

    def cut(self) -> None:
        """transport.close() (unlike abort()) sends what is buffered, then FIN."""
        self.ws.transport.close()

    def abort(self) -> None:
        """End TCP at once."""
        self.ws.transport.abort()

    def stall(self) -> None:
        """Unread bytes (the client's pings) stay in the kernel, unanswered."""
        self.ws.transport.pause_reading()

    def close_info(self) -> tuple[int | None, str | None]:
        """What websockets recorded."""
        return self.ws.close_code, self.ws.close_reason


class _Stop:
    """Queue marker: the sender stops after what it is sending now."""


_STOP: Final = _Stop()


@dataclass(slots=True, eq=False)
class StreamConnection:
    """One accepted socket and everything we know about it."""

    id: int
    channel: Channel
    session: Session
    remote: str
    opened_at: float = field(default_factory=time.time)
    state: str = OPEN
    closed_at: float | None = None
    close_code: int | None = None
    close_reason: str | None = None
    overflowed: bool = False
    frames_written: int = 0
    replayed_frames: int = 0  # frames of a replayed capture written
    faults_written: Counter[str] = field(default_factory=Counter)
    ledger: SeqLedger = field(default_factory=SeqLedger)
    queue: deque[Frame | _Stop] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    room: asyncio.Event = field(default_factory=asyncio.Event)
    sender: asyncio.Task[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)  # set when closed
    intended_close: tuple[int, str] | None = None
    watcher: asyncio.Task[None] | None = None  # closes the socket at expiry

    def record(self, frame: Frame) -> None:
        """``frame`` reached the transport: count it and ledger its seqs."""
        self.frames_written += 1
        if frame.fault is not None:
            self.faults_written[frame.fault] += 1
        elif frame.replayed:
            self.replayed_frames += 1
        else:
            for first, last in frame.seq_runs():
                self.ledger.add(first, last)

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
            "replayed_frames": self.replayed_frames,
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
        session_policy: SessionPolicy = "multi",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._policy = session_policy
        self._clock = clock
        # Called with every newly registered connection (replay starts here).
        self.on_open: Callable[[StreamConnection], None] | None = None
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

    def occupied(self) -> bool:
        """Whether an open socket holds the slot (``refuse-409``).

        A half-open socket does not: it stands for a dead link, which a real
        server times out; counting it would refuse every upgrade for good.
        """
        return bool(self._open)

    def register(self, channel: Channel, session: Session) -> StreamConnection:
        """Track a freshly accepted socket and start its sender."""
        self._next_id += 1
        conn = StreamConnection(
            id=self._next_id,
            channel=channel,
            session=session,
            remote=channel.remote,
        )
        conn.sender = asyncio.create_task(
            self._send_loop(conn), name=f"emulator-ws-send-{conn.id}"
        )
        conn.watcher = asyncio.create_task(
            self._watch_expiry(conn), name=f"emulator-ws-expiry-{conn.id}"
        )
        if self._policy == "replace-4409":
            for other in list(self._open.values()):
                self.close(other, CLOSE_REPLACED, "replaced by a newer connection")
        self._conns[conn.id] = conn
        self._open[conn.id] = conn
        self.listeners.set()
        self.opened.set()
        if self._shutting_down:  # accepted just as we stopped: close it too
            self.close(conn, 1001, "emulator stopped")
        elif self.on_open is not None:
            self.on_open(conn)
        return conn

    async def finished(self, conn: StreamConnection) -> None:
        """The socket is gone: stop its sender and record how it ended."""
        if conn.state == CLOSED:
            return
        if conn.watcher is not None:
            conn.watcher.cancel()
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
            conn.close_code, conn.close_reason = conn.channel.close_info()
        self._forget_open(conn)
        conn.done.set()

    async def shutdown(self) -> None:
        """Close every socket: half-open ones are aborted, others get 1001."""
        self._shutting_down = True
        for conn in list(self._conns.values()):
            if conn.state == HALF_OPEN:
                conn.intended_close = (CLOSE_ABNORMAL, "emulator stopped")
                conn.channel.abort()
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

    async def send_to(self, conn: StreamConnection, frame: Frame) -> bool:
        """Queue ``frame`` on one socket, waiting (bounded) for room."""
        if conn.state != OPEN:
            return False
        if len(conn.queue) < self._cap:
            conn.queue.append(frame)
            conn.wake.set()
        else:
            await self._wait_for_room([conn], frame)
        return conn.state == OPEN

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
        channel, queue = conn.channel, conn.queue
        while True:
            if not queue:
                conn.wake.clear()
                await conn.wake.wait()
                continue
            item = queue.popleft()
            conn.room.set()
            if isinstance(item, _Stop):
                return
            if not await channel.send(item, conn.record):
                return

    # -- ending connections ----------------------------------------------------

    def _stop_sending(self, conn: StreamConnection) -> None:
        # Discard the backlog: frames never handed to ws.send are not written.
        conn.queue.clear()
        conn.queue.append(_STOP)
        conn.wake.set()
        conn.room.set()
        conn.channel.interrupt()

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
        await conn.channel.close(code, reason, 2 * self._close_timeout + 0.1)

    def end_sessions(self, sessions: Iterable[Session], reason: str) -> int:
        """Close (4001) the open sockets of these sessions; returns how many."""
        ids = {s.session_id for s in sessions}
        ended = 0
        for conn in list(self._open.values()):
            if conn.session.session_id in ids:
                self.close(conn, CLOSE_SESSION, reason)
                ended += 1
        return ended

    async def _watch_expiry(self, conn: StreamConnection) -> None:
        session = conn.session
        while conn.state == OPEN and session.ended is None:
            delay = session.expires_at - self._clock()
            if delay <= 0:
                break
            # Re-check after sleeping: a same-second re-issue may extend it.
            await asyncio.sleep(delay)
        if conn.state != OPEN:
            return
        reason = (
            "session replaced" if session.ended == "replaced" else "session expired"
        )
        self.close(conn, CLOSE_SESSION, reason)

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
        conn.channel.cut()
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
        conn.channel.stall()
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
            conn.channel.abort()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task the hub waits for when it shuts down."""
        self._spawn(coro)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
