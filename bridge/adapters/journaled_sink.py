"""A ``RecordSink`` that journals every record on local disk before Kafka.

Sendstack cannot replay: a frame the bridge does not read is lost. With this
sink between the stream pump and the Kafka sink, a Kafka outage fills the
disk journal (``max_bytes``, e.g. gigabytes) instead of the in-memory buffer,
so the pump keeps reading the socket for as long as the disk lasts.

Theory of operation
-------------------
Write-behind for what Kafka takes in time: a record goes to Kafka as soon as
it is accepted, and to disk only if Kafka has not acknowledged it by its
group's commit. The guarantee is unchanged: *a record leaves the journal only
after Kafka acknowledged it*; one acknowledged before its commit never enters
it. With a healthy Kafka most records never touch the disk; during an outage
every record is journaled, as when each was written before being forwarded.

* ``send`` accounts the record's encoded size (``encoded_size``,
  ``bridge/core/journal_entry.py``; the same number leaves on ack or drop, so
  ``max_bytes``, ``when_full`` and the metrics count encoded bytes), gives it
  the next sequence number, appends it to the pending group commit and, in
  the same step, to the forwarder's in-memory window (at most
  ``window_bytes``); it returns at once. It waits when the journal is full
  (``when_full="block"``, counted), when the pending group is over
  ``max_pending_bytes`` (the disk is slower than the stream), and briefly
  when pacing (next point).
* Pacing: a record over the forwarder's window, left to the disk, costs its
  encoding and write and then a read back and decoding, exactly when the
  bridge is the bottleneck (a burst faster than Kafka acknowledges). So,
  while Kafka acknowledges (the inner sink started and ``connected``, and
  pacing not ended for this episode, below), a ``send`` that would take the
  unacknowledged bytes past ``pace_bytes`` (default :data:`PACE_BYTES`;
  ``None``: the window), or overflow the window, and would otherwise go to
  the window, first waits up to ``pace_seconds`` for acks (or the forwarder)
  to make room; the sender is woken by the ack or forwarded record that
  makes it (checked only while one waits). With room the record is windowed
  as usual: nothing is read back, and with the unacknowledged bytes bounded,
  in ``interval`` mode most records are acknowledged before their group's
  commit, so not written either. If the wait times out (Kafka stalled or
  much slower than the stream), the record goes on as without pacing (to the
  window while it has room, else to the disk) and no later send waits until
  the unacknowledged bytes fall to half ``pace_bytes`` (the episode's end):
  a stalled Kafka costs the pump one wait of ``pace_seconds`` and the
  journal absorbs the rest. Likewise once the sends of an episode were paced
  ``pace_budget`` seconds in all: a Kafka that acknowledges, but slower than
  the stream for long, lets the pump fall at most that far behind the socket
  before the journal absorbs. It never waits while Kafka is down (the inner
  sink not started or not connected), while the forwarder reads from disk,
  or while an earlier record waits for its commit. Counted in
  ``bridge_journal_paced_total`` and ``bridge_journal_paced_seconds_total``;
  ``pace_seconds=0`` turns pacing off.
* Order per sequence is strict. A record is not windowed at ``send`` while
  the forwarder has committed records to read from disk first, while the
  window is full, or while an earlier record waits un-windowed (a later one
  would overtake it). Those wait for their group's commit: at its end they
  (and the newer pending ones behind them) are windowed in order if the
  forwarder no longer reads from disk and the window has room; else the
  committed ones are left to the forwarder to read from disk, and the newer
  ones wait for the next commit.
* A writer task commits the pending group in one SQLite transaction on a
  dedicated thread (``JournalStore.commit_runs``: the group goes in as one or
  a few chunk rows): every ``flush_interval`` in ``durability="interval"``
  mode, counted from one commit's start to the next (the loss window on
  power failure or crash), or as soon as the previous commit ended in
  ``"fsync"`` mode (group commit: whatever arrived meanwhile goes in the next
  one). The records of the group Kafka acknowledged meanwhile are left out
  (neither encoded nor written: the group goes in as runs around them); the
  others are encoded there, on the writer thread. Each commit is fsynced and
  its latency observed. The same transaction marks the sequences Kafka
  acknowledged since the previous commit took its group as gone (a chunk is
  deleted once all of it is) and, with ``when_full="drop_oldest"``, drops the
  oldest entries over the bound (counted).
* A forwarder task hands the records to the inner sink, in sequence order:
  from the window while it keeps up; once it falls behind (the window full),
  or at start with a backlog, it reads the journal in chunks of
  ``read_chunk`` entries, so memory stays bounded whatever the backlog.
  Entries that fail their CRC are counted, marked gone and skipped.
* The inner sink's batch-ack callback (passed to the factory) maps each
  acknowledged record back to its sequence, in any order: one still in the
  pending group is marked so that its commit skips it; any other (its group
  written, or being written) is marked gone in the next commit. A restart
  therefore re-sends exactly the committed entries Kafka did not acknowledge,
  with the same bytes (same ``ce_id``).
* A crash loses what was neither committed nor acknowledged: the pending
  group, as before (it may have reached Kafka, it is not re-sent). What
  Kafka acknowledged is in Kafka; what was committed is re-sent.

Lifecycle: with ``connect`` (how the app runs it), :meth:`start` only opens
the journal and starts both tasks; the forwarder connects the inner sink
itself (``connect``, retried until Kafka answers), so the pump reads
and journals from the first second even when Kafka is down at start. On
shutdown: :meth:`flush` (waits for every ack and the deletes to be committed,
up to ``grace``), then :meth:`stop`: it stops forwarding, stops the inner sink
(``disconnect``; it delivers its batches in flight; their acks are still recorded), then
commits what is pending; the unacknowledged rest stays for the next start.
Without ``connect``, the caller starts the inner sink before :meth:`start`
and stops it between :meth:`flush` and :meth:`stop`. A journal I/O error
(full disk) fails the sink: every later ``send``/``flush`` raises it
(:class:`JournalIOError`), so the pump ends and the app exits for Kubernetes
to restart it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, TypeVar

import structlog

from bridge.adapters.journal_store import (
    CommitResult,
    JournalError,
    JournalStore,
    OpenState,
)
from bridge.core.journal_entry import encode, encoded_size
from bridge.core.records import OutboundRecord
from bridge.journal_metrics import JournalMetrics
from bridge.ports import RecordSink, SinkStatistics

log = structlog.get_logger("bridge.journal")

Durability = Literal["interval", "fsync"]
WhenFull = Literal["block", "drop_oldest"]
BatchAckCallback = Callable[[Sequence[OutboundRecord]], None]
_T = TypeVar("_T")
_Entry = tuple[int, int, OutboundRecord]  # seq, encoded size, record

#: Default pacing threshold on the unacknowledged (encoded) bytes.
PACE_BYTES = 1024 * 1024


class JournaledSink:
    """``RecordSink`` that journals on disk and forwards to an inner sink.

    Args:
        store: The journal storage (not opened yet; :meth:`start` opens it).
        inner: Builds the inner sink (the ``KafkaRecordSink``) given the
            callback it must call with each acknowledged batch of records
            (``on_batch_ack``); built once, here. Started and stopped by the
            caller, available as :attr:`inner`.
        max_bytes: Bound on the journaled bytes not yet acknowledged.
        durability: ``"interval"``: commit every ``flush_interval``;
            ``"fsync"``: commit (fsynced) as soon as the previous one ended.
        flush_interval: Seconds between commits in ``interval`` mode.
        when_full: ``"block"``: ``send`` waits for acks to free room;
            ``"drop_oldest"``: the oldest entries are deleted (counted).
        metrics: Where the ``bridge_journal_*`` metrics go.
        max_pending_bytes: Bytes accepted but not committed yet before
            ``send`` waits for a commit (and an early commit starts).
        window_bytes: Records kept in memory for the forwarder (pending or
            committed); past it, the forwarder reads them back from disk.
        read_chunk: Entries per read from disk.
        wall_clock: Epoch seconds (entry birth, oldest-entry age).
        connect: Starts the inner sink (retrying until it answers); given,
            the forwarder awaits it before forwarding.
        disconnect: Stops the inner sink; :meth:`stop` calls it once the
            forwarder is stopped, if ``connect`` had succeeded.
        pace_seconds: The longest a ``send`` waits for Kafka's acks before
            the journal takes the record to disk (pacing; 0: never waits).
        pace_bytes: Unacknowledged bytes past which a ``send`` is paced
            (``None``: only when the window would overflow).
        pace_budget: The most time sends spend paced in one episode (until
            the acks catch up) before the journal absorbs the rest: the
            bound on how far pacing lets the pump fall behind the socket.
    """

    def __init__(
        self,
        store: JournalStore,
        inner: Callable[[BatchAckCallback], RecordSink],
        *,
        max_bytes: int,
        durability: Durability = "interval",
        flush_interval: float = 0.2,
        when_full: WhenFull = "block",
        metrics: JournalMetrics | None = None,
        max_pending_bytes: int = 8 * 1024 * 1024,
        window_bytes: int = 16 * 1024 * 1024,
        read_chunk: int = 1000,
        wall_clock: Callable[[], float] = time.time,
        connect: Callable[[], Awaitable[None]] | None = None,
        disconnect: Callable[[], Awaitable[None]] | None = None,
        pace_seconds: float = 0.02,
        pace_bytes: int | None = PACE_BYTES,
        pace_budget: float = 0.5,
    ) -> None:
        if durability not in ("interval", "fsync"):
            raise ValueError(f"durability must be interval or fsync: {durability!r}")
        if when_full not in ("block", "drop_oldest"):
            raise ValueError(f"when_full must be block or drop_oldest: {when_full!r}")
        if max_bytes <= 0 or max_pending_bytes <= 0 or read_chunk <= 0:
            raise ValueError("max_bytes, max_pending_bytes and read_chunk must be > 0")
        if pace_bytes is not None and pace_bytes <= 0:
            raise ValueError(f"pace_bytes must be > 0 (or None): {pace_bytes!r}")
        self._store = store
        self._max_bytes = max_bytes
        self._durability = durability
        self._interval = max(0.0, flush_interval)
        self._when_full = when_full
        self._metrics = metrics
        self._max_pending = max_pending_bytes
        self._window_max = window_bytes
        self._chunk = read_chunk
        self._wall = wall_clock
        self._connect = connect
        self._disconnect = disconnect
        # Pacing: a send that would take the unacknowledged bytes past
        # pace_bytes (or overflow the window) waits up to pace_seconds for
        # Kafka's acks while Kafka is acknowledging; see the module docstring.
        self._pace_seconds = max(0.0, pace_seconds)
        self._pace_bytes = window_bytes if pace_bytes is None else pace_bytes
        self._pace_budget = pace_budget
        self._pace_off = False  # a wait timed out or the budget is spent
        self._paced_episode = 0.0  # seconds paced since the acks last caught up
        self._pacing = 0  # senders waiting (paced)
        self._pace_need = 0  # the largest waiting record's size
        self._paced_room = asyncio.Event()
        self._inner_started = connect is None
        self._executor: ThreadPoolExecutor | None = None
        # Entries not acknowledged (nor dropped): pending and committed.
        self._entries = 0
        self._bytes = 0
        self._next_seq = 0
        # The pending group: (seq, size, record) in sequence order (size: the
        # encoded size, encoded_size), the sequences of it Kafka acknowledged
        # already (not written), and the group's birth (its first record's).
        self._pending: list[_Entry] = []
        self._pending_acked: set[int] = set()
        self._pending_born = 0
        self._pending_bytes = 0
        self._committed_through = -1
        # The last sequence a commit took (the pending group lies after it).
        self._taken_through = -1
        # The first sequence sent but neither in the window nor committed and
        # left to the disk (the forwarder was reading from disk, or the window
        # was full): it and every later one wait for the next commit's end.
        self._unwindowed_from: int | None = None
        self._oldest_born_ms: int | None = None
        self._to_delete: list[int] = []  # acked since the last commit
        self._committing = False  # a commit is running on the writer thread
        self._dropped_below = 0  # every entry under it was dropped or acked
        # The forwarder: committed records still in memory, else the disk.
        self._window: deque[_Entry] = deque()
        self._window_bytes = 0
        # The newest committed sequence not kept in memory: the forwarder
        # reads what it has not sent up to it back from disk.
        self._spilled_upto = -1
        self._forward_seq = 0
        self._inflight: dict[int, _Entry] = {}
        # Counters (also in the metrics).
        self._acked = 0
        self.unwritten = 0  # acknowledged before their commit: never written
        self.dropped = 0
        self.blocked = 0
        self.corrupt = 0
        self.replayed = 0
        self.quarantined = 0
        self.paced = 0  # sends that waited for Kafka's acks (pacing)
        self.paced_seconds = 0.0
        self.pace_timeouts = 0  # of those, the ones Kafka did not answer in time
        self.last_open: OpenState | None = None
        self._failure: BaseException | None = None
        self._work = asyncio.Event()  # something to commit
        self._hurry = asyncio.Event()  # commit now (pending over bound, flush)
        self._committed = asyncio.Event()  # a commit ended
        self._room = asyncio.Event()  # acks or drops freed room
        self._wake_forwarder = asyncio.Event()
        self._drained = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_commit = 0.0
        self.inner = inner(self._on_batch_ack)
        # The inner sink's non-blocking send, if it has one (the Kafka sink).
        self._offer: Callable[[OutboundRecord], bool] | None = getattr(
            self.inner, "offer", None
        )
        # The forwarder is inside the inner sink's send (maybe waiting for
        # room): a record handed over directly now would overtake its own.
        self._forwarding = False
        if metrics is not None:
            metrics.max_bytes.set(max_bytes)
            metrics.bind(
                entries=lambda: self._entries,
                size=lambda: self._bytes,
                oldest_age=self._oldest_age,
            )

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Open the journal and start committing and forwarding.

        Raises:
            JournalIOError: If the journal's directory cannot be used.
        """
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="journal")
        state = await self._run(self._store.open)
        self.last_open = state
        if state.quarantined is not None:
            self.quarantined += 1
            if self._metrics is not None:
                self._metrics.quarantined.inc()
        if state.corrupt:  # entries of an old-format file that failed their check
            self.corrupt += state.corrupt
            if self._metrics is not None:
                self._metrics.corrupt.inc(state.corrupt)
        self._entries = state.entries
        self._bytes = state.bytes
        self._oldest_born_ms = state.oldest_born_ms
        if state.last_seq is not None:
            self._next_seq = state.last_seq + 1
            self._committed_through = state.last_seq
            self._taken_through = state.last_seq
        self._forward_seq = state.first_seq if state.first_seq is not None else 0
        self._dropped_below = self._forward_seq
        if state.entries and state.last_seq is not None:
            self._spilled_upto = state.last_seq  # the backlog: all on disk
        if state.entries == 0:
            self._drained.set()
        log.info(
            "journal_opened",
            path=str(self._store.path),
            entries=state.entries,
            bytes=state.bytes,
            durability=self._durability,
            when_full=self._when_full,
        )
        self._last_commit = asyncio.get_running_loop().time()
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="journal-writer"),
            asyncio.create_task(self._forward_loop(), name="journal-forwarder"),
        ]
        for task in self._tasks:
            task.add_done_callback(self._task_ended)

    async def stop(self) -> None:
        """Stop forwarding, commit what is pending (and acked), close the file.

        With ``connect``, the inner sink is stopped after the forwarder and
        before the last commit, so the acks of its last batches are kept.
        """
        writer, forwarder = self._tasks or (None, None)
        self._tasks = []
        if forwarder is not None:
            forwarder.cancel()
            await asyncio.gather(forwarder, return_exceptions=True)
        if self._connect is not None and self._inner_started:
            self._inner_started = False
            try:
                if self._disconnect is not None:
                    await self._disconnect()
            except Exception:  # the journal still keeps what was not acked
                log.exception("journal_inner_stop_failed")
        if writer is not None:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
        if self._executor is None:
            return
        try:
            if self._failure is None and (self._pending or self._to_delete):
                born = self._pending_born
                pending, acked = self._take_pending()
                deletes = self._take_deletes()
                _, written = await self._run(
                    self._write, born, pending, acked, deletes, 0
                )
                self.unwritten += len(acked)
                if written and self._metrics is not None:
                    self._metrics.committed.inc(written)
        finally:
            await self._run(self._store.close)
            executor, self._executor = self._executor, None
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)
            self._inflight.clear()
            self._window.clear()
            self._window_bytes = 0

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
            log.error("journal_failed", exc_info=exc)
        for event in (
            self._room,
            self._committed,
            self._drained,
            self._hurry,
            self._paced_room,
        ):
            event.set()

    @property
    def failure(self) -> BaseException | None:
        """Why the sink stopped working (a ``JournalError``), or None."""
        return self._failure

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            if isinstance(self._failure, JournalError):
                raise self._failure
            raise JournalError(f"the journal failed: {self._failure!r}") from (
                self._failure
            )

    async def _run(self, fn: Callable[..., _T], *args: object) -> _T:
        assert self._executor is not None  # noqa: S101 - between start and stop
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, fn, *args
        )

    # -- RecordSink --------------------------------------------------------------

    async def send(self, record: OutboundRecord) -> None:
        """Journal ``record``; return once it is accepted for the next commit.

        Raises:
            JournalError: The journal failed earlier (disk full, I/O error).
        """
        if self._failure is not None:
            self._raise_if_failed()
        size = encoded_size(record)  # ValueError: a field too long for an entry
        if self._pending_bytes >= self._max_pending:
            await self._wait_for_commit()
        if (
            self._when_full == "block"
            and self._entries
            and self._bytes + size > self._max_bytes
        ):
            await self._wait_for_room(size)
        if (
            self._bytes + size > self._pace_bytes
            or self._window_bytes + size > self._window_max
        ) and self._may_pace():
            await self._pace(size)
        seq = self._next_seq
        self._next_seq = seq + 1
        pending = self._pending
        if not pending:
            # The writer clears _work and takes the pending group together
            # (no await between), so the group's first record sets it.
            self._pending_born = int(self._wall() * 1000)
            self._work.set()
        if not self._entries:
            self._drained.clear()  # only set while nothing is journaled
        entry = (seq, size, record)
        pending.append(entry)
        self._entries += 1
        self._bytes += size
        self._pending_bytes += size
        if self._pending_bytes >= self._max_pending:
            self._hurry.set()
        # Nothing ahead of it on its way to Kafka: hand it to the inner sink
        # here if it has room at once, without the forwarder's hop (most
        # records while Kafka keeps up). Never waits: a full inner sink
        # leaves it to the forwarder.
        if (
            self._offer is not None
            and not self._window
            and not self._forwarding
            and self._unwindowed_from is None
            and max(self._forward_seq, self._dropped_below) == seq
            and self._inner_started
            and not self._reading_disk()
            and id(record) not in self._inflight
        ):
            # In flight before the offer: an inner sink may ack at once.
            self._inflight[id(record)] = entry
            if self._offer(record):
                self._forward_seq = seq + 1
                return
            del self._inflight[id(record)]
        # Write-behind: to the forwarder now, unless an earlier record waits
        # for its commit (the order), the forwarder reads committed records
        # from disk (they go first) or the window is full.
        if (
            self._unwindowed_from is None
            and self._window_bytes + size <= self._window_max
            and not self._reading_disk()
        ):
            self._window.append(entry)
            self._window_bytes += size
            self._wake_forwarder.set()
        elif self._unwindowed_from is None:
            self._unwindowed_from = seq

    def _may_pace(self) -> bool:
        """Whether a send over the pacing threshold should wait for Kafka.

        Only when the record would otherwise go to the window (no earlier
        one waits for its commit, the forwarder does not read from disk),
        while Kafka acknowledges: the inner sink is started and connected
        and no paced wait timed out since the acks last caught up.
        """
        return (
            self._pace_seconds > 0
            and not self._pace_off
            and self._entries > 0
            and self._unwindowed_from is None
            and self._failure is None
            and self._inner_started
            and not self._reading_disk()
            and self.inner.statistics().connected
        )

    def _over_pace(self, size: int) -> bool:
        return self._entries > 0 and (
            self._bytes + size > self._pace_bytes
            or self._window_bytes + size > self._window_max
        )

    def _pace_wake(self) -> None:
        """A paced sender waits: wake it if the room it needs is there."""
        if not self._over_pace(self._pace_need):
            self._paced_room.set()

    async def _pace(self, size: int) -> None:
        """Wait up to ``pace_seconds`` for acks (or the forwarder) to make room.

        On time out (Kafka stalled or much slower than the stream), or once
        the sends of this episode were paced ``pace_budget`` seconds in all
        (Kafka slower than the stream for long), later sends do not wait
        until the unacknowledged bytes fall to half the pacing threshold
        (the journal absorbs the rest, as without pacing).
        """
        self.paced += 1
        metrics = self._metrics
        if metrics is not None:
            metrics.paced.inc()
        loop = asyncio.get_running_loop()
        since = loop.time()
        self._pacing += 1
        self._pace_need = max(self._pace_need, size)
        try:
            async with asyncio.timeout(self._pace_seconds):
                while self._over_pace(size) and self._failure is None:
                    self._paced_room.clear()
                    await self._paced_room.wait()
        except TimeoutError:
            self._pace_off = True
            self.pace_timeouts += 1
            log.info(
                "journal_pacing_timed_out",
                seconds=self._pace_seconds,
                unacked_bytes=self._bytes,
            )
        finally:
            self._pacing -= 1
            if not self._pacing:
                self._pace_need = 0
            elapsed = loop.time() - since
            self.paced_seconds += elapsed
            if metrics is not None:
                metrics.paced_seconds.inc(elapsed)
            self._paced_episode += elapsed
            if self._paced_episode >= self._pace_budget and not self._pace_off:
                self._pace_off = True
                log.info(
                    "journal_pacing_budget_spent",
                    seconds=round(self._paced_episode, 3),
                    unacked_bytes=self._bytes,
                )
        self._raise_if_failed()

    async def _wait_for_commit(self) -> None:
        self._hurry.set()
        while self._pending_bytes >= self._max_pending:
            self._committed.clear()
            await self._committed.wait()
            self._raise_if_failed()

    async def _wait_for_room(self, size: int) -> None:
        # Counted when the wait begins (a journal that stays full must show at
        # once); the time spent is added as it passes, each time room is
        # checked, so the rate is right while the wait is still going on.
        self.blocked += 1
        metrics = self._metrics
        if metrics is not None:
            metrics.blocked.inc()
        loop = asyncio.get_running_loop()
        since = loop.time()
        try:
            while self._entries and self._bytes + size > self._max_bytes:
                self._room.clear()
                await self._room.wait()
                if metrics is not None:
                    now = loop.time()
                    metrics.blocked_seconds.inc(now - since)
                    since = now
                self._raise_if_failed()
        finally:
            if metrics is not None:
                metrics.blocked_seconds.inc(loop.time() - since)

    async def flush(self, grace: float) -> bool:
        """Wait until every record is acknowledged and deleted; False on timeout.

        Raises:
            JournalError: The journal failed.
        """
        self._raise_if_failed()
        try:
            async with asyncio.timeout(grace):
                while not self._is_drained():
                    self._drained.clear()
                    self._hurry.set()
                    self._work.set()
                    await self._drained.wait()
                    self._raise_if_failed()
        except TimeoutError:
            return False
        return True

    def _is_drained(self) -> bool:
        return (
            self._entries == 0
            and not self._pending
            and not self._to_delete
            and not self._committing
        )

    def statistics(self) -> SinkStatistics:
        inner = self.inner.statistics()
        return SinkStatistics(
            in_flight_records=self._entries,
            in_flight_bytes=self._bytes,
            acked=self._acked,
            retried=inner.retried,
            connected=self._inner_started and inner.connected and self._failure is None,
        )

    @property
    def committed_through(self) -> int:
        """The last sequence number whose group commit ended (-1: none yet).

        Those of the group Kafka acknowledged before it were not written.
        """
        return self._committed_through

    def _oldest_age(self) -> float:
        born = self._oldest_born_ms
        if born is None:
            if not self._pending:
                return 0.0
            born = self._pending_born
        return max(0.0, self._wall() - born / 1000)

    # -- the writer --------------------------------------------------------------

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._work.wait()
            if self._durability == "interval":
                delay = self._last_commit + self._interval - loop.time()
                if delay > 0 and not self._hurry.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._hurry.wait()
            self._work.clear()
            self._hurry.clear()
            # The interval runs from one commit's start to the next: a record
            # waits at most flush_interval (+ a commit) before it is durable.
            self._last_commit = loop.time()
            await self._commit_once()

    async def _commit_once(self) -> None:
        born = self._pending_born
        pending, acked = self._take_pending()
        deletes = self._take_deletes()
        drop = 0
        if self._when_full == "drop_oldest":
            drop = self._bytes - self._max_bytes
        if len(acked) == len(pending) and not deletes and drop <= 0:
            # Nothing to write: Kafka acknowledged the whole group already.
            if pending:
                self._group_done(pending, len(acked))
            self._after_commit()
            return
        self._committing = True
        try:
            result, written = await self._run(
                self._write, born, pending, acked, deletes, max(0, drop)
            )
        finally:
            self._committing = False
        metrics = self._metrics
        if metrics is not None:
            metrics.commit_seconds.observe(result.seconds)
            if written:
                metrics.committed.inc(written)
        self._oldest_born_ms = result.oldest_born_ms
        if result.dropped:
            self._dropped(result.dropped)
        if pending:
            self._group_done(pending, len(acked))
        self._after_commit()

    def _write(
        self,
        born: int,
        pending: list[_Entry],
        acked: set[int],
        deletes: list[int],
        drop: int,
    ) -> tuple[CommitResult, int]:
        """On the writer thread: encode what Kafka has not acknowledged, commit.

        Returns:
            The commit's result and the number of entries written.
        """
        runs: list[tuple[int, list[bytes]]] = []
        if not acked:
            if pending:
                runs.append((pending[0][0], [encode(s, r) for s, _, r in pending]))
        else:
            datas: list[bytes] = []
            for seq, _, record in pending:
                if seq in acked:
                    if datas:
                        runs.append((seq - len(datas), datas))
                        datas = []
                else:
                    datas.append(encode(seq, record))
            if datas:
                runs.append((pending[-1][0] + 1 - len(datas), datas))
        result = self._store.commit_runs(born, runs, deletes, drop)
        return result, len(pending) - len(acked)

    def _take_pending(self) -> tuple[list[_Entry], set[int]]:
        pending, self._pending = self._pending, []
        acked, self._pending_acked = self._pending_acked, set()
        self._pending_bytes = 0
        if pending:
            # An ack from now on is for a record this commit writes: it goes
            # to the next commit's deletes.
            self._taken_through = pending[-1][0]
        return pending, acked

    def _take_deletes(self) -> list[int]:
        deletes, self._to_delete = self._to_delete, []
        deletes.sort()
        return deletes

    def _after_commit(self) -> None:
        self._committed.set()
        self._room.set()
        if self._is_drained():
            self._drained.set()

    def _dropped(self, dropped: list[tuple[int, int]]) -> None:
        count = 0
        acked = set(self._to_delete)
        for seq, size in dropped:
            # Acked since this commit's snapshot: accounted for already.
            if seq not in acked:
                self._entries -= 1
                self._bytes -= size
                count += 1
        self._dropped_below = max(self._dropped_below, dropped[-1][0] + 1)
        self.dropped += count
        if self._metrics is not None:
            self._metrics.dropped.inc(count)
        log.warning("journal_dropped_oldest", entries=count, below=self._dropped_below)

    def _reading_disk(self) -> bool:
        """Whether the forwarder has committed records to read from disk first."""
        return max(self._forward_seq, self._dropped_below) <= self._spilled_upto

    def _group_done(self, pending: list[_Entry], unwritten: int) -> None:
        """After the commit of ``pending``: hand its records not windowed yet on.

        They (and the newer pending ones after them, none windowed either) go
        to the window, in order, if the forwarder is no longer reading from
        disk and there is room; else the committed ones stay on disk for the
        forwarder to read and the newer ones wait for the next commit.
        """
        last = pending[-1][0]
        self._committed_through = last
        if unwritten:
            self.unwritten += unwritten
        first = self._unwindowed_from
        if first is None or first > last:
            return
        newer = self._pending
        if not self._reading_disk():
            window = self._window
            room = self._window_max - self._window_bytes
            for part in (pending[max(0, first - pending[0][0]) :], newer):
                for entry in part:
                    size = entry[1]
                    if size > room:
                        if entry[0] <= last:  # the rest of the group: from disk
                            self._spilled_upto = last
                            self._unwindowed_from = newer[0][0] if newer else None
                        else:
                            self._unwindowed_from = entry[0]
                        self._window_bytes = self._window_max - room
                        self._wake_forwarder.set()
                        return
                    room -= size
                    window.append(entry)
            self._window_bytes = self._window_max - room
            self._unwindowed_from = None
        else:
            self._spilled_upto = last
            self._unwindowed_from = newer[0][0] if newer else None
        self._wake_forwarder.set()

    # -- the forwarder -----------------------------------------------------------

    @property
    def inner_ready(self) -> bool:
        """Whether the inner sink is started (Kafka answered at least once)."""
        return self._inner_started

    async def _forward_loop(self) -> None:
        if not self._inner_started and self._connect is not None:
            await self._connect()
            self._inner_started = True
        window = self._window
        inflight = self._inflight
        send = self.inner.send
        while True:
            if window:
                head = window[0][0]
                next_seq = max(self._forward_seq, self._dropped_below)
                if head > next_seq and next_seq <= self._spilled_upto:
                    await self._forward_from_disk(head)  # the gap before it
                    continue
                # Inlined _forward: this loop runs once per record.
                entry = window.popleft()
                seq, size, record = entry
                self._window_bytes -= size
                if self._pacing:
                    self._pace_wake()
                if seq < self._forward_seq or seq < self._dropped_below:
                    continue
                self._forward_seq = seq + 1
                self._forwarding = True
                try:
                    if id(record) in inflight:
                        await self._forward(seq, size, record)
                        continue
                    inflight[id(record)] = entry
                    await send(record)
                finally:
                    self._forwarding = False
            elif max(self._forward_seq, self._dropped_below) <= self._spilled_upto:
                await self._forward_from_disk(None)
            else:
                self._wake_forwarder.clear()
                await self._wake_forwarder.wait()

    async def _forward_from_disk(self, upto: int | None) -> None:
        """Forward what is on disk from the next sequence, before ``upto``.

        ``upto``: the first sequence the window holds (None: empty); what
        lies beyond the spilled ones is not read (it is in memory, or not
        committed yet).
        """
        start = max(self._forward_seq, self._dropped_below)
        stop = (
            self._spilled_upto + 1
            if upto is None
            else min(upto, self._spilled_upto + 1)
        )
        if start >= stop:
            return
        result = await self._run(
            self._store.read, start, self._chunk, self._window_max // 4 or 1, stop
        )
        if result.corrupt:
            self._skipped_corrupt(result.corrupt)
        end = stop if result.end_seq == start else result.end_seq  # nothing more
        self._forward_seq = max(self._forward_seq, end)
        self.replayed += len(result.entries)
        if self._metrics is not None:
            self._metrics.replayed.inc(len(result.entries))
        inflight = self._inflight
        send = self.inner.send
        self._forwarding = True
        try:
            for entry in result.entries:  # decoded: new objects, not in flight
                if entry[0] >= self._dropped_below:
                    record = entry[2]
                    inflight[id(record)] = entry
                    await send(record)
        finally:
            self._forwarding = False

    def _skipped_corrupt(self, corrupt: list[tuple[int, int]]) -> None:
        for _, size in corrupt:
            self._entries -= 1
            self._bytes -= size
        self.corrupt += len(corrupt)
        if self._metrics is not None:
            self._metrics.corrupt.inc(len(corrupt))
        self._room.set()
        if self._is_drained():
            self._drained.set()

    async def _forward(self, seq: int, size: int, record: OutboundRecord) -> None:
        if id(record) in self._inflight:  # the same object journaled twice
            record = OutboundRecord(
                topic=record.topic,
                key=record.key,
                value=record.value,
                headers=record.headers,
                dedupe_id=record.dedupe_id,
                event_time_ms=record.event_time_ms,
            )
        self._inflight[id(record)] = (seq, size, record)
        await self.inner.send(record)

    def _on_batch_ack(self, records: Sequence[OutboundRecord]) -> None:
        """The inner sink's ``on_batch_ack``: these records are in Kafka."""
        pop = self._inflight.pop
        dropped_below = self._dropped_below
        taken = self._taken_through
        delete = self._to_delete.append
        unwritten = self._pending_acked.add
        acked = entries = size_freed = 0
        for record in records:
            entry = pop(id(record), None)
            if entry is None:
                continue
            seq, size, _ = entry
            acked += 1
            if seq > taken:  # in the pending group: its commit skips it
                unwritten(seq)
            else:
                delete(seq)
            if seq >= dropped_below:  # below it, a drop accounted for it
                entries += 1
                size_freed += size
        self._acked += acked
        self._entries -= entries
        self._bytes -= size_freed
        self._room.set()
        if self._pacing:
            self._pace_wake()
        if self._bytes <= self._pace_bytes // 2 and (
            self._pace_off or self._paced_episode
        ):
            self._pace_off = False  # the acks caught up: a new episode
            self._paced_episode = 0.0
        if not self._work.is_set():
            self._work.set()
