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
* **session policy**: whether the upstream allows a second socket or session
  is not documented, so the pump learns it. A rotation whose new socket is
  refused (HTTP 409/403/429 while the old one is open), or whose old socket
  the server closes as the new session or socket arrives (4409, or 4001/1008
  within ``_ROTATION_CLOSE_WINDOW``), switches the pump to close-first for the
  rest of the process: counted, logged once, shown in ``/readyz``. A close
  that a rotation caused (ours in close-first, or the server's) is not a lost
  connection: the newer session's socket opens at once, outside the
  reconnect backoff, and the close counts as ``rotation``, not ``session``.
* **refused upgrades** (any 4xx, which Sendstack may count toward its
  lockout) are reported to the session holder, whose failure budget then
  says how long to hold off the next upgrade.
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

from bridge.core.close_codes import (
    STALE_CLOSE_CODE,
    SingleSessionCause,
    classify_close,
    is_refused_upgrade,
    single_session_cause,
    upgrade_status,
)
from bridge.core.codec import FrameCodec
from bridge.core.dedupe import RecentIds
from bridge.core.records import (
    ACCOUNT_HEADER,
    Topics,
    dead_letter_record,
    iso_ms,
    to_record,
)
from bridge.core.retry import Backoff
from bridge.core.session import Session
from bridge.errors import (
    SessionRejected,
    UpstreamClosed,
    UpstreamError,
    UpstreamUnavailable,
)
from bridge.metrics import WS_STATES, IntakeMetrics, dlq_reason_label
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
# A 4001/1008 on the old socket this soon after the newer session came (or
# the new socket opened) was caused by the rotation: the upstream revokes
# older sessions. Later, it is an ordinary session end.
_ROTATION_CLOSE_WINDOW = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PumpOptions:
    reconnect: Backoff
    dedupe_capacity: int = 200_000
    overlap_max: float = 30.0
    stale_after: float = 0.0
    single_session: bool = False
    source: str = "/sendstack/tracking"
    # The account's name, for the bridge_account header of every record
    # (dead letters included) when one process streams several.
    account: str | None = None


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
    session_policy: str = "multi"


@dataclass(frozen=True, slots=True)
class SessionPolicyState:
    """How rotations go, and why: what ``/readyz`` and the metrics report.

    ``policy``: ``multi`` (make-before-break) or ``single`` (close-first).
    ``basis``: ``configured`` (BRIDGE_STREAM_SINGLE_SESSION), ``assumed`` (no
    rotation seen yet), ``observed`` (a rotation showed it). ``cause``: what
    the upstream did when the pump fell back to ``single``.
    """

    policy: str
    basis: str
    cause: SingleSessionCause | None = None


@dataclass
class _Handoff:
    """What the rotation task prepared: the next socket and its first frames."""

    successor: UpstreamConnection | None = None
    session: Session | None = None
    held: list[bytes] = field(default_factory=list)
    first_frame_at: float | None = None
    markers: frozenset[str] = frozenset()
    old_dlq_digests: set[bytes] = field(default_factory=set)
    # When the rotation got the newer session, and when its socket opened
    # (monotonic): a 4001 soon after is the upstream revoking the old one.
    newer_at: float | None = None
    opened_at: float | None = None
    # How many upgrades of the successor started; ``settled`` is set while
    # none is in flight.
    upgrades: int = 0
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    # The rotation closes the old socket itself (close-first).
    planned_close: bool = False
    # Set when a rotation ended the old socket without a successor: connect
    # at once with a session newer than this generation.
    resume_after: int | None = None

    def __post_init__(self) -> None:
        self.settled.set()


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
        metrics: IntakeMetrics,
    ) -> None:
        self._keeper = keeper
        self._connector = connector
        self._codec = codec
        self._sink = sink
        self._topics = topics
        self._clock = clock
        self._opts = options
        self._account = None if options.account is None else options.account.encode()
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
        self._policy = SessionPolicyState(
            policy="single" if options.single_session else "multi",
            basis="configured" if options.single_session else "assumed",
        )
        self._show_policy()
        # Monotonic time before which no upgrade goes out (the failure budget
        # after refused upgrades), and the old socket's last frame while a
        # close-first rotation waits for the new socket's first one.
        self._hold_off_until = 0.0
        self._gap_since: float | None = None
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
            session_policy=self._policy.policy,
        )

    def session_policy(self) -> SessionPolicyState:
        """The session policy rotations follow, and how it was learnt."""
        return self._policy

    # -- life cycle ----------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, rotate and reconnect until cancelled or stopped."""
        attempt = 0
        conn: UpstreamConnection | None = None
        session: Session | None = None
        # A rotation ended the old socket (close-first, or the server): the
        # generation it served, until the newer session's socket is open.
        rotated_from: int | None = None
        while not self._stopping.is_set():
            if conn is None or session is None:
                if rotated_from is not None:
                    session = await self._keeper.wait_newer(rotated_from)
                else:
                    session = await self._keeper.wait_for_session()
                await self._hold_off()
                conn = await self._connect(session)
                if conn is None:
                    await self._clock.sleep(
                        self._opts.reconnect.delay(attempt, random.random())
                    )
                    attempt += 1
                    continue
                if rotated_from is not None:
                    rotated_from = None
                    self._rotations += 1
                    self._gap_since = self._last_frame
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
            if handoff is not None and handoff.resume_after is not None:
                # A planned gap, not a lost connection: no backoff, and it
                # does not count against the next reconnect's either.
                rotated_from = handoff.resume_after
                attempt = 0
                continue
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
            self._count_refusal(session, exc)
            self._keeper.report_rejected(session.generation)
            self._set_state("disconnected")
            return None
        except UpstreamUnavailable as exc:
            if self._count_refusal(session, exc) is not None:
                self._metrics.ws_connects.labels("refused").inc()
                log.warning("upstream_connect_refused", error=str(exc))
            else:
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
        helpers.append(asyncio.create_task(self._observe_end(conn), name="end-watch"))
        closed: UpstreamClosed | None = None
        try:
            while True:
                try:
                    frame = await conn.recv()
                except UpstreamClosed as exc:
                    closed = exc
                    break
                ids = await self._handle(frame, handoff=handoff)
                if self._gap_since is not None:
                    self._end_gap()
                if handoff.markers and not handoff.markers.isdisjoint(ids):
                    break  # the old socket caught up with the new one
        finally:
            if (
                closed is not None
                and closed.code is not None
                and single_session_cause(close_code=closed.code) is not None
                and not handoff.settled.is_set()
                and not self._stopping.is_set()
            ):
                await self._await_upgrade(handoff)
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
        stopping = self._stopping.is_set()
        if handoff.successor is not None and not stopping:
            if closed is not None:
                self._learn_from_close(closed, session, handoff)
            await self._cut_over(conn, closed, handoff)
            return handoff
        self._forget(conn)
        if handoff.successor is not None:
            await self._close(handoff.successor, 1001, "bridge shutting down")
        if closed is not None:
            if not stopping and self._rotation_ended(closed, session, handoff):
                handoff.resume_after = session.generation
            else:
                self._closed(conn, session, closed)
        self._set_state("disconnected")
        return handoff if handoff.resume_after is not None else None

    async def _observe_end(self, conn: UpstreamConnection) -> None:
        """Report a socket's end when it happens, not at the next read.

        While the pump waits on a full sink it reads nothing, and the socket
        may end meanwhile (the server closes it, or websockets' keepalive
        gives up on pongs queued behind unread frames). The state, the open
        connections gauge and a log line follow at once; what the close means
        (counters, re-authentication, rotations) is still decided by the
        reader, which meets the close after the frames queued before it.
        """
        ended = await conn.wait_closed()
        if self._stopping.is_set() or conn not in self._open:
            return
        self._forget(conn)
        if not self._open:
            self._set_state("disconnected")
        log.warning(
            "upstream_socket_ended",
            connection_id=conn.connection_id,
            code=ended.code,
            detail=ended.reason,
        )

    async def _await_upgrade(self, handoff: _Handoff) -> None:
        """The server ended the old socket while the successor's upgrade is in flight.

        A server that ends the older socket (4409, 4001, 1008) as the newer one
        opens, or as a newer session is issued, does so during that upgrade:
        let the one attempt finish and carry on with it rather than throw it
        away. (Other closes, e.g. a dropped connection, cancel it as before.)
        """
        with contextlib.suppress(TimeoutError):
            async with self._clock.timeout(self._opts.overlap_max):
                await handoff.settled.wait()

    def _rotation_ended(
        self, closed: UpstreamClosed, session: Session, handoff: _Handoff
    ) -> bool:
        """Whether a rotation ended this socket (it has no successor)."""
        code = 1006 if closed.code is None else closed.code
        if not handoff.planned_close and not self._learn_from_close(
            closed, session, handoff
        ):
            return False
        self._metrics.ws_disconnects.labels("rotation").inc()
        log.info(
            "upstream_closed_for_rotation",
            code=code,
            detail=closed.reason,
            planned=handoff.planned_close,
        )
        return True

    def _learn_from_close(
        self, closed: UpstreamClosed, session: Session, handoff: _Handoff
    ) -> bool:
        """Whether the server closed the old socket because of our rotation.

        A 4409 while our newer socket opens or is open, or a 4001/1008 soon
        after the newer session came: the upstream allows one socket (or
        session) at a time, so the pump falls back to close-first.
        """
        if handoff.planned_close or closed.code is None:
            return False
        cause = single_session_cause(close_code=closed.code)
        if cause is None:
            return False
        if cause == "replaced":
            ours = handoff.upgrades > 0
        else:
            now = self._clock.monotonic()
            since = max(handoff.newer_at or 0.0, handoff.opened_at or 0.0)
            ours = (
                handoff.newer_at is not None and now - since <= _ROTATION_CLOSE_WINDOW
            ) or self._keeper.renewing(session.generation, _ROTATION_CLOSE_WINDOW)
        if ours:
            self._fall_back(cause, code=closed.code, detail=closed.reason)
        return ours

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
        elif last_old is not None:
            # The old socket ended before the new one sent anything (the
            # server closed it): the gap ends with the new socket's first frame.
            self._gap_since = last_old
        held, handoff.held = handoff.held, []
        for frame in held:
            await self._handle(frame, handoff=handoff, replay=True)
        self._rotations += 1
        self._metrics.rotations.labels("ok").inc()
        self._metrics.ws_disconnects.labels("rotation").inc()
        if self._policy.basis == "assumed":
            # Both sockets were open at once and the server let them be.
            self._policy = SessionPolicyState(policy="multi", basis="observed")
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
        topics, source, account = self._topics, self._opts.source, self._account
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
                    to_record(
                        item,
                        topics,
                        received_at=received_at,
                        source=source,
                        account=account,
                    )
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
                frame,
                rejection,
                self._topics,
                received_at=received_at,
                origin="stream",
                published_ids=ids,
                extra_headers=()
                if self._account is None
                else ((ACCOUNT_HEADER, self._account),),
            )
        )
        return ids

    # -- rotation ------------------------------------------------------------

    async def _rotate(
        self, old: UpstreamConnection, session: Session, handoff: _Handoff
    ) -> None:
        """Wait for a newer session, then prepare the successor socket."""
        new = await self._keeper.wait_newer(session.generation)
        handoff.newer_at = self._clock.monotonic()
        self._set_state("rotating")
        if self._policy.policy == "single":
            await self._close_first(old, new, handoff)
            return
        attempt = 0
        while True:
            await self._hold_off()
            opened = await self._upgrade(new, handoff)
            if not isinstance(opened, UpstreamError):
                successor = opened
                break
            status = self._count_refusal(new, opened)
            if single_session_cause(refused_status=status) is not None:
                # The old socket is open and the server will not take a
                # second one: close it first, now and from now on.
                self._metrics.ws_connects.labels("refused").inc()
                log.warning("rotation_connect_refused", error=str(opened))
                self._fall_back("refused", status=status)
                await self._close_first(old, new, handoff)
                return
            self._metrics.rotations.labels("failed").inc()
            if isinstance(opened, SessionRejected):
                self._metrics.ws_connects.labels("rejected").inc()
                self._keeper.report_rejected(new.generation)
                new = await self._keeper.wait_newer(new.generation)
                handoff.newer_at = self._clock.monotonic()
                continue
            self._metrics.ws_connects.labels(
                "failed" if status is None else "refused"
            ).inc()
            log.warning("rotation_connect_failed", error=str(opened))
            await self._clock.sleep(
                self._opts.reconnect.delay(attempt, random.random())
            )
            attempt += 1
        self._metrics.ws_connects.labels("ok").inc()
        self._track(successor)
        handoff.successor, handoff.session = successor, new
        handoff.opened_at = self._clock.monotonic()
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

    async def _upgrade(
        self, new: Session, handoff: _Handoff
    ) -> UpstreamConnection | UpstreamError:
        """One upgrade of the successor; ``handoff.settled`` is clear meanwhile."""
        handoff.upgrades += 1
        handoff.settled.clear()
        try:
            return await self._connector.open(new.token)
        except (SessionRejected, UpstreamUnavailable) as exc:
            return exc
        finally:
            handoff.settled.set()

    async def _close_first(
        self, old: UpstreamConnection, new: Session, handoff: _Handoff
    ) -> None:
        """Close the old socket; the reader then opens the new one at once."""
        handoff.planned_close = True
        log.info("session_rotating_close_first", generation=new.generation)
        self._metrics.rotations.labels("closed_first").inc()
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

    # -- session policy ------------------------------------------------------

    def _fall_back(self, cause: SingleSessionCause, **detail: object) -> None:
        """The upstream allows one socket at a time: close-first from now on."""
        if self._policy.policy == "single":
            return
        self._policy = SessionPolicyState(
            policy="single", basis="observed", cause=cause
        )
        self._show_policy()
        self._metrics.session_policy_fallbacks.labels(cause).inc()
        log.warning(
            "session_policy_single",
            cause=cause,
            **detail,
            action=(
                "Sendstack allows one socket at a time: rotations now close the"
                " old socket before opening the new one (a short gap each); set"
                " BRIDGE_STREAM_SINGLE_SESSION=true to start that way"
            ),
        )

    def _show_policy(self) -> None:
        for policy in ("multi", "single"):
            self._metrics.session_policy.labels(policy).set(
                1 if policy == self._policy.policy else 0
            )

    def _count_refusal(self, session: Session, error: UpstreamError) -> int | None:
        """An upgrade answered with a 4xx counts toward the failure budget.

        Returns its status (None: not a refusal, e.g. a network error).
        """
        status = upgrade_status(error)
        if not is_refused_upgrade(status):
            return None
        assert status is not None  # noqa: S101 - is_refused_upgrade checked it
        wait = self._keeper.report_refused_upgrade(session.generation, status)
        if wait > 0:
            self._hold_off_until = max(
                self._hold_off_until, self._clock.monotonic() + wait
            )
        return status

    async def _hold_off(self) -> None:
        """Wait out the failure budget before an upgrade, if it says so."""
        wait = self._hold_off_until - self._clock.monotonic()
        if wait > 0:
            log.warning("upstream_connect_held_off", wait_seconds=round(wait, 1))
            await self._clock.sleep(wait)

    def _end_gap(self) -> None:
        """The new socket's first frame after a rotation gap: observe the gap."""
        since, self._gap_since = self._gap_since, None
        if since is not None and self._last_frame is not None:
            self._metrics.rotation_gap.observe(max(0.0, self._last_frame - since))

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
