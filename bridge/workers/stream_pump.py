"""Reads the tracking socket and publishes it, across reconnects and rotations.

One loop owns the socket life cycle:

* **connect**: take the keeper's current session, open a socket (one attempt
  at a time); on failure back off (capped, jittered), and on a refused session
  ask the keeper for a new one.
* **serve**: read frames, decode them with the codec, drop ids seen in the
  last ``dedupe_capacity`` items, hand records to the sink (which blocks when
  its buffer is full: we then stop reading, and websockets and TCP push back
  on the server). Frames the codec does not understand go verbatim to the
  dead-letter topic; understood items of the same frame are still published.
* **rotate (make-before-break)**: when the keeper has a newer session, open a
  second socket with it and hold its first frames. Keep serving the old socket
  until it delivers an item the new socket already delivered (the old one has
  then caught up, so nothing sent only to it is left unread), or until
  ``overlap_max`` passes. Close the old socket, replay the held frames (their
  overlap is dropped by id) and carry on with the new socket. Per-device order
  is kept because the new socket's frames are only handled after the old
  socket's backlog. With ``single_session`` (an upstream that allows one
  session per app) the old socket is closed first instead.
* **liveness**: websockets' keepalive pings detect a half-open socket; a
  staleness watchdog (off by default: silence is normal upstream) forces a
  reconnect when no frame came for ``stale_after`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from dataclasses import dataclass, field

import structlog

from bridge.core.close_codes import STALE_CLOSE_CODE, classify_close
from bridge.core.codec import FrameCodec
from bridge.core.dedupe import RecentIds
from bridge.core.records import Topics, dead_letter_record, iso_ms, to_record
from bridge.core.retry import Backoff
from bridge.core.session import Session
from bridge.errors import SessionRejected, UpstreamClosed, UpstreamUnavailable
from bridge.metrics import WS_STATES, StreamMetrics, dlq_reason_label
from bridge.ports import (
    Clock,
    RecordSink,
    SessionHolder,
    UpstreamConnection,
    UpstreamConnector,
)

log = structlog.get_logger("bridge.stream")

_HELD_FRAMES_MAX = 10_000
# Records handed to the sink between two yields to the event loop. recv()
# returns queued frames without yielding, so without this a backlog is decoded
# in one go while the producer can neither send batches nor take acks (the
# buffer then sits full and Kafka idles). 10 measured best (bench: 5 costs
# more CPU; 20, or once per frame, leaves Kafka waiting).
_YIELD_EVERY = 10
# A connection that lived this long counts as healthy: the reconnect backoff restarts.
_HEALTHY_CONNECTION_SECONDS = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PumpOptions:
    reconnect: Backoff
    dedupe_capacity: int = 200_000
    overlap_max: float = 30.0
    stale_after: float = 0.0
    single_session: bool = False
    source: str = "/sendstack/tracking"


@dataclass(frozen=True, slots=True)
class PumpStatistics:
    connected: bool
    open_connections: int
    state: str
    last_frame_age: float | None
    frames: int
    items: int
    duplicates: int
    dead_lettered: int
    reconnects: int
    rotations: int


@dataclass
class _Handoff:
    """What the rotation task prepared: the next socket and its first frames."""

    successor: UpstreamConnection | None = None
    session: Session | None = None
    held: list[bytes] = field(default_factory=list)
    first_frame_at: float | None = None
    markers: frozenset[str] = frozenset()
    old_dlq_digests: set[bytes] = field(default_factory=set)


def _conn_id(conn: UpstreamConnection | None) -> int | None:
    return None if conn is None else conn.connection_id


class StreamPump:
    """Moves tracking frames from Sendstack's socket to the record sink."""

    def __init__(
        self,
        keeper: SessionHolder,
        connector: UpstreamConnector,
        codec: FrameCodec,
        sink: RecordSink,
        *,
        topics: Topics,
        clock: Clock,
        options: PumpOptions,
        metrics: StreamMetrics,
    ) -> None:
        self._keeper = keeper
        self._connector = connector
        self._codec = codec
        self._sink = sink
        self._topics = topics
        self._clock = clock
        self._opts = options
        self._metrics = metrics
        self._seen = RecentIds(options.dedupe_capacity)
        self._open: set[UpstreamConnection] = set()
        self._state = "disconnected"
        self._last_frame: float | None = None
        self._frames = 0
        self._items = 0
        self._duplicates = 0
        self._dead_lettered = 0
        self._reconnects = 0
        self._rotations = 0
        self._stopping = asyncio.Event()
        self._unyielded = 0  # records sent since the last yield, see _YIELD_EVERY
        m = metrics
        self._m_items = {
            k: m.items.labels(k) for k in ("position", "device_status", "event")
        }
        self._m_frames = {
            k: m.frames.labels(k)
            for k in ("ok", "keepalive", "dead_lettered", "partial")
        }

    # -- introspection -------------------------------------------------------

    def statistics(self) -> PumpStatistics:
        age = (
            None
            if self._last_frame is None
            else self._clock.monotonic() - self._last_frame
        )
        return PumpStatistics(
            connected=bool(self._open) and self._state in ("open", "rotating"),
            open_connections=len(self._open),
            state=self._state,
            last_frame_age=age,
            frames=self._frames,
            items=self._items,
            duplicates=self._duplicates,
            dead_lettered=self._dead_lettered,
            reconnects=self._reconnects,
            rotations=self._rotations,
        )

    # -- life cycle ----------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, rotate and reconnect until cancelled or stopped."""
        attempt = 0
        conn: UpstreamConnection | None = None
        session: Session | None = None
        while not self._stopping.is_set():
            if conn is None or session is None:
                session = await self._keeper.wait_for_session()
                conn = await self._connect(session)
                if conn is None:
                    await self._clock.sleep(
                        self._opts.reconnect.delay(attempt, random.random())
                    )
                    attempt += 1
                    continue
            opened = self._clock.monotonic()
            handoff = await self._serve(conn, session)
            if (
                handoff is not None
                and handoff.successor is not None
                and handoff.session is not None
            ):
                conn, session = handoff.successor, handoff.session
                attempt = 0
                continue
            conn = None
            if self._stopping.is_set():
                break
            self._reconnects += 1
            self._metrics.ws_reconnects.inc()
            attempt = (
                0
                if self._clock.monotonic() - opened >= _HEALTHY_CONNECTION_SECONDS
                else attempt + 1
            )
            await self._clock.sleep(
                self._opts.reconnect.delay(attempt, random.random())
            )

    async def stop(self) -> None:
        """Stop intake: close every socket with 1001 so ``run`` returns."""
        self._stopping.set()
        for conn in list(self._open):
            await self._close(conn, 1001, "bridge shutting down")

    # -- connecting ----------------------------------------------------------

    async def _connect(self, session: Session) -> UpstreamConnection | None:
        self._set_state("connecting")
        try:
            conn = await self._connector.open(session.token)
        except SessionRejected as exc:
            self._metrics.ws_connects.labels("rejected").inc()
            log.warning(
                "upstream_connect_rejected",
                generation=session.generation,
                error=str(exc),
            )
            self._keeper.report_rejected(session.generation)
            self._set_state("disconnected")
            return None
        except UpstreamUnavailable as exc:
            self._metrics.ws_connects.labels("failed").inc()
            log.warning("upstream_connect_failed", error=str(exc))
            self._set_state("disconnected")
            return None
        self._metrics.ws_connects.labels("ok").inc()
        self._track(conn)
        log.info(
            "upstream_connected",
            connection_id=conn.connection_id,
            generation=session.generation,
        )
        return conn

    # -- serving -------------------------------------------------------------

    async def _serve(
        self, conn: UpstreamConnection, session: Session
    ) -> _Handoff | None:
        """Read ``conn`` until it closes or hands over to a successor."""
        self._set_state("open")
        # Every log line of this task (and of the tasks it starts) names the
        # socket and the session generation it serves.
        structlog.contextvars.bind_contextvars(
            connection_id=conn.connection_id, session_generation=session.generation
        )
        handoff = _Handoff()
        helpers = [
            asyncio.create_task(self._rotate(conn, session, handoff), name="rotation")
        ]
        if self._opts.stale_after > 0:
            helpers.append(asyncio.create_task(self._watchdog(conn), name="watchdog"))
        closed: UpstreamClosed | None = None
        try:
            while True:
                try:
                    frame = await conn.recv()
                except UpstreamClosed as exc:
                    closed = exc
                    break
                ids = await self._handle(frame, handoff=handoff)
                if handoff.markers and not handoff.markers.isdisjoint(ids):
                    break  # the old socket caught up with the new one
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
        if handoff.successor is not None and not self._stopping.is_set():
            await self._cut_over(conn, closed, handoff)
            return handoff
        self._forget(conn)
        if handoff.successor is not None:
            await self._close(handoff.successor, 1001, "bridge shutting down")
        if closed is not None:
            self._closed(conn, session, closed)
        self._set_state("disconnected")
        return None

    async def _cut_over(
        self, old: UpstreamConnection, closed: UpstreamClosed | None, handoff: _Handoff
    ) -> None:
        last_old = self._last_frame
        if closed is None:
            await self._close(old, 1000, "session rotated")
        self._forget(old)
        if handoff.first_frame_at is not None and last_old is not None:
            self._metrics.rotation_gap.observe(
                max(0.0, handoff.first_frame_at - last_old)
            )
        held, handoff.held = handoff.held, []
        for frame in held:
            await self._handle(frame, handoff=handoff, replay=True)
        self._rotations += 1
        self._metrics.rotations.labels("ok").inc()
        self._metrics.ws_disconnects.labels("rotation").inc()
        self._set_state("open")
        log.info(
            "session_rotated",
            old_connection_id=old.connection_id,
            connection_id=_conn_id(handoff.successor),
            generation=handoff.session.generation if handoff.session else None,
            held_frames=len(held),
        )

    def _closed(
        self, conn: UpstreamConnection, session: Session, closed: UpstreamClosed
    ) -> None:
        verdict = classify_close(
            1006 if closed.code is None else closed.code, closed.reason
        )
        self._metrics.ws_disconnects.labels(verdict.reason).inc()
        log.warning(
            "upstream_disconnected",
            connection_id=conn.connection_id,
            code=closed.code,
            reason=verdict.reason,
            detail=closed.reason,
        )
        if verdict.reauth:
            self._keeper.report_rejected(session.generation)

    async def _handle(
        self, frame: bytes, *, handoff: _Handoff, replay: bool = False
    ) -> list[str]:
        """Decode one frame, publish what is new, dead-letter what is not understood."""
        self._frames += 1
        self._last_frame = self._clock.monotonic()
        self._metrics.last_frame.set(self._clock.time())
        decoded = self._codec.decode(frame)
        received_at = iso_ms(self._clock.time())
        ids: list[str] = []
        seen, send = self._seen, self._sink.send
        topics, source = self._topics, self._opts.source
        counts = dict.fromkeys(self._m_items, 0)
        try:
            for item in decoded.items:
                event_id = item.event_id
                ids.append(event_id)
                if not seen.add(event_id):
                    self._duplicates += 1
                    self._metrics.duplicates.inc()
                    continue
                counts[item.kind] += 1
                await send(
                    to_record(item, topics, received_at=received_at, source=source)
                )
                self._unyielded += 1
                if self._unyielded >= _YIELD_EVERY:
                    self._unyielded = 0
                    await asyncio.sleep(0)
        finally:
            # Counted per frame, not per item: each inc() takes a lock.
            for kind, count in counts.items():
                if count:
                    self._items += count
                    self._m_items[kind].inc(count)
        rejection = decoded.rejection
        if rejection is None:
            self._m_frames["keepalive" if decoded.keepalive else "ok"].inc()
            return ids
        digest = hashlib.blake2b(frame, digest_size=16).digest()
        if replay and digest in handoff.old_dlq_digests:
            return ids  # the old socket already dead-lettered this very frame
        if handoff.successor is not None and not replay:
            handoff.old_dlq_digests.add(digest)
        self._m_frames["partial" if decoded.items else "dead_lettered"].inc()
        self._dead_lettered += 1
        self._metrics.dead_lettered.labels(
            "stream", dlq_reason_label(rejection.reason)
        ).inc()
        log.warning(
            "frame_dead_lettered",
            reason=rejection.reason,
            detail=rejection.detail,
            frame_bytes=len(frame),
            items_kept=len(decoded.items),
        )
        await self._sink.send(
            dead_letter_record(
                frame, rejection, self._topics, received_at=received_at, origin="stream"
            )
        )
        return ids

    # -- rotation ------------------------------------------------------------

    async def _rotate(
        self, old: UpstreamConnection, session: Session, handoff: _Handoff
    ) -> None:
        """Wait for a newer session, then prepare the successor socket."""
        new = await self._keeper.wait_newer(session.generation)
        self._set_state("rotating")
        if self._opts.single_session:
            log.info("session_rotating_close_first", generation=new.generation)
            self._metrics.rotations.labels("closed_first").inc()
            await self._close(old, 1000, "session rotated")
            return
        attempt = 0
        while True:
            try:
                successor = await self._connector.open(new.token)
                break
            except SessionRejected:
                self._metrics.ws_connects.labels("rejected").inc()
                self._metrics.rotations.labels("failed").inc()
                self._keeper.report_rejected(new.generation)
                new = await self._keeper.wait_newer(new.generation)
            except UpstreamUnavailable as exc:
                self._metrics.ws_connects.labels("failed").inc()
                self._metrics.rotations.labels("failed").inc()
                log.warning("rotation_connect_failed", error=str(exc))
                await self._clock.sleep(
                    self._opts.reconnect.delay(attempt, random.random())
                )
                attempt += 1
        self._metrics.ws_connects.labels("ok").inc()
        self._track(successor)
        handoff.successor, handoff.session = successor, new
        log.info(
            "rotation_socket_open",
            connection_id=successor.connection_id,
            generation=new.generation,
        )
        try:
            async with self._clock.timeout(self._opts.overlap_max):
                await self._hold_first_frames(successor, handoff)
                if not any(m in self._seen for m in handoff.markers):
                    # The old socket is behind: the reader cuts over when it
                    # delivers a marker; the deadline bounds the wait.
                    await asyncio.Event().wait()
                # Otherwise the old socket already delivered what the new one
                # started with: everything after that is on the new one too.
        except TimeoutError:
            # The old socket delivered nothing we could match in time: it is
            # stale or dead, so do not wait for a closing handshake either.
            log.info("rotation_overlap_timed_out", markers=len(handoff.markers))
            old.abort()
            return
        except UpstreamClosed as exc:
            log.warning("rotation_socket_closed", code=exc.code)
            self._forget(successor)
            handoff.successor = handoff.session = None
            handoff.held.clear()
            return
        # The old socket caught up already; the reader then cuts over.
        await self._close(old, 1000, "session rotated")

    async def _hold_first_frames(
        self, successor: UpstreamConnection, handoff: _Handoff
    ) -> None:
        while len(handoff.held) < _HELD_FRAMES_MAX:
            frame = await successor.recv()
            if handoff.first_frame_at is None:
                handoff.first_frame_at = self._clock.monotonic()
            handoff.held.append(frame)
            ids = frozenset(item.event_id for item in self._codec.decode(frame).items)
            if ids:
                handoff.markers = ids
                return

    # -- watchdog ------------------------------------------------------------

    async def _watchdog(self, conn: UpstreamConnection) -> None:
        stale_after = self._opts.stale_after
        started = self._clock.monotonic()
        while True:
            await self._clock.sleep(stale_after / 4)
            last = self._last_frame if self._last_frame is not None else started
            if self._clock.monotonic() - max(last, started) > stale_after:
                self._metrics.watchdog.inc()
                log.warning(
                    "upstream_stale",
                    connection_id=conn.connection_id,
                    silent_for=stale_after,
                )
                await self._close(conn, STALE_CLOSE_CODE, "stale")
                return

    # -- helpers -------------------------------------------------------------

    def _set_state(self, state: str) -> None:
        self._state = state
        self._metrics.ws_state.set(WS_STATES[state])

    def _track(self, conn: UpstreamConnection) -> None:
        self._open.add(conn)
        self._metrics.ws_open.set(len(self._open))

    def _forget(self, conn: UpstreamConnection) -> None:
        self._open.discard(conn)
        self._metrics.ws_open.set(len(self._open))

    async def _close(self, conn: UpstreamConnection, code: int, reason: str) -> None:
        with contextlib.suppress(UpstreamClosed, OSError):
            await conn.close(code, reason)
